"""Simulated vs measured: the CPU miniature, calibrated in the same run, end to end.

Skips (with the reason) only when the 'live' extra (torch, transformers) is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch", reason="the live engine needs the 'live' extra (torch)")
pytest.importorskip("transformers", reason="the live engine needs the 'live' extra (transformers)")

from muxsim.cli import app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    out = tmp_path_factory.mktemp("validate") / "out"
    res = CliRunner().invoke(app, ["validate", str(ROOT / "experiments" / "validate_cpu.yaml"), "--out", str(out)])
    assert res.exit_code == 0, res.output + (res.stderr or "")
    return out, res.output, res.stderr


def test_validate_cpu_writes_table_and_plot(validated):
    out, text, _ = validated
    for f in ("comparison.csv", "summary.parquet", "requests.parquet", "slo_attainment.png",
              "calibration.parquet", "cpu-core.json", "run.json"):
        assert (out / f).stat().st_size > 0, f
    assert "simulated vs measured" in text
    req = pd.read_parquet(out / "requests.parquet")
    # the compared simulation, the live run, the simulation scaled by the probed speed and the
    # one replaying the speed the run's jobs met
    assert set(req.run) == {"simulated", "measured", "simulated-corrected", "simulated-replayed"}
    speed = json.loads((out / "run.json").read_text())["speed"]
    assert len(speed) == 3
    for v in speed.values():
        # factors near 1: the reference jobs timed the engine the calibration describes
        for phase in ("prefill", "decode"):
            assert set(v["factors"][phase]) == {"llm-0", "llm-1"}
            assert all(0.3 < f < 3 for f in v["factors"][phase].values()), v
        # live.retries: 1 repeats a run the probes found unsteady, once
        assert v["attempts"] in (1, 2) and v["drift"] >= 0
        # dispatch costs something but far less than a job; the run's speed stays near 1
        assert 0 < v["replay"]["dispatch_gap_s"] < 0.005
        assert all(0.3 < f < 3 for f in v["replay"]["median"].values()), v["replay"]
    assert set(req.strategy) == {"muxserve", "spatial", "temporal"}
    # both runs replay the same requests
    for _, g in req[req.run.isin(["simulated", "measured"])].groupby("strategy"):
        a = g[g.run == "simulated"].sort_values("request_id")[["llm", "arrival_s", "prompt_tokens"]]
        b = g[g.run == "measured"].sort_values("request_id")[["llm", "arrival_s", "prompt_tokens"]]
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
    assert req.finished.all()


def test_overhead_fit_on_the_live_jobs(validated, tmp_path):
    """`muxsim calibrate overhead` fits the job-overhead model to the run's own jobs."""
    from muxsim.perf.overhead import load_overhead

    out, _, _ = validated
    target = tmp_path / "overhead.json"
    res = CliRunner().invoke(app, ["calibrate", "overhead", str(out / "jobs.parquet"), "--out", str(target)])
    assert res.exit_code == 0, res.output
    fitted = load_overhead(target)
    # a dispatch gap costs something but far less than a job, as in the replay
    assert 0 < fitted.dispatch_s < 0.005
    assert set(fitted.decode_per_seq_s) == {"llama-tiny-m", "llama-tiny-s"}
    assert all(v >= 0 for v in fitted.decode_per_seq_s.values())
    assert "per sequence per decode" in res.output


def test_simulated_and_measured_throughput_agree(validated):
    """Throughput within 15 %. (SLO attainment is compared in the table and reported in the
    README; on this 2-core VM it does not yet agree within 10 points at every scale.)"""
    out, _, _ = validated
    cmp_ = pd.read_csv(out / "comparison.csv")
    overall = cmp_[cmp_.llm == "all"]
    att = overall[overall.metric.str.startswith("slo_attainment@")]
    # the load produces both met and missed SLOs
    assert (att.measured < 0.9).any() and (att.measured > 0.1).any()
    thr = overall[overall.metric == "throughput_rps"]
    assert len(thr) == 3
    bad = thr[thr.rel_error.abs() > 0.15]
    assert bad.empty, bad.to_string()


def test_validate_reports_progress_outside_a_terminal(validated):
    """Not a terminal (the test runner's stderr, a log, CI): a line per step, each with the
    time elapsed, instead of a spinner that shows nothing there; the calibration's points are
    thinned to about ten lines."""
    _, _, err = validated
    lines = [ln for ln in err.splitlines() if ln.startswith("[")]
    assert lines[0].endswith("validating validate_cpu: started"), lines[:3]
    steps = [ln.split("] ", 1)[1] for ln in lines]
    assert any(s.startswith("calibration: fitted cpu-core.json") for s in steps), steps
    assert any(s.startswith("loading 2 LLM(s) on the transformers engine") for s in steps), steps
    for k, strategy in enumerate(("muxserve", "spatial", "temporal"), start=1):
        for what in ("live run of", "measured", "simulated"):
            assert any(f"{strategy}" in s and what in s for s in steps), (strategy, what, steps)
        assert any(f"{strategy} ({k}/3): live run of" in s for s in steps), steps
    calib = [s for s in steps if s.startswith("calibration ") and "/" in s.split()[1]]
    assert 0 < len(calib) <= 12
    elapsed = [float(ln[1:].split(" s]")[0]) for ln in lines]
    assert elapsed == sorted(elapsed) and elapsed[-1] > 10
