"""Machine-speed probes and speed-scaled latency models (muxsim.live.speed), core pinning."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from muxsim.catalog import get_gpu, get_model
from muxsim.config import load_config
from muxsim.core.replay import RunSpec
from muxsim.experiment import cell_workload, placement_for, seq_tokens
from muxsim.experiment.validation import pinned_cores
from muxsim.live.speed import (
    ScaledCurve,
    ScaledLatency,
    SpeedFactors,
    SpeedTrace,
    probe_speed,
)
from muxsim.perf import get_latency_model
from muxsim.sim.driver import simulate as _simulate

ROOT = Path(__file__).resolve().parents[1]
CPU = get_gpu("cpu-core")


def test_speed_factors_combine_and_drift():
    a = SpeedFactors({"x": 1.0, "y": 2.0}, {"x": 1.0, "y": 0.5})
    b = SpeedFactors({"x": 4.0, "y": 2.0}, {"x": 1.21, "y": 0.5})
    c = a.combined(b)
    assert c.prefill == {"x": 2.0, "y": 2.0}
    assert math.isclose(c.decode["x"], 1.1) and c.decode["y"] == 0.5
    assert math.isclose(a.drift(b), 3.0)  # x's prefill went from 1.0 to 4.0
    assert a.drift(a) == 0.0
    assert a.as_dict() == {"prefill": {"x": 1.0, "y": 2.0}, "decode": {"x": 1.0, "y": 0.5}}
    with pytest.raises(ValueError, match="different LLMs"):
        a.combined(SpeedFactors({"x": 1.0}, {"x": 1.0}))


def test_scaled_curve_and_model():
    base = get_latency_model("a100-80gb")
    m7, m13 = get_model("llama-7b"), get_model("llama-13b")
    c = base.curve(m7, 1, get_gpu("a100-80gb"))
    s = ScaledCurve(c, 1.5, 0.8)
    assert s.prefill_s(512, 4, 60) == pytest.approx(1.5 * c.prefill_s(512, 4, 60))
    assert s.decode_s(8, 4096, 60) == pytest.approx(0.8 * c.decode_s(8, 4096, 60))
    assert (s.model, s.n_gpus, s.gpu) == (c.model, c.n_gpus, c.gpu)
    assert s.source == f"{c.source}*speed"
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite and > 0"):
            ScaledCurve(c, bad, 1.0)
    factors = SpeedFactors({"a": 1.0, "b": 4.0, "c": 2.0}, {"a": 1.0, "b": 1.0, "c": 0.5})
    per = ScaledLatency.per_model(factors, {"a": "llama-7b", "b": "llama-7b", "c": "llama-13b"})
    assert per == {"llama-7b": (2.0, 1.0), "llama-13b": (2.0, 0.5)}
    lat = ScaledLatency(base, {"llama-7b": (2.0, 1.0)})
    gpu = get_gpu("a100-80gb")
    assert lat.curve(m7, 1, gpu).prefill_s(100, 1, 100) == pytest.approx(2 * c.prefill_s(100, 1, 100))
    # a model without factors keeps its curve
    assert lat.curve(m13, 1, gpu).decode_s(4, 400, 50) == base.curve(m13, 1, gpu).decode_s(4, 400, 50)


def simulate(*args, speed=None, **kw):
    """:func:`muxsim.sim.driver.simulate` of ``RunSpec(*args, **kw)``."""
    return _simulate(RunSpec(*args, **kw), speed=speed)


def _validate_cpu_args():
    cfg = load_config(ROOT / "experiments" / "validate_cpu.yaml")
    cell = cfg.cells()[0]
    latency = get_latency_model("cpu-core")
    placement = placement_for(cfg, cell, "muxserve", latency)
    names, models = cfg.llm_names(), [get_model(m) for m in cfg.llm_models()]
    return cfg, latency, (placement, "muxserve", cell_workload(cfg, cell, 0), names, models, cell.rates, CPU)


def test_slo_latency_keeps_the_slo_while_durations_scale():
    cfg, latency, args = _validate_cpu_args()
    models = args[4]
    slow = ScaledLatency(latency, {m.name: (1.3, 1.3) for m in models})
    base = simulate(*args, latency, cfg.scheduler, seq_tokens(cfg)).requests
    scaled = simulate(*args, slow, cfg.scheduler, seq_tokens(cfg), slo_latency=latency).requests
    own = simulate(*args, slow, cfg.scheduler, seq_tokens(cfg)).requests
    np.testing.assert_array_equal(scaled.slo_base_s, base.slo_base_s)
    assert np.allclose(own.slo_base_s, 1.3 * base.slo_base_s)
    lat_base = (base.finish_s - base.arrival_s).median()
    lat_scaled = (scaled.finish_s - scaled.arrival_s).median()
    assert lat_scaled > 1.2 * lat_base


def test_speed_hook_scales_job_durations():
    cfg, latency, args = _validate_cpu_args()
    run = lambda lat, **kw: simulate(*args, lat, cfg.scheduler, seq_tokens(cfg), slo_latency=latency, **kw).requests
    base = run(latency)
    pd.testing.assert_frame_equal(run(latency, speed=lambda llm, t: 1.0), base)
    slow = ScaledLatency(latency, {m.name: (1.3, 1.3) for m in args[4]})
    pd.testing.assert_frame_equal(run(latency, speed=lambda llm, t: 1.3), run(slow))
    # a device that slows down at t = 8 s: everything finished before then is untouched,
    # what runs after takes longer
    late = run(latency, speed=lambda llm, t: 1.0 if t < 8.0 else 1.5)
    early = base.finish_s < 8.0
    assert early.sum() > 10
    np.testing.assert_array_equal(late.finish_s[early], base.finish_s[early])
    after = base.arrival_s > 9.0
    assert ((late.finish_s - late.arrival_s)[after].median()
            > 1.2 * (base.finish_s - base.arrival_s)[after].median())


def test_speed_trace_reads_the_jobs():
    jobs = pd.DataFrame({
        "llm": ["a", "a", "a", "a", "b"],
        "submitted_s": [0.1, 0.1115, 0.5, 2.5, 0.2],
        "ended_s": [0.111, 0.122, 0.51, 2.52, 0.21],
        "measured_s": [0.010, 0.010, 0.010, 0.020, 0.010],
        "predicted_s": [0.010, 0.010, 0.0105, 0.010, 0.005]})
    tr = SpeedTrace(jobs, window_s=2.0)
    # only 0.111 -> 0.1115 is back to back (the 0.378-s pause is not dispatch)
    assert tr.dispatch_gap_s == pytest.approx(0.0005)
    assert tr("a", 1.9) == pytest.approx(np.median([0.0105 / 0.010, 0.0105 / 0.010, 0.0105 / 0.0105]))
    assert tr("a", 2.0) == pytest.approx(0.0205 / 0.010)
    assert tr("a", 7.0) == pytest.approx(tr.overall["a"])  # no jobs then: the run's median
    assert tr("b", 0.0) == pytest.approx(0.0105 / 0.005)
    assert tr("nobody", 1.0) == 1.0
    d = tr.as_dict()
    assert d["window_s"] == 2.0 and d["range"]["a"] == [pytest.approx(1.05), pytest.approx(2.05)]
    with pytest.raises(ValueError, match="window_s"):
        SpeedTrace(jobs, window_s=0)
    with pytest.raises(ValueError, match="predicted_s"):
        SpeedTrace(jobs.assign(predicted_s=0.0))
    with pytest.raises(ValueError, match="lacks columns"):
        SpeedTrace(jobs.drop(columns="ended_s"))


def test_pinned_cores():
    assert pinned_cores(3, 1, "cpu", False) == [None] * 3
    assert pinned_cores(2, 1, "cuda:0", True) == [None, None]
    import os

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("this OS cannot pin processes to cores")
    allowed = sorted(os.sched_getaffinity(0))
    cores = pinned_cores(len(allowed) + 1, 1, "cpu", True)
    assert [c[0] for c in cores] == allowed + allowed[:1]  # round robin
    two = pinned_cores(2, 2, "cpu", True)
    assert all(len(c) == 2 and set(c) <= set(allowed) for c in two)


def test_probe_speed_on_a_real_engine():
    pytest.importorskip("torch", reason="the live engine needs the 'live' extra (torch)")
    pytest.importorskip("transformers", reason="the live engine needs the 'live' extra (transformers)")
    from muxsim.live.engine import Partition
    from muxsim.live.transformers import TransformersEngine

    # a roofline curve of a nominal core: the factors say how far this machine is from it
    curve = get_latency_model("cpu-core").curve(get_model("llama-tiny-s"), 1, CPU)
    with TransformersEngine() as eng:
        for n in ("a", "b"):
            eng.load(n, get_model("llama-tiny-s"), Partition(), seed=0)
        with pytest.raises(ValueError, match="points"):
            probe_speed(eng, {"a": curve}, points=[(0, 4)])
        alone = probe_speed(eng, {"a": curve, "b": curve}, points=[(2, 16)], warmup=1, repeats=2)
        both = probe_speed(eng, {"a": curve, "b": curve}, points=[(2, 16)], warmup=1, repeats=2,
                           concurrent=True)
        for f in (alone, both):
            assert set(f.prefill) == set(f.decode) == {"a", "b"}
            assert all(math.isfinite(v) and v > 0 for v in [*f.prefill.values(), *f.decode.values()])
        # reference jobs leave nothing behind: a workload request id is still free
        j = eng.submit_prefill("a", [(0, 8)])
        assert any(r.job_id == j for r in eng.wait(30.0))
        eng.release("a", [0])
