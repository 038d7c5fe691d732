"""Smooth latency curves with fitted coefficients, and the model that holds those of one GPU kind.

:class:`FittedCurve` evaluates the form below from its coefficients (fitted by
:mod:`muxsim.perf.fitting`, stored by :mod:`muxsim.perf.calibration`);
:class:`FittedLatencyModel` answers every (model, #GPUs, GPU) with such a curve or, where
nothing was measured, a :class:`~muxsim.perf.roofline.RooflineCurve`.

Form (times in ms; ``n`` prompt tokens in ``b`` sequences, ``B`` decode batch, ``C`` KV
tokens of the batch, ``s`` SM share in %; ``smax_k(u, v) = (u^k + v^k)^(1/k)``, a smooth max)::

    prefill(n, b, s) = smax_k( O / g_o(s),
                               (w0 + a (n + r n^2 / b)) (1 + (min(n, n_max) / N)^p) / g_w(s) )
    decode(B, C, s)  = smax_k( O / g_o(s), c B / g_c(s) )
                       + smax_k2( alpha C / B, beta C ) / g_a(s)

* ``O``: the flat floor of small jobs (weight streaming, kernel launches, all-reduce latency).
* prefill work: ``w0`` a fixed part, ``a`` ms per token; ``r = L d / P`` (layers x hidden /
  parameters, from :mod:`muxsim.catalog`) is the causal-attention FLOPs per token per context
  token relative to the weight FLOPs: fixed from the architecture, not fitted, because the
  profile's prompts (<= 512 tokens) are too short to see it. ``(1 + (n/N)^p)`` (p <= 2) is the
  superlinear growth the profile shows for very large prefills (>= 16k tokens); ``n`` in this
  factor is capped at the largest measured prefill, so beyond the grid latency grows linearly.
* decode: ``c`` ms per request of batch-proportional work; attention reads the KV cache at
  ``beta`` ms per token when many requests run, but a single long request is latency-bound at
  ``alpha`` ms per token of its own context (``C / B`` is the mean context per request).
* ``g_*(s)`` in (0, 1]: monotone SM-share efficiencies, one value per measured SM share
  (30, 40, ..., 100 %; 1 at the largest), fitted freely under a non-decreasing constraint and
  interpolated in between with a PCHIP (monotone cubic) curve through ``log g``. Below the
  smallest measured share ``g`` continues as ``(s / s_min)^gamma`` with ``gamma`` the log-log
  slope of the two lowest knots clipped to [0, 1] (latency then grows at most like 1/s);
  above the largest share ``g`` stays 1. When only **one** SM share was measured (CPU
  partitions: a single-thread worker's speed does not depend on the policy's SM share; or a GPU
  profiled at one share) there is a single knot, ``log g = 0`` there and ``gamma = 0``: every
  ``g_*`` is 1 and the latency does not depend on ``s``. The calibration file then says so in
  ``form["single_sm_share"]``.

Guarantees, for any fitted coefficients: positive; non-decreasing in prompt tokens (fixed
``b``), in sequences (fixed tokens per sequence), in decode batch (fixed context per request)
and in context tokens (fixed batch); non-increasing in SM share. At a fixed total context,
more (hence shorter) requests can decode faster, as measured (7B, 1 GPU, 100 % SMs: 1 x 512
tokens 12.5 ms, 2 x 256 tokens 12.0 ms).

Missing GPU counts: when a profiled model is asked for a mesh size it was not measured on
(e.g. llama-30b on 8 GPUs), the curve of the nearest measured size is adapted: overheads,
SM efficiencies and ``alpha`` are kept (between 2 and 8 GPUs the profile's floors barely move:
13B 24.2 / 24.6 ms prefill on 4 / 8 GPUs), and the work coefficients ``a`` and ``c`` are scaled
by the roofline ratio of per-token work (compute / t + all-reduce), ``beta`` by the KV shard
ratio. Such curves have ``source == "fitted-scaled"`` and ``derived_from`` set to the measured
size. Checked by deriving measured meshes from their neighbours (4 -> 8 GPUs for 7B / 13B /
65B): prefill median error 6 %, p90 13-17 %; decode median 4-10 %, p90 11-28 %; the roofline
does worse (prefill median 10-19 %, decode 8-20 %). Weakest case: 30B 2 <-> 4 GPUs decode
(median ~25 %), whose floor drops with the weight shard while the other models' floors do
not; scaling the floors by the roofline was tried and made the 4 -> 8 cases worse.
Unprofiled models and other GPUs get a :class:`~muxsim.perf.roofline.RooflineCurve`
(``source == "roofline"``).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from itertools import pairwise

import numpy as np

from muxsim.catalog import GPUSpec, ModelSpec
from muxsim.perf.base import LatencyCurve
from muxsim.perf.roofline import RooflineCurve

__all__ = ["FittedCurve", "FittedLatencyModel"]

# Decode runs at least this long are computed with NumPy (below it the loop is cheaper), unless
# this module is compiled (setup.py), where the loop is cheaper at any length.
_VECTOR_STEPS = 48
_COMPILED = not __file__.endswith(".py")

# The per-SM-share factor caches are cleared at this size, so that a caller sweeping
# continuous shares cannot grow them without bound.
_CACHE_LIMIT = 4096


# --------------------------------------------------------------------------------------------
# SM-share efficiency curve


class _SMEfficiency:
    """Monotone efficiency ``g(s)`` in (0, 1] from knot values of ``log g``.

    Built once (scipy for the PCHIP coefficients); evaluated in pure Python.

    A single knot (one measured SM share) gives ``g = 1`` everywhere.

    Raises:
        ValueError: no knot, unsorted knots, or non-monotone / positive values.
    """

    def __init__(self, knots: list[float], log_g: list[float], where: str) -> None:
        if len(knots) != len(log_g) or len(knots) < 1:
            raise ValueError(f"{where}: need >= 1 SM knot with one log_g each")
        if any(b <= a for a, b in pairwise(knots)) or knots[0] <= 0 or knots[-1] > 100:
            raise ValueError(f"{where}: SM knots must be increasing within (0, 100]")
        if any(b < a for a, b in pairwise(log_g)) or abs(log_g[-1]) > 1e-12:
            raise ValueError(f"{where}: log_g must be non-decreasing and 0 at the last knot")
        if not all(math.isfinite(v) for v in log_g):
            raise ValueError(f"{where}: log_g must be finite")
        self.knots = [float(k) for k in knots]
        self.log_g = [float(v) for v in log_g]
        if len(knots) == 1:
            # log_at never reaches the interpolation branch: s <= k0 gives log_g[0] = 0.
            self._coef = []
            self.gamma = 0.0
            return
        from scipy.interpolate import PchipInterpolator

        pc = PchipInterpolator(np.array(self.knots), np.array(self.log_g))
        # Per-interval cubic coefficients, highest power first (scipy's PPoly layout).
        self._coef = [tuple(float(v) for v in pc.c[:, i]) for i in range(len(knots) - 1)]
        slope = (self.log_g[1] - self.log_g[0]) / math.log(self.knots[1] / self.knots[0])
        self.gamma = min(max(slope, 0.0), 1.0)

    def log_at(self, s: float) -> float:
        """``log g(s)`` for SM share ``s`` in percent (> 0)."""
        k = self.knots
        if s >= k[-1]:
            return 0.0
        if s <= k[0]:
            return self.log_g[0] + self.gamma * math.log(s / k[0])
        i = bisect_right(k, s) - 1
        c3, c2, c1, c0 = self._coef[i]
        dx = s - k[i]
        v = ((c3 * dx + c2) * dx + c1) * dx + c0
        # The cubic is monotone between knots; clamp only rounding noise.
        lo, hi = self.log_g[i], self.log_g[i + 1]
        return lo if v < lo else hi if v > hi else v  # noqa: FURB136 - hot path: no call


# --------------------------------------------------------------------------------------------
# Fitted curve

_PREFILL_SCALARS = ("O_ms", "w0_ms", "a_ms_per_token", "attn_ratio", "knee_tokens",
                    "knee_power", "max_tokens", "k")
_DECODE_SCALARS = ("O_ms", "c_ms_per_seq", "k", "alpha_ms_per_token", "beta_ms_per_token",
                   "k_attn")
_PREFILL_EFFS = ("log_g_overhead", "log_g_work")
_DECODE_EFFS = ("log_g_overhead", "log_g_compute", "log_g_attn")


def _check_params(p: dict, scalars: tuple, effs: tuple, where: str) -> None:
    if not isinstance(p, dict):
        # ValueError, not TypeError: callers report any malformed file as one ValueError.
        raise ValueError(f"{where}: expected an object of coefficients")  # noqa: TRY004
    for key in scalars + effs + ("sm_knots",):
        if key not in p:
            raise ValueError(f"{where}: missing coefficient {key!r}")
    for key in scalars:
        v = p[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{where}: coefficient {key!r} must be a finite number, got {v!r}")
        if v < 0:
            raise ValueError(f"{where}: coefficient {key!r} must be >= 0, got {v!r}")
    for key in ("k", "k_attn"):
        if key in p and p[key] < 1:
            raise ValueError(f"{where}: smooth-max exponent {key!r} must be >= 1")
    # O_ms > 0 keeps every latency positive and the smooth max free of 0 / 0.
    for key in ("O_ms", "knee_tokens", "max_tokens"):
        if key in p and p[key] <= 0:
            raise ValueError(f"{where}: {key} must be > 0")


class FittedCurve(LatencyCurve):
    """Latency curve with the fitted form of the module docstring; ``source`` is ``"fitted"``.

    Args:
        model: catalog model name the curve answers for (e.g. ``"llama-7b"``).
        n_gpus: GPUs in the mesh (tensor-parallel degree).
        gpu: catalog GPU name (e.g. ``"a100-80gb"``).
        prefill: prefill coefficients: ``O_ms``, ``w0_ms`` (ms), ``a_ms_per_token`` (ms/token),
            ``attn_ratio`` (1/token), ``knee_tokens`` (tokens), ``knee_power``,
            ``max_tokens`` (largest measured prefill, tokens), ``k``,
            ``sm_knots`` (%), ``log_g_overhead`` and ``log_g_work`` (one per knot).
        decode: decode coefficients: ``O_ms``, ``c_ms_per_seq`` (ms/request), ``k``,
            ``alpha_ms_per_token``, ``beta_ms_per_token`` (ms/token), ``k_attn``,
            ``sm_knots``, ``log_g_overhead``, ``log_g_compute``, ``log_g_attn``.
        source: ``"fitted"``, or ``"fitted-scaled"`` for a curve adapted to another GPU count.
        derived_from: measured GPU count a ``"fitted-scaled"`` curve was adapted from.

    Raises:
        ValueError: a coefficient is missing, negative or non-finite, or an efficiency curve is
            not monotone.
    """

    def __init__(
        self,
        model: str,
        n_gpus: int,
        gpu: str,
        prefill: dict,
        decode: dict,
        source: str = "fitted",
        derived_from: int | None = None,
    ) -> None:
        where = f"{model}/{n_gpus}/{gpu}"
        _check_params(prefill, _PREFILL_SCALARS, _PREFILL_EFFS, f"{where} prefill")
        _check_params(decode, _DECODE_SCALARS, _DECODE_EFFS, f"{where} decode")
        self.model = model
        self.n_gpus = int(n_gpus)
        self.gpu = gpu
        self.source = source
        self.derived_from = derived_from
        self.prefill_params = dict(prefill)
        self.decode_params = dict(decode)
        p, d = prefill, decode
        self._p_go = _SMEfficiency(p["sm_knots"], p["log_g_overhead"], f"{where} prefill")
        self._p_gw = _SMEfficiency(p["sm_knots"], p["log_g_work"], f"{where} prefill")
        self._d_go = _SMEfficiency(d["sm_knots"], d["log_g_overhead"], f"{where} decode")
        self._d_gc = _SMEfficiency(d["sm_knots"], d["log_g_compute"], f"{where} decode")
        self._d_ga = _SMEfficiency(d["sm_knots"], d["log_g_attn"], f"{where} decode")
        self._p_O = float(p["O_ms"])
        self._p_w0 = float(p["w0_ms"])
        self._p_a = float(p["a_ms_per_token"])
        self._p_r = float(p["attn_ratio"])
        self._p_invN = 1.0 / float(p["knee_tokens"])
        self._p_p = float(p["knee_power"])
        self._p_nmax = float(p["max_tokens"])
        self._p_k = float(p["k"])
        self._p_invk = 1.0 / self._p_k
        self._d_O = float(d["O_ms"])
        self._d_c = float(d["c_ms_per_seq"])
        self._d_k = float(d["k"])
        self._d_invk = 1.0 / self._d_k
        self._d_al = float(d["alpha_ms_per_token"])
        self._d_be = float(d["beta_ms_per_token"])
        self._d_k2 = float(d["k_attn"])
        self._d_invk2 = 1.0 / self._d_k2
        self._pc: dict[float, tuple[float, float]] = {}
        self._smax: dict[float, float] = {}
        self._dc: dict[float, tuple[float, float, float]] = {}

    # The per-SM factors are cached per distinct sm_pct: the simulator uses a handful of
    # shares, so the hot path is one dict lookup plus arithmetic.
    def _prefill_sm(self, sm_pct: float) -> tuple[float, float]:
        if not sm_pct > 0:
            raise ValueError(f"sm_pct must be in (0, 100], got {sm_pct!r}")
        s = float(sm_pct)
        r = (self._p_O * math.exp(-self._p_go.log_at(s)), math.exp(-self._p_gw.log_at(s)))
        if len(self._pc) >= _CACHE_LIMIT:
            self._pc.clear()
        self._pc[sm_pct] = r
        return r

    def _decode_sm(self, sm_pct: float) -> tuple[float, float, float]:
        if not sm_pct > 0:
            raise ValueError(f"sm_pct must be in (0, 100], got {sm_pct!r}")
        s = float(sm_pct)
        r = (
            self._d_O * math.exp(-self._d_go.log_at(s)),
            self._d_c * math.exp(-self._d_gc.log_at(s)),
            math.exp(-self._d_ga.log_at(s)),
        )
        if len(self._dc) >= _CACHE_LIMIT:
            self._dc.clear()
        self._dc[sm_pct] = r
        return r

    def prefill_s(self, n_tokens: int, n_seqs: int, sm_pct: float) -> float:
        """Seconds for one prefill job of ``n_tokens`` prompt tokens in ``n_seqs`` sequences
        at SM share ``sm_pct`` % (values above 100 read as 100).

        Returns 0.0 when ``n_tokens`` <= 0 (no job); ``n_seqs`` < 1 is read as 1.

        Raises:
            ValueError: if ``sm_pct`` <= 0.
        """
        if n_tokens <= 0:
            return 0.0
        e = self._pc.get(sm_pct)
        if e is None:
            e = self._prefill_sm(sm_pct)
        o = e[0]
        n = float(n_tokens)
        # Conditionals, not min() / max(): this runs once per simulated job and a builtin call
        # costs more than the comparison.
        if n_seqs < 1:  # noqa: PLR1730
            n_seqs = 1
        m = n if n < self._p_nmax else self._p_nmax  # noqa: FURB136
        w = ((self._p_w0 + self._p_a * (n + self._p_r * n * n / n_seqs))
             * (1.0 + (m * self._p_invN) ** self._p_p) * e[1])
        if w > o:
            return w * (1.0 + (o / w) ** self._p_k) ** self._p_invk * 1e-3
        return o * (1.0 + (w / o) ** self._p_k) ** self._p_invk * 1e-3

    def decode_s(self, batch: int, ctx_tokens: int, sm_pct: float) -> float:
        """Seconds for one decode iteration of ``batch`` requests whose KV caches hold
        ``ctx_tokens`` tokens in all, at SM share ``sm_pct`` % (above 100 read as 100).

        Returns 0.0 when ``batch`` <= 0 (no job).

        Raises:
            ValueError: if ``sm_pct`` <= 0.
        """
        if batch <= 0:
            return 0.0
        e = self._dc.get(sm_pct)
        if e is None:
            e = self._decode_sm(sm_pct)
        b = float(batch)
        t = self._decode_fixed_ms(e, b)
        g = e[2]
        if ctx_tokens > 0:
            x = self._d_al * ctx_tokens / b
            y = self._d_be * ctx_tokens
            if x > y:
                r = y / x
                fo = self._smax.get(r)
                f = self._smax_of(r) if fo is None else fo
                t += x * f * g
            elif y > 0.0:
                r = x / y
                fo = self._smax.get(r)
                f = self._smax_of(r) if fo is None else fo
                t += y * f * g
        return t * 1e-3

    def _vector_steps(self, tc, batch, ctx_tokens, n, end, bound, dispatch_s, extra, g, push_all):
        """Up to ``n`` iterations of :meth:`decode_steps`'s loop in NumPy: (added, last start,
        last end). Stops at the first end >= ``bound``; added == n when none reached it."""
        ctx = ctx_tokens + batch * np.arange(1, n + 1, dtype=np.int64)
        x = self._d_al * ctx / float(batch)
        y = self._d_be * ctx
        xy = x > y
        r = np.where(xy, y / np.where(xy, x, 1.0), x / np.where(y > 0.0, y, 1.0))
        # the smooth-max factor as the loop takes it: one power per distinct ratio (memoised)
        uniq, inv = np.unique(r, return_inverse=True)
        memo = self._smax
        f = np.array([memo.get(v) or self._smax_of(v) for v in uniq.tolist()])[inv]
        term = np.where(xy, x * f * g, np.where(y > 0.0, y * f * g, 0.0))
        t = tc + term
        d = t * 1e-3 if dispatch_s is None else t * 1e-3 + dispatch_s + extra
        ends = np.add.accumulate(np.concatenate(([end], d)))  # sequential, like end += d
        m = int(np.searchsorted(ends, bound, side="left"))
        j = min(n, m)
        push_all(ends[:j].tolist())
        return j, float(ends[j - 1]), float(ends[j])

    def _decode_fixed_ms(self, e: tuple[float, float, float], b: float) -> float:
        """The part of a decode iteration (ms) that depends on the batch ``b`` alone, at the SM
        factors ``e`` of :meth:`_decode_sm`: ``smax_k(O / g_o, c B / g_c)``."""
        o = e[0]
        c = e[1] * b
        k = self._d_k
        if c > o:
            return c * (1.0 + (o / c) ** k) ** self._d_invk
        return o * (1.0 + (c / o) ** k) ** self._d_invk

    def _smax_of(self, r: float) -> float:
        """``(1 + r^k_attn)^(1/k_attn)``, the attention smooth max's factor, memoised: along a
        decode the ratio of its two terms takes few distinct floats (it is constant up to
        rounding at a fixed batch), and a lookup costs less than two powers."""
        f = (1.0 + r ** self._d_k2) ** self._d_invk2
        if len(self._smax) >= _CACHE_LIMIT:
            self._smax.clear()
        self._smax[r] = f
        return f

    def decode_steps(self, batch, ctx_tokens, sm_pct, k, last, end, bound, dispatch_s=None, per_seq_s=0.0,
                     ends=None):
        """:meth:`LatencyCurve.decode_steps`, with each iteration's duration plus
        ``dispatch_s + per_seq_s x batch`` (s) when ``dispatch_s`` is given (the job-overhead
        model: :class:`muxsim.perf.overhead.OverheadCurve`).

        The same arithmetic as :meth:`decode_s` in the same order (the part that depends only
        on the batch computed once), so every time is the float a job-by-job run gives."""
        if batch <= 0 or k <= 0 or not end < bound:
            return 0, last, end
        if ends is None:
            ends = []
        return self._steps(batch, ctx_tokens, sm_pct, k, last, end, bound, dispatch_s, per_seq_s, ends)

    def _steps(self, batch, ctx_tokens, sm_pct, k, last, end, bound, dispatch_s, per_seq_s, ends):
        """:meth:`decode_steps` past its argument checks (``batch``, ``k`` >= 1, ``end`` < ``bound``)."""
        e = self._dc.get(sm_pct)
        if e is None:
            e = self._decode_sm(sm_pct)
        b = float(batch)
        tc = self._decode_fixed_ms(e, b)
        al, be, g = self._d_al, self._d_be, e[2]
        memo = self._smax
        extra = per_seq_s * batch
        plain = dispatch_s is None
        disp = 0.0 if plain else dispatch_s
        push = ends.append
        pr = -1.0  # the last smooth-max ratio and its factor
        pf = 0.0
        j = 0
        if k >= _VECTOR_STEPS and not _COMPILED:
            # A long run (a cold LLM decoding alone): iterations at least as long as the next
            # one fit at most (bound - end) / d of them before the bound; NumPy computes them with
            # the same IEEE operations in the same order (the running sum included), so the
            # times are the loop's to the bit. (Compiled, the loop below is faster at any length.)
            nxt = ctx_tokens + batch
            x = al * nxt / b
            y = be * nxt
            t = tc + (x * self._smax_of(y / x) * g if x > y else y * self._smax_of(x / y) * g if y > 0.0 else 0.0)
            d = t * 1e-3 if plain else t * 1e-3 + disp + extra
            n = k if bound == math.inf else min(k, int((bound - end) / d) + 2)
            if n >= _VECTOR_STEPS:
                j, last, end = self._vector_steps(tc, batch, ctx_tokens, n, end, bound, dispatch_s, extra, g,
                                                  ends.extend)
                ctx_tokens += batch * j
        while j < k and end < bound:
            push(end)
            last = end
            ctx_tokens += batch
            t = tc
            if ctx_tokens > 0:
                x = al * ctx_tokens / b
                y = be * ctx_tokens
                if x > y:
                    r = y / x
                    if r != pr:  # the ratio is constant up to rounding: look up only when it moves
                        fo = memo.get(r)
                        pf = self._smax_of(r) if fo is None else fo
                        pr = r
                    t += x * pf * g
                elif y > 0.0:
                    r = x / y
                    if r != pr:  # the ratio is constant up to rounding: look up only when it moves
                        fo = memo.get(r)
                        pf = self._smax_of(r) if fo is None else fo
                        pr = r
                    t += y * pf * g
            if plain:
                end = last + t * 1e-3
            else:
                end = last + (t * 1e-3 + disp + extra)
            j += 1
        return j, last, end

    def scaled_to(self, n_gpus: int, model: ModelSpec, gpu: GPUSpec) -> FittedCurve:
        """A ``"fitted-scaled"`` copy of this curve for ``n_gpus`` GPUs (see module docstring).

        ``a`` and ``c`` scale by the roofline's per-token work ratio (compute / t plus
        all-reduce, :class:`~muxsim.perf.roofline.RooflineCurve` constants), ``beta`` by
        ``self.n_gpus / n_gpus``; everything else is kept.
        """
        src = RooflineCurve(model, self.n_gpus, gpu)
        dst = RooflineCurve(model, n_gpus, gpu)
        p = dict(self.prefill_params)
        d = dict(self.decode_params)
        p["a_ms_per_token"] *= dst.prefill_ms_per_token() / src.prefill_ms_per_token()
        d["c_ms_per_seq"] *= dst.decode_ms_per_seq() / src.decode_ms_per_seq()
        d["beta_ms_per_token"] *= self.n_gpus / n_gpus
        return FittedCurve(model.name, n_gpus, self.gpu, p, d, source="fitted-scaled",
                           derived_from=self.n_gpus)

    def __repr__(self) -> str:
        extra = f", derived_from={self.derived_from}" if self.derived_from else ""
        return (f"FittedCurve({self.model!r}, n_gpus={self.n_gpus}, gpu={self.gpu!r}, "
                f"source={self.source!r}{extra})")


# --------------------------------------------------------------------------------------------
# Model holding the curves of one GPU kind


class FittedLatencyModel:
    """Fitted curves of one GPU kind, with roofline fallback.

    Args:
        gpu: catalog GPU name the coefficients were measured on (e.g. ``"a100-80gb"``).
        coefficients: ``{profile model name: {n_gpus (int or str): {"prefill": {...},
            "decode": {...}}}}`` as produced by :func:`muxsim.perf.fitting.fit_profile`; may
            be empty (roofline only).
        source_note: provenance of the measurements (free text).

    Raises:
        ValueError: malformed coefficients (see :class:`FittedCurve`).
    """

    def __init__(self, gpu: str, coefficients: dict | None = None, source_note: str = "") -> None:
        self.gpu = gpu
        self.source_note = source_note
        self._fitted: dict[tuple[str, int], FittedCurve] = {}
        for name, by_gpus in (coefficients or {}).items():
            if not isinstance(by_gpus, dict):
                raise ValueError(  # noqa: TRY004 - load_calibration reports ValueErrors
                    f"coefficients[{name!r}]: expected an object keyed by #GPUs")
            for g_key, phases in by_gpus.items():
                try:
                    n = int(g_key)
                except (TypeError, ValueError):
                    raise ValueError(f"coefficients[{name!r}]: bad #GPUs key {g_key!r}") from None
                if not (isinstance(phases, dict) and "prefill" in phases and "decode" in phases):
                    raise ValueError(f"coefficients[{name!r}][{g_key!r}]: need prefill and decode")
                key = str(name).strip().lower()
                self._fitted[(key, n)] = FittedCurve(key, n, gpu, phases["prefill"],
                                                     phases["decode"])
        self._curves: dict[tuple[str, int, str], LatencyCurve] = {}

    @property
    def calibrated(self) -> list[tuple[str, int]]:
        """(profile model name, n_gpus) pairs with a measured curve, sorted."""
        return sorted(self._fitted)

    def curve(self, model: ModelSpec, n_gpus: int, gpu: GPUSpec) -> LatencyCurve:
        """The latency curve of ``model`` on ``n_gpus`` GPUs of kind ``gpu``.

        * measured (``model.profile_name``, or ``model.name`` for a model without one,
          ``n_gpus``) and ``gpu`` is this object's GPU kind:
          that fitted curve
          (``source == "fitted"``; ``.model`` is the catalog name asked for);
        * profiled model, other GPU count: the nearest measured count (in log2; ties go to the
          smaller) adapted by :meth:`FittedCurve.scaled_to` (``source == "fitted-scaled"``);
        * otherwise (unprofiled model, other GPU kind): a :class:`RooflineCurve`
          (``source == "roofline"``).

        Curves are cached per (model, n_gpus, gpu).

        Raises:
            ValueError: if ``n_gpus`` < 1.
        """
        key = (model.name, int(n_gpus), gpu.name)
        c = self._curves.get(key)
        if c is not None:
            return c
        if n_gpus < 1:
            raise ValueError(f"n_gpus must be >= 1, got {n_gpus}")
        c = None
        # A model outside MuxServe's profile (no profile_name) may still have been calibrated
        # under its catalog name (muxsim calibrate run).
        pname = model.profile_name or model.name
        if gpu.name == self.gpu:
            counts = [n for (m, n) in self._fitted if m == pname]
            if counts:
                base = self._fitted[(pname, min(
                    counts, key=lambda n: (abs(math.log2(n / n_gpus)), n)))]
                if base.n_gpus == n_gpus:
                    c = FittedCurve(model.name, n_gpus, self.gpu, base.prefill_params,
                                    base.decode_params)
                else:
                    c = base.scaled_to(int(n_gpus), model, gpu)
        if c is None:
            c = RooflineCurve(model, int(n_gpus), gpu)
        self._curves[key] = c
        return c

    __call__ = curve

    def __repr__(self) -> str:
        return f"FittedLatencyModel(gpu={self.gpu!r}, calibrated={len(self._fitted)})"
