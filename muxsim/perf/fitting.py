"""Least-squares fit of the curves of :mod:`muxsim.perf.curves` to measured latencies.

:func:`fit_profile` fits one prefill and one decode curve per (model, #GPUs) of a profile frame
(:func:`muxsim.perf.profile.load_profile`: MuxServe's A100-80GB profile, from hao-ai-lab/MuxServe
``examples/placement/llama.json``; or :func:`muxsim.perf.table.calibration_to_profile`: the
medians of a ``muxsim calibrate run`` table) with :func:`scipy.optimize.least_squares` on the
log of predicted / measured latency, with a robust (soft-L1) loss because the data has outliers
(e.g. llama-30b, 2 GPUs, decode batch 32 seq 128 at 100 % SMs: 109 ms against ~30 ms for its
neighbours). It returns coefficients and error statistics only, never rows of the data;
:mod:`muxsim.perf.calibration` writes them to a file.

Few points: a phase is fitted with the full form when it has at least 3 measured points per
free parameter. With fewer (but at least 2 per parameter of the reduced form) it gets the
*reduced* form, marked ``"fit_form": "reduced"`` in its coefficients and described in
``form["reduced_fit"]`` of the calibration file: prefill keeps ``O``, ``a``, ``w0``, ``k`` and the
SM efficiencies free and fixes the knee out of the way (``N = 1e8`` tokens, ``p = 2``); decode
keeps ``O``, ``c``, ``k``, ``beta`` and the SM efficiencies free, with ``alpha = 0`` (attention
``beta C``; ``k2`` then has no effect). With fewer points still the (model, #GPUs) gets no curve.

A fit that fails (the optimiser gives up, or its coefficients are not a valid curve: NaN, inf,
a non-positive scale) is refused by :func:`fit_profile`, naming the model and GPU count; a fit
that gives no curve at all is refused by :func:`check_fit`, which
:func:`muxsim.perf.calibration.fit_and_save` calls before it writes anything.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from muxsim.catalog import MODELS
from muxsim.perf.blas import one_blas_thread
from muxsim.perf.curves import FittedCurve

__all__ = ["REPORT_COLUMNS", "check_fit", "fit_profile", "min_points"]

# Fewer points than this multiple of the parameter count and a phase is not fitted with the
# full form ...
_MIN_POINTS_PER_PARAM = 3
# ... and fewer than this multiple of the reduced form's parameter count, not at all.
_MIN_POINTS_PER_PARAM_REDUCED = 2
# Free shape parameters of the reduced forms (the SM efficiencies come on top).
_N_REDUCED_PREFILL = 4
_N_REDUCED_DECODE = 4
# Fixed values of the reduced forms (the calibration file describes them in
# muxsim.perf.calibration.FORM_NOTES["reduced_fit"]; keep the two in step).
_REDUCED_KNEE_TOKENS = 1e8
_REDUCED_KNEE_POWER = 2.0
_REDUCED_K_ATTN = 3.0
# Largest fitted drop of log g between neighbouring SM knots (a factor e^3 = 20 per step is
# far beyond the ~1.3 seen; the cap keeps exp() finite while the optimiser searches).
_MAX_LOG_STEP = 3.0


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
    """Fit the prefill form (``reduced``: knee fixed, see the module docstring); returns its
    params dict (without ``sm_knots``)."""
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
    """Fit the decode form (``reduced``: ``alpha = 0``, ``k2`` fixed, see the module
    docstring); returns a params dict without knots."""
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


#: Columns of the fit report of :func:`fit_profile`, in order.
REPORT_COLUMNS = ["model", "n_gpus", "phase", "n_points", "median_abs_rel_err",
                  "p90_abs_rel_err", "max_abs_rel_err"]


def fit_profile(df: pd.DataFrame, gpu: str = "a100-80gb",
                origin: str = "profile frame") -> tuple[dict, pd.DataFrame]:
    """Fit the form of :mod:`muxsim.perf.curves` to every (model, n_gpus) of a profile frame.

    Args:
        df: frame from :func:`muxsim.perf.profile.load_profile` or
            :func:`muxsim.perf.table.calibration_to_profile` (latencies in ms, NaN = not
            measured).
        gpu: catalog GPU name the profile was measured on.
        origin: names the profile in messages (e.g. its file).

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
        and keeps its report rows with NaN errors (:func:`check_fit` refuses a result with no
        curve at all). A single SM share is allowed (curves then independent of the SM
        share); shares are written as ints when whole numbers.

    Raises:
        ValueError: one line starting with ``origin``: ``df`` lacks the profile columns, has
            no measured point, or holds a latency that is not finite and > 0; or the fit of a
            (model, n_gpus) failed (the optimiser gave up, or its coefficients or predictions
            are not finite or not a valid curve), naming the model and GPU count.
    """
    missing = [c for c in ("model", "n_gpus", "sm_pct", "batch", "seq", "prefill_ms",
                           "decode_ms") if c not in df.columns]
    if missing:
        raise ValueError(f"{origin}: lacks column(s) {', '.join(missing)}")
    if df[["prefill_ms", "decode_ms"]].notna().sum().sum() == 0:
        raise ValueError(f"{origin}: has no measured point")
    for col in ("prefill_ms", "decode_ms"):
        v = df[col].to_numpy(float)
        v = v[~np.isnan(v)]
        if not (np.isfinite(v).all() and (v > 0).all()):
            raise ValueError(f"{origin}: column {col} must be finite and > 0 ms (NaN = not measured)")
    # Load scipy's BLAS before limiting threads, so that the limit reaches it.
    import scipy.optimize  # noqa: F401

    # A degenerate profile makes the optimiser overflow on its way; the outcome is checked
    # below, and warnings would only add lines to the one-line error.
    with one_blas_thread(), np.errstate(all="ignore"):
        return _fit_profile(df, gpu, origin)


def min_points(n_sm: int) -> dict[str, int]:
    """Fewest measured points a phase needs to be fitted at all (the reduced form), per phase,
    for a (model, #GPUs) measured at ``n_sm`` SM shares."""
    return {"prefill": _MIN_POINTS_PER_PARAM_REDUCED * (_N_REDUCED_PREFILL + 2 * (n_sm - 1)),
            "decode": _MIN_POINTS_PER_PARAM_REDUCED * (_N_REDUCED_DECODE + 3 * (n_sm - 1))}


def check_fit(coeffs: dict, report: pd.DataFrame, origin: str = "profile") -> None:
    """Refuse a result of :func:`fit_profile` that holds no curve, or a non-finite one.

    Args:
        coeffs, report: the result of :func:`fit_profile`.
        origin: names the profile in the message (e.g. its file).

    Raises:
        ValueError: ``"<origin>: no (model, GPU count) had enough points to fit ..."`` listing
            each group's measured points per phase and how many it needed, or a coefficient
            that is not finite (naming the model, GPU count, phase and coefficient).
    """
    curves = coeffs.get("curves") if isinstance(coeffs, dict) else None
    if not curves:
        groups = report[report["model"] != "ALL"]
        have: dict[tuple, dict[str, int]] = {}
        for r in groups.itertuples(index=False):
            have.setdefault((r.model, int(r.n_gpus)), {})[r.phase] = int(r.n_points)
        detail = "; ".join(f"{m} on {g} GPU(s): {pts.get('prefill', 0)} prefill and "
                           f"{pts.get('decode', 0)} decode points" for (m, g), pts in sorted(have.items()))
        need = min_points(1)
        raise ValueError(
            f"{origin}: no (model, GPU count) had enough points to fit (at one SM share a phase "
            f"needs at least {need['prefill']} prefill and {need['decode']} decode points, more "
            f"with several shares); found {detail or 'none'}")
    for model, by_gpus in curves.items():
        for g, phases in by_gpus.items():
            for phase, params in phases.items():
                for key, v in params.items():
                    vals = v if isinstance(v, list) else [v]
                    if any(isinstance(x, float) and not math.isfinite(x) for x in vals):
                        raise ValueError(f"{origin}: the fit of {model} on {g} GPU(s) gave a "
                                         f"non-finite {phase} coefficient {key} = {v!r}")


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


def _fit_profile(df: pd.DataFrame, gpu: str, origin: str) -> tuple[dict, pd.DataFrame]:
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
        try:
            pp, dp, e_pre, e_dec = _fit_group(model, n_gpus, gpu, knots, pre, dec, pre_form,
                                              dec_form)
        except ValueError as exc:  # scipy giving up, or coefficients no curve accepts
            msg = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"{origin}: the fit of {model} on {int(n_gpus)} GPU(s) failed "
                             f"({msg})") from None
        if not (np.isfinite(e_pre).all() and np.isfinite(e_dec).all()):
            raise ValueError(f"{origin}: the fit of {model} on {int(n_gpus)} GPU(s) failed "
                             f"(its predictions are not finite)")
        curves.setdefault(str(model), {})[str(int(n_gpus))] = {"prefill": pp, "decode": dp}
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


def _fit_group(model, n_gpus, gpu, knots, pre, dec, pre_form, dec_form):
    """Fit one (model, n_gpus): its rounded prefill and decode coefficients and the absolute
    relative errors of their curve on the measured points of each phase.

    Raises:
        ValueError: the optimiser gave up, or the coefficients are not a valid curve.
    """
    nk = len(knots)
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
    e_pre = np.array([
        abs(curve.prefill_s(b * s, b, sm) * 1e3 / y - 1.0)
        for b, s, sm, y in zip(pre["batch"], pre["seq"], pre["sm_pct"], pre["prefill_ms"])])
    e_dec = np.array([
        abs(curve.decode_s(b, b * s, sm) * 1e3 / y - 1.0)
        for b, s, sm, y in zip(dec["batch"], dec["seq"], dec["sm_pct"], dec["decode_ms"])])
    return pp, dp, e_pre, e_dec
