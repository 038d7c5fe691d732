"""A real-engine backend on vLLM (extra ``vllm``): one vLLM engine per LLM, CUDA GPUs only.

Written against **vLLM 0.33.0** (read from its wheel; V1 engine). Only a CUDA machine can run
it: vLLM from PyPI does not run on CPU. What was executed where is said in the tests
(``tests/test_vllm_engine.py`` runs everywhere with a stand-in for vLLM;
``tests/test_vllm_engine_gpu.py`` needs vLLM and a GPU and skips, with the reason, otherwise).

Each LLM runs in its own worker process (``spawn`` context); the parent side (job ids, pipes,
:meth:`wait`, :meth:`measure`, errors, shutdown) is :class:`muxsim.live.workers.ProcessEngine`'s,
shared with the transformers engine; only the worker differs. A worker:

1. sets its environment before anything imports torch or vLLM (:func:`worker_env`):
   ``CUDA_VISIBLE_DEVICES`` to the partition's device, ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` to
   its SM share (read by the CUDA driver when the process creates its context; it only limits
   the process when an MPS control daemon runs for the GPU, otherwise the LLMs share the GPU by
   time slicing), ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (the engine core runs in the worker);
2. builds ``vllm.engine.llm_engine.LLMEngine.from_engine_args(EngineArgs(...))`` with the
   arguments of :func:`engine_args`: the partition's memory fraction as
   ``gpu_memory_utilization``, random weights (``load_format="dummy"``) over a config written
   from the catalog's :class:`~muxsim.catalog.ModelSpec` (:func:`write_dummy_config`) unless a
   local checkpoint folder is given, no tokenizer (prompts are token ids from
   :func:`muxsim.live.transformers.prompt_tokens`), chunked prefill, prefix caching and async
   scheduling off, greedy sampling that ignores EOS, and
   :class:`muxsim.live.vllm.scheduler.PhaseScheduler` as the scheduler;
3. runs jobs with ``add_request`` / ``step`` / ``abort_request``
   (:class:`muxsim.live.vllm.steps.StepRunner`, which also says how jobs are timed and kept to
   one phase).

KV memory. vLLM allocates KV blocks itself, from ``gpu_memory_utilization`` x device memory
minus the weights and activations. When the policy asks for more than that, vLLM preempts a
request or cannot admit one; the job then fails with an :class:`~muxsim.live.engine.EngineError`
saying so (give the LLM a larger memory fraction). A request that reaches ``max_model_len`` is
ended by vLLM; decoding it again is an error.

Errors from a worker come back as one-line :class:`~muxsim.live.engine.EngineError` messages
(the worker's exception type and message, cut at 1000 characters).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import multiprocessing.util
import os
import re
import shutil
import signal
import tempfile
from dataclasses import dataclass
from typing import Any

from muxsim.catalog import ModelSpec
from muxsim.live.engine import EngineError, Partition
from muxsim.live.transformers.model import check_checkpoint, llama_config
from muxsim.live.vllm.steps import PHASE_SCHEDULER, Backend, StepRunner
from muxsim.live.workers import (
    ProcessEngine,
    measure_point,
    one_line,
    serve_commands,
    stop_workers,
)

__all__ = [
    "DEFAULT_MAX_MODEL_LEN",
    "DEFAULT_MEMORY_FRACTION",
    "VLLM_VERSION_READ",
    "VLLMEngine",
    "check_checkpoint_shape",
    "cuda_index",
    "engine_args",
    "worker_env",
    "write_dummy_config",
]

#: vLLM version whose source this module was written against.
VLLM_VERSION_READ = "0.33.0"

#: Share of the GPU's memory an LLM's engine takes when its partition gives none (up to 4 LLMs
#: fit on a GPU at this share).
DEFAULT_MEMORY_FRACTION = 0.2

#: Context limit (tokens) of models built from the catalog (random weights) when none is given.
DEFAULT_MAX_MODEL_LEN = 4096

_CUDA_RE = re.compile(r"^cuda(?::(\d+))?$")


# --------------------------------------------------------------------------------------------
# Pure helpers (no vLLM, no torch): what a worker is set up with
# --------------------------------------------------------------------------------------------

def cuda_index(device: str) -> int | None:
    """The device index of ``"cuda:N"`` (None for ``"cuda"``: the first visible GPU).

    Raises:
        ValueError: ``device`` is not ``cuda`` or ``cuda:N`` (vLLM's engine runs on CUDA only).
    """
    m = _CUDA_RE.match(device)
    if m is None:
        raise ValueError(f"the vllm engine runs on CUDA GPUs only: device must be 'cuda' or "
                         f"'cuda:N', got {device!r}")
    return None if m.group(1) is None else int(m.group(1))


def worker_env(partition: Partition, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables a worker sets for ``partition`` before torch or vLLM is imported.

    - ``CUDA_VISIBLE_DEVICES``: the partition's GPU (``cuda:N`` is the N-th GPU visible to the
      parent: the N-th entry of the parent's ``CUDA_VISIBLE_DEVICES`` when it has one); absent
      for ``cuda``.
    - ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``: ``sm_pct`` rounded to a whole percent in [1, 100]
      (absent when ``sm_pct`` is None). The CUDA driver reads it when the process creates its
      context, and it limits the process's SMs only while an MPS control daemon runs.
    - ``VLLM_ENABLE_V1_MULTIPROCESSING=0``: vLLM's engine core runs inside the worker (needed by
      the phase scheduler and for one step = one model step).
    - Unless the parent environment sets them: ``VLLM_NO_USAGE_STATS=1``, ``HF_HUB_OFFLINE=1``
      (checkpoints are local folders), ``VLLM_LOGGING_LEVEL=WARNING``.

    Args:
        partition: the LLM's partition.
        environ: the parent's environment (default ``os.environ``).

    Raises:
        ValueError: not a CUDA device, an index beyond the parent's ``CUDA_VISIBLE_DEVICES``,
            or ``sm_pct`` outside (0, 100].
    """
    environ = os.environ if environ is None else environ
    index = cuda_index(partition.device)
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    for key, value in (("VLLM_NO_USAGE_STATS", "1"), ("HF_HUB_OFFLINE", "1"),
                       ("VLLM_LOGGING_LEVEL", "WARNING")):
        if key not in environ:
            env[key] = value
    if index is not None:
        visible = environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None and visible.strip():
            entries = [v.strip() for v in visible.split(",") if v.strip()]
            if index >= len(entries):
                raise ValueError(f"device {partition.device}: only {len(entries)} GPU(s) visible "
                                 f"(CUDA_VISIBLE_DEVICES={visible})")
            env["CUDA_VISIBLE_DEVICES"] = entries[index]
        else:
            env["CUDA_VISIBLE_DEVICES"] = str(index)
    if partition.sm_pct is not None:
        pct = float(partition.sm_pct)
        if not (math.isfinite(pct) and 0 < pct <= 100):
            raise ValueError(f"sm_pct must be in (0, 100], got {partition.sm_pct!r}")
        env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(min(100, max(1, round(pct))))
    return env


def engine_args(partition: Partition, model_path: str, *, dummy: bool, seed: int = 0,
                memory_fraction: float = DEFAULT_MEMORY_FRACTION, max_model_len: int | None = None,
                enforce_eager: bool = True, dtype: str = "bfloat16", max_num_seqs: int = 256,
                enable_chunked_prefill: bool = False) -> dict[str, Any]:
    """Keyword arguments of ``vllm.engine.arg_utils.EngineArgs`` for one LLM (vLLM 0.33.0 names).

    Args:
        partition: its ``memory_fraction`` (share of the GPU's memory for this engine: weights,
            activations and KV cache) wins over ``memory_fraction``.
        model_path: a folder with a ``config.json`` (a checkpoint, or a config for dummy weights).
        dummy: random weights (vLLM's ``dummy`` loader) instead of reading ``model_path``'s.
        seed: vLLM's seed (dummy weights, sampling).
        memory_fraction: default share when the partition gives none.
        max_model_len: context limit in tokens (None: the model config's).
        enforce_eager: no CUDA graphs nor torch.compile (fast start; False gives vLLM's
            production decode speed after a longer start).
        dtype: weights and activations (``"bfloat16"``, ``"float16"`` or ``"auto"``).
        max_num_seqs: requests an engine holds at most (the policy's ``max_num_seqs``).
        enable_chunked_prefill: split long prompts over several steps (off: a prompt is
            prefilled in one step, as MuxServe does).

    Raises:
        ValueError: a memory fraction outside (0, 1], ``max_model_len`` below 2 or
            ``max_num_seqs`` below 1.
    """
    frac = partition.memory_fraction if partition.memory_fraction is not None else memory_fraction
    if not (isinstance(frac, (int, float)) and math.isfinite(frac) and 0 < frac <= 1):
        raise ValueError(f"memory fraction must be in (0, 1], got {frac!r}")
    if max_model_len is not None and max_model_len < 2:
        raise ValueError(f"max_model_len must be >= 2 tokens, got {max_model_len}")
    if max_num_seqs < 1:
        raise ValueError(f"max_num_seqs must be >= 1, got {max_num_seqs}")
    return {
        "model": model_path,
        "skip_tokenizer_init": True,  # prompts are token ids; outputs are not detokenized
        "load_format": "dummy" if dummy else "auto",
        "dtype": dtype,
        "seed": int(seed),
        "max_model_len": max_model_len,
        "gpu_memory_utilization": float(frac),
        "enforce_eager": bool(enforce_eager),
        "enable_chunked_prefill": bool(enable_chunked_prefill),
        "enable_prefix_caching": False,  # every prompt is computed, as the simulator assumes
        "async_scheduling": False,  # one step() = one scheduled and executed batch
        "scheduler_cls": PHASE_SCHEDULER,
        "max_num_seqs": int(max_num_seqs),
        "tensor_parallel_size": 1,
        "disable_log_stats": True,
    }


def write_dummy_config(spec: ModelSpec, folder: str, max_model_len: int) -> str:
    """Write a Llama ``config.json`` with ``spec``'s shape into ``folder`` (what vLLM's dummy
    loader builds a model from); returns the file's path. Uses :func:`muxsim.live.transformers.llama_config`
    (transformers), with ``architectures = ["LlamaForCausalLM"]`` and
    ``max_position_embeddings = max_model_len``."""
    cfg = llama_config(spec)
    cfg.architectures = ["LlamaForCausalLM"]
    cfg.max_position_embeddings = int(max_model_len)
    os.makedirs(folder, exist_ok=True)
    cfg.save_pretrained(folder)
    return os.path.join(folder, "config.json")


#: (config.json key, ModelSpec attribute) pairs a checkpoint must agree on.
_SHAPE_KEYS = (("num_hidden_layers", "n_layers"), ("hidden_size", "hidden_size"),
               ("num_attention_heads", "n_heads"), ("num_key_value_heads", "n_kv_heads"),
               ("intermediate_size", "intermediate_size"), ("vocab_size", "vocab_size"))


def check_checkpoint_shape(spec: ModelSpec, checkpoint: str) -> None:
    """Check that ``checkpoint``'s ``config.json`` has ``spec``'s shape (the simulator's memory
    and latency figures come from the spec, so they must agree).

    Raises:
        FileNotFoundError: no ``config.json`` in the folder.
        ValueError: unreadable JSON, or a differing shape (the message lists the differences).
    """
    check_checkpoint(checkpoint)
    path = os.path.join(checkpoint, "config.json")
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"checkpoint {checkpoint}: cannot read config.json ({one_line(exc)})") from None
    cfg.setdefault("num_key_value_heads", cfg.get("num_attention_heads"))
    diff = [f"{key} {cfg.get(key)} != {getattr(spec, attr)}" for key, attr in _SHAPE_KEYS
            if cfg.get(key) != getattr(spec, attr)]
    if diff:
        raise ValueError(f"checkpoint {checkpoint} is not {spec.name}: {', '.join(diff)}")


# --------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------

def _short(exc: BaseException) -> str:
    """:func:`muxsim.live.workers.one_line`, cut at 1000 characters (vLLM's errors can be long)."""
    return one_line(exc, limit=1000)


class _VLLMBackend:
    """:class:`Backend` over ``vllm.engine.llm_engine.LLMEngine`` (vLLM 0.33.0 public API)."""

    def __init__(self, kwargs: dict[str, Any]):
        import vllm
        from vllm.engine.arg_utils import EngineArgs
        from vllm.engine.llm_engine import LLMEngine
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        known = {f.name for f in dataclasses.fields(EngineArgs)}
        missing = sorted(set(kwargs) - known)
        if missing:
            raise RuntimeError(f"vLLM {vllm.__version__} has no EngineArgs field(s) "
                               f"{', '.join(missing)}; this engine was written against vLLM "
                               f"{VLLM_VERSION_READ}")
        self.version = vllm.__version__
        self.kwargs = dict(kwargs)
        self.engine = LLMEngine.from_engine_args(EngineArgs(**kwargs))
        self._prompt = TokensPrompt
        self._params = SamplingParams
        self._delta = RequestOutputKind.DELTA
        self.max_model_len = int(self.engine.model_config.max_model_len)

    def add(self, ext_id: str, token_ids: list[int], max_tokens: int) -> str:
        params = self._params(max_tokens=max_tokens, ignore_eos=True, temperature=0.0,
                              detokenize=False, output_kind=self._delta)
        sid = self.engine.add_request(ext_id, self._prompt(prompt_token_ids=token_ids), params)
        # vLLM >= 0.11 returns the id it suffixed for uniqueness; older ones return None.
        return sid if isinstance(sid, str) else ext_id

    def step(self) -> list[tuple[str, int, bool]]:
        return [(o.request_id, sum(len(c.token_ids) for c in o.outputs), bool(o.finished))
                for o in self.engine.step()]

    def abort(self, ext_ids: list[str]) -> None:
        self.engine.abort_request(list(ext_ids))

    def info(self) -> dict:
        cache = getattr(getattr(self.engine, "vllm_config", None), "cache_config", None)
        return {"vllm": self.version, "max_model_len": self.max_model_len,
                "num_gpu_blocks": getattr(cache, "num_gpu_blocks", None),
                "block_size": getattr(cache, "block_size", None),
                "gpu_memory_utilization": self.kwargs["gpu_memory_utilization"],
                "dtype": str(self.engine.model_config.dtype),
                "enforce_eager": self.kwargs["enforce_eager"]}


def _make_backend(qualname: str | None, kwargs: dict[str, Any]) -> Backend:
    """vLLM, or the factory ``"module:function"`` (called with the EngineArgs keywords)."""
    if qualname is None:
        return _VLLMBackend(kwargs)
    module, _, name = qualname.partition(":")
    return getattr(importlib.import_module(module), name)(kwargs)


@dataclass(frozen=True)
class _Options:
    memory_fraction: float
    max_model_len: int | None
    enforce_eager: bool
    dtype: str
    max_num_seqs: int
    enable_chunked_prefill: bool
    backend: str | None


def _worker_main(llm: str, spec: ModelSpec, partition: Partition, checkpoint: str | None,
                 seed: int, opts: _Options, conn) -> None:
    """Entry point of one LLM's worker process: set the environment, load, then execute
    commands in order (the protocol of :mod:`muxsim.live.workers`). Never raises: a load
    failure goes back to the parent as ``("load_error", text)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    folder = None
    try:
        try:
            # First: CUDA reads these when the process creates its context, and nothing has
            # imported torch or vLLM in this fresh process yet.
            env = worker_env(partition)
            os.environ.update(env)
            if checkpoint is not None:
                check_checkpoint_shape(spec, checkpoint)
                model_path = checkpoint
            else:
                folder = tempfile.mkdtemp(prefix=f"muxsim-vllm-{os.getpid()}-")
                write_dummy_config(spec, folder, opts.max_model_len or DEFAULT_MAX_MODEL_LEN)
                model_path = folder
            kwargs = engine_args(partition, model_path, dummy=checkpoint is None, seed=seed,
                                 memory_fraction=opts.memory_fraction,
                                 max_model_len=opts.max_model_len or (
                                     DEFAULT_MAX_MODEL_LEN if checkpoint is None else None),
                                 enforce_eager=opts.enforce_eager, dtype=opts.dtype,
                                 max_num_seqs=opts.max_num_seqs,
                                 enable_chunked_prefill=opts.enable_chunked_prefill)
            backend = _make_backend(opts.backend, kwargs)
            runner = StepRunner(backend, spec.vocab_size, seed, max_num_seqs=opts.max_num_seqs)
            jobs = {"prefill": runner.prefill, "decode": runner.decode}
            # Warm the kernels and allocator once so the first real job is not an outlier; this
            # also checks the phase scheduler is in effect before the first job.
            measure_point(jobs, runner.release, 2, 8, 1, 0)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
            conn.send(("load_error", _short(exc)))
            return
        info = {"pid": os.getpid(), "device": partition.device, **env, **backend.info()}
        conn.send(("ready", info))
        serve_commands(conn, jobs, runner.release,
                       lambda *point: measure_point(jobs, runner.release, *point), _short)
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------

class VLLMEngine(ProcessEngine):
    """Live engine on vLLM: one ``spawn``-ed worker process, holding one vLLM engine, per LLM.

    The parent side is :class:`muxsim.live.workers.ProcessEngine`'s (job ids, :meth:`wait`,
    :meth:`measure`, :meth:`release`, errors, :meth:`close`); see the module docstring for what
    a worker does. Jobs of one LLM run in submission order; jobs of different LLMs run
    concurrently in their processes (on one GPU: time-sliced, or SM-limited under MPS).
    ``duration_s`` is the measured time of the job's vLLM steps (s). A job may name any subset
    of the LLM's prefilled requests; the others wait without losing their KV cache.

    Workers are not daemon processes (vLLM may start helper processes, which a daemon process
    may not); they stop on :meth:`close`, on leaving a ``with`` block, when the engine is
    garbage collected and at interpreter exit, before ``multiprocessing`` joins its children.

    ``Partition.threads`` is not used (vLLM sets its own CPU threads). Not thread-safe: drive it
    from one thread. Written against vLLM 0.33.0.

    Args:
        memory_fraction: share of the GPU's memory each LLM's engine takes (vLLM's
            ``gpu_memory_utilization``: weights, activations and KV cache) unless its partition
            gives one; in (0, 1]. The shares of the LLMs on one GPU must add up to at most ~0.95.
        max_model_len: context limit (tokens) per request; None: 4096 for random weights, the
            checkpoint's own otherwise.
        enforce_eager: no CUDA graphs nor torch.compile (starts in seconds; False for vLLM's
            production decode speed, after a longer start).
        dtype: ``"bfloat16"`` (default, as the transformers engine on CUDA), ``"float16"`` or
            ``"auto"``.
        max_num_seqs: requests an LLM holds at most (the scheduler config's ``max_num_seqs``).
        enable_chunked_prefill: let vLLM split prompts over steps (off: one step per prefill
            whose prompts fit vLLM's token budget, which is at least ``max_model_len``).
        load_timeout_s: how long :meth:`load` waits for a worker to build its engine (s).
        stop_timeout_s: how long :meth:`close` waits for workers to exit before terminating them.
        backend: ``"module:function"`` building a stand-in for vLLM in the worker (tests); None
            for vLLM.

    Raises:
        ValueError: a bad argument.
    """

    def __init__(self, memory_fraction: float = DEFAULT_MEMORY_FRACTION,
                 max_model_len: int | None = None, enforce_eager: bool = True,
                 dtype: str = "bfloat16", max_num_seqs: int = 256,
                 enable_chunked_prefill: bool = False, load_timeout_s: float = 900.0,
                 stop_timeout_s: float = 15.0, backend: str | None = None):
        # Checks the arguments before any worker exists (same rules the worker applies).
        engine_args(Partition(device="cuda"), "", dummy=True, memory_fraction=memory_fraction,
                    max_model_len=max_model_len, max_num_seqs=max_num_seqs)
        if dtype not in ("bfloat16", "float16", "auto"):
            raise ValueError(f"dtype must be bfloat16, float16 or auto, got {dtype!r}")
        super().__init__(load_timeout_s=load_timeout_s, stop_timeout_s=stop_timeout_s)
        self._opts = _Options(float(memory_fraction), max_model_len, bool(enforce_eager), dtype,
                              int(max_num_seqs), bool(enable_chunked_prefill), backend)
        # multiprocessing joins non-daemon children at exit after running finalizers of
        # priority >= 0: stop the workers there, or the join would wait forever.
        multiprocessing.util.Finalize(self, stop_workers, args=(self._workers, stop_timeout_s),
                                      exitpriority=10)

    def load(self, llm: str, model: ModelSpec, partition: Partition, checkpoint: str | None = None,
             seed: int = 0) -> None:
        """Start ``llm``'s worker on ``partition`` (a CUDA device) and build its vLLM engine:
        random weights from ``seed`` over ``model``'s shape, or the local ``checkpoint`` folder
        (which must have ``model``'s shape). Blocks until it is ready (at most
        ``load_timeout_s``); :meth:`worker_info` then tells the vLLM version, KV blocks, etc.

        Raises:
            EngineError: the engine is closed, ``llm`` is already loaded, the partition is not a
                CUDA device (or has a bad SM share / memory fraction), or the worker failed or
                timed out building the engine (the message carries the worker's error).
        """
        self._check_loadable(llm)
        try:
            worker_env(partition)
            engine_args(partition, "", dummy=True, memory_fraction=self._opts.memory_fraction)
        except ValueError as exc:
            raise EngineError(f"{llm}: {exc}") from None
        # not a daemon: vLLM may start processes of its own
        self._spawn_worker(llm, model, partition, _worker_main,
                           (llm, model, partition, checkpoint, seed, self._opts),
                           name=f"muxsim-vllm-{llm}", daemon=False, how=" with vLLM")

    def worker_info(self, llm: str) -> dict:
        """What ``llm``'s worker reported when ready: pid, device, the environment it set
        (``CUDA_VISIBLE_DEVICES``, ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``, ...), the vLLM
        version, ``max_model_len``, ``num_gpu_blocks``, ``block_size``,
        ``gpu_memory_utilization``, ``dtype``, ``enforce_eager``.

        Raises:
            EngineError: ``llm`` is not loaded.
        """
        return super().worker_info(llm)
