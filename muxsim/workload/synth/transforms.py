"""Operations on one request trace (a workload frame): load it, pick a window, condense or
rescale its time, split it among LLMs by weight (fixed or drifting), and the statistics that
check them (mean rate, burstiness). Every function is pure; randomness comes only from ``seed``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..arrivals import MAX_ARRIVAL_S
from ..popularity import popularity_rates

__all__ = [
    "PARQUET_FORMAT", "burstiness_cv", "check_llms", "condense", "cut_window", "drifting_split",
    "load_source", "mean_rate", "power_law_weights", "rates_file_weights", "renumbered",
    "rescale_to_rate", "sorted_by_arrival", "source_formats", "split_among_llms",
]


#: Format name for a workload Parquet written by :func:`muxsim.workload.save_workload`.
PARQUET_FORMAT = "parquet"


# --------------------------------------------------------------------------------------------
# validation helpers


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def check_llms(llms: Sequence[str]) -> list[str]:
    """``llms`` as a list of distinct, non-empty LLM names.

    Raises:
        ValueError: a single string, an empty list, an empty or duplicated name.
    """
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
    with np.errstate(over="ignore"):
        total = w.sum()
    if not np.isfinite(total):
        # Finite weights near the float64 maximum overflow in the sum: shares are relative,
        # so scaling by the largest first gives the same shares without overflow.
        w = w / w.max()
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


def renumbered(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a RangeIndex and ``request_id`` = 0 .. N-1 as the first column."""
    df = df.reset_index(drop=True)
    rest = [c for c in df.columns if c != "request_id"]
    out = df[rest].copy()
    out.insert(0, "request_id", np.arange(len(out), dtype=np.int64))
    return out


#: Public name of :func:`_renumbered`, for callers outside this module (muxsim.config).


def sorted_by_arrival(trace: pd.DataFrame) -> pd.DataFrame:
    """``trace`` in arrival order (stable: ties keep their order), renumbered.

    Raises:
        ValueError: not a frame, or missing or non-finite arrival times.
    """
    t = _check_times(trace)
    order = np.argsort(t, kind="stable")
    return trace.iloc[order].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# loading


def source_formats() -> tuple[str, ...]:
    """Formats :func:`load_source` accepts: ``"parquet"`` (a saved workload) and the formats of
    :data:`muxsim.workload.formats.TRACE_FORMATS`."""
    from ..formats import TRACE_FORMATS

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
        ValueError: unknown ``fmt`` (lists the allowed ones), a malformed file or one with no
            requests (one line naming the file).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"trace file not found: {path}")
    if fmt == PARQUET_FORMAT or (fmt is None and path.suffix.lower() == ".parquet"):
        from ..generate import load_workload

        # Every use of a source needs requests: an empty file is refused here, naming it.
        return load_workload(path, allow_empty=False)
    from ..formats import load_trace

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
    from ..formats import load_muxserve_rates

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
    df = sorted_by_arrival(trace)
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
    out = renumbered(out)
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
    llms = check_llms(llms)
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
    llms = check_llms(llms)
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
        ValueError: bad ``factor``, missing/non-finite ``arrival_s``, or a factor so small
            that an arrival would lie beyond :data:`muxsim.workload.arrivals.MAX_ARRIVAL_S`.
    """
    t = _check_times(trace)
    if isinstance(factor, bool) or not (isinstance(factor, (int, float, np.number))
                                        and math.isfinite(factor) and factor > 0):
        raise ValueError(f"condense factor must be a finite number > 0, got {factor!r}")
    with np.errstate(over="ignore"):
        scaled = t / float(factor)
    _check_scaled(scaled, f"condense factor {float(factor):g}")
    out = trace.copy()
    out["arrival_s"] = scaled
    return out


def _check_scaled(t: np.ndarray, what: str) -> None:
    """Refuse rescaled arrival times beyond :data:`MAX_ARRIVAL_S` (``what`` names the cause)."""
    if len(t) and not np.max(np.abs(t)) <= MAX_ARRIVAL_S:
        raise ValueError(f"{what} stretches the trace to {np.max(np.abs(t)):.6g} s; arrival times "
                         f"must lie within {MAX_ARRIVAL_S:g} s (MAX_ARRIVAL_S, about 31.7 years)")


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
        ValueError: bad ``rate``; fewer than 2 arrivals or zero span; a rate so low that an
            arrival would lie beyond :data:`muxsim.workload.arrivals.MAX_ARRIVAL_S`.
    """
    if isinstance(rate, bool) or not (isinstance(rate, (int, float, np.number))
                                      and math.isfinite(rate) and rate > 0):
        raise ValueError(f"target rate must be a finite rate > 0 req/s, got {rate!r}")
    t = _check_times(trace)
    current = mean_rate(t)
    factor = float(rate) / current
    # Checked here so that the message names the rate, not the factor derived from it.
    with np.errstate(over="ignore", under="ignore"):
        _check_scaled(t / factor if factor > 0 else np.array([math.inf]),
                      f"target rate {float(rate):g} req/s")
    return condense(trace, factor)


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
        out = renumbered(out)
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


