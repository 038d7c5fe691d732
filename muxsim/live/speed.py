"""The machine's speed at a live run, relative to the calibrated latency model.

A calibration and the live runs it serves happen minutes apart, and a machine does not keep one
speed: on this project's 2-core VM the same job's duration drifts by 10-30 % within a minute
(co-tenants, frequency changes). A simulation fed the curve calibrated earlier then predicts a
different machine from the one the live run meets, and SLO attainment at tight scales, where a
request's fate turns on a few percent of its latency, disagrees for that reason alone.

So validation measures the speed it runs at. Reference jobs -- fixed (batch, prompt length)
points, timed from submission to result through the engine's job API exactly as live jobs
are (:func:`muxsim.live.calibrate.measure_round_trip`) -- run on the live engine right before
and right after each live run. Their measured / predicted duration ratio, per LLM and phase,
is the speed factor (:class:`SpeedFactors`); :class:`ScaledLatency` multiplies the calibrated
curves by it for the simulation of that run. The reference jobs are never the run's own jobs,
so nothing measured in the live run feeds its own prediction. The gap between the before and
after factors is the drift during the run (:meth:`SpeedFactors.drift`), which callers use to
judge whether a run met a steady machine.

That prediction is still off by however much the machine's speed moves *during* the run (on the
2-core VM: +-10-15 % between 10-s windows, and differently on each core). To tell that apart
from errors of the simulator itself, :class:`SpeedTrace` reads the speed off the live run's own
jobs, per LLM and time window, and the simulation can replay it
(:func:`muxsim.sim.driver.simulate` ``speed=``). That replay is a diagnostic, not a prediction:
it is fed the measurement it is compared with.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from muxsim.perf.base import LatencyCurve
from muxsim.perf.overhead import dispatch_gaps

__all__ = ["PROBE_POINTS", "SpeedFactors", "probe_speed", "ScaledCurve", "ScaledLatency", "SpeedTrace"]

#: (batch, tokens per sequence) of the reference jobs: a small and a larger batch inside the
#: CPU calibration grid of experiments/validate_cpu.yaml, so the ratio compares the curve where
#: it was fitted.
PROBE_POINTS: tuple[tuple[int, int], ...] = ((2, 32), (8, 32))


@dataclass(frozen=True)
class SpeedFactors:
    """Measured / predicted duration of reference jobs, per LLM name (dimensionless; 1.0 = the
    machine runs as calibrated, 1.2 = jobs take 20 % longer).

    Attributes:
        prefill: LLM -> factor for prefill jobs.
        decode: LLM -> factor for decode iterations.
    """

    prefill: dict[str, float]
    decode: dict[str, float]

    def combined(self, other: "SpeedFactors") -> "SpeedFactors":
        """Geometric mean of two measurements (e.g. before and after a run), per LLM and phase.

        Raises:
            ValueError: the two cover different LLMs.
        """
        if set(self.prefill) != set(other.prefill) or set(self.decode) != set(other.decode):
            raise ValueError("speed factors cover different LLMs")
        return SpeedFactors({k: math.sqrt(v * other.prefill[k]) for k, v in self.prefill.items()},
                            {k: math.sqrt(v * other.decode[k]) for k, v in self.decode.items()})

    def drift(self, other: "SpeedFactors") -> float:
        """Largest relative change from ``self`` to ``other`` over LLMs and phases, as a
        fraction (0.1 = some LLM's phase got 10 % faster or slower)."""
        pairs = [(v, other.prefill[k]) for k, v in self.prefill.items()]
        pairs += [(v, other.decode[k]) for k, v in self.decode.items()]
        return max((max(a, b) / min(a, b) - 1.0 for a, b in pairs), default=0.0)

    def as_dict(self) -> dict:
        """JSON-ready ``{"prefill": {llm: f}, "decode": {llm: f}}``."""
        return {"prefill": dict(self.prefill), "decode": dict(self.decode)}


def probe_speed(engine, curves: Mapping[str, LatencyCurve], points: Sequence[tuple[int, int]] = PROBE_POINTS,
                warmup: int = 1, repeats: int = 3, sm_pct: float = 100.0,
                concurrent: bool = False) -> SpeedFactors:
    """Time reference jobs of every LLM and compare them with ``curves``.

    For each LLM, point ``(batch, seq)`` and repeat (``warmup`` discarded, then ``repeats``):
    one prefill of ``batch`` prompts of ``seq`` tokens, then
    :data:`muxsim.live.calibrate.ROUND_TRIP_DECODE_STEPS` decode iterations of that batch (their
    median is the sample), then release -- each job timed from submission to result, as
    :func:`muxsim.live.calibrate.measure_round_trip` and the live driver see them. The factor of
    a phase is the median over points and repeats of measured / predicted, with the prediction
    ``curve.prefill_s(batch * seq, batch, sm_pct)`` or ``curve.decode_s(batch, batch * seq, sm_pct)``.

    ``concurrent=False`` runs one LLM's reference jobs at a time; ``True`` runs every LLM's at
    once, so each is measured while the others compute, as in a run whose LLMs' jobs overlap
    (on a CPU, partitions share caches and memory bandwidth; on this project's 2-core VM a small
    model's decode is up to 45 % slower while a larger one runs beside it).

    Args:
        engine: a :class:`~muxsim.live.engine.Engine` with every LLM of ``curves`` loaded and no
            job in flight.
        curves: LLM name -> the latency curve its live jobs are predicted by.
        points: (batch, tokens per sequence) pairs, each >= 1.
        warmup, repeats: discarded and timed repeats per point (>= 0, >= 1).
        sm_pct: SM share the predictions assume (%); CPU curves ignore it.
        concurrent: run all LLMs' reference jobs at the same time.

    Returns:
        The :class:`SpeedFactors`. ``len(points) * (warmup + repeats) * 5`` jobs per LLM (about
        1-2 s per LLM for the tiny CPU models).

    Raises:
        ValueError: no points, a point < 1, or repeats < 1.
        muxsim.live.engine.EngineError: a reference job failed.
    """
    import time

    from muxsim.live.calibrate import ROUND_TRIP_DECODE_STEPS

    if not points or any(b < 1 or s < 1 for b, s in points):
        raise ValueError(f"points must be non-empty (batch, seq) pairs >= 1, got {list(points)!r}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    llms = list(curves)

    def plan(llm: str):
        """Yields (kind, batch, seq, request ids) jobs; receives each job's round-trip seconds."""
        k = 0
        for b, s in points:
            for rep in range(warmup + repeats):
                k += 1
                rids = [-(1_000_000 + 1000 * k + i) for i in range(b)]  # never a workload id
                p = yield ("prefill", b, s, rids)
                d = []
                for _ in range(ROUND_TRIP_DECODE_STEPS):
                    d.append((yield ("decode", b, s, rids)))
                engine.release(llm, rids)
                if rep >= warmup:
                    c = curves[llm]
                    samples[llm][0].append(p / c.prefill_s(b * s, b, sm_pct))
                    samples[llm][1].append(statistics.median(d) / c.decode_s(b, b * s, sm_pct))

    samples: dict[str, tuple[list, list]] = {n: ([], []) for n in llms}

    def submit(llm: str, job) -> int:
        kind, b, s, rids = job
        if kind == "prefill":
            return engine.submit_prefill(llm, [(r, s) for r in rids])
        return engine.submit_decode(llm, rids)

    groups = [llms] if concurrent else [[n] for n in llms]
    for group in groups:
        gens = {n: plan(n) for n in group}
        inflight: dict[int, tuple[str, float]] = {}
        for n, g in gens.items():
            inflight[submit(n, next(g))] = (n, time.monotonic())
        while inflight:
            for res in engine.wait(None):
                if res.job_id not in inflight:
                    continue
                n, t0 = inflight.pop(res.job_id)
                try:
                    job = gens[n].send(time.monotonic() - t0)
                except StopIteration:
                    continue
                inflight[submit(n, job)] = (n, time.monotonic())
    return SpeedFactors({n: statistics.median(samples[n][0]) for n in llms},
                        {n: statistics.median(samples[n][1]) for n in llms})


class ScaledCurve(LatencyCurve):
    """A latency curve whose prefill and decode durations are multiplied by fixed factors."""

    def __init__(self, base: LatencyCurve, prefill_factor: float, decode_factor: float) -> None:
        """Args: base curve; factors > 0 (dimensionless).

        Raises:
            ValueError: a factor <= 0 or not finite.
        """
        for f in (prefill_factor, decode_factor):
            if not (math.isfinite(f) and f > 0):
                raise ValueError(f"speed factors must be finite and > 0, got {f!r}")
        self.base = base
        self.model, self.n_gpus, self.gpu = base.model, base.n_gpus, base.gpu
        self.source = f"{base.source}*speed"
        self._fp = float(prefill_factor)
        self._fd = float(decode_factor)

    def prefill_s(self, n_tokens: int, n_seqs: int, sm_pct: float) -> float:
        """``base.prefill_s(...)`` x the prefill factor (s)."""
        return self._fp * self.base.prefill_s(n_tokens, n_seqs, sm_pct)

    def decode_s(self, batch: int, ctx_tokens: int, sm_pct: float) -> float:
        """``base.decode_s(...)`` x the decode factor (s)."""
        return self._fd * self.base.decode_s(batch, ctx_tokens, sm_pct)


class ScaledLatency:
    """A latency model whose curves are a base model's, scaled per catalog model.

    Args:
        base: object with ``curve(model, n_gpus, gpu)``.
        factors: catalog model name -> (prefill factor, decode factor); models not listed are
            returned unscaled.
    """

    def __init__(self, base, factors: Mapping[str, tuple[float, float]]) -> None:
        self.base = base
        self.factors = dict(factors)

    def curve(self, model, n_gpus: int, gpu) -> LatencyCurve:
        """The base curve of ``model`` on ``n_gpus`` GPUs, scaled by its factors."""
        c = self.base.curve(model, n_gpus, gpu)
        name = getattr(model, "name", model)
        if name not in self.factors:
            return c
        return ScaledCurve(c, *self.factors[name])

    @staticmethod
    def per_model(factors: SpeedFactors, model_of: Mapping[str, str]) -> dict[str, tuple[float, float]]:
        """Per-LLM factors -> per-catalog-model factors (geometric mean over LLMs that share a
        model, since a curve belongs to a model).

        Args:
            factors: per-LLM speed factors.
            model_of: LLM name -> catalog model name.
        """
        out: dict[str, list[tuple[float, float]]] = {}
        for llm, m in model_of.items():
            out.setdefault(m, []).append((factors.prefill[llm], factors.decode[llm]))
        return {m: (math.exp(statistics.fmean(math.log(p) for p, _ in v)),
                    math.exp(statistics.fmean(math.log(d) for _, d in v))) for m, v in out.items()}


class SpeedTrace:
    """The device speed a live run met, per LLM and time window, read off the run's own jobs.

    For every job, factor = (engine-measured duration + the run's dispatch gap) / the latency
    model's prediction. The dispatch gap is the median time from a job's end to the submission
    of the same LLM's next job when that follows at once (under ``back_to_back_s``): the live
    driver's and the IPC's share of each job, which the simulation's jobs do not have. A
    window's factor is the median over that LLM's jobs submitted in it; a window without jobs
    takes the LLM's median over the whole run.

    Calling the trace, ``trace(llm, t)``, gives the factor at run time ``t`` (s), as
    :func:`muxsim.sim.driver.simulate` takes it.

    Args:
        jobs: a live run's job table (:attr:`muxsim.live.driver.LiveResult.jobs`): ``llm``,
            ``submitted_s``, ``ended_s`` (s from the run's start), ``measured_s``,
            ``predicted_s`` (s).
        window_s: window length (s, > 0).
        back_to_back_s: the longest end-to-next-submission gap that counts as dispatch (s).

    Attributes:
        window_s: as given.
        dispatch_gap_s: the dispatch gap added to every job (s; 0 when no job followed another
            at once).
        factors: LLM -> {window index: factor}; window k covers [k * window_s, (k+1) * window_s).
        overall: LLM -> median factor over the run.

    Raises:
        ValueError: ``window_s`` <= 0, a missing column, or a non-positive prediction.
    """

    def __init__(self, jobs: pd.DataFrame, window_s: float = 2.0, back_to_back_s: float = 0.005) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s!r}")
        need = {"llm", "submitted_s", "ended_s", "measured_s", "predicted_s"}
        if not need <= set(jobs.columns):
            raise ValueError(f"jobs table lacks columns {sorted(need - set(jobs.columns))}")
        if (jobs["predicted_s"] <= 0).any():
            raise ValueError("jobs table has a non-positive predicted_s")
        self.window_s = float(window_s)
        gaps = dispatch_gaps(jobs, back_to_back_s)
        self.dispatch_gap_s = float(np.median(gaps)) if len(gaps) else 0.0
        ratio = (jobs["measured_s"] + self.dispatch_gap_s) / jobs["predicted_s"]
        window = (jobs["submitted_s"] // self.window_s).astype(int)
        frame = pd.DataFrame({"llm": jobs["llm"], "window": window, "ratio": ratio})
        self.factors = {llm: g.groupby("window")["ratio"].median().to_dict() for llm, g in frame.groupby("llm")}
        self.overall = frame.groupby("llm")["ratio"].median().to_dict()

    def __call__(self, llm: str, t: float) -> float:
        """Speed factor of ``llm`` at run time ``t`` (s); 1.0 for an LLM with no jobs."""
        f = self.factors.get(llm)
        if f is None:
            return 1.0
        return float(f.get(int(t // self.window_s), self.overall[llm]))

    def as_dict(self) -> dict:
        """JSON-ready summary: window, dispatch gap, per-LLM median and range of the factors."""
        return {"window_s": self.window_s, "dispatch_gap_s": self.dispatch_gap_s,
                "median": {k: float(v) for k, v in self.overall.items()},
                "range": {k: [float(min(v.values())), float(max(v.values()))] for k, v in self.factors.items()}}
