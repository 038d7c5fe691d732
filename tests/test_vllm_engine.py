"""The vLLM engine's logic, everywhere: no vLLM and no GPU needed.

vLLM from PyPI runs on CUDA GPUs only, so nothing here runs vLLM. What is tested:

- ``validate.engine_factory("vllm")`` without vLLM: a one-line ConfigError (skipped where vLLM
  is installed);
- the pure helpers that set a worker up (environment, EngineArgs keywords, dummy config,
  checkpoint check); the keywords are checked against vLLM's ``EngineArgs`` where vLLM is
  installed, else against the field names read from vLLM 0.33.0's source;
- :class:`StepRunner` (the job logic of a worker) and the engine's worker processes, over
  ``tests/_fake_vllm.py``, a stand-in that keeps vLLM's books without running a model;
- :class:`PhaseScheduler`'s filtering over a stand-in of vLLM's scheduler base class.

The same engine on real vLLM and a GPU: ``tests/test_vllm_engine_gpu.py``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

from muxsim.catalog import get_model
from muxsim.config import ConfigError
from muxsim.live.engine import EngineError, Partition
from muxsim.live.vllm import (
    DEFAULT_MEMORY_FRACTION,
    PHASE_SCHEDULER,
    STEP_FILTER,
    VLLM_VERSION_READ,
    StepRunner,
    VLLMEngine,
    check_checkpoint_shape,
    cuda_index,
    engine_args,
    worker_env,
    write_dummy_config,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the stand-in, for spawned workers too
import _fake_vllm

TINY = get_model("llama-tiny-s")
HAVE_VLLM = importlib.util.find_spec("vllm") is not None
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="prompt token ids come from torch (the 'live' extra)")
needs_live = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None,
    reason="workers write the model config with transformers and draw prompts with torch "
           "(the 'live' extra)")

#: EngineArgs fields the engine sets, as named in vLLM 0.33.0's vllm/engine/arg_utils.py.
ENGINE_ARGS_FIELDS_0_33 = {
    "model", "skip_tokenizer_init", "load_format", "dtype", "seed", "max_model_len",
    "gpu_memory_utilization", "enforce_eager", "enable_chunked_prefill", "enable_prefix_caching",
    "async_scheduling", "scheduler_cls", "max_num_seqs", "tensor_parallel_size", "disable_log_stats",
}


# ---------------------------------------------------------------- the factory without vLLM


@pytest.mark.skipif(HAVE_VLLM, reason="vllm is installed here: the missing-extra error cannot occur")
def test_engine_factory_without_vllm_is_a_one_line_config_error():
    from muxsim.experiment.validation import engine_factory

    with pytest.raises(ConfigError) as err:
        engine_factory("vllm")
    msg = str(err.value)
    assert "\n" not in msg
    assert "'vllm' extra" in msg and "pip install -e '.[vllm]'" in msg and "CUDA" in msg
    with pytest.raises(ConfigError, match="unknown live.engine 'tgi'"):
        engine_factory("tgi")


@pytest.mark.skipif(HAVE_VLLM, reason="vllm is installed here: the missing-extra error cannot occur")
def test_calibrate_run_with_vllm_missing_says_so_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from muxsim.cli import app

    out = tmp_path / "cal.parquet"
    res = CliRunner().invoke(app, ["calibrate", "run", "--engine", "vllm", "--model", "llama-tiny-s",
                                   "--device", "cuda:0", "--out", str(out)])
    assert res.exit_code == 2
    err = " ".join(res.stderr.split())
    assert err.startswith("error:") and "pip install -e '.[vllm]'" in err and "Traceback" not in err
    assert not out.exists()


# ---------------------------------------------------------------- pure helpers


def test_cuda_index_and_worker_environment():
    assert cuda_index("cuda") is None and cuda_index("cuda:3") == 3
    with pytest.raises(ValueError, match="CUDA GPUs only"):
        cuda_index("cpu")

    env = worker_env(Partition(device="cuda:1", sm_pct=37.6), {"CUDA_VISIBLE_DEVICES": "4, 5"})
    assert env["CUDA_VISIBLE_DEVICES"] == "5"  # the parent's second visible GPU
    assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "38"
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1"

    env = worker_env(Partition(device="cuda", sm_pct=None), {"VLLM_LOGGING_LEVEL": "DEBUG"})
    assert "CUDA_VISIBLE_DEVICES" not in env and "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in env
    assert "VLLM_LOGGING_LEVEL" not in env  # the user's setting stays
    assert worker_env(Partition(device="cuda:2"), {})["CUDA_VISIBLE_DEVICES"] == "2"
    assert worker_env(Partition(device="cuda", sm_pct=0.3), {})["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "1"

    with pytest.raises(ValueError, match="only 2 GPU"):
        worker_env(Partition(device="cuda:2"), {"CUDA_VISIBLE_DEVICES": "0,1"})
    for bad in (0.0, 101.0, float("nan")):
        with pytest.raises(ValueError, match="sm_pct"):
            worker_env(Partition(device="cuda", sm_pct=bad), {})
    with pytest.raises(ValueError, match="CUDA GPUs only"):
        worker_env(Partition(device="cpu"), {})


def test_engine_args_match_vllm():
    kw = engine_args(Partition(device="cuda:0", memory_fraction=0.3), "/m", dummy=True, seed=7,
                     max_model_len=1024)
    assert kw["model"] == "/m" and kw["load_format"] == "dummy" and kw["skip_tokenizer_init"]
    assert kw["gpu_memory_utilization"] == 0.3  # the partition's share wins
    assert kw["seed"] == 7 and kw["max_model_len"] == 1024
    assert kw["enable_chunked_prefill"] is False and kw["enable_prefix_caching"] is False
    assert kw["async_scheduling"] is False and kw["scheduler_cls"] == PHASE_SCHEDULER
    assert kw["dtype"] == "bfloat16" and kw["tensor_parallel_size"] == 1
    kw = engine_args(Partition(device="cuda"), "/ckpt", dummy=False)
    assert kw["load_format"] == "auto" and kw["max_model_len"] is None
    assert kw["gpu_memory_utilization"] == DEFAULT_MEMORY_FRACTION
    if HAVE_VLLM:
        import dataclasses

        from vllm.engine.arg_utils import EngineArgs

        assert set(kw) <= {f.name for f in dataclasses.fields(EngineArgs)}
    else:
        assert set(kw) == ENGINE_ARGS_FIELDS_0_33 and VLLM_VERSION_READ == "0.33.0"
    for part in (Partition(device="cuda", memory_fraction=0.0),
                 Partition(device="cuda", memory_fraction=1.5)):
        with pytest.raises(ValueError, match="memory fraction"):
            engine_args(part, "/m", dummy=True)
    with pytest.raises(ValueError, match="max_model_len"):
        engine_args(Partition(device="cuda"), "/m", dummy=True, max_model_len=1)
    with pytest.raises(ValueError, match="memory fraction"):
        VLLMEngine(memory_fraction=2.0)
    with pytest.raises(ValueError, match="dtype"):
        VLLMEngine(dtype="float32")


def test_dummy_config_has_the_catalog_shape(tmp_path):
    transformers = pytest.importorskip("transformers", reason="the config is written by transformers")
    path = write_dummy_config(TINY, str(tmp_path / "tiny"), 1536)
    cfg = transformers.LlamaConfig.from_pretrained(tmp_path / "tiny")
    raw = json.loads(Path(path).read_text())
    assert raw["architectures"] == ["LlamaForCausalLM"] and raw["model_type"] == "llama"
    assert cfg.max_position_embeddings == 1536
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.intermediate_size, cfg.vocab_size) == (TINY.n_layers, TINY.hidden_size, TINY.n_heads,
                                                       TINY.n_kv_heads, TINY.intermediate_size,
                                                       TINY.vocab_size)
    assert cfg.tie_word_embeddings is False
    check_checkpoint_shape(TINY, str(tmp_path / "tiny"))
    with pytest.raises(ValueError, match="is not llama-tiny-m: num_hidden_layers 4 != 8"):
        check_checkpoint_shape(get_model("llama-tiny-m"), str(tmp_path / "tiny"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        check_checkpoint_shape(TINY, str(tmp_path / "nothing"))


# ---------------------------------------------------------------- StepRunner over the stand-in


def runner(**kw):
    opts = {k: kw.pop(k) for k in ("max_num_seqs",) if k in kw}
    backend = _fake_vllm.FakeBackend({"max_model_len": kw.pop("max_model_len", 256)}, **kw)
    return StepRunner(backend, TINY.vocab_size, seed=0, **opts), backend


@needs_torch
def test_jobs_run_only_their_own_requests():
    r, fake = runner()
    started, ended, dur = r.prefill([(1, 5), (2, 9)])
    assert 0 < dur <= ended - started
    assert fake.log[-1] == {"1": 5, "2": 9}  # one step, both prompts, nothing else
    r.decode([1, 2])
    assert fake.log[-1] == {"1": 1, "2": 1}
    r.prefill([(3, 4)])  # 1 and 2 are running: they wait, with their KV cache
    assert fake.log[-1] == {"3": 4}
    r.decode([2])  # a subset: 1 and 3 wait
    assert fake.log[-1] == {"2": 1}
    r.decode([3, 1])
    assert fake.log[-1] == {"3": 1, "1": 1}
    assert [r.context_tokens(i) for i in (1, 2, 3)] == [5 + 3, 9 + 3, 4 + 2]
    assert STEP_FILTER.allowed is None  # reset after every job

    r.release([1, 1, 99])  # idempotent, unknown ids ignored
    assert 1 not in r and "1" not in fake.reqs and len(r) == 2
    r.prefill([(1, 7)])  # a released id comes back (e.g. recomputed after preemption)
    assert fake.log[-1] == {"1": 7}

    with pytest.raises(KeyError, match="unknown request id 9"):
        r.decode([1, 9])
    with pytest.raises(ValueError, match="repeat"):
        r.decode([2, 2])
    with pytest.raises(ValueError, match="already prefilled"):
        r.prefill([(2, 3)])
    with pytest.raises(ValueError, match="max_model_len 256"):
        r.prefill([(5, 256)])
    with pytest.raises(ValueError, match=">= 1"):
        r.prefill([(5, 0)])
    assert set(fake.reqs) == {"1", "2", "3"}  # failed jobs changed nothing
    # Prompts beyond vLLM's token budget per step: the prefill takes several steps, and the
    # requests admitted first are not decoded by the later ones.
    r, fake = runner(budget=20)
    r.prefill([(1, 12), (2, 12), (3, 12)])
    assert fake.log == [{"1": 12}, {"2": 12}, {"3": 12}]
    assert [r.context_tokens(i) for i in (1, 2, 3)] == [13, 13, 13]
    small, _ = runner(max_num_seqs=2)
    small.prefill([(1, 3)])
    with pytest.raises(ValueError, match="exceed max_num_seqs 2"):
        small.prefill([(2, 3), (3, 3)])


@needs_torch
def test_runner_reports_what_vllm_could_not_do():
    # A full KV cache: the prompt is never admitted; the job fails and leaves nothing behind.
    r, fake = runner(kv_tokens=20)
    r.prefill([(1, 8), (2, 8)])
    with pytest.raises(RuntimeError, match=r"admitted 0 of 1 prompts .* larger memory fraction"):
        r.prefill([(3, 10)])
    assert set(fake.reqs) == {"1", "2"}
    # Decoding past the capacity: vLLM preempts the newest request; the job fails and drops it.
    r.decode([1, 2])  # 18 tokens of 20
    r.decode([1, 2])  # 20
    with pytest.raises(RuntimeError, match=r"did not schedule every request.*dropped"):
        r.decode([1, 2])
    assert 2 not in r and set(fake.reqs) == {"1"}

    # A scheduler that runs every running request (vLLM's own): caught at the first mixed step.
    r, fake = runner(obey_filter=False)
    r.prefill([(1, 4)])
    with pytest.raises(RuntimeError, match="outside the step.*not in effect"):
        r.prefill([(2, 4)])
    r, _ = runner(consult=False)
    with pytest.raises(RuntimeError, match="did not consult the phase scheduler"):
        r.prefill([(1, 4)])

    # A request vLLM ends at max_model_len cannot be decoded again.
    r, fake = runner(max_model_len=8)
    r.prefill([(1, 5)])  # max_tokens = 3: ends at the second decode
    r.decode([1])
    r.decode([1])
    assert "1" not in fake.reqs
    with pytest.raises(ValueError, match="ended by vLLM at max_model_len 8"):
        r.decode([1])
    r.release([1])
    assert len(r) == 0


# ---------------------------------------------------------------- PhaseScheduler's filter


class _StandInScheduler:
    """vLLM's Scheduler as PhaseScheduler sees it: a ``running`` list that ``schedule()`` runs
    whole, appending admitted waiting requests."""

    def __init__(self, running, waiting):
        self.running, self.waiting = list(running), list(waiting)
        self.batches = []

    def schedule(self, throttle_prefills=False):
        batch = [r.request_id for r in self.running] + [r.request_id for r in self.waiting]
        self.running += self.waiting
        self.waiting = []
        self.batches.append(batch)
        return batch


def test_phase_scheduler_schedules_only_the_job(monkeypatch):
    fake = types.ModuleType("vllm.v1.core.sched.scheduler")
    fake.Scheduler = _StandInScheduler
    for name in ("vllm", "vllm.v1", "vllm.v1.core", "vllm.v1.core.sched"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "vllm.v1.core.sched.scheduler", fake)
    monkeypatch.delitem(sys.modules, "muxsim.live.vllm.scheduler", raising=False)
    import muxsim.live.vllm.scheduler as mod

    monkeypatch.delitem(sys.modules, "muxsim.live.vllm.scheduler")  # the real one next time
    assert f"{mod.__name__}.{mod.PhaseScheduler.__name__}" == PHASE_SCHEDULER
    reqs = {k: types.SimpleNamespace(request_id=k) for k in "abcde"}
    s = mod.PhaseScheduler([reqs["a"], reqs["b"], reqs["c"]], [reqs["d"]])
    before = STEP_FILTER.consulted
    monkeypatch.setattr(STEP_FILTER, "allowed", frozenset({"d"}))  # a prefill job
    assert s.schedule() == ["d"]
    assert [r.request_id for r in s.running] == ["a", "b", "c", "d"]  # held ones kept, in order
    monkeypatch.setattr(STEP_FILTER, "allowed", frozenset({"c", "a"}))  # a decode of a subset
    assert s.schedule() == ["a", "c"]
    assert [r.request_id for r in s.running] == ["a", "b", "c", "d"]
    monkeypatch.setattr(STEP_FILTER, "allowed", None)  # vLLM's own choice
    assert s.schedule() == ["a", "b", "c", "d"]
    assert STEP_FILTER.consulted == before + 3


# ---------------------------------------------------------------- the engine's processes


FAKE = "_fake_vllm:make"


def test_load_refuses_a_cpu_partition_before_starting_a_worker():
    with VLLMEngine(backend=FAKE) as eng:
        with pytest.raises(EngineError, match="llm-0: the vllm engine runs on CUDA GPUs only"):
            eng.load("llm-0", TINY, Partition(device="cpu"))
        with pytest.raises(EngineError, match="memory fraction"):
            eng.load("llm-0", TINY, Partition(device="cuda", memory_fraction=3.0))
        assert eng.worker_pids() == []


@pytest.fixture(scope="module")
def engine():
    eng = VLLMEngine(backend=FAKE, load_timeout_s=120)
    yield eng
    eng.close()


@needs_live
def test_workers_get_their_partition_and_run_jobs(engine):
    # the names of the driver test's LLMs: it reuses these workers
    engine.load("llm-0", TINY, Partition(device="cuda:0", sm_pct=40), seed=0)
    engine.load("llm-1", TINY, Partition(device="cuda:0", sm_pct=60, memory_fraction=0.5), seed=1)
    info = engine.worker_info("llm-0")
    assert info["fake"] and info["env"]["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "40"
    assert info["env"]["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert info["env"]["CUDA_VISIBLE_DEVICES"] is not None
    assert info["kwargs"]["load_format"] == "dummy" and info["kwargs"]["max_model_len"] == 4096
    assert info["kwargs"]["gpu_memory_utilization"] == DEFAULT_MEMORY_FRACTION
    assert engine.worker_info("llm-1")["kwargs"]["gpu_memory_utilization"] == 0.5
    assert engine.worker_info("llm-1")["env"]["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "60"

    a, b = "llm-0", "llm-1"
    jobs = [engine.submit_prefill(a, [(1, 12), (2, 30)]), engine.submit_prefill(b, [(1, 5)]),
            engine.submit_decode(a, [1, 2]), engine.submit_decode(b, [1]),
            engine.submit_decode(a, [2])]
    got = []
    while len(got) < len(jobs):
        got += engine.wait(30.0)
    assert sorted(r.job_id for r in got) == jobs
    kinds = {r.job_id: (r.llm, r.kind) for r in got}
    assert kinds[jobs[0]] == (a, "prefill") and kinds[jobs[4]] == (a, "decode")
    assert all(r.duration_s > 0 and r.started_s <= r.ended_s for r in got)
    engine.release(a, [1, 2])
    engine.release(b, [1])

    bad = engine.submit_decode(a, [1])
    with pytest.raises(EngineError, match=rf"llm-0: job {bad} \(decode\) failed: KeyError: unknown request id 1"):
        while True:
            engine.wait(30.0)

    prefill_s, decode_s = engine.measure(b, 4, 16, warmup=1, repeats=3)
    assert len(prefill_s) == len(decode_s) == 3 and min(prefill_s + decode_s) > 0


@needs_live
def test_load_failure_is_a_one_line_engine_error():
    with VLLMEngine(backend="_fake_vllm:make_failing", load_timeout_s=120) as eng:
        with pytest.raises(EngineError) as err:
            eng.load("x", TINY, Partition(device="cuda"))
        assert "\n" not in str(err.value)
        assert "x: cannot load llama-tiny-s with vLLM on cuda: RuntimeError: no CUDA GPU here" in str(err.value)
        assert eng.worker_pids() == []


@needs_live
def test_calibration_runs_on_the_engine(tmp_path):
    from muxsim.live.calibrate import run_calibration
    from muxsim.perf.table import read_calibration

    out = tmp_path / "cal.parquet"
    table = run_calibration(lambda: VLLMEngine(backend=FAKE, load_timeout_s=120), ["llama-tiny-s"], 1,
                            [50], [1, 2], [8], out, warmup=1, repeats=2, engine_name="vllm",
                            device="cuda:0")
    assert len(table) == 4 and set(table.engine) == {"vllm"} and set(table.sm_pct) == {50.0}
    assert len(read_calibration(out)) == 4


@needs_live
def test_live_driver_runs_two_llms(engine):
    """The live driver's contract (overlapping prefill and decode jobs of one LLM, decodes of
    subsets, releases, preemption recompute) on the engine's processes and job logic."""
    from muxsim.catalog import get_gpu
    from muxsim.config import load_config
    from muxsim.core.replay import RunSpec
    from muxsim.experiment import cell_workload, placement_for, seq_tokens
    from muxsim.live.driver import run_live
    from muxsim.perf import get_latency_model

    root = Path(__file__).resolve().parents[1]
    base = load_config(root / "experiments" / "validate_cpu.yaml")
    cfg = load_config(root / "experiments" / "validate_cpu.yaml", {
        "llms": [{"model": "llama-tiny-s", "rate": 12.0}, {"model": "llama-tiny-s", "rate": 6.0}],
        "workload": {"duration_s": 2.0, "arrival": "poisson", "lengths": {"kind": "sharegpt", "scale": 0.05}},
        # MuxServe's setting: an LLM's prefill and decode jobs overlap (the CPU miniature's
        # transformers workers cannot, vLLM's phase scheduler can)
        "scheduler": {**base.scheduler.model_dump(), "sm_units": 10, "sm_overload_units": 2,
                      "overlap_phases": True},
        "placement": [{"node": 0, "gpus": 2, "llms": ["llm-0", "llm-1"],
                       "sm": {"llm-0": [50, 40], "llm-1": [50, 40]}}],
    })
    names, models = cfg.llm_names(), [get_model(m) for m in cfg.llm_models()]
    for name in names:
        if name not in engine._workers:  # run alone: load them here
            engine.load(name, get_model("llama-tiny-s"), Partition(device="cuda:0"), seed=0)
    cell = cfg.cells()[0]
    latency = get_latency_model(cfg.cluster.gpu)
    wl = cell_workload(cfg, cell, 0)
    spec = RunSpec(placement_for(cfg, cell, "muxserve", latency), "muxserve", wl, names, models,
                   cell.rates, get_gpu(cfg.cluster.gpu), latency, cfg.scheduler, seq_tokens(cfg),
                   drain_limit_s=20.0)
    res = run_live(spec, engine)
    assert len(res.requests) == len(wl) > 0
    assert res.requests["finish_s"].notna().all()
    assert set(res.jobs.kind) == {"prefill", "decode"} and (res.jobs.measured_s > 0).all()
