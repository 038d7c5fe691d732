"""The calibration table: latencies measured by ``muxsim calibrate run``, in Parquet.

:func:`muxsim.live.calibrate.run_calibration` writes it; :func:`read_calibration` reads and
checks it; :func:`calibration_to_profile` turns it into the frame of
:func:`muxsim.perf.profile.load_profile`, which :func:`muxsim.perf.fitting.fit_profile` fits
(:func:`muxsim.perf.calibration.fit_and_save`, ``muxsim calibrate fit FILE.parquet``, does
both). Here, below the live engines, so that the latency model reads tables without importing
them.

Schema (one row per point and phase; sorted by the first nine columns)::

    column          type     meaning
    engine          string   engine that measured (e.g. "transformers")
    device          string   "cpu" or a CUDA device ("cuda:0")
    threads         int64    CPU threads of the model's worker (1 on a shared machine)
    model           string   catalog model name (muxsim.catalog), e.g. "llama-tiny-s"
    n_gpus          int64    GPUs of the mesh the point stands for (a label: the engine runs
                             each model on one partition, without tensor parallelism)
    sm_pct          float64  SM share asked for (%, in (0, 100]); on CPU only a label, since
                             a single-thread worker's speed does not depend on it
    batch           int64    sequences in the job
    seq             int64    prompt tokens per sequence (prefill) = context tokens per
                             sequence (decode)
    phase           string   "prefill" (one job over batch x seq tokens) or "decode" (one
                             iteration of batch requests holding batch x seq KV tokens)
    n               int64    timed repeats (warm-up runs excluded)
    median_ms       float64  median duration of the repeats, ms
    p10_ms, p90_ms  float64  10th / 90th percentile (linear interpolation), ms
    min_ms, max_ms  float64  fastest / slowest repeat, ms
    muxsim_version  string   muxsim version that measured the point

A point is identified by (engine, device, threads, model, n_gpus, sm_pct, batch, seq); every
point has exactly one prefill and one decode row. Durations lie in ``[MIN_LATENCY_MS,
MAX_LATENCY_MS]`` = ``[1e-3, 1e9]`` ms (:mod:`muxsim.perf.profile`); a model must be in
:data:`muxsim.catalog.MODELS`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from muxsim.catalog import get_model
from muxsim.perf.profile import MAX_LATENCY_MS, MIN_LATENCY_MS, PROFILE_COLUMNS

__all__ = [
    "CALIBRATION_COLUMNS",
    "PHASES",
    "POINT_COLUMNS",
    "PROFILE_STATS",
    "ROW_KEY_COLUMNS",
    "calibration_to_profile",
    "check_calibration_table",
    "point_label",
    "read_calibration",
    "typed_calibration",
]

#: Columns identifying one measured point (both phases).
POINT_COLUMNS = ["engine", "device", "threads", "model", "n_gpus", "sm_pct", "batch", "seq"]
#: Columns identifying one row.
ROW_KEY_COLUMNS = POINT_COLUMNS + ["phase"]
_STAT_COLUMNS = ["n", "median_ms", "p10_ms", "p90_ms", "min_ms", "max_ms"]
#: All columns of a calibration table, in file order.
CALIBRATION_COLUMNS = ROW_KEY_COLUMNS + _STAT_COLUMNS + ["muxsim_version"]
#: Phase values, in row order within a point.
PHASES = ("decode", "prefill")

_STR_COLS = ("engine", "device", "model", "phase", "muxsim_version")
_INT_COLS = ("threads", "n_gpus", "batch", "seq", "n")
_FLOAT_COLS = ("sm_pct", "median_ms", "p10_ms", "p90_ms", "min_ms", "max_ms")


def typed_calibration(df: pd.DataFrame) -> pd.DataFrame:
    """The table with the schema's dtypes, columns in order, rows sorted by the row key.

    For tables already known to hold the schema's columns (e.g. an empty one, or valid rows
    being appended); :func:`check_calibration_table` checks an unknown one.

    Raises:
        KeyError: a column of :data:`CALIBRATION_COLUMNS` is missing.
    """
    df = df[CALIBRATION_COLUMNS].astype(
        {**{c: "int64" for c in _INT_COLS}, **{c: "float64" for c in _FLOAT_COLS}})
    for c in _STR_COLS:
        df[c] = df[c].astype(str)
    return df.sort_values(ROW_KEY_COLUMNS, ignore_index=True, kind="stable")


def check_calibration_table(df: pd.DataFrame, origin: str = "<calibration>") -> pd.DataFrame:
    """Check a calibration table against the schema of the module docstring.

    Args:
        df: the table (e.g. read from Parquet).
        origin: name used in error messages (usually the file path).

    Returns:
        The table with the schema's dtypes and column order, sorted by the row key.

    Raises:
        ValueError: one line naming ``origin`` and the problem: missing or unexpected
            columns, a column of the wrong type, a null, an unknown phase, a duplicate row, a
            point without both phases, a non-positive / non-finite count or duration, or a
            duration outside ``[MIN_LATENCY_MS, MAX_LATENCY_MS]``.
    """
    missing = [c for c in CALIBRATION_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{origin}: missing column(s) {', '.join(missing)} "
                         f"(expected {', '.join(CALIBRATION_COLUMNS)})")
    extra = [str(c) for c in df.columns if c not in CALIBRATION_COLUMNS]
    if extra:
        raise ValueError(f"{origin}: unexpected column(s) {', '.join(extra)}")
    for c in CALIBRATION_COLUMNS:
        if df[c].isna().any():
            raise ValueError(f"{origin}: column {c} has missing values")
    for c in _STR_COLS:
        if not (pd.api.types.is_string_dtype(df[c])
                and all(isinstance(v, str) for v in df[c])):
            raise ValueError(f"{origin}: column {c} must hold strings, got {df[c].dtype}")
    for c in _INT_COLS:
        if not pd.api.types.is_integer_dtype(df[c]):
            raise ValueError(f"{origin}: column {c} must be integer, got {df[c].dtype}")
        if (df[c] < 1).any():
            raise ValueError(f"{origin}: column {c} must be >= 1")
    for c in _FLOAT_COLS:
        if not (pd.api.types.is_float_dtype(df[c]) or pd.api.types.is_integer_dtype(df[c])):
            raise ValueError(f"{origin}: column {c} must be numeric, got {df[c].dtype}")
        v = df[c].to_numpy(float)
        if not (np.isfinite(v).all() and (v > 0).all()):
            raise ValueError(f"{origin}: column {c} must be finite and > 0")
        if c != "sm_pct" and not ((v >= MIN_LATENCY_MS) & (v <= MAX_LATENCY_MS)).all():
            bad = v[(v < MIN_LATENCY_MS) | (v > MAX_LATENCY_MS)][0]
            raise ValueError(f"{origin}: column {c} holds {bad:g} ms; durations must lie in "
                             f"[{MIN_LATENCY_MS:g}, {MAX_LATENCY_MS:g}] ms")
    if (df["sm_pct"] > 100).any():
        raise ValueError(f"{origin}: column sm_pct must be in (0, 100]")
    bad = sorted(set(df["phase"]) - set(PHASES))
    if bad:
        raise ValueError(f"{origin}: unknown phase(s) {', '.join(map(repr, bad))}; "
                         f"allowed: {', '.join(PHASES)}")
    dup = df.duplicated(ROW_KEY_COLUMNS)
    if dup.any():
        r = df[dup].iloc[0]
        raise ValueError(f"{origin}: duplicate row for {_label_row(r)} phase {r['phase']}")
    per_point = df.groupby(POINT_COLUMNS, sort=False)["phase"].transform("size")
    if (per_point != len(PHASES)).any():
        r = df[per_point != len(PHASES)].iloc[0]
        raise ValueError(f"{origin}: point {_label_row(r)} lacks one of the phases "
                         f"{', '.join(PHASES)}")
    return typed_calibration(df)


def read_calibration(path: str | Path) -> pd.DataFrame:
    """Read and validate a calibration Parquet file (written by
    :func:`muxsim.live.calibrate.run_calibration`).

    Returns:
        The validated table (see :func:`check_calibration_table`).

    Raises:
        ValueError: the file is missing, is not readable Parquet, or breaks the schema; the
            one-line message names the path.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"calibration file not found: {p}")
    try:
        df = pd.read_parquet(p)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{p}: not a readable Parquet file ({first})") from None
    return check_calibration_table(df, origin=str(p))


def point_label(model: str, sm: float, batch: int, seq: int) -> str:
    """``"<model> sm <sm>% batch <batch> seq <seq>"``: a point in messages and progress."""
    return f"{model} sm {sm:g}% batch {batch} seq {seq}"


def _label_row(r: pd.Series) -> str:
    return (f"{r['engine']}/{r['device']}/{r['threads']} threads/{r['n_gpus']} GPUs "
            f"{point_label(r['model'], float(r['sm_pct']), int(r['batch']), int(r['seq']))}")


# --------------------------------------------------------------------------------------------
# To a profile frame


#: Statistics :func:`calibration_to_profile` can take as a point's latency.
PROFILE_STATS = ("median_ms", "p10_ms", "p90_ms", "min_ms", "max_ms")


def calibration_to_profile(df: pd.DataFrame, stat: str = "median_ms",
                           origin: str = "calibration table") -> pd.DataFrame:
    """Turn a calibration table into the frame :func:`muxsim.perf.profile.load_profile`
    returns, ready for :func:`muxsim.perf.fitting.fit_profile`.

    Args:
        df: a calibration table (schema of the module docstring; other columns are ignored)
            measured by one engine on one device with one thread count.
        stat: the column taken as each point's latency, one of :data:`PROFILE_STATS`; the
            median by default (a low quantile repeats better between runs on a busy machine,
            but predicts the typical job too fast).
        origin: names the table in messages (e.g. its file).

    Returns:
        Columns :data:`muxsim.perf.profile.PROFILE_COLUMNS`: ``model`` (the catalog model's
        ``profile_name``, or its catalog name when it has none), ``n_gpus``, ``sm_pct``
        (int64 when every share is a whole number, else float64, %), ``batch``, ``seq``
        (int64), ``prefill_ms`` and ``decode_ms`` (float64, ``stat``), one row per point,
        sorted by the key columns.

    Raises:
        ValueError: the table breaks the schema, is empty, mixes several (engine, device,
            threads), names a model missing from the catalog (the message lists the allowed
            names), or ``stat`` is unknown; messages start with ``origin``.
    """
    if stat not in PROFILE_STATS:
        raise ValueError(f"stat: unknown statistic {stat!r}; allowed: {', '.join(PROFILE_STATS)}")
    # Columns a caller added (e.g. a spread) are ignored here; only files must be exact.
    df = check_calibration_table(df[[c for c in df.columns if c in CALIBRATION_COLUMNS]], origin)
    if df.empty:
        raise ValueError(f"{origin}: no measurement points (the table has no rows)")
    setups = sorted(set(df[["engine", "device", "threads"]].itertuples(index=False, name=None)))
    if len(setups) > 1:
        raise ValueError(f"{origin}: mixes several (engine, device, threads): "
                         + ", ".join(f"{e}/{d}/{t}" for e, d, t in setups)
                         + "; select one before fitting")
    wide = df.pivot(index=["model", "n_gpus", "sm_pct", "batch", "seq"], columns="phase",
                    values=stat).reset_index()
    names = {}
    for m in wide["model"].unique():
        try:
            spec = get_model(m)
        except ValueError as exc:
            raise ValueError(f"{origin}: {exc}") from None
        names[m] = spec.profile_name or spec.name
    wide["model"] = wide["model"].map(names)
    prof = wide.rename(columns={"prefill": "prefill_ms", "decode": "decode_ms"})
    prof = prof[PROFILE_COLUMNS].copy()
    prof.columns.name = None
    sm = prof["sm_pct"].to_numpy(float)
    if np.all(sm == np.round(sm)):
        prof["sm_pct"] = prof["sm_pct"].astype("int64")
    prof = prof.astype({"n_gpus": "int64", "batch": "int64", "seq": "int64",
                        "prefill_ms": "float64", "decode_ms": "float64"})
    prof["model"] = prof["model"].astype(str)
    return prof.sort_values(PROFILE_COLUMNS[:5], ignore_index=True)
