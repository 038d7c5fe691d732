"""The transformers engine's parent side: one worker process per LLM, Llama models, KV cache.

The parent only sends commands and collects results (:class:`muxsim.live.workers.ProcessEngine`),
so it never imports torch or transformers: importing this module is cheap, and the worker
(:func:`muxsim.live.transformers.worker.worker_main`) can set CUDA's environment before torch
first touches the device.
"""

from __future__ import annotations

from muxsim.catalog import ModelSpec
from muxsim.live.engine import EngineError, Partition
from muxsim.live.transformers.kv_runner import BATCHING_KINDS
from muxsim.live.transformers.worker import worker_main
from muxsim.live.workers import ProcessEngine

__all__ = ["TransformersEngine"]


class TransformersEngine(ProcessEngine):
    """Live engine on transformers: one ``spawn``-ed worker process per LLM.

    Jobs of one LLM run in submission order in its worker; jobs of different LLMs run
    concurrently. Each job is one real batched forward pass with a KV cache (see
    :mod:`muxsim.live.transformers.kv_runner`); ``duration_s`` is its compute time measured in
    the worker with ``time.perf_counter()``, ``started_s``/``ended_s`` are ``time.monotonic()``
    around it. Workers stop on :meth:`close`, on leaving a ``with`` block, when the engine is
    garbage collected and at interpreter exit.

    Not thread-safe: drive it from one thread.

    Args:
        batching: how every worker batches a job's requests, ``"ragged"`` or ``"padded"`` (see
            :mod:`muxsim.live.transformers.kv_runner`).
        load_timeout_s: how long :meth:`load` waits for a worker to build its model (s).
        stop_timeout_s: how long :meth:`close` waits for workers to exit before terminating them (s).

    Raises:
        ValueError: unknown ``batching``.
    """

    def __init__(self, batching: str = "ragged", load_timeout_s: float = 600.0,
                 stop_timeout_s: float = 5.0):
        if batching not in BATCHING_KINDS:
            raise ValueError(f"batching must be one of {BATCHING_KINDS}, got {batching!r}")
        self._batching = batching
        super().__init__(load_timeout_s=load_timeout_s, stop_timeout_s=stop_timeout_s)

    def load(self, llm: str, model: ModelSpec, partition: Partition, checkpoint: str | None = None,
             seed: int = 0) -> None:
        """Start ``llm``'s worker on ``partition`` and build ``model`` there (random weights from
        ``seed``, or the local ``checkpoint`` folder). Blocks until it is ready (at most
        ``load_timeout_s``).

        Raises:
            EngineError: the engine is closed, ``llm`` is already loaded, the partition is not
                ``cpu``/``cuda[:n]``, or the worker failed or timed out building the model.
        """
        self._check_loadable(llm)
        if not (partition.device == "cpu" or partition.device.startswith("cuda")):
            raise EngineError(f"{llm}: unsupported device {partition.device!r} (cpu or cuda[:n])")
        if partition.threads < 1:
            raise EngineError(f"{llm}: partition needs >= 1 thread, got {partition.threads}")
        self._spawn_worker(llm, model, partition, worker_main,
                           (llm, model, partition, checkpoint, seed, self._batching),
                           name=f"muxsim-hf-{llm}", daemon=True, how="")

    def worker_info(self, llm: str) -> dict:
        """What ``llm``'s worker reported when ready: pid, threads, batching, dtype, device,
        malloc_pinned.

        Raises:
            EngineError: ``llm`` is not loaded.
        """
        return super().worker_info(llm)
