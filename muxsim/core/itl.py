"""Inter-token latency (ITL): every gap between two consecutive tokens of a request, pooled over
the requests of one LLM in one run, as vLLM's ``benchmark_serving`` pools them (its ``itls``).

A request's tokens are emitted by its prefill (the first token, and again after a preemption:
the recompute prefill emits the next token) and by every decode iteration it is part of (at the
iteration's end). Its gaps are the differences of consecutive emission times, so they sum to
``finish - first_token``.

The simulator emits tens of millions of gaps per run: they are kept in a histogram, not one by
one. :class:`ITLHistogram` keeps the count, the mean and the sum of squared deviations exactly
(Chan et al.'s pairwise update, so the standard deviation does not cancel), the minimum and the
maximum exactly, and the values themselves in log-spaced bins of relative width
``10 ** (1 / BINS_PER_DECADE) - 1`` (0.23 %). Percentiles follow :func:`numpy.percentile`'s linear
interpolation between order statistics, each order statistic read as its bin's geometric centre
(clamped to the exact minimum and maximum): relative error at most 0.12 % against the exact
pooled percentile.

:class:`ITLBuffer` is what a driver feeds: it buffers one LLM's gaps as plain Python values and
folds them into its histogram in NumPy batches; :class:`ITLRecorder` holds a run's buffers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["BINS_PER_DECADE", "MIN_GAP_S", "ITLBuffer", "ITLHistogram", "ITLRecorder"]

#: Bins per factor of ten: bin width 0.23 %, so a percentile read at a bin's centre is within
#: 0.12 % of the exact one.
BINS_PER_DECADE = 1000
#: Lower edge (s) of bin 0; shorter gaps (none occur: the shortest decode iteration lasts tens
#: of microseconds) are counted in bin 0.
MIN_GAP_S = 1e-6

_LOG_MIN = math.log10(MIN_GAP_S)


def _bin_of(gaps_s: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.floor((np.log10(gaps_s) - _LOG_MIN) * BINS_PER_DECADE)
    return np.where(b > 0, b, 0).astype(np.int64)


def _centre_s(bins: np.ndarray) -> np.ndarray:
    return 10.0 ** (_LOG_MIN + (bins + 0.5) / BINS_PER_DECADE)


class ITLHistogram:
    """Pooled inter-token latencies (s) of one LLM in one run (module docstring).

    Attributes:
        bins: sorted bin indices that hold gaps, int64, shape (k,); bin ``b`` covers
            ``[MIN_GAP_S * 10**(b / BINS_PER_DECADE), MIN_GAP_S * 10**((b + 1) / BINS_PER_DECADE))``.
        counts: gaps in each of ``bins``, int64, shape (k,).
        n: gaps in all.
        mean_s: their mean (s), exact up to float rounding; NaN when ``n == 0``.
        m2_s2: sum of squared deviations from the mean (s^2).
        min_s, max_s: the shortest and longest gap (s); NaN when ``n == 0``.
    """

    __slots__ = ("bins", "counts", "n", "mean_s", "m2_s2", "min_s", "max_s")

    def __init__(self):
        self.bins = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.n = 0
        self.mean_s = math.nan
        self.m2_s2 = 0.0
        self.min_s = math.nan
        self.max_s = math.nan

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state):
        for k, v in state.items():
            setattr(self, k, v)

    def __repr__(self) -> str:
        return f"ITLHistogram(n={self.n}, mean={self.mean_ms():.4g} ms, bins={len(self.bins)})"

    @property
    def sum_s(self) -> float:
        """Sum of all gaps (s)."""
        return self.n * self.mean_s if self.n else 0.0

    def add(self, gaps_s: np.ndarray | Sequence[float], weights: np.ndarray | Sequence[int] | int = 1) -> None:
        """Add gaps (s), ``gaps_s[i]`` counted ``weights[i]`` times (a decode iteration gives one
        gap to each of its requests).

        Raises:
            ValueError: a gap is not finite or < 0; a weight < 0; shapes differ.
        """
        g = np.asarray(gaps_s, dtype=float).ravel()
        w = np.broadcast_to(np.asarray(weights, dtype=np.int64), g.shape) if np.ndim(weights) == 0 \
            else np.asarray(weights, dtype=np.int64).ravel()
        if w.shape != g.shape:
            raise ValueError(f"ITLHistogram.add: {g.size} gaps but {w.size} weights")
        if g.size == 0:
            return
        if not np.isfinite(g).all() or (g < 0).any():
            raise ValueError("ITLHistogram.add: gaps must be finite and >= 0 s")
        if (w < 0).any():
            raise ValueError("ITLHistogram.add: weights must be >= 0")
        keep = w > 0
        if not keep.all():
            g, w = g[keep], w[keep]
        nb = int(w.sum())
        if nb == 0:
            return
        mb = float(np.dot(w, g)) / nb
        m2b = float(np.dot(w, (g - mb) ** 2))
        self._combine(nb, mb, m2b, float(g.min()), float(g.max()))
        bins, inv = np.unique(_bin_of(g), return_inverse=True)
        counts = np.bincount(inv, weights=w, minlength=len(bins)).astype(np.int64)
        self._add_bins(bins, counts)

    def _combine(self, nb: int, mb: float, m2b: float, lo: float, hi: float) -> None:
        na = self.n
        if na == 0:
            self.n, self.mean_s, self.m2_s2, self.min_s, self.max_s = nb, mb, m2b, lo, hi
            return
        n = na + nb
        delta = mb - self.mean_s
        self.mean_s += delta * nb / n
        self.m2_s2 += m2b + delta * delta * na * nb / n
        self.n = n
        self.min_s = min(self.min_s, lo)
        self.max_s = max(self.max_s, hi)

    def _add_bins(self, bins: np.ndarray, counts: np.ndarray) -> None:
        if not len(self.bins):
            self.bins, self.counts = bins, counts
            return
        allb = np.concatenate([self.bins, bins])
        allc = np.concatenate([self.counts, counts])
        u, inv = np.unique(allb, return_inverse=True)
        self.bins = u
        self.counts = np.bincount(inv, weights=allc, minlength=len(u)).astype(np.int64)

    @staticmethod
    def merge(hists: Iterable[ITLHistogram]) -> ITLHistogram:
        """One histogram of every gap of ``hists`` (e.g. a run's LLMs, for its overall row)."""
        out = ITLHistogram()
        for h in hists:
            if h.n:
                out._combine(h.n, h.mean_s, h.m2_s2, h.min_s, h.max_s)
                out._add_bins(h.bins, h.counts)
        return out

    def mean_ms(self) -> float:
        """Mean gap (ms), exact; NaN without gaps."""
        return self.mean_s * 1e3 if self.n else math.nan

    def std_ms(self) -> float:
        """Population standard deviation of the gaps (ms; ddof 0, as :func:`numpy.std`), exact up
        to rounding; NaN without gaps."""
        return math.sqrt(max(self.m2_s2, 0.0) / self.n) * 1e3 if self.n else math.nan

    def percentile_ms(self, p: float) -> float:
        """Percentile ``p`` (0..100) of the gaps (ms), :func:`numpy.percentile`'s linear
        interpolation on bin centres (module docstring: within 0.12 %); NaN without gaps.

        Raises:
            ValueError: ``p`` outside [0, 100].
        """
        if not 0 <= p <= 100:
            raise ValueError(f"ITLHistogram.percentile_ms: p must be in [0, 100], got {p}")
        if not self.n:
            return math.nan
        h = (self.n - 1) * p / 100.0
        lo = math.floor(h)
        hi = min(lo + 1, self.n - 1)
        cum = np.cumsum(self.counts)
        vals = np.clip(_centre_s(self.bins[np.searchsorted(cum, [lo, hi], side="right")]),
                       self.min_s, self.max_s)
        return float(vals[0] + (h - lo) * (vals[1] - vals[0])) * 1e3

    def median_ms(self) -> float:
        """Median gap (ms): :meth:`percentile_ms` at 50."""
        return self.percentile_ms(50.0)


class ITLBuffer:
    """One LLM's token gaps as a driver records them, in plain Python lists (appending is all
    the simulation's inner loop does), folded into :attr:`hist` in NumPy by :meth:`fold` once
    they reach ``fold_at`` values (bounding their memory) and at the end of the run.

    Attributes:
        hist: the LLM's :class:`ITLHistogram`.
        g, w: gaps (s) and how many requests waited each of them.
        joins: ``(t, times)`` pairs: requests whose last tokens came at ``times`` (s) emitted their
            next token at ``t`` (one gap each).
        chains: ``(ends, weight)`` pairs: back-to-back decode iterations of ``weight`` requests
            ending at ``ends`` (s, ascending): a gap ``ends[i + 1] - ends[i]`` for each request.
        n: values buffered (gaps, join times and chain ends).
    """

    __slots__ = ("hist", "g", "w", "joins", "chains", "n", "fold_at")

    def __init__(self, fold_at: int = 1 << 16):
        self.hist = ITLHistogram()
        self.g: list[float] = []
        self.w: list[int] = []
        self.joins: list[tuple[float, list[float]]] = []
        self.chains: list[tuple[list[float], int]] = []
        self.n = 0
        self.fold_at = fold_at

    def fold(self) -> None:
        """Add the buffered gaps to :attr:`hist` and empty the buffers."""
        gs = [np.asarray(self.g, dtype=float)]
        ws = [np.asarray(self.w, dtype=np.int64)]
        if self.joins:
            t = np.concatenate([np.full(len(times), at) for at, times in self.joins])
            gs.append(t - np.concatenate([np.asarray(times, dtype=float) for _, times in self.joins]))
            ws.append(np.ones(len(t), dtype=np.int64))
        for ends, weight in self.chains:
            d = np.diff(np.asarray(ends, dtype=float))
            gs.append(d)
            ws.append(np.full(len(d), weight, dtype=np.int64))
        self.hist.add(np.concatenate(gs), np.concatenate(ws))
        self.g, self.w, self.joins, self.chains = [], [], [], []
        self.n = 0


class ITLRecorder:
    """The :class:`ITLBuffer` of each of a run's LLMs (indexed as the run's LLM list), for code
    that records gaps one call at a time (:meth:`gap`, :meth:`chain`); the simulator's LLM
    runtimes append to their buffers directly (:attr:`muxsim.core.llm.LLMRuntime.itl`).

    Args:
        n_llms: LLMs of the run.
        fold_at: buffered values per LLM that trigger a fold.
    """

    def __init__(self, n_llms: int, fold_at: int = 1 << 16):
        self.buffers = [ITLBuffer(fold_at) for _ in range(n_llms)]

    def gap(self, llm: int, gap_s: float, weight: int = 1) -> None:
        """``weight`` requests of LLM ``llm`` waited ``gap_s`` (s) for their next token."""
        b = self.buffers[llm]
        b.g.append(gap_s)
        b.w.append(weight)
        b.n += 1
        if b.n >= b.fold_at:
            b.fold()

    def chain(self, llm: int, ends_s: list[float], weight: int) -> None:
        """Back-to-back decode iterations of LLM ``llm`` with the same ``weight`` requests, ending
        at ``ends_s`` (s, ascending; at least two): each request waits ``ends_s[i + 1] - ends_s[i]``
        for a token. The list is kept, not copied."""
        b = self.buffers[llm]
        b.chains.append((ends_s, weight))
        b.n += len(ends_s)
        if b.n >= b.fold_at:
            b.fold()

    def histograms(self, names: Sequence[str]) -> dict[str, ITLHistogram]:
        """Fold every buffer, then each LLM's histogram by name (``names`` in run order)."""
        for b in self.buffers:
            b.fold()
        return {n: b.hist for n, b in zip(names, self.buffers)}
