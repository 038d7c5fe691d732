"""Inter-token latency (ITL): every gap between two consecutive tokens of a request, pooled over
the requests of one LLM in one run, as vLLM's ``benchmark_serving`` pools them (its ``itls``).

A request's tokens are emitted by its prefill (the first token, and again after a preemption:
the recompute prefill emits the next token) and by every decode iteration it is part of (at the
iteration's end). Its gaps are the differences of consecutive emission times, so they sum to
``finish - first_token``.

The simulator emits tens of millions of gaps per run: they are kept in a histogram, not one by
one. :class:`ITLHistogram` keeps the count, the mean and the sum of squared deviations exactly
(Chan et al.'s pairwise update, so the standard deviation does not cancel), the minimum and the
maximum exactly, and the values themselves in log-linear bins (HDR-histogram style): a gap's bin
is its IEEE-754 double with all but the top ``MANTISSA_BITS`` (9) mantissa bits dropped, so every
bin spans at most 2**-9 = 0.195 % of its values, and binning is one integer shift. Percentiles
follow :func:`numpy.percentile`'s linear interpolation between order statistics, each order
statistic read as its bin's midpoint (clamped to the exact minimum and maximum): relative error
at most 2**-10 = 0.098 % against the exact pooled percentile.

:class:`ITLBuffer` is what a driver feeds: it buffers one LLM's gaps as plain Python values and
folds them into its histogram in NumPy batches; :class:`ITLRecorder` holds a run's buffers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["MANTISSA_BITS", "ITLBuffer", "ITLHistogram", "ITLRecorder"]

#: Mantissa bits a bin keeps: bins 2**-9 = 0.195 % wide, so a percentile read at a bin's
#: midpoint is within 0.098 % of the exact one.
MANTISSA_BITS = 9
_SHIFT = 52 - MANTISSA_BITS


def _bin_of(gaps_s: np.ndarray) -> np.ndarray:
    # a non-negative double's bits order as its value does: dropping low mantissa bits bins it
    return np.ascontiguousarray(gaps_s, dtype=np.float64).view(np.int64) >> _SHIFT


def _centre_s(bins: np.ndarray) -> np.ndarray:
    return ((bins << _SHIFT) | (1 << (_SHIFT - 1))).view(np.float64)


class ITLHistogram:
    """Pooled inter-token latencies (s) of one LLM in one run (module docstring).

    Attributes:
        bins: sorted bin indices that hold gaps, int64, shape (k,); bin ``b`` holds the doubles
            whose bits shifted right by ``52 - MANTISSA_BITS`` are ``b``.
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
        # float weights (exact integers below 2**53); sums, not np.dot: a threaded BLAS call
        # costs more than the arithmetic on a busy machine
        wf = w.astype(float)
        mb = float((wf * g).sum()) / nb
        dev = g - mb
        m2b = float((wf * dev * dev).sum())
        self._combine(nb, mb, m2b, float(g.min()), float(g.max()))
        b = _bin_of(g)
        lo = int(b.min())
        dense = np.bincount(b - lo, weights=wf)
        nz = np.flatnonzero(dense)
        self._add_bins(nz + lo, dense[nz].astype(np.int64))

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
        interpolation on bin midpoints (module docstring: within 0.098 %); NaN without gaps.

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
    """One LLM's token gaps as a driver records them, in flat Python lists (appending is all
    the simulation's inner loop does), folded into :attr:`hist` in NumPy by :meth:`fold` once
    they reach ``fold_at`` values (bounding their memory) and at the end of the run.

    Attributes:
        hist: the LLM's :class:`ITLHistogram`.
        g, w: gaps (s) and how many requests waited each of them.
        jt, jn, ja: joins: ``jn[i]`` requests, whose last tokens came at the next ``jn[i]``
            times of ``jt`` (s), emitted their next token at ``ja[i]`` (one gap each).
        ce, cn, cw: chains of back-to-back decode iterations: chain ``i`` ends its ``cn[i]``
            iterations at the next ``cn[i]`` times of ``ce`` (s, ascending), and each of its
            ``cw[i]`` requests waits ``ce[k + 1] - ce[k]`` between two of them.
        n: values buffered.
    """

    __slots__ = ("hist", "g", "w", "jt", "jn", "ja", "ce", "cn", "cw", "n", "fold_at")

    def __init__(self, fold_at: int = 1 << 16):
        self.hist = ITLHistogram()
        self.fold_at = fold_at
        self._clear()

    def _clear(self) -> None:
        self.g: list[float] = []
        self.w: list[int] = []
        self.jt: list[float] = []
        self.jn: list[int] = []
        self.ja: list[float] = []
        self.ce: list[float] = []
        self.cn: list[int] = []
        self.cw: list[int] = []
        self.n = 0

    def fold(self) -> None:
        """Add the buffered gaps to :attr:`hist` and empty the buffers."""
        gs = [np.asarray(self.g, dtype=float)]
        ws = [np.asarray(self.w, dtype=np.int64)]
        if self.jn:
            gs.append(np.repeat(np.asarray(self.ja, dtype=float), self.jn) - np.asarray(self.jt, dtype=float))
            ws.append(np.ones(len(self.jt), dtype=np.int64))
        if self.cn:
            ends = np.asarray(self.ce, dtype=float)
            cn = np.asarray(self.cn, dtype=np.int64)
            within = np.ones(len(ends) - 1, dtype=bool)  # a diff across two chains is no gap
            within[np.cumsum(cn)[:-1] - 1] = False
            gs.append(np.diff(ends)[within])
            ws.append(np.repeat(np.asarray(self.cw, dtype=np.int64), cn - 1))
        self.hist.add(np.concatenate(gs), np.concatenate(ws))
        self._clear()


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
        for a token."""
        b = self.buffers[llm]
        b.ce.extend(ends_s)
        b.cn.append(len(ends_s))
        b.cw.append(weight)
        b.n += len(ends_s)
        if b.n >= b.fold_at:
            b.fold()

    def histograms(self, names: Sequence[str]) -> dict[str, ITLHistogram]:
        """Fold every buffer, then each LLM's histogram by name (``names`` in run order)."""
        for b in self.buffers:
            b.fold()
        return {n: b.hist for n, b in zip(names, self.buffers)}
