"""Calibration files (fitted coefficients of one GPU kind, JSON) and the default latency model.

A calibration file (format :data:`FORMAT`) holds the coefficients :func:`muxsim.perf.fitting.
fit_profile` found and their error statistics, never rows of the measurements;
:func:`fit_and_save` fits a MuxServe JSON profile or a ``muxsim calibrate run`` Parquet table
and writes one, :func:`load_calibration` reads one into a
:class:`~muxsim.perf.curves.FittedLatencyModel`.

Lookup of the default model of a GPU kind (:func:`default_latency_model`,
:func:`get_latency_model`): the file ``<catalog gpu name>.json`` in :func:`calibration_dir`,
which is

* the folder named by the environment variable ``MUXSIM_CALIBRATION_DIR`` when it is set and
  not empty: it *replaces* the shipped folder (a GPU without a file there gets the roofline,
  even if muxsim ships one);
* otherwise the files shipped with the package, ``muxsim/data/calibration/`` (package data,
  found through :mod:`importlib.resources`, so an installed wheel needs no checkout): today
  ``a100-80gb.json``, fitted to MuxServe's A100-80GB profile.

A GPU kind without a file gets a model whose every curve is a
:class:`~muxsim.perf.roofline.RooflineCurve`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from muxsim.catalog import GPUS, get_gpu
from muxsim.files import atomic_file
from muxsim.perf.curves import FittedLatencyModel
from muxsim.perf.fitting import check_fit, fit_profile
from muxsim.perf.profile import load_profile, profile_model_names
from muxsim.perf.table import calibration_to_profile, read_calibration

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "CALIBRATION_DIR_ENV",
    "DEFAULT_SOURCE_NOTE",
    "FORMAT",
    "FORM_DESCRIPTION",
    "FORM_NOTES",
    "calibration_dir",
    "default_latency_model",
    "fit_and_save",
    "get_latency_model",
    "load_calibration",
    "save_calibration",
    "shipped_calibration_dir",
]

#: ``format`` field of every calibration file; :func:`load_calibration` refuses other values.
FORMAT = "muxsim-latency-calibration/1"

#: Environment variable naming a folder of calibration files that replaces the shipped one.
CALIBRATION_DIR_ENV = "MUXSIM_CALIBRATION_DIR"

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


def _report_records(report: pd.DataFrame) -> list[dict]:
    """The rows of a fit report as JSON objects: NaN (an unfitted group) as null, which JSON
    can hold, and errors to 5 decimals, which is all the file needs."""
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
        coeffs: first result of :func:`muxsim.perf.fitting.fit_profile`.
        report: second result of :func:`muxsim.perf.fitting.fit_profile`.
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
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return path


def load_calibration(path: str | Path) -> FittedLatencyModel:
    """Read a calibration file written by :func:`save_calibration`.

    Returns:
        A :class:`FittedLatencyModel` for the file's GPU.

    Raises:
        ValueError: one-line message naming the path when the file is missing, not JSON, of
            another format, or holds malformed coefficients, an unknown GPU name or a model
            not in the catalog (both list the allowed names).
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
    coeffs = doc["coefficients"]
    if isinstance(coeffs, dict):
        # A curve under a name no catalog model has would never be used: a typo, not data.
        allowed = profile_model_names()
        unknown = sorted(str(m) for m in coeffs if str(m).strip().lower() not in allowed)
        if unknown:
            raise ValueError(f"{p}: coefficients for model(s) not in the catalog: "
                             f"{', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
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
            (:func:`muxsim.live.calibrate.run_calibration`, schema :mod:`muxsim.perf.table`;
            its medians are fitted) measured with one engine, device and thread count.
        out_path: calibration JSON to write (e.g. ``muxsim/data/calibration/a100-80gb.json``,
            or ``<gpu>.json`` in the folder ``$MUXSIM_CALIBRATION_DIR`` will name).
        gpu: catalog GPU the measurements stand for. Default: ``"a100-80gb"`` for a JSON
            profile; ``"cpu-core"`` for a Parquet table measured on ``cpu``; required for a
            Parquet table measured on a CUDA device.
        source_note: provenance recorded in the file. Default: :data:`DEFAULT_SOURCE_NOTE` for
            a JSON profile; for a Parquet table, its file name, engine, device, threads and
            muxsim version(s).

    Returns:
        The fit report (see :func:`muxsim.perf.fitting.fit_profile`).

    Raises:
        ValueError: one line naming ``profile_path`` (nothing is written): a bad profile or
            table (see :func:`muxsim.perf.profile.load_profile`,
            :func:`muxsim.perf.table.read_calibration`,
            :func:`muxsim.perf.table.calibration_to_profile`: unknown models, latencies out
            of range, no rows or no measured point), an unknown GPU, no GPU for a table
            measured on a CUDA device, a fit that failed for a (model, GPU count) (named), or
            a fit that gave no coefficients at all (:func:`muxsim.perf.fitting.check_fit`:
            "no (model, GPU count) had enough points").
    """
    path = Path(profile_path)
    if path.suffix.lower() == ".parquet":
        table = read_calibration(path)
        if table.empty:
            raise ValueError(f"{path}: no measurement points (the table has no rows)")
        df = calibration_to_profile(table, origin=str(path))
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
    coeffs, report = fit_profile(df, gpu=gpu, origin=str(path))
    # Refused before anything is written: empty or non-finite coefficients are no model.
    check_fit(coeffs, report, origin=str(path))
    extra = {"profile_file": path.name,
             "profile_sha256": hashlib.sha256(path.read_bytes()).hexdigest(), **tail}
    save_calibration(coeffs, report, out_path, source_note, extra=extra)
    return report


# --------------------------------------------------------------------------------------------
# Defaults


def calibration_dir() -> Path | Traversable:
    """Folder the default latency models are read from: ``$MUXSIM_CALIBRATION_DIR`` when set
    and not empty, else :func:`shipped_calibration_dir` (see the module docstring).

    Returns:
        A :class:`~pathlib.Path` for the environment variable and for a package on the file
        system (a checkout, an installed wheel); another
        :class:`~importlib.resources.abc.Traversable` only if muxsim is imported from an
        archive.
    """
    env = os.environ.get(CALIBRATION_DIR_ENV)
    if env:
        return Path(env)
    return shipped_calibration_dir()


def shipped_calibration_dir() -> Traversable:
    """The calibration files shipped with muxsim: package data ``muxsim/data/calibration/``,
    through :mod:`importlib.resources` (works from an installed wheel without a checkout)."""
    return resources.files("muxsim") / "data" / "calibration"


def default_latency_model(gpu_name: str) -> FittedLatencyModel:
    """Latency model for GPU ``gpu_name``: ``calibration_dir()/<gpu>.json`` when it exists,
    else a roofline-only model. Call ``.curve(model, n_gpus, gpu)`` (or the model itself) to
    get a :class:`~muxsim.perf.base.LatencyCurve`.

    Raises:
        muxsim.catalog.UnknownNameError: unknown GPU name.
        ValueError: the calibration file exists but is malformed, or holds another GPU.
    """
    gpu = get_gpu(gpu_name).name
    entry = calibration_dir() / f"{gpu}.json"
    if not entry.is_file():
        return FittedLatencyModel(gpu, {}, "roofline only: no calibration file")
    # as_file is the path itself on a file system; a temporary copy only for an archive.
    with resources.as_file(entry) as path:
        model = load_calibration(path)
    if model.gpu != gpu:
        raise ValueError(f"{path}: holds GPU {model.gpu!r}, expected {gpu!r}")
    return model


# ``cal_dir`` is only part of the cache key: a test or a user switching
# $MUXSIM_CALIBRATION_DIR gets the model of the new folder, not the first one read.
@cache
def _cached_model(gpu: str, cal_dir: str) -> FittedLatencyModel:
    return default_latency_model(gpu)


def get_latency_model(gpu_name: str) -> FittedLatencyModel:
    """Like :func:`default_latency_model`, cached per (GPU, calibration folder): a change of
    ``$MUXSIM_CALIBRATION_DIR`` is seen, an edit of a file already read is not.

    Raises:
        muxsim.catalog.UnknownNameError: unknown GPU name.
        ValueError: the calibration file exists but is malformed, or holds another GPU.
    """
    return _cached_model(get_gpu(gpu_name).name, str(calibration_dir()))
