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
