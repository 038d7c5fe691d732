"""The transformers engine's worker process: pins its partition, builds the model, serves jobs.

:func:`worker_main` runs in a fresh ``spawn``-ed process per LLM (started by
:class:`muxsim.live.transformers.TransformersEngine`). On CPU it uses a fixed number of torch
threads (and optionally pinned cores) and pinned glibc malloc thresholds; on CUDA it runs bf16
with ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE = sm_pct`` set before torch initialises CUDA. That
share is only enforced when an MPS control daemon runs for the device; without one the LLMs
share the GPU by time slicing (untested here: no GPU). Green contexts are not used.

It then answers the commands of :func:`muxsim.live.workers.serve_commands`: each job is one
:class:`~muxsim.live.transformers.kv_runner.KVRunner` call, its ``duration_s`` measured with
``time.perf_counter()`` (after a CUDA synchronize), ``started``/``ended`` with
``time.monotonic()`` around it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import signal
import time

from muxsim.catalog import ModelSpec
from muxsim.live.engine import Partition
from muxsim.live.transformers.kv_runner import KVRunner
from muxsim.live.transformers.model import build_model, check_checkpoint
from muxsim.live.workers import measure_point, one_line, serve_commands

__all__ = ["worker_main"]

#: glibc ``mallopt`` parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MALLOC_PIN_BYTES = 1 << 30


def _pin_malloc() -> bool:
    """Pin glibc malloc's thresholds; returns whether both took effect (False off glibc).

    glibc serves blocks above M_MMAP_THRESHOLD (128 KiB, raised dynamically up to 32 MiB as
    large blocks are freed) with a fresh mmap and returns them with munmap on free. The K/V
    tensors a job allocates are often above it, so each job would page-fault its buffers in
    anew (the kernel zeroes every page), and whether it does depends on the allocation history
    that moved the dynamic threshold: job cost would jump with batch and context instead of
    growing smoothly (measured here: a llama-tiny-s decode of 8 requests took 2-3x longer from
    about 500 tokens of context on). A fixed threshold (which also ends the dynamic adjustment)
    keeps those blocks in the heap for reuse, and a high M_TRIM_THRESHOLD stops free() from
    handing the heap top back to the OS after a large job.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # Older glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit).
    ok_mmap = (mallopt(_M_MMAP_THRESHOLD, _MALLOC_PIN_BYTES) == 1
               or mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1)
    ok_trim = mallopt(_M_TRIM_THRESHOLD, _MALLOC_PIN_BYTES) == 1
    return ok_mmap and ok_trim


def _timed(runner: KVRunner, fn, arg) -> tuple[float, float, float]:
    """``fn(arg)`` as a job: (started, ended) ``time.monotonic()`` and its duration (s),
    including the device work it queued."""
    started = time.monotonic()
    t0 = time.perf_counter()
    fn(arg)
    runner.synchronize()
    duration = time.perf_counter() - t0
    return started, time.monotonic(), duration


def worker_main(llm: str, spec: ModelSpec, partition: Partition, checkpoint: str | None,
                seed: int, batching: str, conn) -> None:
    """Entry point of one LLM's worker process: set up the partition, build ``spec`` (random
    weights from ``seed``, or the local ``checkpoint`` folder) with a :class:`KVRunner` batching
    as ``batching``, warm it up, then execute commands from ``conn`` in order.

    Sends ``("ready", info)`` (pid, threads, batching, dtype, device, malloc_pinned) or
    ``("load_error", text)`` first; never raises (every load failure goes back to the parent).
    """
    # The parent decides when workers stop; a Ctrl-C in the terminal must not kill them mid-job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    malloc_pinned = _pin_malloc()
    cuda = partition.device.startswith("cuda")
    if cuda and partition.sm_pct is not None:
        # Read by the CUDA driver when this process creates its context. Nothing has touched
        # CUDA in this fresh process yet (importing torch does not initialise it).
        pct = int(round(partition.sm_pct))  # noqa: RUF046 - numpy 1.x rounds to a float
        os.environ["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(pct)
    try:
        if partition.cores:
            try:
                os.sched_setaffinity(0, set(partition.cores))
            except (AttributeError, OSError) as exc:
                raise RuntimeError(f"cannot pin the worker to cores {list(partition.cores)}: {exc}; "
                                   f"allowed: {sorted(os.sched_getaffinity(0))}") from None
        if checkpoint is not None:
            check_checkpoint(checkpoint)  # before the slow imports: fail in a fraction of a second
        import torch

        torch.set_num_threads(max(1, int(partition.threads)))
        torch.set_num_interop_threads(1)
        if cuda:
            index = torch.device(partition.device).index
            if index is not None:
                torch.cuda.set_device(index)
            if partition.memory_fraction is not None:
                torch.cuda.set_per_process_memory_fraction(partition.memory_fraction,
                                                           torch.cuda.current_device())
        model = build_model(spec, seed, partition.device, checkpoint)
        runner = KVRunner(model, seed, batching=batching)
        jobs = {"prefill": lambda arg: _timed(runner, runner.prefill, arg),
                "decode": lambda arg: _timed(runner, runner.decode, arg)}
        # Warm the kernels and allocator once so the first real job is not an outlier.
        measure_point(jobs, runner.release, 1, 8, 1, 0)
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
        conn.send(("load_error", one_line(exc)))
        return
    # Everything allocated so far lives as long as the worker: keep the cyclic GC off it.
    gc.collect()
    gc.freeze()
    conn.send(("ready", {"pid": os.getpid(), "threads": torch.get_num_threads(),
                         "batching": batching,
                         "dtype": str(runner.dtype), "device": str(runner.device),
                         "malloc_pinned": malloc_pinned}))
    serve_commands(conn, jobs, runner.release,
                   lambda *point: measure_point(jobs, runner.release, *point), one_line)

