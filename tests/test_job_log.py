"""The simulator's job log: every job that starts in the window, as the event-by-event run
starts it, with the run's results unchanged by asking for it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_decode_runs import LAT, NAMES, _one_mesh, _spec, _workload

from muxsim.config import SchedulerConfig
from muxsim.core.placement import MeshPlan, Placement
from muxsim.core.strategies import STRATEGIES
from muxsim.sim.driver import JOB_COLUMNS, simulate


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "muxserve+sim"])
@pytest.mark.parametrize("pressure", [False, True])
def test_job_log_is_every_job_started_in_the_window(strategy, pressure):
    wl = _workload(9, 3, 300, 12.0, max_out=400)
    cfg = SchedulerConfig(activation_reserve_gib=14.0) if pressure else SchedulerConfig()
    spec = _spec(_one_mesh(), strategy, wl, LAT, cfg)
    plain = simulate(spec)
    every = simulate(spec, fast_forward=False, fuse_decodes=False, timeline=(0.0, 1e9))
    window = simulate(spec, timeline=(3.0, 6.5))
    assert plain.jobs is None
    assert list(window.jobs.columns) == list(JOB_COLUMNS)
    # asking for a log changes no result
    pd.testing.assert_frame_equal(plain.requests, window.requests, check_exact=True)
    assert plain.n_jobs == window.n_jobs == every.n_jobs
    assert len(every.jobs) == every.n_jobs  # the event-by-event run's log holds every job
    want = every.jobs[(every.jobs["start_s"] >= 3.0) & (every.jobs["start_s"] < 6.5)].reset_index(drop=True)
    assert len(want) > 50
    pd.testing.assert_frame_equal(window.jobs, want, check_exact=True)
    j = every.jobs
    assert set(j["phase"]) == {"prefill", "decode"}
    assert (j["end_s"] > j["start_s"]).all()
    assert (j["kv_blocks_used"] <= j["kv_blocks_total"]).all() and (j["kv_blocks_used"] > 0).all()
    assert (j["sm_pct"] > 0).all() and (j["sm_pct"] <= 100).all()
    # one prefill and one decode in flight per LLM at most: its jobs of a phase never overlap
    for _, g in j.groupby(["llm", "phase"]):
        assert (g["start_s"].to_numpy()[1:] >= g["end_s"].to_numpy()[:-1]).all()


def test_job_log_names_each_jobs_mesh_and_the_requests_carry_it():
    sm = {"llm-0": (80.0, 50.0), "llm-1": (80.0, 40.0), "llm-2": (90.0, 30.0)}
    placement = Placement([MeshPlan(0, 0, 1, ("llm-0",), sm), MeshPlan(1, 0, 2, ("llm-1", "llm-2"), sm)],
                          method="explicit")
    res = simulate(_spec(placement, "muxserve", _workload(2, 3, 200, 8.0, max_out=200), LAT), timeline=(0.0, 4.0))
    mesh_of = {"llm-0": 0, "llm-1": 1, "llm-2": 1}
    assert (res.jobs["mesh"] == res.jobs["llm"].map(mesh_of)).all()
    assert (res.requests["mesh"] == res.requests["llm"].map(mesh_of)).all()
    assert set(res.jobs["llm"]) == set(NAMES)
    assert np.all(np.diff(res.jobs["start_s"].to_numpy()) >= 0)


def test_bad_window_is_refused():
    spec = _spec(_one_mesh(), "muxserve", _workload(1, 3, 20, 2.0), LAT)
    with pytest.raises(ValueError, match="timeline"):
        simulate(spec, timeline=(5.0, 5.0))


CONFIG = """
name: tl
cluster: {nodes: 1, gpus_per_node: 4}
llms:
  - {model: llama-7b, count: 4}
workload:
  duration_s: 20
  popularity: {alpha: [0.9, 1.3], max_rate: 10}
strategies: [muxserve, temporal]
"""


def _run(tmp_path, timeline: str):
    from typer.testing import CliRunner

    from muxsim.cli import app

    cfg = tmp_path / "tl.yaml"
    cfg.write_text(CONFIG + timeline)
    out = tmp_path / "out"
    return CliRunner().invoke(app, ["run", str(cfg), "--out", str(out), "--jobs", "1"]), out


def test_a_run_writes_the_job_log_and_its_trace_for_the_selected_runs(tmp_path):
    import json

    res, out = _run(tmp_path, "timeline: {window_s: [2, 5], cells: [{alpha: 1.3}], strategies: [muxserve]}\n")
    assert res.exit_code == 0, res.output
    jobs = pd.read_parquet(out / "jobs.parquet")
    assert list(jobs.columns) == ["cell", "strategy", *JOB_COLUMNS]
    assert set(jobs["cell"]) == {"alpha=1.3"} and set(jobs["strategy"]) == {"muxserve"}
    assert jobs["start_s"].between(2, 5, inclusive="left").all()
    trace = json.loads((out / "timeline.json").read_text())
    assert sum(e["ph"] == "X" for e in trace["traceEvents"]) == len(jobs)
    facts = json.loads((out / "run.json").read_text())["timeline"]
    assert facts["runs"] == ["alpha=1.3 | muxserve"] and facts["window_s"] == [2.0, 5.0]


def test_a_timeline_cell_that_names_no_cell_is_one_line(tmp_path):
    res, out = _run(tmp_path, "timeline: {window_s: [2, 5], cells: ['alpha=0.8']}\n")
    assert res.exit_code == 2
    assert "timeline.cells: 'alpha=0.8' is not a cell of the sweep" in res.output
    assert "Traceback" not in res.output and not out.exists()
    res, out = _run(tmp_path, "timeline: {window_s: [5, 2]}\n")
    assert res.exit_code == 2 and "window_s must be" in res.output
