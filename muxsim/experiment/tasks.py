"""Running tasks in worker processes: results in task order, whatever order they finish in, so
an experiment's outputs do not depend on the number of workers, nor on where they run.

This module is the only place that creates worker pools (:func:`worker_pool`): a local process
pool (executor ``"process"``) or Ray remote tasks (executor ``"ray"``,
:mod:`muxsim.experiment.ray_executor`), both used through ``submit`` by :func:`map_tasks`. Every
process pool's workers behave the same way on shutdown:

- each worker ignores SIGINT (the parent handles Ctrl-C and stops the workers) and dies with
  its parent, however the parent ends, ``kill -9`` included (:func:`muxsim.procs.die_with_parent`);
- when the parent leaves the pool's block with an exception (KeyboardInterrupt, SIGTERM turned
  into one by the CLI, a failing task) it does not wait for running tasks: pending ones are
  cancelled and the workers terminated (:func:`stop_pool`).

Ray's tasks are stopped the same way (cancelled, their workers killed, a local Ray instance shut
down); a local instance's processes are Ray's own, started and ended by ``ray.init`` and
``ray.shutdown``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from typing import TYPE_CHECKING

from muxsim.procs import die_with_parent, ignore_sigint

if TYPE_CHECKING:
    from .ray_executor import RayExecutor

__all__ = ["EXECUTORS", "map_tasks", "stop_pool", "worker_pool"]


def _init_worker(parent_pid: int | None) -> None:
    """Initializer of every pool worker (runs in the worker before its first task)."""
    ignore_sigint()
    die_with_parent(parent_pid)


def _process_pool(jobs: int) -> ProcessPoolExecutor | None:
    """A pool of ``min(jobs, CPUs)`` worker processes, or None for one (run in this process).

    Its workers ignore SIGINT and die with this process (see the module docstring); only
    :func:`worker_pool` makes one, and stops it early when its block fails. Submit to the pool
    from the thread that created it, and keep that thread alive while the pool runs (on Linux a
    worker dies with the *thread* that started it; in muxsim that is the main thread).
    """
    workers = min(jobs, os.cpu_count() or 1)
    if workers <= 1:
        return None
    ctx = multiprocessing.get_context()  # the default one, named so its start method is known
    # A forkserver-started worker's parent is the fork server, not this process (which the
    # fork server outlives only briefly): let the worker take its parent as it finds it.
    parent = None if ctx.get_start_method() == "forkserver" else os.getpid()
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(parent,))


def stop_pool(ex: ProcessPoolExecutor, timeout_s: float = 5.0) -> None:
    """Stop ``ex`` now, without waiting for its running tasks: cancel the pending ones,
    terminate (SIGTERM) the worker processes, wait up to ``timeout_s`` s in all for them to
    exit, then kill (SIGKILL) the rest. Never raises for workers already gone; the pool is
    unusable afterwards.
    """
    # ProcessPoolExecutor has no public way to stop running tasks before Python 3.14
    # (terminate_workers): shutdown(wait=False, cancel_futures=True) only cancels tasks not
    # started yet and lets the running ones finish, which would keep an interrupted run's
    # workers busy for minutes. So terminate the processes it holds ourselves. ``_processes``
    # (pid -> Process) is private but present, with that meaning, in 3.10 to 3.14; shutdown()
    # sets it to None, hence the copy first, and getattr guards against its absence.
    procs = list((getattr(ex, "_processes", None) or {}).values())
    manager = getattr(ex, "_executor_manager_thread", None)
    terminate = getattr(ex, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        with contextlib.suppress(Exception):
            terminate()
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        with contextlib.suppress(Exception):
            if p.is_alive():
                p.terminate()
    deadline = time.monotonic() + timeout_s
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(1.0)
    # The pool's manager thread notices the dead workers, fails their futures and exits;
    # interpreter exit joins it, so let it finish here (bounded) rather than at exit.
    if manager is not None:
        with contextlib.suppress(Exception):
            manager.join(max(1.0, deadline - time.monotonic()))


#: The executors :func:`worker_pool` makes, by name (``muxsim run --executor``).
EXECUTORS = ("process", "ray")


@contextlib.contextmanager
def worker_pool(jobs: int, executor: str = "process",
                address: str | None = None) -> Iterator[Executor | RayExecutor | None]:
    """A block with a pool to pass to :func:`map_tasks`.

    Args:
        jobs: executor ``"process"``: the pool of :func:`_process_pool` (None when ``jobs`` or
            the CPUs allow only one process: run tasks in this process); executor ``"ray"``
            without ``address``: the CPUs of the local Ray instance started for the block.
        executor: ``"process"`` or ``"ray"`` (:class:`~muxsim.experiment.ray_executor.RayExecutor`,
            never None).
        address: executor ``"ray"``: the cluster to connect to (``"auto"``, ``"HOST:6379"``,
            ``"ray://HOST:10001"``) instead of starting a local instance; ignored otherwise.

    On a normal exit the pool is shut down after its tasks. When the block raises anything
    (an exception, KeyboardInterrupt, SystemExit) the pool is stopped at once (running tasks
    are abandoned: :func:`stop_pool`, :meth:`RayExecutor.stop`) and the exception propagates.
    Process workers die with this process in any case (see the module docstring).

    Raises:
        ValueError: an unknown ``executor``.
        ModuleNotFoundError, ImportError: executor ``"ray"`` without ray installed.
        muxsim.experiment.ray_executor.ExecutorError: Ray failed to start or to connect.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}; got {executor!r}")
    if executor == "ray":
        from .ray_executor import RayExecutor

        ex = RayExecutor.start(jobs, address)
        try:
            yield ex
        except BaseException:
            ex.stop()
            raise
        ex.close()
        return
    ex = _process_pool(jobs)
    if ex is None:
        yield None
        return
    try:
        yield ex
    except BaseException:
        stop_pool(ex)
        raise
    ex.shutdown()


def map_tasks(ex: Executor | RayExecutor | None, fn: Callable, tasks: Sequence, tick: Callable[[str], None],
              label: Callable[[object], str], on_result: Callable[[int, object], object] | None = None) -> list:
    """``fn`` over ``tasks`` in ``ex`` (or in this process when None), results in task order;
    ``tick(label(task))`` after each task ends.

    Args:
        on_result: called as ``on_result(k, result)`` as soon as task ``k``'s result arrives (in
            completion order, in this process, before ``tick``); what it returns is kept in
            place of the result. A caller that writes each result away and returns something
            small (:meth:`muxsim.experiment.results.RequestStore.add`) then holds one result at
            a time, not all of them: this function keeps no other reference to a result once
            ``on_result`` has returned. (The process pool keeps none either; the Ray executor
            keeps every future it made, results included, until it ends.)

    Raises:
        whatever ``fn`` (or ``on_result``) raises for the first failing task (in completion
        order); the other tasks are cancelled when not started yet (stopping those running is
        the pool owner's business: :func:`worker_pool` does it).
    """
    keep = on_result or (lambda k, r: r)
    if ex is None:
        out = []
        for k, t in enumerate(tasks):
            out.append(keep(k, fn(t)))
            tick(label(t))
        return out
    futs = {ex.submit(fn, t): k for k, t in enumerate(tasks)}
    out = [None] * len(tasks)
    try:
        for f in as_completed(futs):
            # popped: a finished future holds its result, and this dict would otherwise keep
            # every result alive to the end (as_completed drops its own references)
            k = futs.pop(f)
            out[k] = keep(k, f.result())
            del f
            tick(label(tasks[k]))
    except BaseException:
        for f in futs:
            f.cancel()
        raise
    return out
