"""Smooth latency curves fitted to a measured profile, and the calibration file that holds them.

The MuxServe profile (``../shared/data/profiles/muxserve_llama_a100_80g.json``, from
hao-ai-lab/MuxServe ``examples/placement/llama.json``, measured on A100-80GB; see
:mod:`muxsim.perf.profile`) is fitted once per (model, #GPUs) with
:func:`scipy.optimize.least_squares` on the log of predicted / measured latency, with a robust
(soft-L1) loss because the data has outliers (e.g. llama-30b, 2 GPUs, decode batch 32 seq 128 at
100 % SMs: 109 ms against ~30 ms for its neighbours). Only coefficients and error statistics are
written to the calibration file, never rows of the data. A table measured by ``muxsim calibrate
run`` (:mod:`muxsim.live.calibrate`, Parquet; e.g. the CPU models ``llama-tiny-s/m`` on the
``cpu-core`` device) is fitted the same way from its medians (:func:`fit_and_save`).

Fitted form (times in ms; ``n`` prompt tokens in ``b`` sequences, ``B`` decode batch, ``C`` KV
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

Few points: a phase is fitted with the full form when it has at least 3 measured points per
free parameter. With fewer (but at least 2 per parameter of the reduced form) it gets the
*reduced* form, marked ``"fit_form": "reduced"`` in its coefficients and described in
``form["reduced_fit"]``: prefill keeps ``O``, ``a``, ``w0``, ``k`` and the SM efficiencies free
and fixes the knee out of the way (``N = 1e8`` tokens, ``p = 2``); decode keeps ``O``, ``c``,
``k``, ``beta`` and the SM efficiencies free, with ``alpha = 0`` (attention ``beta C``; ``k2``
then has no effect). With fewer points still the (model, #GPUs) gets no curve.

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

import hashlib
import json
import math
import os
import sys
from bisect import bisect_right
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from muxsim.catalog import GPUS, MODELS, GPUSpec, ModelSpec, get_gpu
from muxsim.perf.base import LatencyCurve
from muxsim.perf.profile import load_profile
from muxsim.perf.roofline import RooflineCurve

__all__ = [
    "FittedCurve",
    "FittedLatencyModel",
    "FORM_DESCRIPTION",
    "FORM_NOTES",
    "DEFAULT_SOURCE_NOTE",
    "fit_profile",
    "save_calibration",
    "load_calibration",
    "fit_and_save",
    "calibration_dir",
    "default_latency_model",
    "get_latency_model",
]

FORMAT = "muxsim-latency-calibration/1"

#: Provenance of the only profile we have (../shared/data/README.md).
DEFAULT_SOURCE_NOTE = (
    "hao-ai-lab/MuxServe examples/placement/llama.json (commit 2231480), measured on "
    "A100-80GB under MPS SM shares 30..100 %; copy at "
    "../shared/data/profiles/muxserve_llama_a100_80g.json"
)

#: Human-readable description of the fitted form, written into calibration files.
FORM_DESCRIPTION = {
    "units": "ms inside; LatencyCurve methods return seconds; s = SM share in %",
    "prefill": (
        "smax_k(O / g_o(s), (w0 + a (n + r n^2 / b)) (1 + (min(n, max_tokens) / N)^p) "
        "/ g_w(s)); n prompt tokens, b sequences, r = layers*hidden/params (fixed, not fitted)"
    ),
    "decode": (
        "smax_k(O / g_o(s), c B / g_c(s)) + smax_k2(alpha C / B, beta C) / g_a(s); "
        "B batch, C KV tokens of the batch"
    ),
    "smax": "smax_k(u, v) = (u^k + v^k)^(1/k)",
    "sm_efficiency": (
        "g(s) = exp(log_g(s)); log_g given at sm_knots (non-decreasing, 0 at the last knot), "
        "PCHIP-interpolated between knots, (s/s_min)^gamma below the first knot with gamma = "
        "clip(log-log slope of the first two knots, 0, 1), 1 above the last knot"
    ),
    "fit": (
        "scipy.optimize.least_squares per (model, n_gpus, phase) on log(pred/measured), "
        "soft_l1 loss with f_scale 0.05 (prefill: best of two starts); errors are "
        "|pred/measured - 1| over all measured points (-1 entries excluded)"
    ),
}

#: Added to the calibration file's ``form`` only when a curve has a single SM knot / a reduced
#: fit, so that files without them (the A100 one) stay as they were.
FORM_NOTES = {
    "single_sm_share": (
        "a curve with one SM knot (one measured SM share) has g(s) = 1 for every s: its latency "
        "does not depend on the SM share"
    ),
    "reduced_fit": (
        "phases with fit_form = reduced had < 3 points per parameter of the full form: prefill "
        "fitted with knee_tokens = 1e8 and knee_power = 2 fixed (no knee); decode with "
        "alpha_ms_per_token = 0 (attention beta C) and k_attn = 3 fixed"
    ),
}

# Fewer points than this multiple of the parameter count and a phase is not fitted with the
# full form ...
_MIN_POINTS_PER_PARAM = 3
# ... and fewer than this multiple of the reduced form's parameter count, not at all.
_MIN_POINTS_PER_PARAM_REDUCED = 2
# Free shape parameters of the reduced forms (the SM efficiencies come on top).
_N_REDUCED_PREFILL = 4
_N_REDUCED_DECODE = 4
# Fixed values of the reduced forms (see FORM_NOTES["reduced_fit"]).
_REDUCED_KNEE_TOKENS = 1e8
_REDUCED_KNEE_POWER = 2.0
_REDUCED_K_ATTN = 3.0
_CACHE_LIMIT = 4096
# Largest fitted drop of log g between neighbouring SM knots (a factor e^3 = 20 per step is
# far beyond the ~1.3 seen; the cap keeps exp() finite while the optimiser searches).
_MAX_LOG_STEP = 3.0


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
        if any(b <= a for a, b in zip(knots, knots[1:])) or knots[0] <= 0 or knots[-1] > 100:
            raise ValueError(f"{where}: SM knots must be increasing within (0, 100]")
        if any(b < a for a, b in zip(log_g, log_g[1:])) or abs(log_g[-1]) > 1e-12:
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
        return lo if v < lo else hi if v > hi else v


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
        raise ValueError(f"{where}: expected an object of coefficients")
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
        if n_seqs < 1:
            n_seqs = 1
        m = n if n < self._p_nmax else self._p_nmax
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
        o = e[0]
        b = float(batch)
        c = e[1] * b
        k = self._d_k
        if c > o:
            t = c * (1.0 + (o / c) ** k) ** self._d_invk
        else:
            t = o * (1.0 + (c / o) ** k) ** self._d_invk
        if ctx_tokens > 0:
            x = self._d_al * ctx_tokens / b
            y = self._d_be * ctx_tokens
            k = self._d_k2
            if x > y:
                t += x * (1.0 + (y / x) ** k) ** self._d_invk2 * e[2]
            elif y > 0.0:
                t += y * (1.0 + (x / y) ** k) ** self._d_invk2 * e[2]
        return t * 1e-3

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
            "decode": {...}}}}`` as produced by :func:`fit_profile`; may be empty
            (roofline only).
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
                raise ValueError(f"coefficients[{name!r}]: expected an object keyed by #GPUs")
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


# --------------------------------------------------------------------------------------------
# Fitting


def _attn_ratio(profile_model: str) -> float:
    """``L d / P`` of the catalog architecture with this profile name, else this catalog name
    (0 if unknown)."""
    key = profile_model.strip().lower()
    for m in MODELS.values():
        if m.profile_name == key:
            return m.n_layers * m.hidden_size / m.n_params
    m = MODELS.get(key)
    if m is not None:
        return m.n_layers * m.hidden_size / m.n_params
    return 0.0


def _log_g(d: np.ndarray, nk: int) -> np.ndarray:
    """Knot values of log g from non-negative increments ``d`` (len nk-1): 0 at the last."""
    out = np.zeros(nk)
    out[:-1] = -np.cumsum(d[::-1])[::-1]
    return out


def _smax(u: np.ndarray, v: np.ndarray, k: float) -> np.ndarray:
    m = np.maximum(u, v)
    m_safe = np.where(m > 0, m, 1.0)
    return np.where(m > 0, m * ((u / m_safe) ** k + (v / m_safe) ** k) ** (1.0 / k), 0.0)


def _fit_prefill(n, b, si, y, nk, r, reduced=False):
    """Fit the prefill form (``reduced``: knee fixed, see FORM_NOTES); returns its params
    dict (without ``sm_knots``)."""
    nd = nk - 1
    lo_y = float(np.min(y))

    def unpack(th):
        lO, la, lk, lN, lp, lw0 = th[:6]
        return (np.exp(lO), np.exp(la), np.exp(lk), np.exp(lN), np.exp(lp), np.exp(lw0),
                _log_g(th[6:6 + nd], nk), _log_g(th[6 + nd:6 + 2 * nd], nk))

    def model(th):
        O, a, k, N, p, w0, lgo, lgw = unpack(th)
        ov = O * np.exp(-lgo[si])
        w = (w0 + a * (n + r * n * n / b)) * (1.0 + (n / N) ** p) * np.exp(-lgw[si])
        return _smax(ov, w, k)

    def resid(th):
        return np.log(model(th) / y)

    big = n >= np.quantile(n, 0.5)
    a0 = float(np.median(y[big] / n[big]))
    lb = np.r_[-np.inf, -np.inf, 0.0, np.log(1e3), np.log(0.5), -np.inf, np.zeros(2 * nd)]
    ub = np.r_[np.inf, np.inf, np.log(30.0), np.log(1e8), np.log(2.0), np.inf,
               np.full(2 * nd, _MAX_LOG_STEP)]
    best = None
    # Two starts: the knee is sometimes sharp (flat floor then linear) and sometimes soft.
    for k0, w00 in ((2.0, 0.2 * lo_y), (8.0, 0.5 * lo_y)):
        th0 = np.r_[np.log(lo_y), np.log(a0), np.log(k0), np.log(1e5), np.log(1.5),
                    np.log(w00), np.full(2 * nd, 0.1)]
        if reduced:
            th0[3], th0[4] = np.log(_REDUCED_KNEE_TOKENS), np.log(_REDUCED_KNEE_POWER)
            res = _least_squares_fixed(resid, th0, lb, ub, fixed=(3, 4))
        else:
            res = _least_squares(resid, th0, lb, ub)
        if best is None or res.cost < best.cost:
            best = res
    O, a, k, N, p, w0, lgo, lgw = unpack(best.x)
    params = {"O_ms": O, "w0_ms": w0, "a_ms_per_token": a, "attn_ratio": r,
              "knee_tokens": N, "knee_power": p, "max_tokens": float(np.max(n)), "k": k,
              "log_g_overhead": lgo, "log_g_work": lgw}
    return params


def _fit_decode(bt, ctx, si, y, nk, reduced=False):
    """Fit the decode form (``reduced``: ``alpha = 0``, ``k2`` fixed, see FORM_NOTES); returns
    a params dict without knots."""
    nd = nk - 1

    def unpack(th):
        lO, lc, lk, la, lbeta, lk2 = th[:6]
        return (np.exp(lO), np.exp(lc), np.exp(lk), np.exp(la), np.exp(lbeta), np.exp(lk2),
                _log_g(th[6:6 + nd], nk), _log_g(th[6 + nd:6 + 2 * nd], nk),
                _log_g(th[6 + 2 * nd:6 + 3 * nd], nk))

    def resid(th):
        O, c, k, al, be, k2, lgo, lgc, lga = unpack(th)
        t = _smax(O * np.exp(-lgo[si]), c * bt * np.exp(-lgc[si]), k)
        t = t + _smax(al * ctx / bt, be * ctx, k2) * np.exp(-lga[si])
        return np.log(t / y)

    lo_y = float(np.min(y))
    lb = np.r_[-np.inf, -np.inf, 0.0, -np.inf, -np.inf, 0.0, np.zeros(3 * nd)]
    ub = np.r_[np.inf, np.inf, np.log(30.0), np.inf, np.inf, np.log(30.0),
               np.full(3 * nd, _MAX_LOG_STEP)]
    # One start: a second one (sharper knee) never lowered the cost on the MuxServe profile.
    th0 = np.r_[np.log(lo_y), np.log(lo_y / 128.0), np.log(2.0), np.log(lo_y * 2e-4),
                np.log(lo_y * 3e-5), np.log(3.0), np.full(3 * nd, 0.1)]
    if reduced:
        # exp(-inf) = 0: alpha drops out and smax_k2(0, beta C) = beta C exactly.
        th0[3], th0[5] = -np.inf, np.log(_REDUCED_K_ATTN)
        best = _least_squares_fixed(resid, th0, lb, ub, fixed=(3, 5))
    else:
        best = _least_squares(resid, th0, lb, ub)
    O, c, k, al, be, k2, lgo, lgc, lga = unpack(best.x)
    return {"O_ms": O, "c_ms_per_seq": c, "k": k, "alpha_ms_per_token": al,
            "beta_ms_per_token": be, "k_attn": k2,
            "log_g_overhead": lgo, "log_g_compute": lgc, "log_g_attn": lga}


def _openblas_thread_setters() -> list[tuple[Any, Any]]:
    """(set, get) thread-count functions of the OpenBLAS libraries loaded in this process.

    Linux only (reads /proc/self/maps), the approach threadpoolctl takes; used when
    threadpoolctl is not installed. Returns [] when nothing is found.
    """
    import ctypes

    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    paths = sorted({ln.split()[-1] for ln in maps.splitlines()
                    if "openblas" in ln.lower() and ".so" in ln})
    names = [(f"{prefix}_set_num_threads{suffix}", f"{prefix}_get_num_threads{suffix}")
             for prefix in ("scipy_openblas", "openblas") for suffix in ("", "64_")]
    out = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        # One pair per library: restoring through two aliases would undo the restore.
        for set_name, get_name in names:
            set_, get_ = getattr(lib, set_name, None), getattr(lib, get_name, None)
            if set_ is not None and get_ is not None:
                set_.argtypes, set_.restype = [ctypes.c_int], None
                get_.argtypes, get_.restype = [], ctypes.c_int
                out.append((set_, get_))
                break
    return out


@contextmanager
def _one_blas_thread():
    """Run the block with one BLAS thread, restoring the previous count afterwards.

    The fits solve ~400 x 27 least-squares steps; multi-threaded OpenBLAS spins on such tiny
    SVDs when the cores are busy (the whole fit took 27 s instead of 6 s with two busy cores).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(1, user_api="blas"):
            yield
        return
    restore = []
    try:
        for set_, get_ in _openblas_thread_setters():
            restore.append((set_, get_()))
            set_(1)
    except Exception:  # noqa: BLE001 - best effort: a foreign library must not break fitting
        pass
    try:
        yield
    finally:
        for set_, n in reversed(restore):
            set_(n)


def _least_squares(resid, th0, lb, ub):
    from scipy.optimize import least_squares

    th0 = np.clip(th0, np.where(np.isfinite(lb), lb + 1e-9, -1e9),
                  np.where(np.isfinite(ub), ub - 1e-9, 1e9))
    return least_squares(resid, th0, bounds=(lb, ub), loss="soft_l1", f_scale=0.05)


def _least_squares_fixed(resid, th0, lb, ub, fixed):
    """:func:`_least_squares` over the entries of ``th0`` not in ``fixed`` (indices), the
    others held at their ``th0`` values; the result's ``x`` is the full parameter vector."""
    free = np.ones(th0.size, bool)
    free[list(fixed)] = False
    base = th0.copy()

    def sub(x):
        th = base.copy()
        th[free] = x
        return resid(th)

    res = _least_squares(sub, th0[free], lb[free], ub[free])
    full = base.copy()
    full[free] = res.x
    res.x = full
    return res


def _round(v: Any) -> Any:
    """7 significant digits, and |v| < 1e-9 to 0 (optimiser residue of parameters at their
    bound): compact JSON; both maps are monotone, so knot values stay non-decreasing."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_round(x) for x in v]
    v = float(v)
    return 0.0 if abs(v) < 1e-9 else float(f"{v:.7g}")


def _err_stats(err: np.ndarray) -> tuple[int, float, float, float]:
    if err.size == 0:
        return 0, math.nan, math.nan, math.nan
    return (int(err.size), float(np.median(err)), float(np.quantile(err, 0.9)),
            float(np.max(err)))


REPORT_COLUMNS = ["model", "n_gpus", "phase", "n_points", "median_abs_rel_err",
                  "p90_abs_rel_err", "max_abs_rel_err"]


def fit_profile(df: pd.DataFrame, gpu: str = "a100-80gb") -> tuple[dict, pd.DataFrame]:
    """Fit the form of the module docstring to every (model, n_gpus) of a profile frame.

    Args:
        df: frame from :func:`muxsim.perf.profile.load_profile` (latencies in ms, NaN = not
            measured).
        gpu: catalog GPU name the profile was measured on.

    Returns:
        ``(coefficients, report)``. ``coefficients`` = ``{"gpu": gpu, "curves": {model:
        {n_gpus (str): {"prefill": {...}, "decode": {...}}}}}`` with values rounded to 7
        significant digits (ms, tokens, %). ``report`` has columns :data:`REPORT_COLUMNS`, one
        row per (model, n_gpus, phase) and overall rows (``model == "ALL"``, ``n_gpus`` NA) for
        phases ``prefill``, ``decode`` and ``all``; errors are ``|pred / measured - 1|`` of
        the rounded coefficients evaluated by :class:`FittedCurve` itself. A phase with fewer
        than 3 points per parameter of the full form gets the reduced form (``"fit_form":
        "reduced"`` in its coefficients, see the module docstring); a group where either
        phase has fewer than 2 points per parameter of the reduced form gets no coefficients
        and keeps its report rows with NaN errors. A single SM share is allowed (curves then
        independent of the SM share); shares are written as ints when whole numbers.

    Raises:
        ValueError: if ``df`` lacks the profile columns or has no measured point.
    """
    missing = [c for c in ("model", "n_gpus", "sm_pct", "batch", "seq", "prefill_ms",
                           "decode_ms") if c not in df.columns]
    if missing:
        raise ValueError(f"profile frame lacks column(s) {', '.join(missing)}")
    if df[["prefill_ms", "decode_ms"]].notna().sum().sum() == 0:
        raise ValueError("profile frame has no measured point")
    # Load scipy's BLAS before limiting threads, so that the limit reaches it.
    import scipy.optimize  # noqa: F401

    with _one_blas_thread():
        return _fit_profile(df, gpu)


def _knot(s: Any) -> int | float:
    """An SM share as an int when it is a whole number (the calibration file's knots are ints
    for MuxServe's integer shares), else a float."""
    v = float(s)
    return int(v) if v.is_integer() else v


def _form(n_points: int, n_full: int, n_reduced: int) -> str | None:
    """``"full"``, ``"reduced"`` or None (too few points) for a phase with ``n_points``."""
    if n_points >= _MIN_POINTS_PER_PARAM * n_full:
        return "full"
    if n_points >= _MIN_POINTS_PER_PARAM_REDUCED * n_reduced:
        return "reduced"
    return None


def _fit_profile(df: pd.DataFrame, gpu: str) -> tuple[dict, pd.DataFrame]:
    curves: dict[str, dict[str, dict]] = {}
    rows: list[tuple] = []
    errs: dict[str, list[np.ndarray]] = {"prefill": [], "decode": []}
    for (model, n_gpus), grp in df.groupby(["model", "n_gpus"], sort=True):
        knots = sorted({_knot(s) for s in grp["sm_pct"]})
        nk = len(knots)
        pre = grp[grp["prefill_ms"].notna()]
        dec = grp[grp["decode_ms"].notna()]
        pre_form = _form(len(pre), 6 + 2 * (nk - 1), _N_REDUCED_PREFILL + 2 * (nk - 1))
        dec_form = _form(len(dec), 6 + 3 * (nk - 1), _N_REDUCED_DECODE + 3 * (nk - 1))
        if pre_form is None or dec_form is None:
            rows.append((model, int(n_gpus), "prefill", len(pre), math.nan, math.nan, math.nan))
            rows.append((model, int(n_gpus), "decode", len(dec), math.nan, math.nan, math.nan))
            continue
        kidx = {s: i for i, s in enumerate(knots)}
        r = _attn_ratio(model)
        pp = _fit_prefill(
            (pre["batch"] * pre["seq"]).to_numpy(float), pre["batch"].to_numpy(float),
            np.array([kidx[_knot(s)] for s in pre["sm_pct"]], dtype=int),
            pre["prefill_ms"].to_numpy(float), nk, r, reduced=pre_form == "reduced")
        dp = _fit_decode(
            dec["batch"].to_numpy(float), (dec["batch"] * dec["seq"]).to_numpy(float),
            np.array([kidx[_knot(s)] for s in dec["sm_pct"]], dtype=int),
            dec["decode_ms"].to_numpy(float), nk, reduced=dec_form == "reduced")
        pp = {k: _round(v) for k, v in pp.items()}
        dp = {k: _round(v) for k, v in dp.items()}
        pp["sm_knots"] = list(knots)
        dp["sm_knots"] = list(knots)
        # Marked only when reduced, so that full fits (the A100 file) keep their layout.
        if pre_form == "reduced":
            pp["fit_form"] = "reduced"
        if dec_form == "reduced":
            dp["fit_form"] = "reduced"
        curve = FittedCurve(str(model), int(n_gpus), gpu, pp, dp)
        curves.setdefault(str(model), {})[str(int(n_gpus))] = {"prefill": pp, "decode": dp}
        e_pre = np.array([
            abs(curve.prefill_s(b * s, b, sm) * 1e3 / y - 1.0)
            for b, s, sm, y in zip(pre["batch"], pre["seq"], pre["sm_pct"], pre["prefill_ms"])])
        e_dec = np.array([
            abs(curve.decode_s(b, b * s, sm) * 1e3 / y - 1.0)
            for b, s, sm, y in zip(dec["batch"], dec["seq"], dec["sm_pct"], dec["decode_ms"])])
        errs["prefill"].append(e_pre)
        errs["decode"].append(e_dec)
        rows.append((model, int(n_gpus), "prefill", *_err_stats(e_pre)))
        rows.append((model, int(n_gpus), "decode", *_err_stats(e_dec)))
    cat = {ph: np.concatenate(v) if v else np.array([]) for ph, v in errs.items()}
    for ph in ("prefill", "decode"):
        rows.append(("ALL", None, ph, *_err_stats(cat[ph])))
    rows.append(("ALL", None, "all", *_err_stats(np.concatenate([cat["prefill"],
                                                                 cat["decode"]]))))
    report = pd.DataFrame(rows, columns=REPORT_COLUMNS)
    report["n_gpus"] = report["n_gpus"].astype("Int64")
    return {"gpu": gpu, "curves": curves}, report


# --------------------------------------------------------------------------------------------
# Calibration files


def _report_records(report: pd.DataFrame) -> list[dict]:
    out = []
    for r in report.itertuples(index=False):
        out.append({
            "model": r.model,
            "n_gpus": None if pd.isna(r.n_gpus) else int(r.n_gpus),
            "phase": r.phase,
            "n_points": int(r.n_points),
            "median_abs_rel_err": None if math.isnan(r.median_abs_rel_err)
            else round(float(r.median_abs_rel_err), 5),
            "p90_abs_rel_err": None if math.isnan(r.p90_abs_rel_err)
            else round(float(r.p90_abs_rel_err), 5),
            "max_abs_rel_err": None if math.isnan(r.max_abs_rel_err)
            else round(float(r.max_abs_rel_err), 5),
        })
    return out


def save_calibration(coeffs: dict, report: pd.DataFrame, path: str | Path,
                     source_note: str = DEFAULT_SOURCE_NOTE,
                     extra: dict | None = None) -> Path:
    """Write a calibration JSON file atomically (temporary file, then :func:`os.replace`).

    The file holds ``format``, ``gpu``, ``source`` (``source_note``: where the measurements come
    from), ``form`` (:data:`FORM_DESCRIPTION`, plus the entries of :data:`FORM_NOTES` that
    apply: a curve with a single SM knot, a reduced fit), ``coefficients`` and ``fit_error``
    (the rows of ``report``: error statistics only). No measured data rows are written.

    Args:
        coeffs: first result of :func:`fit_profile`.
        report: second result of :func:`fit_profile`.
        path: destination file; parent directories are created.
        source_note: provenance text.
        extra: optional extra top-level fields (e.g. the profile's SHA-256).

    Returns:
        The path written.

    Raises:
        ValueError: if ``coeffs`` lacks ``gpu`` or ``curves``.
    """
    if not isinstance(coeffs, dict) or "gpu" not in coeffs or "curves" not in coeffs:
        raise ValueError("coefficients must be the dict returned by fit_profile (gpu, curves)")
    form = dict(FORM_DESCRIPTION)
    phases = [ph for by_gpus in coeffs["curves"].values() for c in by_gpus.values()
              for ph in c.values()]
    if any(len(ph.get("sm_knots", ())) == 1 for ph in phases):
        form["single_sm_share"] = FORM_NOTES["single_sm_share"]
    if any(ph.get("fit_form") == "reduced" for ph in phases):
        form["reduced_fit"] = FORM_NOTES["reduced_fit"]
    doc = {
        "format": FORMAT,
        "gpu": coeffs["gpu"],
        "source": source_note,
        "form": form,
        **(extra or {}),
        "coefficients": coeffs["curves"],
        "fit_error": _report_records(report),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_calibration(path: str | Path) -> FittedLatencyModel:
    """Read a calibration file written by :func:`save_calibration`.

    Returns:
        A :class:`FittedLatencyModel` for the file's GPU.

    Raises:
        ValueError: one-line message naming the path when the file is missing, not JSON, of
            another format, or holds malformed coefficients or an unknown GPU name.
    """
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"calibration file not found: {p}") from None
    except OSError as exc:
        raise ValueError(f"cannot read calibration file {p}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{p}: not a {FORMAT} file")
    for key in ("gpu", "coefficients"):
        if key not in doc:
            raise ValueError(f"{p}: missing key {key!r}")
    try:
        get_gpu(str(doc["gpu"]))
        return FittedLatencyModel(str(doc["gpu"]).strip().lower(), doc["coefficients"],
                                  str(doc.get("source", "")))
    except ValueError as exc:
        raise ValueError(f"{p}: {exc}") from None


def fit_and_save(profile_path: str | Path, out_path: str | Path,
                 gpu: str | None = None,
                 source_note: str | None = None) -> pd.DataFrame:
    """Load measurements, fit them and write the calibration file; prints nothing.

    Args:
        profile_path: either MuxServe's JSON profile (ms; see :mod:`muxsim.perf.profile`) or,
            by the suffix ``.parquet``, a table written by ``muxsim calibrate run``
            (:func:`muxsim.live.calibrate.run_calibration`; its medians are fitted) measured
            with one engine, device and thread count.
        out_path: calibration JSON to write (e.g. ``calibration/a100-80gb.json``).
        gpu: catalog GPU the measurements stand for. Default: ``"a100-80gb"`` for a JSON
            profile; ``"cpu-core"`` for a Parquet table measured on ``cpu``; required for a
            Parquet table measured on a CUDA device.
        source_note: provenance recorded in the file. Default: :data:`DEFAULT_SOURCE_NOTE` for
            a JSON profile; for a Parquet table, its file name, engine, device, threads and
            muxsim version(s).

    Returns:
        The fit report (see :func:`fit_profile`).

    Raises:
        ValueError: bad profile or table (see :func:`muxsim.perf.profile.load_profile`,
            :func:`muxsim.live.calibrate.read_calibration`,
            :func:`muxsim.live.calibrate.calibration_to_profile`), unknown GPU, or no GPU for
            a table measured on a CUDA device.
    """
    path = Path(profile_path)
    if path.suffix.lower() == ".parquet":
        from muxsim.live.calibrate import calibration_to_profile, read_calibration

        table = read_calibration(path)
        df = calibration_to_profile(table)
        first = table.iloc[0]
        engine, device, threads = str(first.engine), str(first.device), int(first.threads)
        if gpu is None:
            if device != "cpu":
                raise ValueError(f"gpu: required for {path.name}, measured on {device!r}; "
                                 f"allowed: {', '.join(GPUS)}")
            gpu = "cpu-core"
        gpu = get_gpu(gpu).name
        if source_note is None:
            versions = ", ".join(sorted(set(table["muxsim_version"])))
            source_note = (f"muxsim calibrate run: {path.name} (engine {engine}, device "
                           f"{device}, {threads} thread(s) per model worker, muxsim "
                           f"{versions}), fitted as {gpu}; medians of the timed repeats")
        tail = {"engine": engine, "device": device, "threads": threads}
    else:
        gpu = get_gpu(gpu if gpu is not None else "a100-80gb").name
        df = load_profile(path)
        if source_note is None:
            source_note = DEFAULT_SOURCE_NOTE
        tail = {}
    coeffs, report = fit_profile(df, gpu=gpu)
    extra = {"profile_file": path.name,
             "profile_sha256": hashlib.sha256(path.read_bytes()).hexdigest(), **tail}
    save_calibration(coeffs, report, out_path, source_note, extra=extra)
    return report


# --------------------------------------------------------------------------------------------
# Defaults


def calibration_dir() -> Path:
    """Directory of calibration files: ``$MUXSIM_CALIBRATION_DIR`` if set, else the
    repository's ``calibration/``."""
    env = os.environ.get("MUXSIM_CALIBRATION_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "calibration"


def default_latency_model(gpu_name: str) -> FittedLatencyModel:
    """Latency model for GPU ``gpu_name``: ``calibration_dir()/<gpu>.json`` when it exists,
    else a roofline-only model. Call ``.curve(model, n_gpus, gpu)`` (or the model itself) to
    get a :class:`LatencyCurve`.

    Raises:
        muxsim.catalog.UnknownNameError: unknown GPU name.
        ValueError: the calibration file exists but is malformed.
    """
    gpu = get_gpu(gpu_name).name
    path = calibration_dir() / f"{gpu}.json"
    if path.is_file():
        model = load_calibration(path)
        if model.gpu != gpu:
            raise ValueError(f"{path}: holds GPU {model.gpu!r}, expected {gpu!r}")
        return model
    return FittedLatencyModel(gpu, {}, "roofline only: no calibration file")


@lru_cache(maxsize=None)
def _cached_model(gpu: str, cal_dir: str) -> FittedLatencyModel:
    return default_latency_model(gpu)


def get_latency_model(gpu_name: str) -> FittedLatencyModel:
    """Like :func:`default_latency_model`, cached per (GPU, calibration directory)."""
    return _cached_model(get_gpu(gpu_name).name, str(calibration_dir()))


def _main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: python -m muxsim.perf.fitted PROFILE OUT [GPU]", file=sys.stderr)
        return 2
    try:
        report = fit_and_save(argv[0], argv[1], gpu=argv[2] if len(argv) == 3 else None)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(report.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
