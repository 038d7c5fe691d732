"""SimPy driver: replays a workload through the policy core with job durations from a latency model.

One SimPy process walks the arrivals; each mesh's job ends are processed up to its next arrival
(meshes share nothing), telling the mesh's scheduler that a job finished and asking it for the
next jobs; decode iterations that its scheduler says would follow one another untouched run as
one job (:meth:`muxsim.core.schedulers.MeshScheduler.decode_run`). Nothing about scheduling
lives here: the driver only gives the policy core time.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from operator import itemgetter

import numpy as np
import pandas as pd
import simpy
from simpy.core import URGENT

from muxsim.catalog import KV_BLOCK_TOKENS
from muxsim.core.itl import ITLHistogram, ITLRecorder
from muxsim.core.llm import Request
from muxsim.core.records import REJECTED, RequestLog
from muxsim.core.replay import (
    RunSpec,
    attach_curves,
    log_result_table,
    stop_time,
    workload_columns,
)
from muxsim.core.schedulers import DECODE, PREFILL, Job

__all__ = ["JOB_COLUMNS", "SimResult", "simulate"]

_first = itemgetter(0)

#: Columns of the job log (:attr:`SimResult.jobs`), one row per prefill batch or decode
#: iteration: ``mesh`` (index in the placement), ``llm``, ``phase`` (``"prefill"`` /
#: ``"decode"``), ``start_s`` / ``end_s`` (s), ``batch`` (sequences), ``tokens`` (prefill:
#: prompt tokens processed; decode: KV tokens read), ``sm_pct`` (its SM share, % of the mesh's
#: SMs), ``kv_blocks_used`` / ``kv_blocks_total`` (the mesh's KV pool right after it started:
#: blocks in use / all) and ``queue_len`` (its LLM's requests waiting for admission then).
JOB_COLUMNS = ("mesh", "llm", "phase", "start_s", "end_s", "batch", "tokens", "sm_pct", "kv_blocks_used",
               "kv_blocks_total", "queue_len")


@dataclass
class SimResult:
    """Outcome of one simulation.

    Attributes:
        requests: per-request table with :data:`muxsim.core.records.REQUEST_COLUMNS`.
        sim_time_s: simulated time at the end (s).
        n_jobs: prefill jobs and decode iterations run.
        n_completions: job completions the driver processed one by one (fewer than ``n_jobs``
            when decode iterations ran on as one job; ``fuse_decodes``).
        latency_sources: per model name, ``"fitted"`` or ``"roofline"`` for the curves used.
        itl: per LLM name, its requests' inter-token latencies
            (:class:`muxsim.core.itl.ITLHistogram`).
        jobs: the job log (:data:`JOB_COLUMNS`) of the jobs that started in the ``timeline``
            window, by start time; None when no window was asked for.
    """

    requests: pd.DataFrame
    sim_time_s: float
    n_jobs: int
    latency_sources: dict[str, str]
    n_completions: int = 0
    itl: dict[str, ITLHistogram] = field(default_factory=dict)
    jobs: pd.DataFrame | None = None


def simulate(spec: RunSpec, fast_forward: bool = True, speed=None, fuse_decodes: bool = True,
             timeline: tuple[float, float] | None = None) -> SimResult:
    """Simulate one strategy on one workload.

    Args:
        spec: the run (:class:`muxsim.core.replay.RunSpec`); jobs run on ``spec.latency``.
        fast_forward: process each mesh's job ends ahead of the SimPy clock, up to its next
            arrival (same results, fewer SimPy events); False gives one event per job end.
        fuse_decodes: run a decode iteration and those that would follow it back to back, with
            nothing else able to happen on the mesh meanwhile, as one job (same results to the
            bit, far fewer events: :meth:`muxsim.core.schedulers.MeshScheduler.decode_run`
            says when that is so); False runs one job per iteration.
        speed: device speed over time: ``speed(llm name, start time s) -> factor`` multiplies
            the duration of every job that LLM starts then (1 = the latency model's speed, 1.2
            = 20 % slower). None: the latency model as it is. Validation replays a live run's
            measured speed this way (:class:`muxsim.live.speed.SpeedTrace`); it can also model
            a device that throttles for a while.
        timeline: ``(start, end)`` (s): log every job that starts in ``[start, end)``
            (:attr:`SimResult.jobs`). Decode iterations that start in the window run one job
            each (same results: runs are exact, the window only stops them from forming).

    Returns:
        A :class:`SimResult`; every request either finished or carries a reason.

    Raises:
        ValueError: a workload LLM not in ``spec.names``; ``timeline`` not two finite times with
            start < end; as :func:`muxsim.core.strategies.build_schedulers`.
    """
    if timeline is not None:
        w0, w1 = (float(x) for x in timeline)
        if not (math.isfinite(w0) and math.isfinite(w1) and w0 < w1):
            raise ValueError(f"timeline must be (start, end) s with start < end, got {timeline}")
    else:
        w0 = w1 = math.inf
    scheds, runtimes = spec.build()
    itl = ITLRecorder(len(runtimes))
    for rt in runtimes:
        rt.itl = itl.buffers[rt.index]
    sources = attach_curves(runtimes, spec.latency, spec.gpu)
    w = workload_columns(spec.workload, spec.names)
    n = len(w)
    # Per request, arrays only (RequestLog); a Request object lives from its arrival until it
    # finishes, so memory follows the requests in the system, not the workload.
    log = RequestLog(n)
    live: list = [None] * n

    env = simpy.Environment()
    mesh_of = np.asarray([rt.mesh for rt in runtimes], dtype=np.int64)
    n_meshes = len(scheds)
    # Per mesh: its arrival times in order, how many have arrived and the next one (s). Meshes
    # share nothing, so a mesh's jobs can be processed ahead of the SimPy clock up to its next
    # arrival (complete_until).
    by_mesh = mesh_of[w.llm[w.order]] if n else np.zeros(0, dtype=np.int64)
    sorted_arrivals = w.arrival[w.order]
    mesh_arrivals = [np.append(sorted_arrivals[by_mesh == m], math.inf) for m in range(n_meshes)]
    arrived = [0] * n_meshes
    nxt = [float(a[0]) for a in mesh_arrivals]
    mesh_of = mesh_of.tolist()
    wakeups: list[list[float]] = [[] for _ in range(n_meshes)]  # pending SimPy wake-up times
    stop_at = stop_time(w, spec.drain_limit_s)

    ms = _Meshes(scheds, nxt, stop_at, speed, fuse_decodes, w0, w1, log, live)
    local = ms.local
    start = ms.start
    complete_until = ms.complete_until

    def arm(m: int) -> None:
        """Event-by-event mode: make sure a SimPy wake-up waits for mesh ``m``'s next job end.
        Wake-ups are urgent, so that a job that ends exactly when a request arrives ends first,
        as in the default mode."""
        h = local[m]
        w = wakeups[m]
        if h and (not w or h[0][0] < w[0]):
            heapq.heappush(w, h[0][0])
            ev = simpy.Event(env)
            ev._ok = True
            ev._value = (m, h[0][0])
            ev.callbacks.append(wake)
            env.schedule(ev, URGENT, h[0][0] - env.now)

    def wake(ev) -> None:
        m, t = ev.value
        heapq.heappop(wakeups[m])  # SimPy fires them in time order: this is the earliest
        complete_until(m, t)
        arm(m)

    def arrive():
        chunk = 1 << 16  # rows turned into Python values at a time
        for c in range(0, n, chunk):
            rows = w.order[c:c + chunk]
            for k, li, t, p, o in zip(rows.tolist(), w.llm[rows].tolist(), w.arrival[rows].tolist(),
                                      w.prompt[rows].tolist(), w.output[rows].tolist()):
                if t > env.now:
                    yield env.timeout(t - env.now)
                m = mesh_of[li]
                if fast_forward:
                    # Meshes share nothing: a mesh's jobs need processing only up to its next
                    # arrival, so the SimPy clock walks the arrivals alone.
                    complete_until(m, t)
                i = arrived[m] = arrived[m] + 1
                nxt[m] = float(mesh_arrivals[m][i])
                sched = scheds[m]
                r = Request(k, li, t, p, o)
                if not sched.add(r):
                    log.set_reason(k, REJECTED)
                    continue
                live[k] = r
                start(m, sched.schedule(t), t)
                if not fast_forward:
                    arm(m)

    env.process(arrive())
    if spec.drain_limit_s is None:
        env.run()
    else:
        env.run(until=stop_at)
    if fast_forward:
        # after each mesh's last arrival: its remaining jobs, up to the drain limit
        for m in range(n_meshes):
            h = local[m]
            while h and h[0][0] < stop_at:
                complete_until(m, h[0][0])

    for rt in runtimes:
        rt.end_itl()
    for r in live:
        if r is not None:
            log.record(r)
    live.clear()
    df = log_result_table(spec, log, w)
    # the SimPy clock stops at the last arrival (or the drain limit); meshes run on from there
    end = float(env.now) if spec.drain_limit_s is not None else max(float(env.now), ms.last_end)
    jobs = None
    if timeline is not None:
        jobs = _job_table(ms.job_rows, spec.names)
    return SimResult(df, end, ms.n_jobs, sources, ms.n_done, itl.histograms(spec.names), jobs)


class _Meshes:
    """The event loop's hot paths and the state they share: per mesh, the heap of jobs in flight,
    (end time s, start of its last iteration s, sequence number, job), and its next arrival.

    Compiled with Cython where it can be (setup.py; C types in driver.pxd); :func:`simulate`
    owns one per run.
    """

    def __init__(self, scheds: list, nxt: list, stop_at: float, speed, fuse: bool, w0: float, w1: float,
                 log: RequestLog, live: list):
        n = len(scheds)
        self.scheds = scheds
        self.local: list[list] = [[] for _ in range(n)]
        self.nxt = nxt
        self.stop_at = stop_at
        self.speed = speed
        self.fuse = fuse
        self.w0 = w0
        self.w1 = w1
        self.log = log
        self.live = live
        self.job_rows: list[tuple] = []
        self.misses = [0] * n  # per mesh, for how often to try running decodes ahead (start)
        self.backoff = [0] * n
        self.seq = 0
        self.n_jobs = 0
        self.n_done = 0  # completions processed
        self.last_end = 0.0  # the latest job end processed (s)

    def _next_seq(self) -> int:
        s = self.seq
        self.seq = s + 1
        return s

    def start(self, m: int, jobs: list, t: float) -> None:
        """Start ``jobs`` on mesh ``m`` at ``t`` (s): their durations from the latency model, then, when
        the job that ends first is a decode, try to run decodes ahead (:meth:`extend`)."""
        h = self.local[m]
        self.n_jobs += len(jobs)
        for job in jobs:
            c = job.llm.curve
            if job.kind == PREFILL:
                d = c.prefill_s(job.n_tokens, job.n_seqs, job.sm_pct)
            else:
                d = c.decode_s(job.n_seqs, job.n_tokens, job.sm_pct)
            if self.speed is not None:
                d *= self.speed(job.llm.name, t)
            heapq.heappush(h, (t + d, t, self._next_seq(), job))
            if self.w0 <= t < self.w1:
                pool = self.scheds[m].pool
                self.job_rows.append((m, job.llm.index, job.kind, t, t + d, job.n_seqs, job.n_tokens,
                                      job.sm_pct, pool.total - pool.free, pool.total, len(job.llm.waiting)))
        if self.fuse and h and not self.w0 <= t < self.w1:
            # extend only when the job that ends first is a decode with room for at least one
            # more iteration before the next arrival (a cheap test before the real checks)
            first = h[0]
            if first[3].kind == DECODE and t < first[0]:
                room = min(self.nxt[m], self.stop_at) - first[0]
                if room > 0 and room >= first[0] - first[1]:
                    # A busy mesh rarely lets a decode run on; after each fruitless try skip
                    # twice as many chances (up to 31). When to try changes no result: every
                    # run ahead is exact, and a skipped chance only means completions one by one.
                    if self.backoff[m]:
                        self.backoff[m] -= 1
                    elif self.extend(m, t):
                        self.misses[m] = 0
                    else:
                        self.misses[m] = min(2 * self.misses[m] + 1, 31)
                        self.backoff[m] = self.misses[m]

    def extend(self, m: int, t: float) -> bool:
        """Called when the job that ends first on mesh ``m`` is a decode (else nothing can run
        on). Run ahead the decodes in flight on mesh ``m`` whose completions would change nothing
        but their own LLM's counters (their scheduler's decode_run says so), as long as each
        such completion comes strictly before anything else could happen on the mesh: a
        prefill's end, a decode's end that is not such a completion, the next arrival, the
        drain limit, a policy decision point. Each decode job then stands for several
        iterations back to back; every iteration's duration is the latency model's, added one by
        one as the event-by-event run adds them, so all times are identical.

        Heap entries carry the start of a job's last iteration: for ends that tie, event by
        event the job pushed later pops later. Returns whether any decode ran ahead."""
        h = self.local[m]
        sched = self.scheds[m]
        bound = min(self.nxt[m], self.stop_at)
        if t < self.w0 < bound:  # decodes that start in the timeline window run one job each
            bound = self.w0
        if len(h) == 1:  # one job in flight, the usual case: no other chain to keep apart
            e = h[0]
            job = e[3]
            k, until = sched.decode_run(job)
            if k:
                if until < bound:
                    bound = until
                j, last, end = self.steps(job, k, e[1], e[0], bound, job.llm.chain_ends)
                if j:
                    sched.skip_decodes(job, j)
                    self.n_jobs += j
                    h[0] = (end, last, e[2], job)
                    return True
            return False
        cands = []
        for e in h:
            if e[3].kind == DECODE and e[0] > t:
                cands.append(e)
            elif e[0] < bound:
                bound = e[0]
        runs = sched.decode_runs([e[3] for e in cands])
        if runs is None:
            return False
        chains = []
        for e, (k, until) in zip(cands, runs):
            if k:
                if until < bound:
                    bound = until
                chains.append((e, k))
            elif e[0] < bound:
                bound = e[0]
        plans = []
        for e, k in chains:
            end, last, sq, job = e
            if end < bound:
                ends: list[float] = []
                j, last, end = self.steps(job, k, last, end, bound, ends)
                # a chain that reaches its last allowed iteration before the bound ends there
                # with a real completion: the others must stop before it
                if j == k and end < bound:
                    bound = end
                if j:
                    plans.append([last, end, sq, job, j, e, k, ends])
        if not plans:
            return False
        if len(plans) > 1:
            # Several chains interleave: their blocks must all fit (then every allocation
            # succeeds in any order), and the last restart must be unique (a policy may
            # remember it).
            most = 0  # an upper bound of the blocks they take: each request one per 32 iterations
            for p in plans:
                if p[0] >= bound:  # computed before the bound came down: again, to the new bound
                    e = p[5]
                    p[7] = []
                    p[4], p[0], p[1] = self.steps(p[3], p[6], e[1], e[0], bound, p[7])
                llm = p[3].llm
                most += (p[4] // KV_BLOCK_TOKENS + 1) * len(llm.running) * llm.bps
            free = sched.pool.free
            if most > free:
                need = 0
                for p in plans:
                    need += p[3].llm.decode_blocks(p[4])
                if need > free:
                    return False
            plans.sort(key=_first)
            if plans[-1][0] == plans[-2][0]:
                return False
        for last, end, sq, job, j, e, _, ends in plans:
            if not j:
                continue
            job.llm.chain_ends.extend(ends)
            sched.skip_decodes(job, j)
            self.n_jobs += j
            h.remove(e)
            h.append((end, last, sq, job))
        heapq.heapify(h)
        return True

    def steps(self, job: Job, k: int, last: float, end: float, bound: float, ends: list) -> tuple:
        """Up to ``k`` iterations after ``job``'s current one (which started at ``last`` and ends
        at ``end``) while the latest ends before ``bound``: (added, last start, last end); the
        end of each iteration followed by another goes to ``ends``."""
        if self.speed is None:
            return job.llm.curve.decode_steps(job.n_seqs, job.n_tokens, job.sm_pct, k, last, end, bound, ends=ends)
        c = job.llm.curve
        name = job.llm.name
        n, tok, pct = job.n_seqs, job.n_tokens, job.sm_pct
        j = 0
        while j < k and end < bound:
            ends.append(end)
            last = end
            tok += n
            end = last + c.decode_s(n, tok, pct) * self.speed(name, last)
            j += 1
        return j, last, end

    def complete_until(self, m: int, t: float) -> None:
        """Complete mesh ``m``'s jobs that end at or before ``t`` (s), in end order, starting what
        its scheduler asks for after each. A job that ends exactly when a request arrives ends
        first (in both modes)."""
        h = self.local[m]
        if not h or h[0][0] > t:
            return
        sched = self.scheds[m]
        while h and h[0][0] <= t:
            end, _, _, job = heapq.heappop(h)
            for r in sched.complete(job, end):
                self.log.record(r)
                self.live[r.idx] = None
            self.start(m, sched.schedule(end), end)
            self.last_end = end
            self.n_done += 1


def _job_table(rows: list[tuple], names) -> pd.DataFrame:
    """The job log (:data:`JOB_COLUMNS`) of the rows ``start`` recorded, ordered by start time
    then mesh (stable: jobs started together keep their order)."""
    cols = list(zip(*rows)) if rows else [()] * len(JOB_COLUMNS)
    df = pd.DataFrame({
        "mesh": np.asarray(cols[0], dtype=np.int64),
        "llm": np.asarray(names, dtype=object)[np.asarray(cols[1], dtype=np.int64)],
        "phase": np.asarray(cols[2], dtype=object),
        "start_s": np.asarray(cols[3], dtype=float),
        "end_s": np.asarray(cols[4], dtype=float),
        "batch": np.asarray(cols[5], dtype=np.int64),
        "tokens": np.asarray(cols[6], dtype=np.int64),
        "sm_pct": np.asarray(cols[7], dtype=float),
        "kv_blocks_used": np.asarray(cols[8], dtype=np.int64),
        "kv_blocks_total": np.asarray(cols[9], dtype=np.int64),
        "queue_len": np.asarray(cols[10], dtype=np.int64),
    })
    return df.sort_values(["start_s", "mesh"], kind="stable").reset_index(drop=True)


