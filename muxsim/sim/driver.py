"""SimPy driver: replays a workload through the policy core with job durations from a latency model.

One SimPy process walks the arrivals; job ends are SimPy wake-ups that tell the mesh's scheduler
that a job finished and ask it for the next jobs. Nothing about scheduling lives here: the
driver only gives the policy core time.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import simpy

from muxsim.core.records import REJECTED
from muxsim.core.replay import (
    RunSpec,
    attach_curves,
    result_table,
    stop_time,
    workload_requests,
)
from muxsim.core.schedulers import PREFILL

__all__ = ["SimResult", "simulate"]


@dataclass
class SimResult:
    """Outcome of one simulation.

    Attributes:
        requests: per-request table with :data:`muxsim.core.records.REQUEST_COLUMNS`.
        sim_time_s: simulated time at the end (s).
        n_jobs: prefill and decode jobs run.
        latency_sources: per model name, ``"fitted"`` or ``"roofline"`` for the curves used.
    """

    requests: pd.DataFrame
    sim_time_s: float
    n_jobs: int
    latency_sources: dict[str, str]


def simulate(spec: RunSpec, fast_forward: bool = True, speed=None) -> SimResult:
    """Simulate one strategy on one workload.

    Args:
        spec: the run (:class:`muxsim.core.replay.RunSpec`); jobs run on ``spec.latency``.
        fast_forward: process each mesh's job ends ahead of the SimPy clock, up to its next
            arrival (same results, fewer SimPy events); False gives one event per job end.
        speed: device speed over time: ``speed(llm name, start time s) -> factor`` multiplies
            the duration of every job that LLM starts then (1 = the latency model's speed, 1.2
            = 20 % slower). None: the latency model as it is. Validation replays a live run's
            measured speed this way (:class:`muxsim.live.speed.SpeedTrace`); it can also model
            a device that throttles for a while.

    Returns:
        A :class:`SimResult`; every request either finished or carries a reason.

    Raises:
        ValueError: a workload LLM not in ``spec.names``, or as
            :func:`muxsim.core.strategies.build_schedulers`.
    """
    scheds, runtimes = spec.build()
    sources = attach_curves(runtimes, spec.latency, spec.gpu)
    reqs, order = workload_requests(spec.workload, spec.names)
    reasons = [""] * len(reqs)

    env = simpy.Environment()
    n_jobs = 0
    mesh_of = [rt.mesh for rt in runtimes]
    n_meshes = len(scheds)
    # Per mesh: its arrival times in order and how many have arrived. Meshes share nothing, so
    # a mesh's own job completions can be processed ahead of the SimPy clock up to its next
    # arrival (see advance).
    mesh_arrivals: list[list[float]] = [[] for _ in range(n_meshes)]
    for k in order.tolist():
        mesh_arrivals[mesh_of[reqs[k].llm]].append(reqs[k].arrival)
    for a in mesh_arrivals:
        a.append(math.inf)
    arrived = [0] * n_meshes
    local: list[list] = [[] for _ in range(n_meshes)]  # heap of (end time, seq, job) in flight
    wakeups: list[list[float]] = [[] for _ in range(n_meshes)]  # pending SimPy wake-up times
    seq = itertools.count()
    stop_at = stop_time(reqs, spec.drain_limit_s)

    def start(m: int, jobs, t: float) -> None:
        nonlocal n_jobs
        h = local[m]
        for job in jobs:
            c = job.llm.curve
            if job.kind == PREFILL:
                d = c.prefill_s(job.n_tokens, job.n_seqs, job.sm_pct)
            else:
                d = c.decode_s(job.n_seqs, job.n_tokens, job.sm_pct)
            if speed is not None:
                d *= speed(job.llm.name, t)
            heapq.heappush(h, (t + d, next(seq), job))
        n_jobs += len(jobs)

    def advance(m: int, due: float) -> None:
        """Complete mesh ``m``'s jobs that end by ``due``, then, with ``fast_forward``, those that
        end before its next arrival: nothing else can touch the mesh until then, so the policy
        sees exactly the calls and times it would see event by event (a test checks that both
        give identical results). Then make sure a SimPy wake-up waits for its next job end."""
        h = local[m]
        sched = scheds[m]
        horizon = mesh_arrivals[m][arrived[m]] if fast_forward else -math.inf
        horizon = min(horizon, stop_at)
        while h and (h[0][0] <= due or h[0][0] < horizon):
            t, _, job = heapq.heappop(h)
            sched.complete(job, t)
            start(m, sched.schedule(t), t)
        w = wakeups[m]
        if h and (not w or h[0][0] < w[0]):
            heapq.heappush(w, h[0][0])
            env.timeout(h[0][0] - env.now, (m, h[0][0])).callbacks.append(wake)

    def wake(ev) -> None:
        m, t = ev.value
        heapq.heappop(wakeups[m])  # SimPy fires them in time order: this is the earliest
        advance(m, t)

    def arrive():
        for k in order.tolist():
            r = reqs[k]
            t = r.arrival
            if t > env.now:
                yield env.timeout(t - env.now)
            m = mesh_of[r.llm]
            arrived[m] += 1
            sched = scheds[m]
            if not sched.add(r):
                reasons[k] = REJECTED
                continue
            start(m, sched.schedule(t), t)
            advance(m, -math.inf)

    env.process(arrive())
    if spec.drain_limit_s is None:
        env.run()
    else:
        env.run(until=stop_at)

    df = result_table(spec, reqs, reasons)
    # a mesh may have run ahead of the SimPy clock with its last jobs (see run_jobs)
    end = max(float(env.now), float(np.nanmax(df["finish_s"])) if df["finished"].any() else 0.0)
    return SimResult(df, end, n_jobs, sources)


