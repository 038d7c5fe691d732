"""Policy core: KV pool, SM units, batch counters, schedulers and the SimPy driver on tiny cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muxsim.catalog import KV_BLOCK_TOKENS, get_gpu, get_model
from muxsim.config import SchedulerConfig
from muxsim.core.llm import LLMRuntime, Request
from muxsim.core.placement import MeshPlan, Placement
from muxsim.core.replay import RunSpec
from muxsim.core.resources import KVBlockPool, SMUnits, units_for_share
from muxsim.core.schedulers import DECODE, PREFILL, ADBSScheduler, FCFSScheduler
from muxsim.perf import get_latency_model
from muxsim.sim.driver import simulate as _simulate


def simulate(*args, fast_forward: bool = True, speed=None, **kw):
    """:func:`muxsim.sim.driver.simulate` of ``RunSpec(*args, **kw)``."""
    return _simulate(RunSpec(*args, **kw), fast_forward=fast_forward, speed=speed)

GPU = get_gpu("a100-80gb")
LAT = get_latency_model("a100-80gb")
M7 = get_model("llama-7b")
M13 = get_model("llama-13b")


# ---- KV block pool ---------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(total=st.integers(0, 500), ops=st.lists(st.tuples(st.integers(0, 2), st.booleans(), st.integers(0, 120)), max_size=60))
def test_kv_pool_never_over_allocates_and_returns_freed_blocks(total, ops):
    pool = KVBlockPool(total, n_llms=3)
    held = [0, 0, 0]
    for llm, take, n in ops:
        if take:
            ok = pool.allocate(llm, n)
            assert ok == (n <= total - sum(held))
            if ok:
                held[llm] += n
        else:
            n = min(n, held[llm])
            pool.release(llm, n)
            held[llm] -= n
        assert 0 <= pool.free <= total
        assert pool.used_by == held
        assert pool.used == sum(held)
    for llm in range(3):
        pool.release(llm, held[llm])
    assert pool.free == total


def test_kv_pool_rejects_double_free_and_negative():
    pool = KVBlockPool(10, 1)
    assert pool.allocate(0, 4)
    with pytest.raises(ValueError):
        pool.release(0, 5)
    with pytest.raises(ValueError):
        pool.allocate(0, -1)
    with pytest.raises(ValueError):
        KVBlockPool(-1)


# ---- SM units --------------------------------------------------------------------------------
def test_sm_units_allow_overload_up_to_capacity():
    sm = SMUnits(10, 2)
    assert units_for_share(80) == 8 and units_for_share(35) == 4 and units_for_share(100) == 10
    assert sm.try_acquire(8)
    assert sm.try_acquire(4)  # 120 %: within the overload allowance
    assert not sm.try_acquire(1)
    sm.release(8)
    assert sm.try_acquire(3) and sm.in_use == 7
    with pytest.raises(ValueError):
        sm.release(8)
    with pytest.raises(ValueError):
        units_for_share(0)
    with pytest.raises(ValueError):
        units_for_share(101)


# ---- running-batch counters vs. brute force ---------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), pool_blocks=st.integers(11_000, 120_000))
def test_batch_counters_match_brute_force(seed, pool_blocks):
    """O(1) decode counters (context, block steps, finish heap) agree with per-request accounting,
    including preemption when the pool runs dry."""
    rng = np.random.default_rng(seed)
    llm = LLMRuntime(0, "llm-0", M7, 1, 100, 100, 1.0)
    pool = KVBlockPool(pool_blocks, 1)
    reqs = [Request(k, 0, 0.0, int(rng.integers(1, 200)), int(rng.integers(1, 90))) for k in range(40)]
    llm.waiting.extend(reqs)
    finished = set()
    for _ in range(3000):
        if llm.waiting and rng.random() < 0.3:
            batch = llm.admit(pool, 2048, 256, 0.0)
            for r in llm.complete_prefill(batch, pool, 0.0):
                finished.add(r.idx)
        if llm.has_decode_work():
            n = llm.start_decode(pool)
            if n:
                for r in llm.complete_decode(pool, 1.0):
                    finished.add(r.idx)
        # brute force: every running request's KV tokens and block steps
        kv = {r.idx: r.kv_join + llm.iter - r.join_iter for r in llm.running.values()}
        assert llm.ctx == sum(kv.values())
        steps = sum(-(-v // KV_BLOCK_TOKENS) for v in kv.values())
        steps += sum(-(-(r.prompt + r.done - 1) // KV_BLOCK_TOKENS) for r in llm.pending)
        assert pool.used == steps * llm.bps
        for r in llm.running.values():
            assert r.done + llm.iter - r.join_iter < r.output
        if len(finished) == len(reqs):
            break
    assert finished == {r.idx for r in reqs}
    assert pool.used == 0 and llm.n_active == 0
    for r in reqs:
        assert r.done == r.output


# ---- schedulers by hand ------------------------------------------------------------------------
def _two_llm_adbs():
    a = LLMRuntime(0, "a", M7, 1, 80, 30, 2.0)
    b = LLMRuntime(1, "b", M7, 1, 80, 30, 2.0)
    return ADBSScheduler([a, b], kv_blocks=200_000, seq_tokens=512), a, b


def test_adbs_prefill_priority_then_overlap():
    sched, a, b = _two_llm_adbs()
    sched.add(Request(0, 0, 0.0, 100, 10))
    sched.add(Request(1, 1, 0.0, 100, 10))
    jobs = sched.schedule(0.0)
    # both prefills need 8 units; only one fits in 12, and decodes are held back
    assert [(j.kind, j.llm.name) for j in jobs] == [(PREFILL, "a")]
    assert sched.sm.in_use == 8
    sched.complete(jobs[0], 0.05)
    jobs = sched.schedule(0.05)
    # b's prefill (8 units) overlaps a's decode (3 units): MuxServe's spatial-temporal sharing
    assert sorted((j.kind, j.llm.name) for j in jobs) == [(DECODE, "a"), (PREFILL, "b")]
    assert sched.sm.in_use == 11


def test_adbs_quota_caps_admission():
    a = LLMRuntime(0, "a", M7, 1, 80, 30, 1.0)
    sched = ADBSScheduler([a], kv_blocks=3 * a.blocks_per_seq(512), seq_tokens=512)
    assert a.quota_seqs == 3
    for k in range(5):
        sched.add(Request(k, 0, 0.0, 100, 10))
    (job,) = sched.schedule(0.0)
    assert job.n_seqs == 3 and len(a.waiting) == 2


def test_adbs_adaptation_moves_quota_to_the_busy_llm():
    sched, a, b = _two_llm_adbs()
    q0 = (a.quota_blocks, b.quota_blocks)
    for k in range(300):
        sched.add(Request(k, 0, 0.0, 50, 2000))  # a is flooded, b idle
    for _ in range(50):
        sched._on_decode_done(a, a.quota_seqs)  # a ran full batches
    sched.adapt()
    assert a.quota_blocks > q0[0] and b.quota_blocks < q0[1]
    assert a.quota_blocks + b.quota_blocks == sum(q0)  # quotas are conserved
    assert b.quota_seqs >= 1


def test_fcfs_runs_one_job_at_full_sms_oldest_waiting_request_first():
    """The reference's fcfs on a two-LLM mesh: one job at a time (100 % / 90 % shares hold 10 / 9
    of 12 units), each at the whole GPU's speed; a prefill for the oldest waiting request goes
    before any decode; decodes go by oldest running request."""
    a = LLMRuntime(0, "a", M7, 1, 80, 30, 1.0)
    b = LLMRuntime(1, "b", M7, 1, 80, 30, 1.0)
    sched = FCFSScheduler([a, b], kv_blocks=200_000)
    sched.add(Request(0, 1, 0.5, 64, 4))
    sched.add(Request(1, 0, 1.0, 64, 4))
    (job,) = sched.schedule(1.0)
    assert job.llm is b and job.kind == PREFILL and job.sm_pct == 100.0 and job.units == 10
    assert sched.schedule(1.0) == []  # one job at a time
    sched.complete(job, 1.1)
    (job,) = sched.schedule(1.1)
    assert job.llm is a and job.kind == PREFILL  # a waits; b's request is running, not waiting
    sched.complete(job, 1.2)
    (job,) = sched.schedule(1.2)
    # both decode now; b's running request is the older one; a decode holds 9 units, so a's
    # decode cannot start beside it
    assert job.llm is b and job.kind == DECODE and job.sm_pct == 100.0 and job.units == 9
    assert sched.schedule(1.2) == []
    sched.add(Request(2, 0, 1.25, 64, 4))
    sched.complete(job, 1.3)
    (job,) = sched.schedule(1.3)
    assert job.llm is a and job.kind == PREFILL  # a waiting request goes before decodes


# ---- simulated runs ----------------------------------------------------------------------------
def _one_mesh(names, gpus=1, sm=None):
    sm = sm or {n: (80.0, 40.0) for n in names}
    return Placement([MeshPlan(0, 0, gpus, tuple(names), sm)], method="explicit")


def _workload(rows):
    return pd.DataFrame(rows, columns=["llm", "arrival_s", "prompt_tokens", "output_tokens"]).assign(
        request_id=lambda d: np.arange(len(d), dtype=np.int64))


@pytest.mark.parametrize("strategy,pf,dec", [("muxserve", 80.0, 40.0), ("spatial", 100.0, 100.0),
                                              ("temporal", 100.0, 100.0)])
def test_lone_request_latency_is_prefill_plus_decodes(strategy, pf, dec):
    prompt, output = 200, 50
    wl = _workload([("llm-0", 1.0, prompt, output)])
    res = simulate(_one_mesh(["llm-0"], sm={"llm-0": (80.0, 40.0)}), strategy, wl, ["llm-0"], [M7], [1.0],
                   GPU, LAT, SchedulerConfig(), seq_tokens=512)
    r = res.requests.iloc[0]
    c = LAT.curve(M7, 1, GPU)
    prefill = c.prefill_s(prompt, 1, pf)
    decodes = sum(c.decode_s(1, prompt + k, dec) for k in range(1, output))
    assert r.finished and r.prefill_start_s == 1.0
    assert r.first_token_s - r.arrival_s == pytest.approx(prefill, rel=1e-12)
    assert r.finish_s - r.arrival_s == pytest.approx(prefill + decodes, rel=1e-12)
    # the closed form "prefill + output x decode" of the SLO base is the same to within 3 %
    approx = prefill + (output - 1) * c.decode_s(1, prompt + output // 2, dec)
    assert r.finish_s - r.arrival_s == pytest.approx(approx, rel=0.03)
    assert res.n_jobs == output  # one prefill and output-1 decode iterations


def test_slo_base_is_latency_alone_on_smallest_mesh():
    wl = _workload([("llm-0", 0.0, 300, 100)])
    res = simulate(_one_mesh(["llm-0"]), "spatial", wl, ["llm-0"], [M13], [1.0], GPU, LAT,
                   SchedulerConfig(), seq_tokens=512)
    c = LAT.curve(M13, 1, GPU)
    assert res.requests.slo_base_s.iloc[0] == pytest.approx(c.prefill_s(300, 1, 100) + 100 * c.decode_s(1, 350, 100))


def _random_workload(seed, n_llms, n, horizon):
    rng = np.random.default_rng(seed)
    return _workload([(f"llm-{int(rng.integers(n_llms))}", float(rng.uniform(0, horizon)),
                       int(rng.integers(4, 1024)), int(rng.integers(4, 800))) for _ in range(n)]).sort_values(
        "arrival_s", kind="stable").reset_index(drop=True).assign(request_id=lambda d: np.arange(len(d)))


@pytest.mark.parametrize("strategy", ["muxserve", "roundrobin", "temporal"])
def test_conservation_and_preemption_under_memory_pressure(strategy):
    """A mesh short of KV memory preempts and recomputes, yet every request completes with a
    consistent timeline."""
    names = ["llm-0", "llm-1", "llm-2"]
    wl = _random_workload(7, 3, 400, 20.0)
    cfg = SchedulerConfig(activation_reserve_gib=11.0)  # leaves ~4.5 GiB of KV cache: ~15 sequences
    res = simulate(_one_mesh(names, sm={n: (80.0, 40.0) for n in names}), strategy, wl, names, [M7] * 3,
                   [3.0, 2.0, 1.0], GPU, LAT, cfg, seq_tokens=600)
    df = res.requests
    assert len(df) == 400 and df.finished.all() and (df.reason == "").all()
    assert df.preemptions.sum() > 0
    assert (df.prefill_start_s >= df.arrival_s).all()
    assert (df.first_token_s > df.prefill_start_s).all()
    assert (df.finish_s >= df.first_token_s).all()


def test_rejects_request_larger_than_the_pool_and_reports_why():
    wl = _workload([("llm-0", 0.0, 1000, 1000), ("llm-0", 0.1, 10, 10)])
    cfg = SchedulerConfig(activation_reserve_gib=65.2)  # ~0.65 GiB of KV: < one 2000-token sequence
    res = simulate(_one_mesh(["llm-0"]), "muxserve", wl, ["llm-0"], [M7], [1.0], GPU, LAT, cfg, seq_tokens=20)
    df = res.requests
    assert not df.finished.iloc[0] and "KV blocks" in df.reason.iloc[0]
    assert df.finished.iloc[1]


def test_drain_limit_reports_unfinished_requests():
    wl = _random_workload(3, 1, 300, 2.0)
    res = simulate(_one_mesh(["llm-0"]), "spatial", wl, ["llm-0"], [M7], [150.0], GPU, LAT,
                   SchedulerConfig(), seq_tokens=600, drain_limit_s=1.0)
    df = res.requests
    assert (~df.finished).sum() > 0
    assert set(df.reason[~df.finished]) == {"drain limit reached"}
    assert res.sim_time_s == pytest.approx(df.arrival_s.max() + 1.0)


def test_same_inputs_same_results():
    names = ["llm-0", "llm-1"]
    wl = _random_workload(11, 2, 300, 10.0)
    runs = [simulate(_one_mesh(names, gpus=2), "muxserve", wl, names, [M7, M13], [5.0, 1.0], GPU, LAT,
                     SchedulerConfig(), seq_tokens=600).requests for _ in range(2)]
    pd.testing.assert_frame_equal(runs[0], runs[1])


def test_muxserve_overlaps_jobs_so_beats_temporal_on_a_shared_mesh():
    names = ["llm-0", "llm-1"]
    wl = _random_workload(5, 2, 600, 20.0)
    thr = {}
    for s in ("muxserve", "temporal"):
        df = simulate(_one_mesh(names, sm={"llm-0": (80.0, 50.0), "llm-1": (80.0, 50.0)}), s, wl, names,
                      [M7, M7], [15.0, 15.0], GPU, LAT, SchedulerConfig(), seq_tokens=600).requests
        thr[s] = df.finished.sum() / df.finish_s.max()
    assert thr["muxserve"] > thr["temporal"]
    assert math.isfinite(thr["temporal"]) and thr["temporal"] > 0


@pytest.mark.parametrize("strategy", ["muxserve", "temporal", "spatial"])
@pytest.mark.parametrize("pressure", [False, True])
def test_fast_forward_gives_the_same_results_as_event_by_event(strategy, pressure):
    """Processing a mesh's job ends ahead of the SimPy clock (up to its next arrival) must not
    change anything: same records, same job count, same end time; with memory pressure
    (preemptions) and with a drain limit cutting the run short."""
    names = ["llm-0", "llm-1", "llm-2"]
    wl = _random_workload(21, 3, 500, 15.0)
    sm = {"llm-0": (80.0, 50.0), "llm-1": (80.0, 40.0), "llm-2": (90.0, 30.0)}
    cfg = SchedulerConfig(activation_reserve_gib=14.0) if pressure else SchedulerConfig()
    for drain in (None, 5.0):
        runs = [simulate(_one_mesh(names, gpus=2, sm=sm), strategy, wl, names, [M7, M7, M13], [20.0, 10.0, 3.0],
                         GPU, LAT, cfg, seq_tokens=600, drain_limit_s=drain, fast_forward=ff) for ff in (False, True)]
        pd.testing.assert_frame_equal(runs[0].requests, runs[1].requests, check_exact=True)
        assert runs[0].n_jobs == runs[1].n_jobs
        assert runs[0].sim_time_s == runs[1].sim_time_s
        if pressure and drain is None:
            assert runs[0].requests.preemptions.sum() > 0
        if drain is not None:
            assert (~runs[0].requests.finished).any()


def test_fast_forward_is_exact_across_several_meshes():
    names = [f"llm-{i}" for i in range(5)]
    models = [M7, M7, M13, M7, M13]
    placement = Placement([
        MeshPlan(0, 0, 1, ("llm-0",), {"llm-0": (80.0, 60.0)}),
        MeshPlan(0, 1, 2, ("llm-1", "llm-2"), {"llm-1": (80.0, 50.0), "llm-2": (90.0, 40.0)}),
        MeshPlan(0, 3, 1, ("llm-3", "llm-4"), {"llm-3": (80.0, 40.0), "llm-4": (90.0, 30.0)}),
    ], method="explicit")
    wl = _random_workload(4, 5, 800, 20.0)
    for strategy in ("muxserve", "temporal"):
        runs = [simulate(placement, strategy, wl, names, models, [12.0, 8.0, 4.0, 3.0, 1.0], GPU, LAT,
                         SchedulerConfig(), seq_tokens=600, fast_forward=ff) for ff in (False, True)]
        pd.testing.assert_frame_equal(runs[0].requests, runs[1].requests, check_exact=True)
        assert runs[0].n_jobs == runs[1].n_jobs


def test_overlap_phases_off_keeps_an_llms_prefill_and_decode_apart():
    a = LLMRuntime(0, "a", M7, 1, 50, 50, 1.0)
    b = LLMRuntime(1, "b", M7, 1, 50, 50, 1.0)
    sched = ADBSScheduler([a, b], kv_blocks=200_000, seq_tokens=512, overlap_phases=False,
                          sm_units=2, sm_overload_units=0)
    assert sched._pf_units == [1, 1]  # 50 % of a 2-unit mesh is one unit
    sched.add(Request(0, 0, 0.0, 64, 8))
    (job,) = sched.schedule(0.0)
    sched.complete(job, 0.1)
    sched.add(Request(1, 0, 0.1, 64, 8))
    sched.add(Request(2, 1, 0.1, 64, 8))
    jobs = sched.schedule(0.1)
    # a's decode and a's new prefill would overlap: only one of a's jobs runs, b's prefill too
    assert sorted((j.llm.name, j.kind) for j in jobs) == [("a", PREFILL), ("b", PREFILL)]
    assert sched.sm.in_use == 2
