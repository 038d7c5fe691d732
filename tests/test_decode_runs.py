"""Decode iterations run on as one job (the simulator's fast path) give exactly the results of the
event-by-event simulation: one SimPy event per job end, one job per decode iteration.

Compared on every strategy of the registry, with and without memory pressure (preemptions), with
and without a drain limit, with and without the job-overhead model, with a device speed trace,
on one and on several meshes, and on random workloads (hypothesis). Every comparison is exact:
the request tables are equal to the bit, and so are the job counts and the end times.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muxsim.catalog import get_gpu, get_model
from muxsim.config import SchedulerConfig
from muxsim.core.llm import LLMRuntime, Request
from muxsim.core.placement import MeshPlan, Placement
from muxsim.core.replay import RunSpec
from muxsim.core.schedulers import ADBSScheduler
from muxsim.core.strategies import STRATEGIES
from muxsim.perf import get_latency_model
from muxsim.perf.overhead import JobOverhead, OverheadLatency
from muxsim.sim.driver import simulate

GPU = get_gpu("a100-80gb")
LAT = get_latency_model("a100-80gb")
M7 = get_model("llama-7b")
M13 = get_model("llama-13b")
NAMES = ["llm-0", "llm-1", "llm-2"]
SM = {"llm-0": (80.0, 50.0), "llm-1": (80.0, 40.0), "llm-2": (90.0, 30.0)}


def _workload(seed: int, n_llms: int, n: int, horizon_s: float, max_out: int = 800) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "llm": [f"llm-{int(i)}" for i in rng.integers(n_llms, size=n)],
        "arrival_s": rng.uniform(0, horizon_s, size=n),
        "prompt_tokens": rng.integers(4, 1024, size=n),
        "output_tokens": rng.integers(1, max_out + 1, size=n),
    }).sort_values("arrival_s", kind="stable").reset_index(drop=True)
    df["request_id"] = np.arange(n, dtype=np.int64)
    return df


def _one_mesh(gpus: int = 2) -> Placement:
    return Placement([MeshPlan(0, 0, gpus, tuple(NAMES), SM)], method="explicit")


def _spec(placement, strategy, wl, latency, cfg=None, drain=None, names=NAMES, models=(M7, M7, M13),
          rates=(20.0, 10.0, 3.0)) -> RunSpec:
    return RunSpec(placement, strategy, wl, list(names), list(models), list(rates), GPU, latency,
                   cfg or SchedulerConfig(), seq_tokens=600, drain_limit_s=drain, slo_latency=LAT)


def _same(spec: RunSpec, speed=None):
    """Simulate ``spec`` event by event and with decode runs; assert identical; return both."""
    ref = simulate(spec, fast_forward=False, fuse_decodes=False, speed=speed)
    fast = simulate(spec, speed=speed)
    pd.testing.assert_frame_equal(ref.requests, fast.requests, check_exact=True)
    assert ref.n_jobs == fast.n_jobs
    assert ref.sim_time_s == fast.sim_time_s
    # the same token gaps: the runs' iteration ends are the event-by-event run's floats
    assert ref.itl.keys() == fast.itl.keys()
    for name, h in ref.itl.items():
        g = fast.itl[name]
        assert (h.n, h.min_s, h.max_s) == (g.n, g.min_s, g.max_s), name
        np.testing.assert_array_equal(h.bins, g.bins)
        np.testing.assert_array_equal(h.counts, g.counts)
        assert g.mean_s == pytest.approx(h.mean_s, rel=1e-12, nan_ok=True)
    # the event-by-event run completes every job as an event (but those the drain limit cut)
    assert ref.n_completions == ref.n_jobs or spec.drain_limit_s is not None
    return ref, fast


OVERHEAD = OverheadLatency(LAT, JobOverhead())


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "muxserve+sim"])
@pytest.mark.parametrize("pressure", [False, True])
@pytest.mark.parametrize("drain", [None, 5.0])
@pytest.mark.parametrize("latency", [LAT, OVERHEAD], ids=["plain", "overheads"])
def test_decode_runs_are_exact(strategy, pressure, drain, latency):
    wl = _workload(21, 3, 400, 15.0)
    cfg = SchedulerConfig(activation_reserve_gib=14.0) if pressure else SchedulerConfig()
    placement = _one_mesh() if not STRATEGIES[strategy].dedicated else None
    if placement is None:  # one LLM per mesh: its own placement, one GPU each
        placement = Placement([MeshPlan(0, i, 1, (n,), {n: (100.0, 100.0)}) for i, n in enumerate(NAMES)],
                              method="explicit")
    ref, fast = _same(_spec(placement, strategy, wl, latency, cfg, drain))
    # fewer events, though not many fewer on this busy mesh (arrivals every 40 ms keep runs
    # short, and the driver then tries less often); the cold meshes below show the long runs
    assert fast.n_completions < ref.n_jobs, (fast.n_completions, ref.n_jobs)
    if pressure and drain is None and strategy != "spatial":
        assert ref.requests.preemptions.sum() > 0
    if drain is not None:
        assert (~ref.requests.finished).any()


def test_decode_runs_are_exact_across_meshes_and_lone_requests():
    """Several meshes, cold LLMs decoding alone at batch 1 (where runs are longest)."""
    names = [f"llm-{i}" for i in range(5)]
    models = [M7, M7, M13, M7, M13]
    placement = Placement([
        MeshPlan(0, 0, 1, ("llm-0",), {"llm-0": (80.0, 60.0)}),
        MeshPlan(0, 1, 2, ("llm-1", "llm-2"), {"llm-1": (80.0, 50.0), "llm-2": (90.0, 40.0)}),
        MeshPlan(0, 3, 1, ("llm-3", "llm-4"), {"llm-3": (80.0, 40.0), "llm-4": (90.0, 30.0)}),
    ], method="explicit")
    wl = _workload(4, 5, 300, 60.0)
    for strategy in ("muxserve", "roundrobin", "temporal"):
        ref, fast = _same(_spec(placement, strategy, wl, OVERHEAD, names=names, models=models,
                                rates=[12.0, 8.0, 4.0, 3.0, 1.0]))
        assert fast.n_completions < ref.n_jobs / 5


def test_decode_runs_are_exact_with_a_speed_trace():
    """Validation replays a live run's measured speed: each iteration's factor is taken at its
    own start time, run on or not."""
    wl = _workload(5, 3, 300, 10.0)

    def speed(name: str, t: float) -> float:
        return 1.0 + 0.3 * ((int(t * 7) + len(name)) % 3)

    _same(_spec(_one_mesh(), "muxserve", wl, LAT), speed=speed)


def test_decode_runs_are_exact_without_phase_overlap():
    """The CPU engine's setting: an LLM's prefill and decode share one partition."""
    wl = _workload(9, 3, 300, 10.0)
    _same(_spec(_one_mesh(), "muxserve", wl, LAT, SchedulerConfig(overlap_phases=False)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), strategy=st.sampled_from(["muxserve", "roundrobin", "temporal"]),
       n=st.integers(1, 120), horizon=st.floats(0.5, 30.0), max_out=st.integers(1, 600),
       reserve=st.sampled_from([6.0, 14.0]))
def test_decode_runs_are_exact_on_random_workloads(seed, strategy, n, horizon, max_out, reserve):
    wl = _workload(seed, 3, n, horizon, max_out)
    _same(_spec(_one_mesh(), strategy, wl, OVERHEAD, SchedulerConfig(activation_reserve_gib=reserve)))


def _adbs(kv_blocks=10_000):
    llms = [LLMRuntime(i, f"llm-{i}", M7, 1, 80.0, 40.0, rate=1.0) for i in range(2)]
    return ADBSScheduler(llms, kv_blocks, seq_tokens=416), llms


def test_decode_run_stops_before_a_finish_and_when_another_llm_could_decode():
    sched, (a, b) = _adbs()
    sched.add(Request(0, 0, 0.0, 100, 10))
    (pf,) = sched.schedule(0.0)
    sched.complete(pf, 0.1)
    (dec,) = sched.schedule(0.1)
    # 10 tokens: the prefill emits the first, decode iterations 1..9 the others. This job is
    # iteration 1; iterations 2..9 may follow it (8), the last of them finishing the request
    k, until = sched.decode_run(dec)
    assert k == 8 and until == sched._next_adapt
    # a second LLM with a request to decode and SM units free: it could take the decode
    sched.add(Request(1, 1, 0.1, 100, 10))
    (pf_b,) = sched.schedule(0.1)
    sched.complete(pf_b, 0.2)
    b.decode_busy = False
    assert b.pending and sched.decode_run(dec)[0] == 0
