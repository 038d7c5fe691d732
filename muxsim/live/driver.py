"""Live driver: replays a workload in wall-clock time through the same policy objects as the
simulator, with a real engine executing every job.

The schedulers, KV pools and SM units are built from the same :class:`~muxsim.core.replay.RunSpec`
as a simulation's; this module only gives them wall-clock time and turns their jobs
into engine calls (prefill of a batch, one decode iteration, release of finished or preempted
requests). It writes per-request records in the simulator's schema
(:data:`muxsim.core.records.REQUEST_COLUMNS`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from muxsim.catalog import ModelSpec
from muxsim.core.itl import ITLRecorder
from muxsim.core.llm import Request
from muxsim.core.records import REJECTED
from muxsim.core.replay import (
    RunSpec,
    attach_curves,
    result_table,
    stop_time,
    workload_requests,
)
from muxsim.core.schedulers import PREFILL
from muxsim.live.engine import Engine, EngineError, Partition

__all__ = ["LiveResult", "load_models", "run_live"]


@dataclass
class LiveResult:
    """Outcome of one live run.

    Attributes:
        requests: per-request table (:data:`muxsim.core.records.REQUEST_COLUMNS`), times in seconds
            from the run's start.
        wall_s: wall-clock length of the run (s).
        n_jobs: jobs executed by the engine.
        job_overhead_s: median of (wall time from submission to result) - (engine-measured job
            duration): what the driver and the engine's plumbing add to each job (s).
        jobs: one row per job: llm, model, kind, n_seqs, n_tokens, sm_pct, submitted_s, ended_s,
            measured_s (engine-measured duration), predicted_s (the latency model's), times from
            the run's start.
        itl: per LLM name, its requests' measured inter-token latencies
            (:class:`muxsim.core.itl.ITLHistogram`; token times are the wall-clock ends of the
            jobs that emitted them).
    """

    requests: pd.DataFrame
    wall_s: float
    n_jobs: int
    job_overhead_s: float
    jobs: pd.DataFrame
    itl: dict = field(default_factory=dict)


def run_live(spec: RunSpec, engine: Engine, clock: Callable[[], float] = time.monotonic) -> LiveResult:
    """Run one strategy on one workload with a real engine, in wall-clock time.

    Args:
        spec: the run (:class:`muxsim.core.replay.RunSpec`); ``spec.latency`` predicts each
            job's duration (the ``predicted_s`` column of the job log) and, unless
            ``spec.slo_latency`` is given, gives each request's SLO bases (the same model the
            simulation uses, so both runs judge requests against the same SLOs).
        engine: an engine with every LLM of ``spec.names`` loaded (see :func:`load_models`);
            it is left idle with no KV cache held, ready for another run.
        clock: monotonic clock in seconds (the engine's results use ``time.monotonic``).

    Returns:
        A :class:`LiveResult`.

    Raises:
        muxsim.live.engine.EngineError: the engine failed to load a model or run a job.
        ValueError: a workload LLM not in ``spec.names``, or as
            :func:`muxsim.core.strategies.build_schedulers`.
    """
    scheds, runtimes = spec.build()
    itl = ITLRecorder(len(runtimes))
    for rt in runtimes:
        rt.evicted = []
        rt.itl = itl.buffers[rt.index]
    reqs, order = workload_requests(spec.workload, spec.names)
    reasons, wall, n_jobs, overheads, log = _replay(engine, scheds, runtimes, reqs, order,
                                                    stop_time(reqs, spec.drain_limit_s), clock)
    df = result_table(spec, reqs, reasons)
    jobs = pd.DataFrame(log, columns=["llm", "kind", "n_seqs", "n_tokens", "sm_pct", "submitted_s",
                                      "ended_s", "measured_s"])
    jobs.insert(1, "model", jobs["llm"].map({rt.name: rt.model.name for rt in runtimes}))
    attach_curves(runtimes, spec.latency, spec.gpu)
    curves = {rt.name: rt.curve for rt in runtimes}
    jobs["predicted_s"] = [
        curves[l].prefill_s(t, n, sm) if k == PREFILL else curves[l].decode_s(n, t, sm)
        for l, k, n, t, sm in zip(jobs.llm, jobs.kind, jobs.n_seqs, jobs.n_tokens, jobs.sm_pct)]
    return LiveResult(df, wall, n_jobs, float(np.median(overheads)) if overheads else 0.0, jobs,
                      itl.histograms(spec.names))


def load_models(engine: Engine, names: Sequence[str], models: Sequence[ModelSpec],
                partitions: Mapping[str, Partition], seed: int = 0,
                checkpoints: Mapping[str, str] | None = None, reserve_tokens: int = 2048) -> None:
    """Load every LLM onto its partition (random weights from ``seed`` unless a local
    checkpoint folder is given for its name), then warm it up.

    The warm-up runs one batch of 16 prompts holding ``reserve_tokens`` tokens in all, so the
    engine's KV cache and allocator reach that size before any run: the transformers engine
    grows its KV slot pool by doubling and copying it, a stall of tens of ms (and a burst of
    memory traffic that slows the other partitions) that would otherwise land in the middle of
    a measured run. Runs holding more tokens than this at once still grow it.

    Raises:
        muxsim.live.engine.EngineError: a model could not be loaded.
    """
    for name, model in zip(names, models):
        engine.load(name, model, partitions[name], (checkpoints or {}).get(name), seed)
        # first calls pay one-off costs (allocator growth, kernel selection): not part of a run
        engine.measure(name, 16, max(1, reserve_tokens // 16), warmup=0, repeats=1)
        engine.measure(name, 2, 32, warmup=2, repeats=1)


def _replay(engine, scheds, runtimes, reqs, order, stop_at, clock):
    reasons = [""] * len(reqs)
    arrivals = [reqs[k] for k in order.tolist()]

    inflight: dict[int, tuple] = {}
    overheads: list[float] = []
    log: list[tuple] = []
    n_jobs = 0
    t0 = clock()

    def now() -> float:
        return clock() - t0

    def release(rt, done: list[Request]) -> None:
        ids = [r.idx for r in done]
        if rt.evicted:
            ids += [r.idx for r in rt.evicted]
            rt.evicted.clear()
        if ids:
            engine.release(rt.name, ids)

    def dispatch(m: int) -> None:
        nonlocal n_jobs
        sched = scheds[m]
        for job in sched.schedule(now()):
            rt = job.llm
            release(rt, [])  # preempted by this round's decode: their KV goes first
            if job.kind == PREFILL:
                jid = engine.submit_prefill(rt.name, [(r.idx, r.prompt + r.done) for r in job.reqs])
            else:
                jid = engine.submit_decode(rt.name, list(rt.running))
            inflight[jid] = (m, job, clock())
            n_jobs += 1

    nxt = 0
    while True:
        t = now()
        while nxt < len(arrivals) and arrivals[nxt].arrival <= t:
            r = arrivals[nxt]
            nxt += 1
            m = runtimes[r.llm].mesh
            if scheds[m].add(r):
                dispatch(m)
            else:
                reasons[r.idx] = REJECTED
        if t >= stop_at or (nxt == len(arrivals) and not inflight):
            break
        timeout = None
        if nxt < len(arrivals):
            timeout = max(0.0, arrivals[nxt].arrival - now())
        if stop_at != float("inf"):
            timeout = max(0.0, min(timeout if timeout is not None else float("inf"), stop_at - now()))
        for res in engine.wait(timeout):
            m, job, submitted = inflight.pop(res.job_id)
            overheads.append((clock() - submitted) - res.duration_s)
            log.append((job.llm.name, job.kind, job.n_seqs,
                        job.n_tokens, job.sm_pct, submitted - t0, res.ended_s - t0, res.duration_s))
            # the job's requests finished when the engine finished them, not when we heard
            done = scheds[m].complete(job, res.ended_s - t0)
            release(job.llm, done)
            dispatch(m)
    wall = now()
    # leave the engine clean for the next run: let jobs still running end, then free every KV
    # cache the policy still holds (requests cut off by the drain limit)
    while inflight:
        results = engine.wait(60.0)
        if not results:
            raise EngineError(f"{len(inflight)} jobs still running 60 s after the run ended")
        for res in results:
            m, job, _ = inflight.pop(res.job_id)
            release(job.llm, scheds[m].complete(job, res.ended_s - t0))
    for rt in runtimes:
        release(rt, list(rt.running.values()) + list(rt.pending))
    return reasons, wall, n_jobs, overheads, log
