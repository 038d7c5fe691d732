"""The command line end to end: a reduced zipf_alpha run, determinism, and bad input."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import muxsim
from muxsim.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _reduced_zipf(tmp_path: Path, **workload) -> Path:
    cfg = yaml.safe_load((ROOT / "experiments" / "zipf_alpha.yaml").read_text())
    cfg["workload"]["duration_s"] = 12
    cfg["workload"]["popularity"] = {"alpha": [0.9, 2.1], "max_rate": 6}
    cfg["workload"].update(workload)
    # the simulation-guided search has its own tests (test_search.py)
    cfg["strategies"] = ["muxserve", "spatial", "temporal"]
    path = tmp_path / "zipf_small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_run_reduced_zipf_alpha_end_to_end(tmp_path):
    cfg = _reduced_zipf(tmp_path)
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(cfg), "--out", str(out), "--jobs", "2"])
    assert res.exit_code == 0, res.output
    for f in ("requests.parquet", "summary.parquet", "summary.csv", "ratios.csv", "throughput.png",
              "slo_attainment.png", "config.resolved.yaml", "run.json"):
        assert (out / f).stat().st_size > 0, f
    req = pd.read_parquet(out / "requests.parquet")
    assert set(req.strategy) == {"muxserve", "spatial", "temporal"}
    assert set(req.alpha) == {0.9, 2.1}
    # every strategy of a cell sees the same workload
    for _, cell in req.groupby("cell"):
        ids = [g.sort_values("request_id")[["llm", "arrival_s", "prompt_tokens"]].to_numpy().tolist()
               for _, g in cell.groupby("strategy")]
        assert ids[0] == ids[1] == ids[2]
    # conservation: each request finished or carries a reason
    assert (req.finished | (req.reason != "")).all()
    summary = pd.read_csv(out / "summary.csv")
    overall = summary[summary.llm == "all"]
    assert len(overall) == 6 and (overall.throughput_rps > 0).all()
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 0 and "placements" in run
    assert "muxserve" in res.output and "spatial" in res.output
    assert yaml.safe_load((out / "config.resolved.yaml").read_text())["workload"]["duration_s"] == 12


def test_same_config_and_seed_give_identical_outputs(tmp_path):
    cfg = _reduced_zipf(tmp_path, duration_s=5)
    outs = []
    for k, jobs in enumerate(("1", "2")):
        out = tmp_path / f"out{k}"
        res = runner.invoke(app, ["run", str(cfg), "--out", str(out), "--jobs", jobs, "--seed", "3"])
        assert res.exit_code == 0, res.output
        outs.append(out)
    for f in ("summary.csv", "ratios.csv", "run.json"):
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f
    pd.testing.assert_frame_equal(pd.read_parquet(outs[0] / "requests.parquet"),
                                  pd.read_parquet(outs[1] / "requests.parquet"))
    res = runner.invoke(app, ["run", str(cfg), "--out", str(tmp_path / "other"), "--seed", "4"])
    assert res.exit_code == 0
    assert (tmp_path / "other" / "summary.csv").read_bytes() != (outs[0] / "summary.csv").read_bytes()


def test_place_prints_the_placement(tmp_path):
    res = runner.invoke(app, ["place", str(_reduced_zipf(tmp_path))])
    assert res.exit_code == 0, res.output
    assert "llm-18" in res.output and "estimated throughput" in res.output
    assert "fitted" in res.output and "roofline" not in res.output  # A100 curves, calibrated


def test_place_names_each_llms_latency_source():
    # H100 has no calibration: every LLM's estimate comes from the roofline model
    res = runner.invoke(app, ["place", str(ROOT / "experiments" / "size_h100.yaml"), "--cell", "nodes=1"])
    assert res.exit_code == 0, res.output
    assert res.output.count("roofline") == 4 and "fitted" not in res.output


BAD = {
    "missing file": (None, "config file not found"),
    "malformed yaml": ("name: [unclosed\n", "malformed YAML"),
    "unknown model": ({"llms": [{"model": "gpt-9", "count": 1}]}, "unknown model 'gpt-9'; allowed: llama-7b"),
    "unknown gpu": ({"cluster": {"nodes": 1, "gpus_per_node": 8, "gpu": "v100"}}, "unknown GPU 'v100'; allowed:"),
    "zero rate": ({"llms": [{"model": "llama-7b", "rate": 0}]}, "llms.0.rate"),
    "zero max_rate": ({"workload": {"duration_s": 5, "popularity": {"alpha": 1, "max_rate": 0}}}, "max_rate must be > 0"),
    "negative alpha": ({"workload": {"duration_s": 5, "popularity": {"alpha": [0.5, -1], "max_rate": 2}}}, "alpha must be >= 0"),
    "no llms": ({"llms": []}, "llms:"),
    "unknown key": ({"workload": {"duration_s": 5, "popularity": {"alpha": 1, "max_rate": 2}, "duraton": 3}}, "workload.duraton: unknown key"),
    "fits nowhere": ({"cluster": {"nodes": 4, "gpus_per_node": 2}}, "llm-18 (llama-65b) fits on no mesh"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, case):
    change, expected = BAD[case]
    base = yaml.safe_load((ROOT / "experiments" / "zipf_alpha.yaml").read_text())
    base["workload"]["duration_s"] = 5
    path = tmp_path / "bad.yaml"
    if change is None:
        path = tmp_path / "does-not-exist.yaml"
    elif isinstance(change, str):
        path.write_text(change)
    else:
        base.update(change)
        path.write_text(yaml.safe_dump(base))
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(path), "--out", str(out)])
    assert res.exit_code == 2, res.output
    text = " ".join(res.stderr.split())  # rich wraps long lines
    assert expected in text, text
    assert "Traceback" not in res.output + res.stderr
    assert res.stderr.strip().startswith("error:")
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_saved_workload_replays_to_the_same_results(tmp_path):
    cfg = _reduced_zipf(tmp_path, duration_s=6)
    raw = yaml.safe_load(cfg.read_text())
    raw["workload"]["popularity"]["alpha"] = 1.3
    raw["strategies"] = ["muxserve", "spatial"]
    cfg.write_text(yaml.safe_dump(raw))
    res = runner.invoke(app, ["run", str(cfg), "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    wl = tmp_path / "a" / "workload_0.parquet"
    assert wl.exists()
    raw["workload"] = {"file": str(wl)}
    replay = tmp_path / "replay.yaml"
    replay.write_text(yaml.safe_dump(raw))
    res = runner.invoke(app, ["run", str(replay), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    cols = ["strategy", "request_id", "llm", "arrival_s", "first_token_s", "finish_s"]
    a = pd.read_parquet(tmp_path / "a" / "requests.parquet")[cols]
    b = pd.read_parquet(tmp_path / "b" / "requests.parquet")[cols]
    assert len(a) == len(b) > 0
    # same requests; the rates the placement sees are re-estimated from the file, so only the
    # workload itself is compared exactly
    pd.testing.assert_frame_equal(a[cols[:4]], b[cols[:4]])


@pytest.mark.parametrize("live,expected", [(None, "no 'live' section"),
                                           ({"engine": "vllm"}, "needs the 'vllm' extra"),
                                           ({"device": "tpu"}, "device must be 'cpu' or 'cuda[:N]'")])
def test_validate_bad_input_is_one_line_exit_2(tmp_path, live, expected):
    if live == {"engine": "vllm"} and importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here: the missing-extra error cannot occur")
    cfg = yaml.safe_load((ROOT / "experiments" / "validate_cpu.yaml").read_text())
    if live is None:
        cfg.pop("live")
    else:
        cfg["live"] = live
    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    res = runner.invoke(app, ["validate", str(path), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert expected in " ".join(res.stderr.split())
    assert res.stderr.strip().startswith("error:") and "Traceback" not in res.stderr
    assert not out.exists()


def test_step_progress_prints_flushed_lines_outside_a_terminal(capsys):
    """`muxsim validate`'s progress when stderr is not a terminal: a line per step with the
    elapsed time; a counted series (calibration points) thinned to its first, last and one
    line per tenth."""
    from muxsim.cli import common

    common.reset_consoles()  # on pytest's captured (non-terminal) streams
    with common.step_progress("validating x") as say:
        for i in range(1, 41):
            say(f"calibration {i}/40 tiny b={i}")
        say("alpha=1 muxserve (1/2): live run of 10 requests")
        say("alpha=1 muxserve (1/2): simulated")
    lines = capsys.readouterr().err.splitlines()
    steps = [ln.split("] ", 1)[1] for ln in lines]
    assert steps[0] == "validating x: started"
    assert [s.split()[1] for s in steps if s.startswith("calibration")] == \
        ["1/40"] + [f"{4 * k}/40" for k in range(1, 11)]
    assert steps[-2:] == ["alpha=1 muxserve (1/2): live run of 10 requests", "alpha=1 muxserve (1/2): simulated"]
    assert all(ln.startswith("[") and " s] " in ln for ln in lines)


def test_speed_line_divides_by_cpu_time():
    from muxsim.cli.run import speed_line

    line = speed_line(12_000, 600.0, 5.0, 0.5, 2.0, "2 jobs")
    assert line == ("12,000 requests in 5.0 s wall (2 jobs); simulations 0.50 CPU s (2.00 s worker wall): "
                    "24,000 simulated requests per CPU second, 1,200 simulated s per CPU second")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_cell_run_cpu_time_is_cpu_not_wall(tmp_path):
    """A simulation sharing its core with a busy process gets about half the core: its CPU
    time (what "per CPU second" divides by) stays about what it needs while its wall time
    grows; summed wall time would count the wait as work."""
    import multiprocessing
    import time

    from muxsim.experiment import (
        CellTask,
        plan_experiment,
        run_cell,
        strategy_placement,
    )

    cfg = muxsim.load_config(ROOT / "experiments" / "quickstart_h100.yaml")
    (plan,) = plan_experiment(cfg, cells=[cfg.cells()[0]])
    task = CellTask(cfg, plan.cell, "muxserve", plan.placements[strategy_placement(cfg, "muxserve")], plan.workload)
    run_cell(task)  # warm caches (latency curves, imports)
    before = os.sched_getaffinity(0)
    core = min(before)
    busy = multiprocessing.get_context("fork").Process(target=_spin, args=(core, time.time() + 60), daemon=True)
    try:
        os.sched_setaffinity(0, {core})
        busy.start()
        time.sleep(0.2)
        runs = [run_cell(task) for _ in range(3)]
    finally:
        busy.kill()
        busy.join()
        os.sched_setaffinity(0, before)
    for r in runs:
        assert 0 < r.cpu_s <= r.wall_s + 0.02
    assert sum(r.cpu_s for r in runs) < 0.8 * sum(r.wall_s for r in runs)


def _spin(core: int, until: float) -> None:
    import time

    os.sched_setaffinity(0, {core})
    while time.time() < until:
        pass
