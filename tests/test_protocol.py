"""The paper's protocol (../shared/docs/muxserve.md §6, §8, §9, §10): request counts from the
placement's estimate, one workload per cell, seeds keyed by the cell, the baselines as the
reference benchmark configured them, the job-overhead model, MuxServe's metrics and both SLO
bases."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from muxsim import metrics
from muxsim.catalog import GIB, get_gpu, get_model
from muxsim.config import ExperimentConfig, SchedulerConfig, load_config
from muxsim.core.llm import LLMRuntime, Request
from muxsim.core.placement import MeshPlan, Placement
from muxsim.core.records import reference_slo_base
from muxsim.core.replay import RunSpec
from muxsim.core.schedulers import DECODE, PREFILL, FCFSScheduler
from muxsim.core.strategies import STRATEGIES, build_schedulers
from muxsim.experiment import (
    cell_seed,
    placement_for,
    plan_experiment,
    request_counts,
    run_experiment,
)
from muxsim.perf import get_latency_model
from muxsim.perf.overhead import JobOverhead, OverheadLatency, fit_overhead
from muxsim.sim.driver import simulate as _simulate


def simulate(*args, fast_forward: bool = True, speed=None, **kw):
    """:func:`muxsim.sim.driver.simulate` of ``RunSpec(*args, **kw)``."""
    return _simulate(RunSpec(*args, **kw), fast_forward=fast_forward, speed=speed)

ROOT = Path(__file__).resolve().parents[1]
GPU = get_gpu("a100-80gb")
LAT = get_latency_model("a100-80gb")
M7, M13, M30 = get_model("llama-7b"), get_model("llama-13b"), get_model("llama-30b")
SHARED = ROOT.parent / "shared" / "data"


def _small(**workload) -> ExperimentConfig:
    """One 8-GPU node, six LLMs, the paper's request rule: a few seconds of simulation."""
    raw = {
        "name": "small", "seed": 0,
        "cluster": {"nodes": 1, "gpus_per_node": 8, "gpu": "a100-80gb"},
        "llms": [{"model": "llama-7b", "count": 4}, {"model": "llama-13b", "count": 2}],
        "workload": {"duration_s": 60, "lengths": {"kind": "sharegpt_v3"},
                     "popularity": {"alpha": [0.9, 1.7], "max_rate": 8, "rate_scale": [0.5, 1.0]},
                     "requests": {"rule": "estimate", "factor": 1.1, "seconds": 20}, **workload},
        "strategies": ["muxserve", "spatial", "temporal"],
        "slo": {"scales": [2, 8], "goodput_scale": 8},
    }
    return ExperimentConfig.model_validate(raw)


# ---- the grid -------------------------------------------------------------------------------
def test_zipf_alpha_is_the_papers_twenty_cells():
    cfg = load_config(ROOT / "experiments" / "zipf_alpha.yaml")
    cells = cfg.cells()
    assert len(cells) == 20 and cfg.strategies == ["muxserve", "spatial", "temporal", "muxserve+sim"]
    got = {(c.params["alpha"], c.params["rate_scale"]) for c in cells}
    assert got == {(a, s) for a in (0.7, 0.9, 1.3, 1.7, 2.1) for s in (0.5, 0.75, 1.0, 1.25)}
    for c in cells:
        assert c.rates[0] == pytest.approx(40 * c.params["rate_scale"])
        assert c.rates[18] == pytest.approx(40 * c.params["rate_scale"] * 19 ** -c.params["alpha"])
    req = cfg.workload.requests
    assert (req.rule, req.factor, req.seconds, cfg.workload.duration_s) == ("estimate", 1.1, 240, 1000)


# ---- request counts --------------------------------------------------------------------------
def test_counts_follow_the_estimate_and_the_window_caps_them():
    cfg = _small()
    plans = plan_experiment(cfg)
    for p in plans:
        est = p.placements["muxserve"].est_throughput
        expect = [int(1.1 * 20 * est[n]) for n in cfg.llm_names()]
        assert p.counts == expect
        got = p.workload["llm"].value_counts()
        for n, c in zip(cfg.llm_names(), expect):
            assert got.get(n, 0) == c  # 22 s x estimate: well inside the 60-s window
        assert p.workload["arrival_s"].min() >= 0 and p.workload["arrival_s"].max() < 60
    # a short window caps the counts: every arrival within it, fewer than the rule asks
    short = _small(duration_s=5)
    for p in plan_experiment(short):
        got = p.workload["llm"].value_counts()
        assert p.workload["arrival_s"].max() < 5
        capped = [n for n, c in zip(short.llm_names(), p.counts) if got.get(n, 0) < c]
        assert capped, "a 5-s window should cut some LLM short of int(1.1 x 20 x T_i)"


def test_fixed_counts_per_llm():
    cfg = _small(requests={"rule": "fixed", "counts": [30, 20, 10, 5, 0, 7]})
    plans = plan_experiment(cfg)
    for p in plans:
        got = p.workload["llm"].value_counts()
        assert [got.get(n, 0) for n in cfg.llm_names()] == [30, 20, 10, 5, 0, 7]
    with pytest.raises(ValueError, match="one count each"):
        _small(requests={"rule": "fixed", "counts": [1, 2]})
    with pytest.raises(ValueError, match="needs 'counts'"):
        _small(requests={"rule": "fixed"})


def test_request_counts_rule_is_int_of_factor_seconds_estimate():
    cfg = _small()
    est = Placement([], {"llm-0": 2.97, "llm-1": 0.5, "llm-2": 1e-3})
    assert request_counts(cfg, est) == [int(22 * 2.97), 11, 0, 0, 0, 0]


# ---- one workload per cell, seeds keyed by the cell --------------------------------------------
def test_one_workload_served_to_every_strategy():
    cfg = _small(duration_s=20)
    plans, runs = run_experiment(cfg, jobs=1)
    for p in plans:
        mine = [r for r in runs if r.cell == p.cell.label]
        assert [r.strategy for r in mine] == cfg.strategies
        for r in mine:
            got = r.requests.sort_values("request_id")[["request_id", "llm", "arrival_s", "prompt_tokens",
                                                        "output_tokens"]].reset_index(drop=True)
            pd.testing.assert_frame_equal(got, p.workload[got.columns].reset_index(drop=True))


def test_cell_seed_does_not_depend_on_the_sweep_position():
    sweep = _small()
    alone = _small(popularity={"alpha": 1.7, "max_rate": 8, "rate_scale": 1.0})
    target = [p for p in plan_experiment(sweep) if p.cell.params == {"alpha": 1.7, "rate_scale": 1.0}]
    (one,) = plan_experiment(alone)
    assert len(target) == 1 and cell_seed(sweep, target[0].cell) == cell_seed(alone, one.cell)
    pd.testing.assert_frame_equal(target[0].workload, one.workload)
    # and another seed draws another workload
    other = sweep.model_copy(update={"seed": 1})
    assert cell_seed(other, target[0].cell) != cell_seed(sweep, target[0].cell)


# ---- spatial: a KV cache of a fixed fraction of GPU memory --------------------------------------
def test_spatial_kv_fraction():
    mesh = Placement([MeshPlan(0, 0, 1, ("llm-0",), {"llm-0": (100.0, 100.0)})], method="spatial")
    block = M7.kv_block_bytes()
    (half,), _ = build_schedulers(mesh, "spatial", ["llm-0"], [M7], [1.0], GPU, SchedulerConfig(), 512)
    assert half.pool.total == int(0.5 * GPU.memory_bytes) // block
    (left,), _ = build_schedulers(mesh, "spatial", ["llm-0"], [M7], [1.0], GPU,
                                  SchedulerConfig(spatial_kv_fraction=None), 512)
    reserved = M7.weight_bytes + int((6.0 + 2 * 0.8) * GIB)
    assert left.pool.total == (GPU.memory_bytes - reserved) // block > half.pool.total
    # the fraction is the spatial baseline's only: MuxServe's pool is what is left
    (mux,), _ = build_schedulers(mesh, "muxserve", ["llm-0"], [M7], [1.0], GPU, SchedulerConfig(), 512)
    assert mux.pool.total == left.pool.total
    # and the spatial placement's estimate sees the smaller cache
    cfg = _small(popularity={"alpha": 0.9, "max_rate": 60})
    cfg = cfg.model_copy(update={"cluster": cfg.cluster.model_copy(update={"nodes": 2})})
    (cell,) = cfg.cells()
    fair = cfg.model_copy(update={"scheduler": SchedulerConfig(spatial_kv_fraction=None)})
    assert placement_for(cfg, cell, "spatial").est_throughput["llm-0"] < \
        placement_for(fair, cell, "spatial").est_throughput["llm-0"]


# ---- temporal: the reference's fcfs ----------------------------------------------------------------
def _two(kv_blocks, **kw):
    a = LLMRuntime(0, "a", M7, 1, 80, 30, 5.0)
    b = LLMRuntime(1, "b", M7, 1, 80, 30, 1.0)
    return FCFSScheduler([a, b], kv_blocks=kv_blocks, **kw), a, b


def test_fcfs_waits_for_kv_blocks_and_lets_the_other_llm_prefill():
    bps = M7.blocks_per_step(1)  # 1024 blocks per 32-token step
    sched, a, b = _two(kv_blocks=6 * bps)
    sched.add(Request(0, 0, 0.0, 100, 40))   # 4 steps
    (j0,) = sched.schedule(0.0)
    sched.complete(j0, 0.1)
    sched.add(Request(1, 0, 0.2, 96, 4))     # 3 steps: 4 + 3 > 6, a must wait
    sched.add(Request(2, 1, 0.3, 40, 4))     # 2 steps: fits
    (j,) = sched.schedule(0.3)
    # a's request came first, but its prefill found no blocks: it stays queued, and this
    # round's job is the decode of the oldest running request
    assert (j.llm.name, j.kind) == ("a", DECODE)
    assert list(a.waiting)[0].idx == 1
    sched.complete(j, 0.35)
    # a waits until blocks are freed; b's prefill goes in the meantime
    (j,) = sched.schedule(0.35)
    assert (j.llm.name, j.kind) == ("b", PREFILL) and j.reqs[0].idx == 2
    sched.complete(j, 0.4)
    (j,) = sched.schedule(0.4)
    assert (j.llm.name, j.kind) == ("a", DECODE)  # still the oldest running request: a's
    # a's decodes go on (its request is the oldest running one) until a's next block step finds
    # the pool full: a's request is preempted, which frees blocks, so a may prefill again
    t = 0.5
    while a.running:
        sched.complete(j, t)
        t += 0.1
        (j,) = sched.schedule(t)
    assert (j.llm.name, j.kind) == ("b", DECODE)  # the preemption came after this round's prefill pass
    assert [r.idx for r in a.waiting] == [0, 1] and a.waiting[0].preemptions == 1
    # the recomputed request now holds 129 tokens (5 steps); b holds 2 of the 6: a tries, finds
    # no blocks and waits again while b decodes to its end
    while b.n_active:
        sched.complete(j, t)
        t += 0.1
        (j,) = sched.schedule(t)
        assert j.llm is b or not b.n_active
    assert (j.llm.name, j.kind) == ("a", PREFILL) and [r.idx for r in j.reqs] == [0]  # 5 + 3 > 6: alone


def test_fcfs_sets_no_quotas_but_max_num_seqs():
    sched, a, b = _two(kv_blocks=10_000_000, max_num_seqs=256)
    for k in range(300):
        sched.add(Request(k, 0, 0.001 * k, 8, 10))
    admitted = 0
    t = 1.0
    while True:
        jobs = sched.schedule(t)
        if not jobs or jobs[0].kind != PREFILL:
            break
        admitted += len(jobs[0].reqs)
        sched.complete(jobs[0], t)
        t += 0.01
    assert admitted == 256 == a.n_active  # one LLM takes 256 sequences, whatever its rate


# ---- the job-overhead model -------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["muxserve", "spatial", "temporal"])
def test_lone_request_latency_includes_the_modelled_overheads(strategy):
    prompt, output = 300, 40
    wl = pd.DataFrame({"request_id": [0], "llm": ["llm-0"], "arrival_s": [2.0], "prompt_tokens": [prompt],
                       "output_tokens": [output]})
    mesh = Placement([MeshPlan(0, 0, 1, ("llm-0",), {"llm-0": (80.0, 40.0)})], method="explicit")
    oh = JobOverhead(dispatch_s=0.002, decode_per_seq_s=0.0003)
    res = simulate(mesh, strategy, wl, ["llm-0"], [M7], [1.0], GPU, OverheadLatency(LAT, oh),
                   SchedulerConfig(), 512, slo_latency=LAT)
    c = LAT.curve(M7, 1, GPU)
    pf, dec = {"muxserve": (80.0, 40.0)}.get(strategy, (100.0, 100.0))
    prefill = c.prefill_s(prompt, 1, pf) + 0.002
    decodes = sum(c.decode_s(1, prompt + k, dec) + 0.002 + 0.0003 for k in range(1, output))
    r = res.requests.iloc[0]
    assert r.first_token_s - r.arrival_s == pytest.approx(prefill, rel=1e-12)
    assert r.finish_s - r.arrival_s == pytest.approx(prefill + decodes, rel=1e-12)
    # the SLO base stays the latency model's own, without the system's overheads
    assert r.slo_base_alone_s == pytest.approx(c.prefill_s(prompt, 1, 100) + output * c.decode_s(1, prompt + output // 2, 100))


def test_reference_overhead_defaults_and_config():
    oh = JobOverhead()
    assert (oh.per_seq_s(M7), oh.per_seq_s(M13), oh.per_seq_s(M30), oh.per_seq_s(get_model("llama-65b"))) == \
        pytest.approx((1e-4, 0.8e-4, 0.7e-4, 0.7e-4))
    cfg = _small()
    assert cfg.overhead.model().dispatch_s == pytest.approx(0.55e-3)
    custom = ExperimentConfig.model_validate({**cfg.model_dump(), "overhead": {"dispatch_ms": 0, "decode_per_seq_ms": {"llama-7b": 0.2}}})
    m = custom.overhead.model()
    assert m.dispatch_s == 0 and m.per_seq_s(M7) == pytest.approx(2e-4) and m.per_seq_s(M13) == pytest.approx(0.8e-4)
    # the placement estimate pays the overheads too: without them it can only be higher
    (cell, *_) = cfg.cells()
    free = ExperimentConfig.model_validate({**cfg.model_dump(), "overhead": {"dispatch_ms": 0, "decode_per_seq_ms": 0}})
    assert placement_for(free, cell, "muxserve").total_est_throughput >= placement_for(cfg, cell, "muxserve").total_est_throughput


def test_overhead_fit_recovers_a_known_gap_and_slope():
    rng = np.random.default_rng(3)
    rows = []
    t = 0.0
    for k in range(400):
        n = int(rng.integers(1, 33))
        pred = 0.01 + 0.0002 * n
        meas = pred + 0.00015 * n + rng.normal(0, 2e-4)
        rows.append(("llm-0", "llama-7b", "decode", n, t, t + meas, meas, pred))
        t += meas + 0.0007 + abs(rng.normal(0, 5e-5))
    jobs = pd.DataFrame(rows, columns=["llm", "model", "kind", "n_seqs", "submitted_s", "ended_s", "measured_s",
                                       "predicted_s"])
    fitted, report = fit_overhead(jobs)
    assert fitted.dispatch_s == pytest.approx(0.00074, abs=5e-5)
    assert fitted.per_seq_s(M7) == pytest.approx(0.00015, rel=0.1)
    assert set(report.model) == {"llama-7b", "dispatch"}


# ---- metrics as MuxServe reports them, and both SLO bases ---------------------------------------
def test_total_and_rate_weighted_throughput():
    rows = []
    for llm, rate, n, last in (("llm-0", 4.0, 40, 10.0), ("llm-1", 1.0, 5, 5.0)):
        for k in range(n):
            rows.append(("c", "s", llm, "llama-7b", 0.0, 0.1, last * (k + 1) / n, 10, 10, 0, True, 1.0))
    df = pd.DataFrame(rows, columns=["cell", "strategy", "llm", "model", "arrival_s", "first_token_s", "finish_s",
                                     "prompt_tokens", "output_tokens", "preemptions", "finished", "slo_base_s"])
    s = metrics.summarize(df, [8], 8)
    facts = pd.DataFrame({"cell": "c", "strategy": "s", "llm": ["llm-0", "llm-1", "llm-2"],
                          "offered_rate_rps": [4.0, 1.0, 0.5], "estimated_throughput_rps": [3.0, 1.0, 0.5]})
    out = metrics.add_serving_columns(s, facts, n_llms=3, slo_base="alone").set_index("llm")
    assert out.loc["llm-0", "throughput_rps"] == pytest.approx(4.0) and out.loc["llm-1", "throughput_rps"] == pytest.approx(1.0)
    assert out.loc["all", "total_throughput_rps"] == pytest.approx(5.0)
    assert out.loc["all", "weighted_throughput_rps"] == pytest.approx((4 * 4 + 1 * 1) / 3)
    assert out.loc["all", "offered_rate_rps"] == pytest.approx(5.0)  # LLMs with requests
    assert out.loc["all", "estimated_throughput_rps"] == pytest.approx(4.0)
    assert math.isnan(out.loc["llm-0", "total_throughput_rps"])
    assert (out["slo_base"] == "alone").all()


def test_reference_slo_base_by_hand():
    c = LAT.curve(M30, 4, GPU)  # 30B: the reference's baseline is 4 GPUs
    dec = np.mean([c.decode_s(1, n, 100.0) for n in (32, 64, 128, 256, 512)])
    p64, p128, p512 = (c.prefill_s(n, 1, 100.0) for n in (64, 128, 512))
    got = reference_slo_base(c, np.array([96, 10, 1024]), np.array([50, 3, 7]))
    assert got[0] == pytest.approx((p64 + p128) / 2 + 50 * dec)
    assert got[1] == pytest.approx(c.prefill_s(32, 1, 100.0) + 3 * dec)
    assert got[2] == pytest.approx(2 * p512 + 7 * dec)


@pytest.mark.parametrize("base", ["alone", "reference"])
def test_slo_base_setting_picks_the_base_and_both_are_reported(base):
    cfg = _small(duration_s=15, popularity={"alpha": 1.7, "max_rate": 8})
    cfg = ExperimentConfig.model_validate({**cfg.model_dump(), "slo": {"scales": [8], "goodput_scale": 8, "base": base}})
    plans, runs = run_experiment(cfg)
    req = runs[0].requests
    assert (req["slo_base_s"] == req[f"slo_base_{base}_s"]).all()
    # 7B and 13B: the smallest mesh and the reference baseline are both 1 GPU, but the two
    # bases average decode differently
    assert not np.allclose(req["slo_base_alone_s"], req["slo_base_reference_s"])
    s = metrics.summarize(req, [8], 8)
    all_row = s[s.llm == "all"].iloc[0]
    assert all_row["slo_attainment@8"] == all_row[f"slo_attainment_{base}@8"]
    assert {"slo_attainment_alone@8", "slo_attainment_reference@8"} <= set(s.columns)


@pytest.mark.skipif(not (SHARED / "profiles" / "muxserve_llama_a100_80g.json").is_file(),
                    reason="needs ../shared/data (absent on a fresh clone)")
def test_reference_base_on_the_fit_is_close_to_the_base_on_the_raw_profile():
    """The reference analysis reads the raw profile; muxsim reads the curves fitted to it (the
    profile is not shipped). Both bases agree within the fit's error."""
    import json

    prof = json.loads((SHARED / "profiles" / "muxserve_llama_a100_80g.json").read_text())
    lengths = [32, 64, 128, 256, 512]
    for model, gpus in ((M7, 1), (M13, 1), (M30, 4), (get_model("llama-65b"), 8)):
        table = prof[model.profile_name][str(gpus)]["100"]["1"]
        dec = np.mean([table[str(n)]["decoding"] for n in lengths]) / 1e3
        pf = [table[str(n)]["prefill"] / 1e3 for n in lengths]
        prompt = np.array([40, 161, 400, 900])
        raw = np.where(prompt > 512, pf[-1] * prompt / 512, np.interp(prompt, lengths, pf)) + 337 * dec
        got = reference_slo_base(LAT.curve(model, gpus, GPU), prompt, np.full(4, 337))
        assert np.allclose(got, raw, rtol=0.08), (model.name, got, raw)


def test_strategy_registry_names_every_strategy_once():
    assert set(STRATEGIES) >= {"muxserve", "spatial", "temporal", "roundrobin", "muxserve+sim"}
    for name, s in STRATEGIES.items():
        assert s.name == name and s.placement in ("muxserve", "spatial", "simulated") and s.description
    cfg = _small()
    with pytest.raises(ValueError, match="unknown strategy 'rr'; allowed: muxserve"):
        ExperimentConfig.model_validate({**cfg.model_dump(), "strategies": ["rr"]})


def test_a_strategy_added_to_the_registry_runs_end_to_end(monkeypatch):
    """Adding a strategy is one entry in muxsim.core.strategies.STRATEGIES: config validation,
    the placement kinds and the simulation all read it from there."""
    from muxsim.core import strategies

    base = strategies.STRATEGIES["roundrobin"]
    new = strategies.Strategy("rr-copy", base.placement, base.make, "a copy of roundrobin, for this test")
    monkeypatch.setitem(strategies.STRATEGIES, "rr-copy", new)
    cfg = _small()
    cfg = ExperimentConfig.model_validate({**cfg.model_dump(), "strategies": ["roundrobin", "rr-copy"]})
    plans, runs = run_experiment(cfg)
    assert [r.strategy for r in runs] == ["roundrobin", "rr-copy"] * len(plans)
    for a, b in zip(runs[::2], runs[1::2]):
        pd.testing.assert_frame_equal(a.requests.drop(columns="strategy"), b.requests.drop(columns="strategy"))
