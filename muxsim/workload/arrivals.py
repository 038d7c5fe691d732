"""Request arrival times: Poisson, or a Gamma renewal process for burstier traffic.

:func:`arrival_times` draws one LLM's arrivals on a window; :func:`assign_arrivals` gives every
request of a length-only trace (:func:`muxsim.workload.load_trace` with ``"lengths"`` or
``"sharegpt"``) an arrival time, so it becomes a complete workload.

Bounds (the same for every loader of :mod:`muxsim.workload`): an arrival time lies in
``[0, MAX_ARRIVAL_S]`` = ``[0, 1e9]`` s (about 31.7 years, far beyond any trace or experiment
and small enough that float64 keeps sub-microsecond resolution); the gaps' coefficient of
variation of a Gamma process lies in ``[MIN_CV, MAX_CV]`` = ``[1e-3, 1e3]`` (beyond it the
Gamma shape ``1 / cv**2`` underflows or the draw needs absurd memory).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["ARRIVAL_PROCESSES", "MAX_ARRIVAL_S", "MAX_CV", "MIN_CV", "arrival_times",
           "assign_arrivals"]

#: Accepted values of ``process``.
ARRIVAL_PROCESSES = ("poisson", "gamma")

#: Latest accepted arrival time, s (1e9 s, about 31.7 years): the bound of every workload's
#: ``arrival_s`` and of a trace's span (:mod:`muxsim.workload.formats`).
MAX_ARRIVAL_S = 1e9

#: Accepted range of the Gamma gaps' coefficient of variation (``cv``).
MIN_CV = 1e-3
MAX_CV = 1e3


def _check_cv(cv) -> float:
    """``cv`` as a float in ``[MIN_CV, MAX_CV]``."""
    if isinstance(cv, bool) or not isinstance(cv, (int, float, np.integer, np.floating)):
        # ValueError, not TypeError: every bad cv is one error type, as documented.
        raise ValueError(f"cv must be a number in [{MIN_CV:g}, {MAX_CV:g}], got {cv!r}")  # noqa: TRY004
    cv = float(cv)
    if not (math.isfinite(cv) and MIN_CV <= cv <= MAX_CV):
        raise ValueError(f"cv must be a finite number in [{MIN_CV:g}, {MAX_CV:g}], got {cv!r}")
    return cv


def _gaps(rng: np.random.Generator, process: str, rate: float, cv: float, n: int) -> np.ndarray:
    if process == "poisson":
        return rng.exponential(1.0 / rate, n)
    shape = 1.0 / cv**2
    return rng.gamma(shape, 1.0 / (rate * shape), n)


def arrival_times(
    rng: np.random.Generator,
    rate: float,
    duration_s: float,
    process: str = "poisson",
    cv: float = 1.0,
) -> np.ndarray:
    """Arrival times of a renewal process with mean rate ``rate`` on ``[0, duration_s)``.

    The first arrival is one gap after time 0 (the process starts fresh at 0, as in the
    paper's per-LLM Poisson workloads, docs/muxserve.md §8).

    * ``"poisson"``: exponential inter-arrival gaps, mean ``1 / rate`` s (coefficient of
      variation 1).
    * ``"gamma"``: Gamma gaps with shape ``1 / cv**2`` and mean ``1 / rate`` s, so the gaps'
      coefficient of variation is ``cv`` (cv > 1 is burstier than Poisson, cv < 1 smoother;
      cv = 1 is Poisson).

    Gaps are drawn in blocks (expected count plus a 6-sigma margin, topped up if still short)
    and cumulatively summed, so cost is O(rate x duration) vectorised work.

    Args:
        rng: source of randomness; the result is a deterministic function of its state.
        rate: mean arrival rate, req/s, finite and > 0.
        duration_s: length of the window, s, finite, > 0 and at most :data:`MAX_ARRIVAL_S`.
        process: ``"poisson"`` or ``"gamma"``.
        cv: coefficient of variation of the gaps, in ``[MIN_CV, MAX_CV]``; only ``"gamma"``
            uses it, so with ``"poisson"`` it must be left at 1.

    Returns:
        Sorted float64 array of arrival times in s, all in ``[0, duration_s)``; shape ``(k,)``
        with k random (mean ``rate * duration_s``).

    Raises:
        ValueError: bad ``rate``, ``duration_s`` (beyond :data:`MAX_ARRIVAL_S` too) or ``cv``
            (outside ``[MIN_CV, MAX_CV]``); unknown ``process``; ``cv`` != 1 with
            ``"poisson"``.
    """
    if process not in ARRIVAL_PROCESSES:
        raise ValueError(f"process must be one of {ARRIVAL_PROCESSES}, got {process!r}")
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a finite rate > 0 req/s, got {rate!r}")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a finite time > 0 s, got {duration_s!r}")
    if duration_s > MAX_ARRIVAL_S:
        raise ValueError(f"duration_s must be at most {MAX_ARRIVAL_S:g} s (MAX_ARRIVAL_S, about "
                         f"31.7 years), got {duration_s!r}")
    cv = _check_cv(cv)
    if process == "poisson" and cv != 1.0:
        # Silently ignoring cv would hand a caller who asked for bursty traffic a Poisson one.
        raise ValueError(f"cv={cv!r} only applies to process='gamma'; 'poisson' has cv 1")

    rate, duration_s, cv = float(rate), float(duration_s), float(cv)
    expected = rate * duration_s
    # The count's std is about cv * sqrt(expected) for a renewal process; 6 sigma makes a
    # top-up rare without over-drawing much.
    block = math.ceil(expected + 6.0 * cv * math.sqrt(expected) + 16)
    times = np.cumsum(_gaps(rng, process, rate, cv, block))
    chunks = [times]
    while chunks[-1][-1] < duration_s:
        more = chunks[-1][-1] + np.cumsum(_gaps(rng, process, rate, cv, block))
        chunks.append(more)
    times = np.concatenate(chunks) if len(chunks) > 1 else times
    return times[: np.searchsorted(times, duration_s, side="left")]


def assign_arrivals(
    df: pd.DataFrame,
    rate: float,
    seed: int,
    process: str = "poisson",
    cv: float = 1.0,
) -> pd.DataFrame:
    """Give each request of a trace an arrival time so it becomes a complete workload.

    One renewal process of mean rate ``rate`` for the whole frame (not one per LLM), drawn with
    :func:`arrival_times` from ``numpy.random.default_rng(seed)``: rows keep
    their order and request ``k`` gets the ``k``-th arrival, so ``request_id`` order stays the
    arrival order. As in :func:`~muxsim.workload.generate_workload`, the first arrival is one
    gap after 0 s (not re-zeroed). The window is grown until it holds ``len(df)`` arrivals;
    the result is a deterministic function of (``len(df)``, ``rate``, ``seed``, ``process``,
    ``cv``).

    Args:
        df: frame with ``request_id``, ``llm``, ``prompt_tokens``, ``output_tokens`` (e.g. from
            :func:`muxsim.workload.load_trace` with a length-only format); an existing ``arrival_s`` is
            replaced. Not modified.
        rate: mean arrival rate, req/s, finite and > 0.
        seed: integer >= 0.
        process: ``"poisson"`` or ``"gamma"``.
        cv: coefficient of variation of the gaps (``"gamma"`` only; 1 for ``"poisson"``), in
            ``[MIN_CV, MAX_CV]``.

    Returns:
        A copy of ``df`` with float64 ``arrival_s`` (s, ascending, at most
        :data:`MAX_ARRIVAL_S`) placed after ``llm`` and the same ``attrs``.

    Raises:
        ValueError: missing workload columns, an empty frame, bad ``seed``, ``rate``,
            ``process`` or ``cv`` (see :func:`arrival_times`), or a rate so low that the
            requests would arrive beyond :data:`MAX_ARRIVAL_S`.
    """
    need = ["request_id", "llm", "prompt_tokens", "output_tokens"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"assign_arrivals: missing column(s) {missing}; required {need}")
    n = len(df)
    if n == 0:
        raise ValueError("assign_arrivals: the frame has no requests")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        # ValueError, not TypeError: every bad rate is one error type, as documented.
        raise ValueError(f"rate must be a finite rate > 0 req/s, got {rate!r}")  # noqa: TRY004
    rate = float(rate)
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a finite rate > 0 req/s, got {rate!r}")
    if process not in ARRIVAL_PROCESSES:
        raise ValueError(f"process must be one of {ARRIVAL_PROCESSES}, got {process!r}")
    cv = _check_cv(cv)
    sd = max(cv, 1.0)
    margin = n + 6.0 * sd * math.sqrt(n) + 16.0  # arrivals a window is sized for
    too_slow = (f"rate {rate:g} req/s is too low for {n:,} requests: they would arrive beyond "
                f"{MAX_ARRIVAL_S:g} s (MAX_ARRIVAL_S, about 31.7 years); give a rate of at "
                f"least {margin / MAX_ARRIVAL_S:.3g} req/s")
    if n / rate > MAX_ARRIVAL_S:
        raise ValueError(too_slow)
    # Capped at the bound: a window beyond it could only hold arrivals a workload refuses.
    duration = min(margin / rate, MAX_ARRIVAL_S)
    while True:
        t = arrival_times(np.random.default_rng(int(seed)), rate, duration, process, cv)
        if len(t) >= n:
            break
        if duration >= MAX_ARRIVAL_S:
            raise ValueError(too_slow)
        duration = min(duration * 2.0, MAX_ARRIVAL_S)
    out = df.copy()
    if "arrival_s" in out.columns:
        out = out.drop(columns="arrival_s")
    out.insert(list(out.columns).index("llm") + 1, "arrival_s", t[:n].astype(np.float64))
    out.attrs = dict(df.attrs)
    return out
