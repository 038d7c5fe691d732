"""What a real serving system pays per job beyond the profiled kernel time
(../shared/docs/muxserve.md §10), and its fit from a live run's jobs.

Two terms, both added to every job's duration by the simulator and the placement estimator:

- a **dispatch gap** per job (s): the time from one job's end to the next job's start on the same
  partition. Default 0.55 ms, the median gap muxsim's own CPU live runs measured
  (``muxsim validate experiments/validate_cpu.yaml``, README "Live backend and validation").
- a **per-sequence cost** per decode iteration (s per sequence in the batch): the reference
  placement estimator's allowance for the scheduler's bookkeeping and the shared-memory hand-off
  between scheduler and engine processes: 0.1 / 0.08 / 0.07 ms for 7B / 13B / larger LLaMA
  (hao-ai-lab/MuxServe's placement estimator, restated in ../shared/docs/muxserve.md §4 item 7
  and §10). Size classes follow the catalog's compute weight (1, 2, 4+).

Both are settings (``overhead`` in the experiment config); ``muxsim calibrate overhead`` fits them
from the ``jobs.parquet`` of a ``muxsim validate`` run (:func:`fit_overhead`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from muxsim.catalog import MODELS, GPUSpec, ModelSpec
from muxsim.files import atomic_file
from muxsim.perf.base import LatencyCurve
from muxsim.perf.curves import FittedCurve

__all__ = [
    "DEFAULT_DISPATCH_S",
    "JOB_COLUMNS",
    "JOB_KINDS",
    "MAX_JOB_S",
    "MAX_OVERHEAD_S",
    "REFERENCE_PER_SEQ_S",
    "JobOverhead",
    "OverheadCurve",
    "OverheadLatency",
    "check_jobs",
    "dispatch_gaps",
    "fit_overhead",
    "load_overhead",
    "reference_per_seq_s",
    "save_overhead",
]

#: Median end-to-next-submission gap of muxsim's CPU live runs (s): README, live validation.
DEFAULT_DISPATCH_S = 0.55e-3

#: Reference per-sequence decode overhead (s) by compute weight (1: 7B, 2: 13B, larger: 4+).
REFERENCE_PER_SEQ_S = {1: 0.10e-3, 2: 0.08e-3, 4: 0.07e-3}


def reference_per_seq_s(model: ModelSpec) -> float:
    """The reference estimator's per-sequence decode cost of ``model``'s size class (s)."""
    return REFERENCE_PER_SEQ_S.get(model.compute_weight, REFERENCE_PER_SEQ_S[4])


@dataclass(frozen=True)
class JobOverhead:
    """The job-overhead model.

    Attributes:
        dispatch_s: added to every prefill and decode job (s, >= 0).
        decode_per_seq_s: added per sequence to every decode iteration (s, >= 0): one value for
            every model, a mapping model name -> value (models not in it take the reference's),
            or None for the reference's 0.1 / 0.08 / 0.07 ms by size class.
        source: where the figures come from (for run.json).
    """

    dispatch_s: float = DEFAULT_DISPATCH_S
    decode_per_seq_s: float | Mapping[str, float] | None = None
    source: str = "defaults: dispatch gap of muxsim's CPU live runs; reference per-sequence costs"

    def per_seq_s(self, model: ModelSpec) -> float:
        """Per-sequence decode cost of ``model`` (s)."""
        v = self.decode_per_seq_s
        if v is None:
            return reference_per_seq_s(model)
        if isinstance(v, Mapping):
            return float(v[model.name]) if model.name in v else reference_per_seq_s(model)
        return float(v)

    @property
    def is_zero(self) -> bool:
        """Whether the model adds nothing (both terms 0)."""
        v = self.decode_per_seq_s
        per_seq_zero = v is not None and (all(x == 0 for x in v.values()) if isinstance(v, Mapping) else v == 0)
        return self.dispatch_s == 0 and per_seq_zero

    def as_dict(self, models) -> dict:
        """JSON-ready figures for ``models`` (catalog specs): dispatch and per-sequence costs in s."""
        return {"dispatch_s": self.dispatch_s,
                "decode_per_seq_s": {m.name: self.per_seq_s(m) for m in models},
                "source": self.source}


class OverheadCurve(LatencyCurve):
    """A latency curve plus the job-overhead model: prefill = base + dispatch; decode = base +
    dispatch + per-sequence cost x batch (s)."""

    __slots__ = ("_fitted", "base", "dispatch_s", "gpu", "model", "n_gpus", "per_seq_s", "source")

    def __init__(self, base: LatencyCurve, dispatch_s: float, per_seq_s: float):
        self.base = base
        self._fitted = type(base) is FittedCurve
        self.dispatch_s = dispatch_s
        self.per_seq_s = per_seq_s
        self.model, self.n_gpus, self.gpu, self.source = base.model, base.n_gpus, base.gpu, base.source

    def prefill_s(self, n_tokens: int, n_seqs: int, sm_pct: float) -> float:
        return self.base.prefill_s(n_tokens, n_seqs, sm_pct) + self.dispatch_s

    def decode_s(self, batch: int, ctx_tokens: int, sm_pct: float) -> float:
        return self.base.decode_s(batch, ctx_tokens, sm_pct) + self.dispatch_s + self.per_seq_s * batch

    def decode_steps(self, batch, ctx_tokens, sm_pct, k, last, end, bound, ends=None):
        if self._fitted:  # its own loop, overheads added as decode_s adds them
            return self.base.decode_steps(batch, ctx_tokens, sm_pct, k, last, end, bound,
                                          self.dispatch_s, self.per_seq_s, ends=ends)
        return super().decode_steps(batch, ctx_tokens, sm_pct, k, last, end, bound, ends=ends)


class OverheadLatency:
    """A latency model (anything with ``curve(model, n_gpus, gpu)``) with the job overheads added
    to every curve it gives. ``base`` is the model without them (the SLO bases use it)."""

    def __init__(self, base, overhead: JobOverhead):
        self.base = base
        self.overhead = overhead

    def curve(self, model: ModelSpec, n_gpus: int, gpu: GPUSpec) -> LatencyCurve:
        """``base``'s curve of ``model`` on ``n_gpus`` GPUs of ``gpu``, overheads added."""
        c = self.base.curve(model, n_gpus, gpu)
        if self.overhead.is_zero:
            return c
        return OverheadCurve(c, self.overhead.dispatch_s, self.overhead.per_seq_s(model))


def dispatch_gaps(jobs: pd.DataFrame, back_to_back_s: float = 0.005) -> np.ndarray:
    """End-to-next-submission gaps (s) of back-to-back jobs of each LLM in a live run's job table.

    Args:
        jobs: columns ``llm``, ``submitted_s``, ``ended_s`` (s from the run's start)
            (:class:`muxsim.live.driver.LiveResult.jobs`).
        back_to_back_s: the longest gap counted (s): a longer one means the LLM had nothing to
            run, not dispatch cost.
    """
    gaps = []
    for _, g in jobs.sort_values("submitted_s", kind="stable").groupby("llm", sort=True):
        gap = g["submitted_s"].to_numpy()[1:] - g["ended_s"].to_numpy()[:-1]
        gaps.append(gap[(gap >= 0) & (gap < back_to_back_s)])
    return np.concatenate(gaps) if gaps else np.empty(0)


#: Columns of a job table :func:`fit_overhead` reads.
JOB_COLUMNS = ("llm", "model", "kind", "n_seqs", "submitted_s", "ended_s", "measured_s", "predicted_s")
#: Job kinds of a job table.
JOB_KINDS = ("prefill", "decode")
#: Largest dispatch gap or per-sequence cost an overhead file may hold, s: far beyond any
#: measured one (well under 1 ms); a larger figure is a corrupt file and would stall a run.
MAX_OVERHEAD_S = 1.0
#: Latest time and longest duration of a job table, s (about 31.7 years; the bound of a
#: workload's arrival times, muxsim.workload.arrivals.MAX_ARRIVAL_S).
MAX_JOB_S = 1e9


def check_jobs(jobs: pd.DataFrame, origin: str = "job table") -> None:
    """Check a live run's job table before a fit (:func:`fit_overhead` calls it).

    Raises:
        ValueError: one line starting with ``origin``: a missing column; no rows; a missing
            or empty ``llm``, ``model`` or ``kind``; a kind other than prefill/decode or a
            model not in the catalog (both list the allowed values); a non-numeric column;
            NaN or inf in a numeric column (naming it); ``n_seqs`` not an integer >= 1; a
            time or duration outside ``[0, MAX_JOB_S]`` s (1e9 s).
    """
    missing = [c for c in JOB_COLUMNS if c not in jobs.columns]
    if missing:
        raise ValueError(f"{origin}: lacks column(s) {missing}; it needs {list(JOB_COLUMNS)} "
                         "(a muxsim validate jobs.parquet)")
    if jobs.empty:
        raise ValueError(f"{origin}: no jobs (the table has no rows)")
    for col in ("llm", "model", "kind"):
        s = jobs[col]
        if s.isna().any() or not all(isinstance(v, str) and v.strip() for v in s):
            raise ValueError(f"{origin}: column {col!r} must hold non-empty strings with no "
                             "missing values")
    bad = sorted(set(jobs["kind"]) - set(JOB_KINDS))
    if bad:
        raise ValueError(f"{origin}: column 'kind' holds {', '.join(map(repr, bad))}; allowed: "
                         f"{', '.join(JOB_KINDS)}")
    bad = sorted(set(jobs["model"]) - set(MODELS))
    if bad:
        raise ValueError(f"{origin}: column 'model' holds model(s) not in the catalog: "
                         f"{', '.join(map(repr, bad))}; allowed: {', '.join(MODELS)}")
    for col in JOB_COLUMNS[3:]:
        s = jobs[col]
        if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
            raise ValueError(f"{origin}: column {col!r} must be numeric, got {s.dtype}")
        v = s.to_numpy(dtype=float, na_value=np.nan)
        if not np.isfinite(v).all():
            raise ValueError(f"{origin}: column {col!r} holds NaN or inf; every value must be "
                             "a finite number")
        if col == "n_seqs":
            if not (v == np.round(v)).all() or (v < 1).any():
                raise ValueError(f"{origin}: column 'n_seqs' must hold integers >= 1 "
                                 "(sequences per job)")
        elif (v < 0).any() or (v > MAX_JOB_S).any():
            raise ValueError(f"{origin}: column {col!r} must lie in [0, {MAX_JOB_S:g}] s "
                             "(MAX_JOB_S)")


def fit_overhead(jobs: pd.DataFrame, back_to_back_s: float = 0.005, max_points: int = 4000,
                 seed: int = 0, origin: str = "job table") -> tuple[JobOverhead, pd.DataFrame]:
    """Fit the job-overhead model to a live run's jobs.

    The dispatch gap is the median of :func:`dispatch_gaps`. The per-sequence cost of each model
    is the Theil-Sen slope (robust to the outliers a noisy machine gives) of the residual
    measured - predicted duration of its decode jobs against their batch size; a negative slope
    (the calibrated curves already hold the cost) is reported as measured and used as 0.

    Args:
        jobs: the ``jobs.parquet`` of ``muxsim validate``: ``llm``, ``model``, ``kind``,
            ``n_seqs``, ``submitted_s``, ``ended_s``, ``measured_s``, ``predicted_s``
            (s); ``cell``/``strategy`` columns, when present, keep runs apart for the gaps.
        back_to_back_s: see :func:`dispatch_gaps`.
        max_points: decode jobs per model the slope uses at most (a seeded subsample).
        origin: names the table in messages (e.g. its file).

    Returns:
        (the fitted :class:`JobOverhead`, a report with one row per model: ``model``,
        ``decode_jobs``, ``per_seq_ms`` (the slope), ``per_seq_ms_lo``/``_hi`` (its 95 %
        interval), ``residual_ms_median``; and a row ``dispatch`` with ``n_gaps`` and
        ``dispatch_ms``).

    Raises:
        ValueError: one line starting with ``origin``: a bad table (:func:`check_jobs`), no
            decode jobs, or no model whose decode jobs have more than one batch size (no
            per-sequence cost can be fitted: every model would get 0).
    """
    from scipy.stats import theilslopes

    check_jobs(jobs, origin)
    runs = [c for c in ("cell", "strategy") if c in jobs.columns]
    gaps = np.concatenate([dispatch_gaps(g, back_to_back_s) for _, g in jobs.groupby(runs, sort=True)]) \
        if runs else dispatch_gaps(jobs, back_to_back_s)
    dispatch = float(np.median(gaps)) if len(gaps) else 0.0
    rng = np.random.default_rng(seed)
    rows = []
    per_seq = {}
    dec = jobs[jobs["kind"] == "decode"]
    if dec.empty:
        raise ValueError(f"{origin}: holds no decode job to fit the per-sequence cost to")
    for model, g in dec.groupby("model", sort=True):
        if len(g) > max_points:
            g = g.iloc[np.sort(rng.choice(len(g), max_points, replace=False))]
        x = g["n_seqs"].to_numpy(dtype=float)
        y = (g["measured_s"] - g["predicted_s"]).to_numpy(dtype=float)
        if np.ptp(x) == 0:
            slope = lo = hi = math.nan
        else:
            slope, _, lo, hi = theilslopes(y, x)
        per_seq[str(model)] = max(0.0, float(slope)) if math.isfinite(slope) else 0.0
        rows.append({"model": model, "decode_jobs": len(g), "per_seq_ms": slope * 1e3,
                     "per_seq_ms_lo": lo * 1e3, "per_seq_ms_hi": hi * 1e3,
                     "residual_ms_median": float(np.median(y)) * 1e3})
    if not any(math.isfinite(r["per_seq_ms"]) for r in rows):
        raise ValueError(f"{origin}: no model's decode jobs have more than one batch size "
                         "(n_seqs), so no per-sequence cost can be fitted")
    rows.append({"model": "dispatch", "n_gaps": len(gaps), "dispatch_ms": dispatch * 1e3})
    fitted = JobOverhead(dispatch, per_seq, source=f"fitted by muxsim calibrate overhead to {len(jobs)} live jobs")
    return fitted, pd.DataFrame(rows)


def save_overhead(overhead: JobOverhead, path: str | Path) -> Path:
    """Write a fitted overhead as JSON (``dispatch_s``, ``decode_per_seq_s`` {model: s},
    ``source``) atomically."""
    path = Path(path)
    per_seq = overhead.decode_per_seq_s
    doc = {"dispatch_s": overhead.dispatch_s,
           "decode_per_seq_s": dict(per_seq) if isinstance(per_seq, Mapping) else per_seq,
           "source": overhead.source}
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return path


def load_overhead(path: str | Path) -> JobOverhead:
    """Read a JSON written by :func:`save_overhead`.

    Raises:
        FileNotFoundError: no such file. ValueError: malformed, negative, non-finite or too
            large (> :data:`MAX_OVERHEAD_S`) figures, or per-sequence costs of models not in
            the catalog (lists the allowed).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"overhead file not found: {path}")
    try:
        doc = json.loads(path.read_text())
        dispatch = float(doc["dispatch_s"])
        per_seq = doc.get("decode_per_seq_s")
        if isinstance(per_seq, dict):
            per_seq = {str(k): float(v) for k, v in per_seq.items()}
        elif per_seq is not None:
            per_seq = float(per_seq)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: malformed overhead file ({e})") from None
    vals = [dispatch] + (list(per_seq.values()) if isinstance(per_seq, dict) else [per_seq] if per_seq is not None else [])
    if any(not (math.isfinite(v) and v >= 0) for v in vals):
        raise ValueError(f"{path}: overhead figures must be finite and >= 0 s")
    if any(v > MAX_OVERHEAD_S for v in vals):
        raise ValueError(f"{path}: overhead figures must be at most {MAX_OVERHEAD_S:g} s per job "
                         f"or sequence (MAX_OVERHEAD_S; measured ones are well under 1 ms)")
    if isinstance(per_seq, dict):
        # A cost under a name no catalog model has would never be applied: a typo, not data.
        unknown = sorted(set(per_seq) - set(MODELS))
        if unknown:
            raise ValueError(f"{path}: decode_per_seq_s names model(s) not in the catalog: "
                             f"{', '.join(map(repr, unknown))}; allowed: {', '.join(MODELS)}")
    return JobOverhead(dispatch, per_seq, source=str(doc.get("source", path)))
