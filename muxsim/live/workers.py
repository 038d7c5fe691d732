"""Process-per-LLM engines: the worker protocol and the parent side both live engines share.

Each LLM runs in its own worker process (``spawn`` context) that holds the model and its KV
cache; the parent only sends commands and collects results over a duplex pipe, so it never
imports torch, transformers or vLLM (a worker can then set CUDA's environment before anything
touches the device). The engines differ only in what a worker runs:
:class:`muxsim.live.transformers.TransformersEngine` (transformers forward passes) and
:class:`muxsim.live.vllm.VLLMEngine` (one vLLM engine per worker).

Protocol (tuples over the pipe). After start the worker sends ``("ready", info)`` or
``("load_error", text)``; then :func:`serve_commands` answers the parent's commands in order.

- :class:`ProcessEngine`: the parent side (job ids, pipes, :meth:`~ProcessEngine.wait`,
  :meth:`~ProcessEngine.measure`, errors, shutdown); subclasses implement ``load``.
- :func:`serve_commands` and :func:`measure_point`: the worker side.
- :func:`stop_workers`, :class:`Worker`, :func:`one_line`: shared bookkeeping.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_ready
from typing import Any

from muxsim.catalog import ModelSpec
from muxsim.live.engine import Engine, EngineError, JobResult, Partition
from muxsim.procs import die_with_parent

__all__ = [
    "DECODE_STEPS",
    "ProcessEngine",
    "Worker",
    "measure_point",
    "one_line",
    "serve_commands",
    "stop_workers",
]

#: Decode iterations timed per calibration repeat (their median is the repeat's sample).
DECODE_STEPS = 4

#: A job function of a worker: takes the job's argument, returns (started, ended)
#: ``time.monotonic()`` and the job's measured duration (s).
JobFn = Callable[[Any], tuple[float, float, float]]


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------

def one_line(exc: BaseException, limit: int | None = None) -> str:
    """``"ExceptionType: message"`` of ``exc`` on one line (whitespace runs become one space),
    cut to at most ``limit`` characters (ending in ``...``) when ``limit`` is given."""
    # str(KeyError) quotes its message; show the message itself.
    detail = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    text = " ".join(f"{type(exc).__name__}: {detail}".split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


@dataclass
class Worker:
    """The parent's record of one LLM's worker process.

    Attributes:
        llm: the LLM it serves.
        process: its ``multiprocessing`` process.
        conn: the parent's end of its duplex pipe.
        in_flight: job id -> kind (``"prefill"``, ``"decode"``, ``"measure"``) of jobs sent and
            not yet answered.
        info: what the worker reported with ``("ready", info)``.
        dead: the worker exited or its pipe broke (no more commands are sent).
    """

    llm: str
    process: Any
    conn: Any
    in_flight: dict[int, str] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    dead: bool = False


def stop_workers(workers: dict[str, Worker], timeout_s: float = 5.0) -> None:
    """Stop every worker of ``workers`` (LLM -> record): send ``("stop",)``, wait up to
    ``timeout_s`` in all for them to exit, then terminate and kill the rest (2 s each), close
    the pipes, mark the records dead and empty the table. Never raises for a worker already
    gone."""
    for w in workers.values():
        try:
            w.conn.send(("stop",))
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + timeout_s
    for w in workers.values():
        w.process.join(max(0.0, deadline - time.monotonic()))
    for w in workers.values():
        if w.process.is_alive():
            w.process.terminate()
            w.process.join(2.0)
        if w.process.is_alive():
            w.process.kill()
            w.process.join(2.0)
        try:
            w.conn.close()
        except OSError:
            pass
        w.dead = True
    workers.clear()


# --------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------

def _worker_entry(parent_pid: int, target: Callable, *args) -> None:
    """A worker process's first code: arm death with the parent (a killed parent must not leave
    a worker holding a model and its KV cache), then run the engine's entry point."""
    die_with_parent(parent_pid)
    target(*args)


def serve_commands(conn, jobs: dict[str, JobFn], release: Callable[[list], None],
                   measure: Callable[[int, int, int, int], tuple[list[float], list[float]]],
                   describe: Callable[[BaseException], str]) -> None:
    """A worker's command loop, until ``("stop",)`` or the parent goes away.

    Commands (tuples from ``conn``) and replies: ``("prefill" | "decode", job_id, arg)`` ->
    ``("done", job_id, kind, started, ended, duration_s)`` from ``jobs[kind](arg)``;
    ``("release", request_ids)`` -> ``release(request_ids)``, no reply;
    ``("measure", job_id, batch, seq, warmup, repeats)`` -> ``("measured", job_id, prefill_s,
    decode_s)`` from ``measure(batch, seq, warmup, repeats)``; a failing job or measurement ->
    ``("error", job_id, kind, describe(exc))``, and the loop goes on. Returns (never raises)
    when the pipe breaks.
    """
    while True:
        try:
            cmd = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone: nobody will read results
        op = cmd[0]
        if op == "stop":
            return
        try:
            if op == "release":
                release(cmd[1])
            elif op in jobs:
                _, job_id, arg = cmd
                try:
                    conn.send(("done", job_id, op, *jobs[op](arg)))
                except Exception as exc:  # noqa: BLE001
                    conn.send(("error", job_id, op, describe(exc)))
            elif op == "measure":
                _, job_id, batch, seq, warmup, repeats = cmd
                try:
                    conn.send(("measured", job_id, *measure(batch, seq, warmup, repeats)))
                except Exception as exc:  # noqa: BLE001
                    conn.send(("error", job_id, op, describe(exc)))
            else:
                conn.send(("error", None, op, f"unknown command {op!r}"))
        except (BrokenPipeError, EOFError, OSError):
            return


def measure_point(jobs: dict[str, JobFn], release: Callable[[list[Hashable]], None], batch: int,
                  seq: int, warmup: int, repeats: int) -> tuple[list[float], list[float]]:
    """One calibration point, in a worker: ``warmup + repeats`` times, prefill ``batch`` prompts
    of ``seq`` tokens with ``jobs["prefill"]``, run :data:`DECODE_STEPS` decode iterations of
    that batch with ``jobs["decode"]`` (context ``seq`` and up) and release the requests.

    ``jobs`` are the worker's job functions (see :func:`serve_commands`). Returns the last
    ``repeats`` prefill durations and decode durations (s; each decode sample is the median of
    its repeat's iterations). Exceptions of the job functions propagate (the requests are
    released first).
    """
    prefill_s, decode_s = [], []
    for rep in range(warmup + repeats):
        # Ids of their own kind cannot collide with the live requests' (ints).
        rids = [("measure", rep, i) for i in range(batch)]
        try:
            p = jobs["prefill"]([(rid, seq) for rid in rids])[2]
            # a served batch decodes many iterations in a row: time a few and keep their
            # median, so one-off costs of the first step after a prefill do not bias the curve
            steps = [jobs["decode"](rids)[2] for _ in range(DECODE_STEPS)]
            d = statistics.median(steps)
        finally:
            release(rids)
        if rep >= warmup:
            prefill_s.append(p)
            decode_s.append(d)
    return prefill_s, decode_s


# --------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------

class ProcessEngine(Engine):
    """The parent side of an engine with one ``spawn``-ed worker process per LLM.

    Holds the worker table, job ids, the pipes and the results: :meth:`submit_prefill`,
    :meth:`submit_decode`, :meth:`release`, :meth:`measure`, :meth:`wait`, :meth:`close`.
    Subclasses implement :meth:`load` by checking their arguments and calling
    :meth:`_spawn_worker` with their worker's entry point, which must speak the protocol of the
    module docstring. Jobs of one LLM run in submission order in its worker; jobs of different
    LLMs run concurrently. Workers stop on :meth:`close`, on leaving a ``with`` block, when the
    engine is garbage collected and at interpreter exit, and die with this process however it
    ends (:func:`muxsim.procs.die_with_parent`, armed in the worker before ``target`` runs; on
    Linux tied to the thread that loads the model, so load from a long-lived thread).

    Not thread-safe: drive it from one thread.

    Args:
        load_timeout_s: how long :meth:`_spawn_worker` waits for a worker to be ready (s).
        stop_timeout_s: how long :meth:`close` waits for workers to exit before terminating them (s).
    """

    def __init__(self, load_timeout_s: float = 600.0, stop_timeout_s: float = 5.0):
        self._ctx = mp.get_context("spawn")
        self._workers: dict[str, Worker] = {}
        self._next_job = 0
        # Results and job failures in arrival order: wait() hands out results up to the first
        # failure, which the next call raises.
        self._events: list[JobResult | EngineError] = []
        self._closed = False
        self._load_timeout_s = load_timeout_s
        self._stop_timeout_s = stop_timeout_s
        # Holds only the worker table, not the engine, so an engine dropped without close()
        # still stops its workers (on collection or at interpreter exit).
        self._finalizer = weakref.finalize(self, stop_workers, self._workers, stop_timeout_s)

    # -- lifecycle ----------------------------------------------------------------------------

    def _check_loadable(self, llm: str) -> None:
        """Raises :class:`EngineError` when the engine is closed or ``llm`` is already loaded."""
        self._check_open()
        if llm in self._workers:
            raise EngineError(f"{llm}: already loaded")

    def _spawn_worker(self, llm: str, model: ModelSpec, partition: Partition, target, args: tuple,
                      name: str, daemon: bool, how: str) -> None:
        """Start ``target(*args, conn)`` in a new process as ``llm``'s worker and wait (at most
        ``load_timeout_s``) for its ``("ready", info)`` message.

        Raises:
            EngineError: the worker reported a load error, exited, or timed out (it is stopped
                first); ``how`` (e.g. ``" with vLLM"``) completes the message.
        """
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_entry, name=name, daemon=daemon,
                                 args=(os.getpid(), target, *args, child_conn))
        proc.start()
        child_conn.close()  # so the parent sees EOF when the worker dies
        worker = Worker(llm, proc, parent_conn)
        self._workers[llm] = worker
        ready = wait_ready([parent_conn, proc.sentinel], timeout=self._load_timeout_s)
        msg = None
        if parent_conn in ready:
            try:
                msg = parent_conn.recv()
            except (EOFError, OSError):
                msg = None
        if msg is not None and msg[0] == "ready":
            worker.info = msg[1]
            return
        del self._workers[llm]
        stop_workers({llm: worker}, self._stop_timeout_s)
        if msg is not None:
            raise EngineError(f"{llm}: cannot load {model.name}{how} on {partition.device}: {msg[1]}")
        if not ready:
            raise EngineError(f"{llm}: loading {model.name}{how} took over {self._load_timeout_s:g} s")
        raise EngineError(f"{llm}: worker exited while loading {model.name}{how} "
                          f"(exit code {proc.exitcode})")

    def close(self) -> None:
        """Stop all workers (ask, wait ``stop_timeout_s``, then terminate) and drop their KV
        caches. Idempotent; results not yet collected are lost."""
        if self._closed:
            return
        self._closed = True
        self._finalizer()

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("engine is closed")

    def worker_info(self, llm: str) -> dict:
        """What ``llm``'s worker reported when ready (a copy; the keys are the subclass's).

        Raises:
            EngineError: ``llm`` is not loaded.
        """
        return dict(self._worker(llm).info)

    def worker_pids(self) -> list[int]:
        """Process ids of the running workers."""
        return [w.process.pid for w in self._workers.values() if not w.dead]

    # -- jobs ---------------------------------------------------------------------------------

    def _worker(self, llm: str) -> Worker:
        self._check_open()
        try:
            w = self._workers[llm]
        except KeyError:
            loaded = ", ".join(self._workers) or "none"
            raise EngineError(f"{llm}: not loaded (loaded: {loaded})") from None
        if w.dead:
            raise EngineError(f"{llm}: worker is no longer running")
        return w

    def _send(self, w: Worker, msg: tuple) -> None:
        # Collect finished results first: a worker blocked on a full result pipe would stop
        # reading commands, and a long run of submits without wait() would then deadlock.
        self._drain()
        if w.dead:
            raise EngineError(f"{w.llm}: worker is no longer running "
                              f"(exit code {w.process.exitcode})")
        try:
            w.conn.send(msg)
        except (BrokenPipeError, OSError) as exc:
            self._mark_dead(w)
            raise EngineError(f"{w.llm}: worker is no longer running ({one_line(exc)})") from None

    def _submit(self, llm: str, kind: str, arg: list) -> int:
        w = self._worker(llm)
        job_id = self._next_job
        self._next_job += 1
        self._send(w, (kind, job_id, arg))
        w.in_flight[job_id] = kind
        return job_id

    def submit_prefill(self, llm: str, requests: list[tuple[int, int]]) -> int:
        """Queue one prefill job of ``llm`` over ``requests`` = [(request id, tokens), ...];
        returns its job id. A request must not hold a KV cache already (release it first, e.g.
        to recompute after preemption). Problems with the requests surface from :meth:`wait`.

        Raises:
            EngineError: the engine is closed or ``llm`` is not loaded / its worker died.
            ValueError: empty ``requests`` or a request of fewer than 1 token.
        """
        reqs = [(rid, int(n)) for rid, n in requests]
        if not reqs or any(n < 1 for _, n in reqs):
            raise ValueError(f"{llm}: a prefill needs >= 1 request of >= 1 token, got {requests!r}")
        return self._submit(llm, "prefill", reqs)

    def submit_decode(self, llm: str, request_ids: list[int]) -> int:
        """Queue one decode iteration of ``llm`` for ``request_ids`` (one batch); returns its job
        id. Unknown ids surface as an :class:`EngineError` from :meth:`wait`.

        Raises:
            EngineError: the engine is closed or ``llm`` is not loaded / its worker died.
            ValueError: empty ``request_ids``.
        """
        rids = list(request_ids)
        if not rids:
            raise ValueError(f"{llm}: a decode needs >= 1 request")
        return self._submit(llm, "decode", rids)

    def release(self, llm: str, request_ids: list[int]) -> None:
        """Free the KV caches of ``request_ids`` in ``llm``'s worker, after the jobs already
        submitted and before later ones. Ids without a cache are ignored.

        Raises:
            EngineError: the engine is closed or ``llm`` is not loaded / its worker died.
        """
        rids = list(request_ids)
        if rids:
            self._send(self._worker(llm), ("release", rids))

    def measure(self, llm: str, batch: int, seq: int, warmup: int,
                repeats: int) -> tuple[list[float], list[float]]:
        """Calibration point measured in ``llm``'s worker (after its queued jobs): ``warmup +
        repeats`` times, prefill ``batch`` prompts of ``seq`` tokens (timed), decode them
        (timed, context ``seq``; see :func:`measure_point`), release. Returns the last
        ``repeats`` prefill and decode durations (s). Blocks; results of other jobs arriving
        meanwhile are kept for :meth:`wait`.

        Raises:
            EngineError: the measurement failed (e.g. out of memory) or the worker died.
            ValueError: ``batch``, ``seq`` or ``repeats`` below 1, or ``warmup`` below 0.
        """
        if batch < 1 or seq < 1 or repeats < 1 or warmup < 0:
            raise ValueError(f"{llm}: measure needs batch, seq, repeats >= 1 and warmup >= 0, "
                             f"got {batch}, {seq}, {repeats}, {warmup}")
        w = self._worker(llm)
        job_id = self._next_job
        self._next_job += 1
        self._send(w, ("measure", job_id, int(batch), int(seq), int(warmup), int(repeats)))
        w.in_flight[job_id] = "measure"
        while True:
            wait_ready([w.conn, w.process.sentinel])
            for msg in self._drain_worker(w):
                if msg[0] == "measured" and msg[1] == job_id:
                    return list(msg[2]), list(msg[3])
                if msg[0] == "error" and msg[1] == job_id:
                    raise EngineError(f"{llm}: measure (batch {batch}, seq {seq}) failed: {msg[3]}")
            if w.dead:
                raise EngineError(f"{llm}: worker exited during measure (batch {batch}, seq {seq}), "
                                  f"exit code {w.process.exitcode}")

    def wait(self, timeout: float | None = None) -> list[JobResult]:
        """Results of the jobs finished since the last call, in completion order per LLM; blocks
        up to ``timeout`` s for at least one (None: until one finishes). Returns an empty list on
        timeout, or at once when no job is in flight.

        Raises:
            EngineError: a job failed (message: LLM, job id, kind, cause) or a worker died with
                jobs in flight. Results that arrived before the failure are returned first (the
                failure is raised by the next call); those after it by the calls after that.
        """
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            self._drain()
            if self._events:
                if isinstance(self._events[0], EngineError):
                    raise self._events.pop(0)
                n = next((i for i, ev in enumerate(self._events) if isinstance(ev, EngineError)),
                         len(self._events))
                out, self._events = self._events[:n], self._events[n:]
                return out
            live = [w for w in self._workers.values() if not w.dead and w.in_flight]
            if not live:
                return []
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return []
            handles = [w.conn for w in live] + [w.process.sentinel for w in live]
            wait_ready(handles, timeout=remaining)

    # -- result plumbing ----------------------------------------------------------------------

    def _drain(self) -> None:
        for w in list(self._workers.values()):
            if not w.dead:
                self._drain_worker(w)

    def _drain_worker(self, w: Worker) -> list[tuple]:
        """Read every message ``w`` has sent; turn job messages into results or errors and return
        all messages read. Detects a dead worker."""
        msgs, eof = self._read_all(w)
        if not eof and not w.process.is_alive():
            # It may have sent its last messages after our poll: read up to the EOF.
            more, _ = self._read_all(w)
            msgs, eof = msgs + more, True
        for msg in msgs:
            tag = msg[0]
            if tag == "done":
                _, job_id, kind, started, ended, duration = msg
                w.in_flight.pop(job_id, None)
                self._events.append(JobResult(job_id, w.llm, kind, started, ended, duration))
            elif tag == "measured":
                w.in_flight.pop(msg[1], None)
            elif tag == "error":
                _, job_id, kind, text = msg
                w.in_flight.pop(job_id, None)
                if kind != "measure":
                    self._events.append(EngineError(f"{w.llm}: job {job_id} ({kind}) failed: {text}"))
        if eof:
            self._mark_dead(w)
        return msgs

    @staticmethod
    def _read_all(w: Worker) -> tuple[list[tuple], bool]:
        msgs = []
        try:
            while w.conn.poll():
                msgs.append(w.conn.recv())
        except (EOFError, OSError):
            return msgs, True
        return msgs, False

    def _mark_dead(self, w: Worker) -> None:
        if w.dead:
            return
        w.dead = True
        w.process.join(1.0)
        lost = sorted(j for j, k in w.in_flight.items() if k != "measure")
        if lost:
            self._events.append(EngineError(
                f"{w.llm}: worker exited (exit code {w.process.exitcode}) with jobs {lost} in flight"))
        w.in_flight.clear()
