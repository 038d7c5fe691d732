"""Multi-LLM workloads synthesized from one real request trace.

A public trace (Azure, Mooncake, BurstGPT, ShareGPT, ...; loaded by
:mod:`muxsim.workload.formats`) is one stream of requests. MuxServe's evaluation serves many LLMs,
each with its own popularity (Duan et al., ICML 2024, §5.1: rate_i proportional to
(i + 1)^-alpha; §5.3: ChatLMSYS per-model rates, time-condensed). This module turns one stream
into such a workload while keeping the stream's real arrival pattern:

* :func:`split_among_llms` -- each arrival goes to one LLM drawn with probability proportional
  to a weight (random thinning): the aggregate stream, and so its burstiness, is unchanged and
  every LLM sees a thinned copy of the same bursts.
* :func:`drifting_split` -- the same with weights that change between time windows.
* :func:`cut_window`, :func:`condense`, :func:`rescale_to_rate` -- pick a slice of the trace and
  compress or stretch its time axis.
* :func:`burstiness_cv`, :func:`mean_rate` -- the statistics used to check the above.
* :class:`SynthSpec` / :func:`load_synth_spec` / :func:`synthesize` -- the same driven by a YAML
  file (``muxsim trace synth``).

Every function is pure: it returns a new frame and leaves its input untouched; randomness comes
only from the ``seed`` argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from muxsim.schema import format_validation_error, read_yaml

from .popularity import popularity_rates

__all__ = [
    "DriftWindowSpec",
    "PopularitySpec",
    "SourceSpec",
    "SynthSpec",
    "SynthSpecError",
    "WindowSpec",
    "burstiness_cv",
    "condense",
    "cut_window",
    "drifting_split",
    "load_source",
    "load_synth_spec",
    "mean_rate",
    "power_law_weights",
    "rates_file_weights",
    "renumbered",
    "rescale_to_rate",
    "source_formats",
    "split_among_llms",
    "synthesize",
]

#: Format name for a workload Parquet written by :func:`muxsim.workload.save_workload`.
PARQUET_FORMAT = "parquet"


# --------------------------------------------------------------------------------------------
# validation helpers


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def _check_llms(llms: Sequence[str]) -> list[str]:
    if isinstance(llms, str):
        # ValueError like every other bad llms value: callers report them as one kind.
        raise ValueError(  # noqa: TRY004
            f"llms must be a list of names, got the string {llms!r}")
    llms = list(llms)
    if not llms:
        raise ValueError("llms must name at least one LLM")
    if not all(isinstance(m, str) and m for m in llms):
        raise ValueError(f"llms must be non-empty strings, got {llms!r}")
    if len(set(llms)) != len(llms):
        dup = sorted({m for m in llms if llms.count(m) > 1})
        raise ValueError(f"llms must be unique, duplicated: {dup}")
    return llms


def _check_weights(weights, n: int, what: str = "weights") -> np.ndarray:
    """Weights as a float64 array of shape ``(n,)`` that sums to 1."""
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be numbers, got {weights!r}") from None
    if w.ndim != 1 or len(w) != n:
        raise ValueError(f"{what} must have one entry per LLM ({n}), got {len(w) if w.ndim == 1 else w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{what} must be finite and >= 0, got {w.tolist()}")
    total = w.sum()
    if not total > 0:
        raise ValueError(f"{what} must have a positive sum, got {w.tolist()}")
    return w / total


def _check_times(trace: pd.DataFrame, what: str = "trace") -> np.ndarray:
    if not isinstance(trace, pd.DataFrame):
        # ValueError like the other checks here: the public functions document ValueError.
        raise ValueError(  # noqa: TRY004
            f"{what} must be a pandas DataFrame, got {type(trace).__name__}")
    if "arrival_s" not in trace.columns:
        raise ValueError(
            f"{what} has no 'arrival_s' column (a length-only trace?); add arrival times first "
            "with muxsim.workload.assign_arrivals"
        )
    t = trace["arrival_s"].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(t)):
        raise ValueError(f"{what}: column 'arrival_s' must be finite")
    return t


def _renumbered(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a RangeIndex and ``request_id`` = 0 .. N-1 as the first column."""
    df = df.reset_index(drop=True)
    rest = [c for c in df.columns if c != "request_id"]
    out = df[rest].copy()
    out.insert(0, "request_id", np.arange(len(out), dtype=np.int64))
    return out


#: Public name of :func:`_renumbered`, for callers outside this module (muxsim.config).
renumbered = _renumbered


def _sorted_by_arrival(trace: pd.DataFrame) -> pd.DataFrame:
    t = _check_times(trace)
    order = np.argsort(t, kind="stable")
    return trace.iloc[order].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# loading


def source_formats() -> tuple[str, ...]:
    """Formats :func:`load_source` accepts: ``"parquet"`` (a saved workload) and the formats of
    :data:`muxsim.workload.formats.TRACE_FORMATS`."""
    from .formats import TRACE_FORMATS

    return (PARQUET_FORMAT, *TRACE_FORMATS)


def load_source(
    path: str | Path,
    fmt: str | None = None,
    *,
    llm: str = "llm-0",
    tokenizer: str | None = None,
    sharegpt_turns: str = "first",
    infer_sessions: bool = False,
) -> pd.DataFrame:
    """Read a trace in any supported format, or a workload Parquet.

    A ``*.parquet`` file (or ``fmt="parquet"``) is read with
    :func:`muxsim.workload.load_workload`; everything else goes to
    :func:`muxsim.workload.formats.load_trace` (which detects the format when ``fmt`` is None).

    Args:
        path: trace file.
        fmt: one of :func:`source_formats`, or None to detect.
        llm: LLM name of single-stream traces.
        tokenizer: tokenizer for formats that carry text rather than token counts.
        sharegpt_turns: ``"first"`` or ``"all"`` turns of ShareGPT conversations.
        infer_sessions: group multi-turn rows of a ``"lengths"`` file into sessions.

    Returns:
        DataFrame in the workload schema (see :mod:`muxsim.workload.generate`), possibly with
        ``session_id`` / ``prefix_ids``; length-only formats have no ``arrival_s`` column.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unknown ``fmt`` (lists the allowed ones) or a malformed file (one line).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"trace file not found: {path}")
    if fmt == PARQUET_FORMAT or (fmt is None and path.suffix.lower() == ".parquet"):
        from .generate import load_workload

        return load_workload(path)
    from .formats import load_trace

    if fmt is not None and fmt not in source_formats():
        raise ValueError(f"unknown trace format {fmt!r}; allowed: {', '.join(source_formats())}")
    kw = {"infer_sessions": True} if infer_sessions else {}
    return load_trace(path, fmt, llm=llm, tokenizer=tokenizer, sharegpt_turns=sharegpt_turns, **kw)


# --------------------------------------------------------------------------------------------
# popularity


def power_law_weights(n: int, alpha: float) -> np.ndarray:
    """Popularity shares of ``n`` LLMs under MuxServe's power law (§5.1).

    ``w_i`` proportional to ``(i + 1) ** -alpha`` for ``i = 0 .. n - 1``, normalised to sum 1
    (the shape of :func:`muxsim.workload.popularity_rates`).

    Args:
        n: number of LLMs, >= 1.
        alpha: exponent, finite and >= 0 (0 gives equal shares).

    Returns:
        float64 array of shape ``(n,)``, non-increasing, summing to 1.

    Raises:
        ValueError: bad ``n`` or ``alpha``.
    """
    r = popularity_rates(n, alpha, 1.0)
    return r / r.sum()


def rates_file_weights(path: str | Path) -> tuple[list[str], np.ndarray]:
    """LLM names and popularity shares from a MuxServe rates file (``models.yaml``, e.g. the
    ChatLMSYS files ``requests_over_time_models_days_..._condense<N>_....yaml``).

    Args:
        path: YAML file read by :func:`muxsim.workload.formats.load_muxserve_rates`.

    Returns:
        ``(names, weights)``: the file's LLM names in file order, and float64 shares of shape
        ``(len(names),)`` proportional to their ``rate``, summing to 1.

    Raises:
        FileNotFoundError: missing file.
        ValueError: malformed file, or rates that are negative, not finite or all zero.
    """
    from .formats import load_muxserve_rates

    df = load_muxserve_rates(path)
    names = [str(n) for n in df["llm"]]
    return names, _check_weights(df["rate"].to_numpy(), len(names), f"rates in {path}")


# --------------------------------------------------------------------------------------------
# splitting


def _assignment_units(df: pd.DataFrame) -> np.ndarray:
    """Per row, the index of the unit that is assigned as a whole: a session (rows sharing a
    non-missing ``session_id``) or the row alone. Units are numbered in order of first row."""
    n = len(df)
    if "session_id" not in df.columns or n == 0:
        return np.arange(n)
    codes, _ = pd.factorize(df["session_id"], use_na_sentinel=True)
    codes = np.asarray(codes, dtype=np.int64).copy()
    lone = codes < 0
    codes[lone] = codes.max(initial=-1) + 1 + np.arange(int(lone.sum()))
    units, _ = pd.factorize(codes)  # renumber by first appearance
    return np.asarray(units, dtype=np.int64)


def _assign(trace: pd.DataFrame, llms: list[str], bounds: np.ndarray, weights: np.ndarray,
            seed: int) -> pd.DataFrame:
    """Core of the splits. ``bounds`` (k-1,) window ends, ``weights`` (k, m) rows summing to 1."""
    df = _sorted_by_arrival(trace)
    t = df["arrival_s"].to_numpy(dtype=np.float64)
    units = _assignment_units(df)
    n_units = int(units.max()) + 1 if len(units) else 0
    first = np.unique(units, return_index=True)[1]  # first row of each unit
    window = np.searchsorted(bounds, t[first], side="right")
    u = np.random.default_rng(seed).random(n_units)
    cum = np.cumsum(weights, axis=1)
    cum /= cum[:, -1:]
    pick = np.empty(n_units, dtype=np.int64)
    for k in range(len(weights)):
        sel = window == k
        # side="right": u in [cum[j-1], cum[j]) picks j, so a zero weight is never picked.
        pick[sel] = np.searchsorted(cum[k], u[sel], side="right")
    names = np.asarray(llms, dtype=object)[pick[units]]
    out = df.drop(columns=[c for c in ("llm",) if c in df.columns])
    out.insert(0, "llm", pd.Series(names, dtype=str))
    out = _renumbered(out)
    cols = ["request_id", "llm", "arrival_s"]
    return out[cols + [c for c in out.columns if c not in cols]]


def split_among_llms(trace: pd.DataFrame, llms: Sequence[str], weights, seed: int) -> pd.DataFrame:
    """Spread one stream of requests over several LLMs by random thinning.

    Each request (or each session: rows sharing a non-missing ``session_id`` stay together, so
    a conversation is served by one LLM) goes to LLM ``i`` with probability ``weights[i] /
    sum(weights)``, independently. Thinning a stream keeps its time structure: the aggregate
    (all LLMs together) is the input stream itself, so its burstiness and request count are
    unchanged, and each LLM's stream is a random subsample of the same bursts (a thinned
    renewal stream with gap CV c has CV ``sqrt(1 + p (c^2 - 1))`` for share p, so a bursty
    trace stays bursty per LLM).

    Args:
        trace: frame with ``arrival_s`` (s, finite), ``prompt_tokens``, ``output_tokens``; any
            other columns (``session_id``, ``prefix_ids``, ...) are carried along, and an
            existing ``llm`` column is replaced.
        llms: LLM names, unique non-empty strings.
        weights: shares, shape ``(len(llms),)``, finite, >= 0 with a positive sum (need not be
            normalised; see :func:`power_law_weights`, :func:`rates_file_weights`).
        seed: integer >= 0; the same inputs and seed give the same frame.

    Returns:
        New frame sorted by ``arrival_s`` (stable) with a RangeIndex; ``request_id`` 0 .. N-1
        in arrival order, ``llm`` from ``llms``, every other column as in ``trace``.
        N == len(trace).

    Raises:
        ValueError: missing ``arrival_s``, bad names, weights or seed.
    """
    llms = _check_llms(llms)
    w = _check_weights(weights, len(llms))
    return _assign(trace, llms, np.empty(0), w[None, :], _check_seed(seed))


def drifting_split(
    trace: pd.DataFrame,
    llms: Sequence[str],
    windows: Sequence[tuple[float | None, object]],
    seed: int,
) -> pd.DataFrame:
    """Like :func:`split_among_llms`, with popularity that drifts over time.

    ``windows`` is a list of ``(until_s, weights)``: the first weights apply to arrivals with
    ``arrival_s < until_s[0]``, the second to ``until_s[0] <= arrival_s < until_s[1]``, and so
    on; the last window's weights also hold after its ``until_s`` (which may be None, meaning
    "to the end"). A session is assigned by the time of its first request. With one window the
    result equals :func:`split_among_llms` with the same seed.

    Args:
        trace: as for :func:`split_among_llms`.
        llms: LLM names.
        windows: at least one ``(until_s, weights)``; ``until_s`` in s, strictly increasing,
            finite except that the last may be None or inf; weights as for
            :func:`split_among_llms`.
        seed: integer >= 0.

    Returns:
        As :func:`split_among_llms`.

    Raises:
        ValueError: no windows, ``until_s`` not increasing / not finite, bad weights, names or
            seed, missing ``arrival_s``.
    """
    llms = _check_llms(llms)
    windows = list(windows)
    if not windows:
        raise ValueError("windows must hold at least one (until_s, weights)")
    bounds = []
    for k, (until, _) in enumerate(windows[:-1]):
        if until is None or not math.isfinite(float(until)):
            raise ValueError(f"window {k}: until_s must be a finite time in s (only the last may be open), got {until!r}")
        if bounds and float(until) <= bounds[-1]:
            raise ValueError(f"window {k}: until_s must increase, got {until!r} after {bounds[-1]!r}")
        bounds.append(float(until))
    last = windows[-1][0]
    if last is not None and not (isinstance(last, (int, float, np.number)) and not math.isnan(float(last))):
        raise ValueError(f"window {len(windows) - 1}: until_s must be a time in s or None, got {last!r}")
    if last is not None and bounds and float(last) <= bounds[-1]:
        raise ValueError(f"window {len(windows) - 1}: until_s must increase, got {last!r} after {bounds[-1]!r}")
    w = np.vstack([_check_weights(wk, len(llms), f"window {k} weights") for k, (_, wk) in enumerate(windows)])
    return _assign(trace, llms, np.asarray(bounds, dtype=np.float64), w, _check_seed(seed))


# --------------------------------------------------------------------------------------------
# time axis


def condense(trace: pd.DataFrame, factor: float) -> pd.DataFrame:
    """Compress time by ``factor``: ``arrival_s / factor`` (MuxServe's "condense", used to replay
    a day of ChatLMSYS traffic in minutes). Every rate is multiplied by ``factor``; the gaps'
    CV and the request count are unchanged.

    Args:
        trace: frame with ``arrival_s`` (s).
        factor: finite and > 0 (> 1 compresses, < 1 stretches).

    Returns:
        Copy of ``trace`` with ``arrival_s`` divided by ``factor``; rows and other columns as
        they were.

    Raises:
        ValueError: bad ``factor`` or missing/non-finite ``arrival_s``.
    """
    t = _check_times(trace)
    if isinstance(factor, bool) or not (isinstance(factor, (int, float, np.number))
                                        and math.isfinite(factor) and factor > 0):
        raise ValueError(f"condense factor must be a finite number > 0, got {factor!r}")
    out = trace.copy()
    out["arrival_s"] = t / float(factor)
    return out


def mean_rate(arrival_s) -> float:
    """Mean request rate of a stream, req/s: ``N / (max(arrival_s) - min(arrival_s))``.

    Args:
        arrival_s: arrival times, s, shape ``(N,)``, N >= 2.

    Raises:
        ValueError: fewer than 2 arrivals, non-finite times, or all arrivals at one instant.
    """
    t = np.asarray(arrival_s, dtype=np.float64)
    if t.ndim != 1 or len(t) < 2:
        raise ValueError(f"a mean rate needs at least 2 arrivals, got {t.size}")
    if not np.all(np.isfinite(t)):
        raise ValueError("arrival times must be finite")
    span = float(t.max() - t.min())
    if not span > 0:
        raise ValueError("all arrivals are at the same instant: the rate is undefined")
    return len(t) / span


def rescale_to_rate(trace: pd.DataFrame, rate: float) -> pd.DataFrame:
    """Stretch or compress time so the overall mean rate (:func:`mean_rate`) is ``rate`` req/s.

    Equivalent to ``condense(trace, rate / mean_rate(trace.arrival_s))``: shape of the arrival
    pattern (gap CV, relative burst timing) and request count are unchanged.

    Args:
        trace: frame with ``arrival_s`` (s), at least 2 rows spanning a positive time.
        rate: target mean rate, req/s, finite and > 0.

    Returns:
        Copy of ``trace`` with rescaled ``arrival_s``.

    Raises:
        ValueError: bad ``rate``; fewer than 2 arrivals or zero span.
    """
    if isinstance(rate, bool) or not (isinstance(rate, (int, float, np.number))
                                      and math.isfinite(rate) and rate > 0):
        raise ValueError(f"target rate must be a finite rate > 0 req/s, got {rate!r}")
    current = mean_rate(_check_times(trace))
    return condense(trace, float(rate) / current)


def cut_window(trace: pd.DataFrame, start_s: float, end_s: float | None = None) -> pd.DataFrame:
    """Keep the requests with ``start_s <= arrival_s < end_s`` and shift time so ``start_s``
    becomes 0.

    Args:
        trace: frame with ``arrival_s`` (s).
        start_s: window start, s, finite and >= 0.
        end_s: window end, s, > ``start_s``; None keeps everything from ``start_s`` on.

    Returns:
        New frame (possibly empty) with a RangeIndex, ``arrival_s - start_s``, and, when the
        trace has a ``request_id`` column, ``request_id`` renumbered 0 .. N-1 in row order.

    Raises:
        ValueError: bad ``start_s``/``end_s`` or missing/non-finite ``arrival_s``.
    """
    t = _check_times(trace)
    if not (isinstance(start_s, (int, float, np.number)) and math.isfinite(start_s) and start_s >= 0):
        raise ValueError(f"window start_s must be a finite time >= 0 s, got {start_s!r}")
    if end_s is not None and not (isinstance(end_s, (int, float, np.number)) and end_s > start_s):
        raise ValueError(f"window end_s must be > start_s ({start_s!r} s), got {end_s!r}")
    keep = t >= start_s
    if end_s is not None:
        keep &= t < end_s
    out = trace.loc[keep].reset_index(drop=True)
    out["arrival_s"] = out["arrival_s"].to_numpy(dtype=np.float64) - float(start_s)
    if "request_id" in out.columns:
        out = _renumbered(out)
    return out


def burstiness_cv(arrival_s) -> float:
    """Coefficient of variation of the inter-arrival gaps: ``std(gaps, ddof=1) / mean(gaps)``.

    1 for a Poisson stream, > 1 for bursty traffic, < 1 for smoother-than-Poisson traffic.
    Times are sorted first; the gap before the first arrival is not counted.

    Args:
        arrival_s: arrival times, s, shape ``(N,)``.

    Returns:
        The CV (dimensionless), or NaN when there are fewer than 3 arrivals (fewer than 2 gaps)
        or every arrival is at one instant.

    Raises:
        ValueError: non-finite times.
    """
    t = np.asarray(arrival_s, dtype=np.float64).ravel()
    if not np.all(np.isfinite(t)):
        raise ValueError("arrival times must be finite")
    if len(t) < 3:
        return float("nan")
    gaps = np.diff(np.sort(t))
    m = gaps.mean()
    if not m > 0:
        return float("nan")
    return float(gaps.std(ddof=1) / m)


# --------------------------------------------------------------------------------------------
# YAML spec


class SynthSpecError(ValueError):
    """A bad synthesis spec, with a one-line message that names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class SourceSpec(_Strict):
    """The trace to start from (:func:`load_source`; ``format`` detected when omitted, ``llm``
    names single-stream traces, ``tokenizer``/``sharegpt_turns`` for ShareGPT,
    ``infer_sessions`` for multi-turn ``lengths`` files). ``rate``/``arrival``/``cv`` draw
    arrival times for length-only formats (lengths, sharegpt), which carry none: a renewal
    process of mean ``rate`` req/s, Poisson or Gamma with gap CV ``cv``."""

    path: str
    format: str | None = None
    llm: str = Field(default="llm-0", min_length=1)
    tokenizer: str | None = None
    rate: _PosFloat | None = None
    arrival: Literal["poisson", "gamma"] = "poisson"
    cv: _PosFloat = 1.0
    sharegpt_turns: Literal["first", "all"] = "first"
    infer_sessions: bool = False

    @field_validator("format")
    @classmethod
    def _known_format(cls, v):
        if v is None:
            return v
        try:
            allowed = source_formats()
        except ImportError:  # loaders not installed: load_source reports it
            return v
        if v not in allowed:
            raise ValueError(f"unknown trace format {v!r}; allowed: {', '.join(allowed)}")
        return v

    @model_validator(mode="after")
    def _cv_needs_gamma(self):
        if self.arrival == "poisson" and self.cv != 1.0:
            raise ValueError(f"cv={self.cv!r} only applies to arrival: gamma; poisson has cv 1")
        return self


class WindowSpec(_Strict):
    """Part of the source to keep, in the source's time (s): ``[start_s, end_s)``."""

    start_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    end_s: _PosFloat | None = None

    @model_validator(mode="after")
    def _ordered(self):
        if self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s:g}) must be > start_s ({self.start_s:g})")
        return self


def _check_weight_list(v):
    if v is not None:
        if any(not math.isfinite(x) or x < 0 for x in v):
            raise ValueError(f"weights must be finite and >= 0, got {v}")
        if not sum(v) > 0:
            raise ValueError(f"weights must have a positive sum, got {v}")
    return v


class DriftWindowSpec(_Strict):
    """One window of a drifting popularity: shares until ``until_s`` (s, output time axis;
    omit on the last window), as a power law ``alpha`` or explicit ``weights``."""

    until_s: _PosFloat | None = None
    alpha: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    weights: list[float] | None = Field(default=None, min_length=1)

    @field_validator("weights")
    @classmethod
    def _weights_ok(cls, v):
        return _check_weight_list(v)

    @model_validator(mode="after")
    def _one_law(self):
        if (self.alpha is None) == (self.weights is None):
            raise ValueError("give exactly one of alpha, weights")
        return self


class PopularitySpec(_Strict):
    """How requests are shared among the LLMs: exactly one of a power law ``alpha`` (MuxServe
    §5.1), explicit ``weights``, a MuxServe ``rates_file`` (shares proportional to its rates,
    LLM names from the file unless ``llms`` lists names, which replace them in file order) or
    a ``drift`` list of time windows."""

    alpha: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    weights: list[float] | None = Field(default=None, min_length=1)
    rates_file: str | None = None
    drift: list[DriftWindowSpec] | None = Field(default=None, min_length=1)

    @field_validator("weights")
    @classmethod
    def _weights_ok(cls, v):
        return _check_weight_list(v)

    @model_validator(mode="after")
    def _one_law(self):
        given = [k for k in ("alpha", "weights", "rates_file", "drift") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of alpha, weights, rates_file, drift; got {given or 'none'}")
        if self.drift is not None:
            prev = None
            for k, w in enumerate(self.drift):
                if w.until_s is None and k < len(self.drift) - 1:
                    raise ValueError(f"drift.{k}.until_s is required (only the last window may omit it)")
                if w.until_s is not None and prev is not None and w.until_s <= prev:
                    raise ValueError(f"drift.{k}.until_s must be > {prev:g} (windows in time order)")
                prev = w.until_s if w.until_s is not None else prev
            sizes = {len(w.weights) for w in self.drift if w.weights is not None}
            if len(sizes) > 1:
                raise ValueError(f"drift windows give weights for different numbers of LLMs: {sorted(sizes)}")
        return self

    def count(self) -> int | None:
        """Number of LLMs the law itself fixes (weights lengths), or None."""
        if self.weights is not None:
            return len(self.weights)
        if self.drift is not None:
            for w in self.drift:
                if w.weights is not None:
                    return len(w.weights)
        return None


class SynthSpec(_Strict):
    """A multi-LLM workload synthesized from one trace (YAML of ``muxsim trace synth``).

    Steps, in this order:

    1. **load** ``source`` (:func:`load_source`); a length-only source gets arrival times from
       ``source.rate`` / ``arrival`` / ``cv``;
    2. **window**: keep ``[start_s, end_s)`` of the source's time and re-zero
       (:func:`cut_window`);
    3. **condense**: divide times by ``condense`` (:func:`condense`), *or*
    4. **target_rate**: rescale time to a mean of ``target_rate`` req/s
       (:func:`rescale_to_rate`); the two are exclusive, as the second would undo the first;
    5. **split** among ``llms`` by ``popularity`` (:func:`split_among_llms`,
       :func:`drifting_split`; drift ``until_s`` are in the time after steps 2-4). With neither
       ``llms`` nor ``popularity`` the source's own ``llm`` labels are kept; with ``llms`` but no
       ``popularity`` the shares are equal;
    6. **cap**: keep the first ``max_requests`` arrivals.

    ``llms`` is a count (names ``llm-0``, ``llm-1``, ...) or a list of names; it may be omitted
    when the popularity fixes the count (``weights``, ``rates_file``, ``drift`` with weights).
    Relative paths (``source.path``, ``popularity.rates_file``) are looked up in the current
    directory first, then beside the spec file.
    """

    source: SourceSpec
    window: WindowSpec | None = None
    condense: _PosFloat | None = None
    target_rate: _PosFloat | None = None
    llms: int | list[str] | None = None
    popularity: PopularitySpec | None = None
    seed: int = Field(default=0, ge=0)
    max_requests: int | None = Field(default=None, ge=1)

    @field_validator("target_rate")
    @classmethod
    def _not_both(cls, v, info):
        if v is not None and info.data.get("condense") is not None:
            raise ValueError("give condense or target_rate, not both (the second would undo the first)")
        return v

    @field_validator("llms", mode="before")
    @classmethod
    def _names(cls, v):
        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, (int, list)):
            # pydantic turns ValueError, not TypeError, into a field's validation error.
            raise ValueError(  # noqa: TRY004
                f"must be a count >= 1 or a list of LLM names, got {v!r}")
        if isinstance(v, int) and v < 1:
            raise ValueError(f"must be a count >= 1, got {v}")
        if isinstance(v, list):
            try:
                _check_llms(v)
            except ValueError as e:
                raise ValueError(str(e).removeprefix("llms ")) from None
        return v

    @field_validator("popularity")
    @classmethod
    def _count_agrees(cls, v, info):
        llms = info.data.get("llms")
        n = llms if isinstance(llms, int) else (len(llms) if isinstance(llms, list) else None)
        if v is None:
            return v
        fixed = v.count()
        if fixed is not None and n is not None and fixed != n:
            raise ValueError(f"weights are for {fixed} LLMs but llms gives {n}")
        if fixed is None and n is None and v.rates_file is None:
            raise ValueError("the number of LLMs is unknown: set llms (a count or a list of names)")
        return v

    def llm_names(self, count: int | None = None) -> list[str] | None:
        """Names of the LLMs to split among (None: keep the source's labels). ``count`` is the
        number a rates file gives, when there is one."""
        if isinstance(self.llms, list):
            return list(self.llms)
        n = self.llms if self.llms is not None else (self.popularity.count() if self.popularity else None)
        n = n if n is not None else count
        return None if n is None else [f"llm-{i}" for i in range(n)]


def _resolve(p: str, base_dir: Path | None) -> Path:
    """``p`` as given if absolute or present in the cwd, else beside ``base_dir`` if there."""
    path = Path(p).expanduser()
    if path.is_absolute() or path.exists() or base_dir is None:
        return path
    alt = Path(base_dir) / path
    return alt if alt.exists() else path


def _child_seeds(seed: int, n: int) -> list[int]:
    return [int(s.generate_state(1, dtype=np.uint32)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


def synthesize(spec: SynthSpec, base_dir: str | Path | None = None) -> pd.DataFrame:
    """Build the workload a :class:`SynthSpec` describes (steps in its docstring).

    Seeding: ``SeedSequence(spec.seed).spawn(2)`` gives one stream for the arrival times of a
    length-only source and one for the split, so the same spec gives the same frame.

    Args:
        spec: a validated spec (:func:`load_synth_spec`).
        base_dir: folder to resolve relative paths against when they are not found in the
            current directory (normally the spec file's folder).

    Returns:
        Workload frame: ``request_id`` int64 0 .. N-1 in arrival order, ``llm`` str,
        ``arrival_s`` float64 s, ``prompt_tokens`` / ``output_tokens`` int64 >= 1, plus any
        extra columns of the source (``session_id``, ``prefix_ids``). Ready for
        :func:`muxsim.workload.save_workload`.

    Raises:
        FileNotFoundError: a missing source or rates file.
        ValueError: a malformed source, a length-only source without ``source.rate`` (or a
            timed source with one), a window that keeps fewer requests than a step needs, or
            a rates file whose LLM count disagrees with ``llms``; the message names the field.
    """
    from .generate import validated_workload

    base = Path(base_dir) if base_dir is not None else None
    src = spec.source
    arr_seed, split_seed = _child_seeds(spec.seed, 2)
    path = _resolve(src.path, base)
    tok = src.tokenizer
    if tok is not None and base is not None and not Path(tok).exists() and (base / tok).exists():
        tok = str(base / tok)
    if not path.exists():
        raise FileNotFoundError(f"source.path: trace file not found: {path}")
    df = load_source(path, src.format, llm=src.llm, tokenizer=tok,
                     sharegpt_turns=src.sharegpt_turns, infer_sessions=src.infer_sessions)

    timed = "arrival_s" in df.columns
    if not timed:
        if src.rate is None:
            raise ValueError(f"source.rate: required: {path} is a length-only trace with no arrival "
                             "times; give a mean rate in req/s (and arrival/cv)")
        from .arrivals import assign_arrivals

        df = assign_arrivals(df, src.rate, arr_seed, process=src.arrival, cv=src.cv)
    elif src.rate is not None or src.arrival != "poisson":
        raise ValueError(f"source.rate: {path} has its own arrival times; rate/arrival/cv apply only "
                         "to length-only traces (use target_rate or condense to change the rate)")
    df = _sorted_by_arrival(df)
    if len(df) == 0:
        raise ValueError(f"source.path: {path} holds no requests")

    if spec.window is not None:
        t = df["arrival_s"].to_numpy()
        df = cut_window(df, spec.window.start_s, spec.window.end_s)
        if len(df) == 0:
            raise ValueError(f"window: [{spec.window.start_s:g}, {spec.window.end_s or math.inf:g}) s keeps no "
                             f"requests; the source spans {t.min():g} .. {t.max():g} s")
    if spec.condense is not None:
        df = condense(df, spec.condense)
    if spec.target_rate is not None:
        try:
            df = rescale_to_rate(df, spec.target_rate)
        except ValueError as e:
            raise ValueError(f"target_rate: {e}") from None

    pop = spec.popularity
    file_names = file_w = None
    if pop is not None and pop.rates_file is not None:
        rates_path = _resolve(pop.rates_file, base)
        if not rates_path.exists():
            raise FileNotFoundError(f"popularity.rates_file: file not found: {rates_path}")
        file_names, file_w = rates_file_weights(rates_path)
        n = spec.llms if isinstance(spec.llms, int) else (len(spec.llms) if spec.llms else None)
        if n is not None and n != len(file_names):
            raise ValueError(f"popularity.rates_file: lists {len(file_names)} LLMs but llms gives {n}")
    names = file_names if (file_names is not None and not isinstance(spec.llms, list)) else spec.llm_names()

    if names is not None:
        if pop is None:
            windows = [(None, np.ones(len(names)))]
        elif file_w is not None:
            windows = [(None, file_w)]
        elif pop.alpha is not None:
            windows = [(None, power_law_weights(len(names), pop.alpha))]
        elif pop.weights is not None:
            windows = [(None, pop.weights)]
        else:
            windows = [(w.until_s, w.weights if w.weights is not None else power_law_weights(len(names), w.alpha))
                       for w in pop.drift]
        df = drifting_split(df, names, windows, split_seed)
    elif "llm" not in df.columns:  # a source without LLM labels and no split asked for
        df = df.assign(llm=src.llm)

    if spec.max_requests is not None:
        df = df.iloc[: spec.max_requests]
    df = _renumbered(df)
    cols = ["request_id", "llm", "arrival_s", "prompt_tokens", "output_tokens"]
    df = df[[c for c in cols if c in df.columns] + [c for c in df.columns if c not in cols]]
    return validated_workload(df, "synthesized workload")


def load_synth_spec(path: str | Path) -> SynthSpec:
    """Read and validate a synthesis spec YAML (see :class:`SynthSpec`).

    Raises:
        SynthSpecError (a ValueError): missing file, malformed YAML, not a mapping, or a
            schema violation; the one-line message names the file and the field, e.g.
            ``spec.yaml: popularity.alpha: Input should be greater than or equal to 0``.
    """
    p = Path(path)
    raw = read_yaml(p, SynthSpecError, "synth spec")
    if not isinstance(raw, dict):
        raise SynthSpecError(f"{p}: expected a mapping of synth keys (source, llms, popularity, ...) at the top level")
    try:
        return SynthSpec.model_validate(raw)
    except ValidationError as e:
        raise SynthSpecError(f"{p}: {format_validation_error(e)}") from None
