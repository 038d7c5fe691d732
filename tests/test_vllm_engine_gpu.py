"""The vLLM engine on real vLLM and a CUDA GPU: tiny Llama models with random (dummy) weights.

vLLM from PyPI runs on CUDA GPUs only, so this module skips, with the reason, where vllm is not
installed (``pip install -e '.[vllm]'``) or no CUDA GPU is visible; nothing here pretends to run
elsewhere. The same engine logic over a stand-in for vLLM runs everywhere in
``tests/test_vllm_engine.py``.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

vllm = pytest.importorskip("vllm", reason="the vllm engine needs the 'vllm' extra and a CUDA GPU")
torch = pytest.importorskip("torch", reason="the vllm engine needs the 'vllm' extra and a CUDA GPU")
if not torch.cuda.is_available():
    pytest.skip("the vllm engine needs a CUDA GPU (torch.cuda.is_available() is False)",
                allow_module_level=True)

from muxsim.catalog import get_gpu, get_model
from muxsim.live.engine import EngineError, Partition
from muxsim.live.vllm import VLLMEngine

TINY = get_model("llama-tiny-s")
ROOT = Path(__file__).resolve().parents[1]


def part(**kw) -> Partition:
    # a small share each: several engines (and other users) fit on the GPU
    return Partition(device="cuda:0", **{"memory_fraction": 0.08, **kw})


@pytest.fixture(scope="module")
def engine():
    eng = VLLMEngine(load_timeout_s=900)
    yield eng
    eng.close()


def wait_for(engine, job_ids, timeout=120.0):
    got = []
    while len(got) < len(job_ids):
        res = engine.wait(timeout)
        assert res, f"no result within {timeout} s"
        got += res
    assert sorted(r.job_id for r in got) == sorted(job_ids)
    return {r.job_id: r for r in got}


def test_load_builds_a_vllm_engine_on_the_partition(engine):
    engine.load("tiny", TINY, part(sm_pct=50), seed=0)
    info = engine.worker_info("tiny")
    assert info["vllm"] == vllm.__version__
    assert info["num_gpu_blocks"] and info["num_gpu_blocks"] > 0 and info["block_size"] > 0
    assert info["max_model_len"] == 4096 and info["gpu_memory_utilization"] == 0.08
    assert info["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "50"  # in effect only under an MPS daemon
    assert "bfloat16" in info["dtype"]


def test_jobs_prefill_decode_subsets_and_release(engine):
    if "tiny" not in engine._workers:
        engine.load("tiny", TINY, part(), seed=0)
    res = wait_for(engine, [engine.submit_prefill("tiny", [(1, 17), (2, 40)])])
    (r,) = res.values()
    assert r.kind == "prefill" and r.llm == "tiny" and 0 < r.duration_s <= r.ended_s - r.started_s + 1e-3
    wait_for(engine, [engine.submit_decode("tiny", [1, 2]) for _ in range(3)])
    # a decode of a subset, and a prefill while others hold KV caches: each job runs only its
    # own requests (the worker fails the job if vLLM advanced any other)
    wait_for(engine, [engine.submit_decode("tiny", [2]), engine.submit_prefill("tiny", [(3, 5)]),
                      engine.submit_decode("tiny", [3, 1, 2])])
    engine.release("tiny", [1])
    bad = engine.submit_decode("tiny", [1])
    with pytest.raises(EngineError, match=rf"tiny: job {bad} \(decode\) failed: KeyError: unknown request id 1"):
        while True:
            engine.wait(60.0)
    wait_for(engine, [engine.submit_prefill("tiny", [(1, 9)]), engine.submit_decode("tiny", [1, 2, 3])])
    engine.release("tiny", [1, 2, 3])


def test_measure_times_prefill_and_decode(engine):
    if "tiny" not in engine._workers:
        engine.load("tiny", TINY, part(), seed=0)
    small_p, small_d = engine.measure("tiny", 1, 16, warmup=2, repeats=5)
    big_p, big_d = engine.measure("tiny", 16, 256, warmup=2, repeats=5)
    assert len(small_p) == len(small_d) == len(big_p) == len(big_d) == 5
    assert min(small_p + small_d + big_p + big_d) > 0 and max(big_p) < 5.0
    # 4096 prompt tokens cost more than 16 (a loose check: a tiny model is mostly overhead)
    assert statistics.median(big_p) > statistics.median(small_p)


def test_calibration_sweep(tmp_path):
    from muxsim.live.calibrate import run_calibration
    from muxsim.perf.table import calibration_to_profile

    out = tmp_path / "cal.parquet"
    table = run_calibration(lambda: VLLMEngine(load_timeout_s=900), ["llama-tiny-s"], 1, [100],
                            [1, 4], [16, 64], out, warmup=1, repeats=3, engine_name="vllm",
                            device="cuda:0", timing="round-trip")
    assert len(table) == 8 and set(table.engine) == {"vllm/round-trip"}
    assert len(calibration_to_profile(table)) == 4


def test_live_driver_two_llms_on_one_gpu(engine):
    from muxsim.config import load_config
    from muxsim.core.replay import RunSpec
    from muxsim.experiment import cell_workload, placement_for, seq_tokens
    from muxsim.live.driver import run_live
    from muxsim.perf import get_latency_model

    base = load_config(ROOT / "experiments" / "validate_cpu.yaml")
    cfg = load_config(ROOT / "experiments" / "validate_cpu.yaml", {
        "cluster": {"nodes": 1, "gpus_per_node": 1, "gpu": "h100-80gb"},
        "llms": [{"model": "llama-tiny-s", "rate": 12.0}, {"model": "llama-tiny-s", "rate": 6.0}],
        "workload": {"duration_s": 4.0, "arrival": "poisson", "lengths": {"kind": "sharegpt", "scale": 0.1}},
        "scheduler": {**base.scheduler.model_dump(), "sm_units": 10, "sm_overload_units": 2,
                      "overlap_phases": True},
        "placement": [{"node": 0, "gpus": 1, "llms": ["llm-0", "llm-1"],
                       "sm": {"llm-0": [50, 40], "llm-1": [50, 40]}}],
    })
    names, models = cfg.llm_names(), [get_model(m) for m in cfg.llm_models()]
    for name in names:
        engine.load(name, get_model("llama-tiny-s"), part(), seed=0)
    cell = cfg.cells()[0]
    latency = get_latency_model(cfg.cluster.gpu)
    wl = cell_workload(cfg, cell, 0)
    spec = RunSpec(placement_for(cfg, cell, "muxserve", latency), "muxserve", wl, names, models,
                   cell.rates, get_gpu(cfg.cluster.gpu), latency, cfg.scheduler, seq_tokens(cfg),
                   drain_limit_s=60.0)
    res = run_live(spec, engine)
    assert len(res.requests) == len(wl) > 0
    assert res.requests["finish_s"].notna().all()
    assert set(res.jobs.kind) == {"prefill", "decode"} and (res.jobs.measured_s > 0).all()
