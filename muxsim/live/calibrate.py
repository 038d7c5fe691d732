"""Calibration sweep: measure prefill and decode latencies with a live engine, into Parquet.

:func:`run_calibration` loads each model on a partition of the device and, for every point of
the grid ``model x sm_pct x batch x seq``, asks the engine (:meth:`muxsim.live.engine.Engine.
measure`) to prefill ``batch`` prompts of ``seq`` tokens and to time decode iterations of that
batch (context ``seq`` tokens per request), ``warmup`` discarded runs then ``repeats`` timed
ones of each phase. :func:`calibration_to_profile` turns the table into the frame of
:func:`muxsim.perf.profile.load_profile`, which :func:`muxsim.perf.fitted.fit_profile` fits
(``muxsim calibrate fit FILE.parquet`` does both).

Schema of the Parquet file (one row per point and phase; sorted by the first nine columns)::

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
point has exactly one prefill and one decode row. The file is rewritten atomically (temporary
file in the same folder, then :func:`os.replace`) after every point, so an interrupted sweep
loses at most the point in progress, and a second run with the same output resumes: points
already present are skipped, the others appended.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from muxsim import __version__
from muxsim.catalog import get_model
from muxsim.live.engine import Engine, EngineError, Partition

__all__ = [
    "POINT_COLUMNS",
    "ROW_KEY_COLUMNS",
    "CALIBRATION_COLUMNS",
    "PHASES",
    "PROFILE_STATS",
    "run_calibration",
    "read_calibration",
    "validate_calibration",
    "calibration_to_profile",
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
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")


# --------------------------------------------------------------------------------------------
# Schema


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """The table with the schema's dtypes, columns in order, rows sorted by the row key."""
    df = df[CALIBRATION_COLUMNS].astype(
        {**{c: "int64" for c in _INT_COLS}, **{c: "float64" for c in _FLOAT_COLS}})
    for c in _STR_COLS:
        df[c] = df[c].astype(str)
    return df.sort_values(ROW_KEY_COLUMNS, ignore_index=True, kind="stable")


def validate_calibration(df: pd.DataFrame, origin: str = "<calibration>") -> pd.DataFrame:
    """Check a calibration table against the schema of the module docstring.

    Args:
        df: the table (e.g. read from Parquet).
        origin: name used in error messages (usually the file path).

    Returns:
        The table with the schema's dtypes and column order, sorted by the row key.

    Raises:
        ValueError: one line naming ``origin`` and the problem: missing or unexpected
            columns, a column of the wrong type, a null, an unknown phase, a duplicate row, a
            point without both phases, or a non-positive / non-finite count or duration.
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
    return _typed(df)


def read_calibration(path: str | Path) -> pd.DataFrame:
    """Read and validate a calibration Parquet file written by :func:`run_calibration`.

    Returns:
        The validated table (see :func:`validate_calibration`).

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
    return validate_calibration(df, origin=str(p))


def _label(model: str, sm: float, batch: int, seq: int) -> str:
    return f"{model} sm {sm:g}% batch {batch} seq {seq}"


def _label_row(r: pd.Series) -> str:
    return (f"{r['engine']}/{r['device']}/{r['threads']} threads/{r['n_gpus']} GPUs "
            f"{_label(r['model'], float(r['sm_pct']), int(r['batch']), int(r['seq']))}")


# --------------------------------------------------------------------------------------------
# Arguments


def _pos_int(v: object, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{what}: expected a positive integer, got {v!r}")
    return int(v)


def _int_list(values: object, what: str) -> list[int]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{what}: expected a list of positive integers, got {values!r}")
    out = [_pos_int(v, what) for v in values]
    _check_list(out, what, "positive integers")
    return out


def _check_list(values: list, what: str, allowed: str) -> None:
    if not values:
        raise ValueError(f"{what}: expected a non-empty list of {allowed}")
    dup = sorted({v for v in values if values.count(v) > 1}, key=str)
    if dup:
        raise ValueError(f"{what}: duplicate value(s) {', '.join(map(str, dup))}")


def _check_args(models, n_gpus, sm_pcts, batches, seqs, warmup, repeats, engine_name, device,
                threads):
    if isinstance(models, str) or not hasattr(models, "__iter__"):
        raise ValueError(f"models: expected a list of catalog model names, got {models!r}")
    names = []
    for m in models:
        if not isinstance(m, str):
            raise ValueError(f"models: expected catalog model names, got {m!r}")
        try:
            names.append(get_model(m).name)
        except ValueError as exc:
            raise ValueError(f"models: {exc}") from None
    _check_list(names, "models", "catalog model names")
    n_gpus = _pos_int(n_gpus, "n_gpus")
    if isinstance(sm_pcts, (str, bytes)) or not hasattr(sm_pcts, "__iter__"):
        raise ValueError(f"sm_pcts: expected a list of SM shares in (0, 100], got {sm_pcts!r}")
    sms = []
    for s in sm_pcts:
        if (isinstance(s, bool) or not isinstance(s, (int, float, np.integer, np.floating))
                or not math.isfinite(s) or not 0 < s <= 100):
            raise ValueError(f"sm_pcts: each SM share must be a number in (0, 100], got {s!r}")
        sms.append(float(s))
    _check_list(sms, "sm_pcts", "SM shares in (0, 100]")
    batches = _int_list(batches, "batches")
    seqs = _int_list(seqs, "seqs")
    if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or warmup < 0:
        raise ValueError(f"warmup: expected an integer >= 0, got {warmup!r}")
    repeats = _pos_int(repeats, "repeats")
    threads = _pos_int(threads, "threads")
    if not isinstance(engine_name, str) or not engine_name.strip():
        raise ValueError(f"engine_name: expected a non-empty name, got {engine_name!r}")
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return names, n_gpus, sms, batches, seqs, int(warmup), repeats, threads


# --------------------------------------------------------------------------------------------
# Sweep


def _write_atomic(df: pd.DataFrame, out: Path) -> None:
    # Same folder as the target, so os.replace is a rename on one file system.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


def _stats(durations_s: list[float], repeats: int, where: str) -> list:
    try:
        ms = np.asarray(list(durations_s), dtype=float) * 1e3
    except (TypeError, ValueError):
        raise EngineError(f"{where}: engine returned non-numeric durations") from None
    if ms.shape != (repeats,):
        raise EngineError(f"{where}: engine returned {ms.size} durations, expected {repeats}")
    if not (np.isfinite(ms).all() and (ms > 0).all()):
        raise EngineError(f"{where}: engine returned a non-positive or non-finite duration")
    return [int(ms.size), float(np.median(ms)), float(np.quantile(ms, 0.1)),
            float(np.quantile(ms, 0.9)), float(ms.min()), float(ms.max())]


#: Decode iterations timed per repeat by :func:`measure_round_trip` (their median is one sample).
ROUND_TRIP_DECODE_STEPS = 4


def measure_round_trip(engine: Engine, llm: str, batch: int, seq: int, warmup: int,
                       repeats: int) -> tuple[list[float], list[float]]:
    """Time jobs as a live driver sees them: from submission to result, through the engine's
    public job API (:meth:`Engine.submit_prefill`, :meth:`Engine.submit_decode`,
    :meth:`Engine.wait`), with nothing else in flight.

    Per repeat: one prefill of ``batch`` prompts of ``seq`` tokens, then
    ``ROUND_TRIP_DECODE_STEPS`` decode iterations of that batch (their median is the sample),
    then release.

    Returns:
        (prefill seconds, decode seconds), ``repeats`` each after ``warmup`` discarded repeats.

    Raises:
        muxsim.live.engine.EngineError: the engine failed a job.
    """
    import statistics
    import time

    def timed(submit) -> float:
        t0 = time.monotonic()
        jid = submit()
        got: list = []
        while not any(r.job_id == jid for r in got):
            got = engine.wait(None)
        return time.monotonic() - t0

    prefill_s, decode_s = [], []
    for rep in range(warmup + repeats):
        rids = [-(1 + rep * batch + i) for i in range(batch)]  # negative: never a workload id
        try:
            p = timed(lambda: engine.submit_prefill(llm, [(r, seq) for r in rids]))
            d = statistics.median(timed(lambda: engine.submit_decode(llm, rids))
                                  for _ in range(ROUND_TRIP_DECODE_STEPS))
        finally:
            engine.release(llm, rids)
        if rep >= warmup:
            prefill_s.append(p)
            decode_s.append(d)
    return prefill_s, decode_s


def run_calibration(
    engine_factory: Callable[[], Engine],
    models: list[str],
    n_gpus: int,
    sm_pcts: list[float],
    batches: list[int],
    seqs: list[int],
    out: Path,
    warmup: int = 2,
    repeats: int = 5,
    engine_name: str = "transformers",
    device: str = "cpu",
    threads: int = 1,
    progress: Callable[[int, int, str], None] | None = None,
    timing: str = "engine",
    cores: tuple[int, ...] | None = None,
) -> pd.DataFrame:
    """Measure every (model, sm_pct, batch, seq) point of the grid and write/extend ``out``.

    ``timing``: ``"engine"`` times jobs inside the engine (``Engine.measure``); ``"round-trip"``
    times them as a driver sees them, from submission to result through the engine's public
    job API (:func:`measure_round_trip`), so the plumbing each live job pays is in the curve.
    Round-trip rows are recorded with engine ``"<engine_name>/round-trip"``.

    For each SM share (in the order given) a fresh engine comes from ``engine_factory()``;
    each model with points still to measure is loaded on it once, as LLM ``model``, on
    ``Partition(device, threads, sm_pct=sm if device != "cpu" else None)`` with ``seed=0``;
    then ``engine.measure(model, batch, seq, warmup, repeats)`` runs for each missing
    (batch, seq), in the order given. The engine is closed after its SM share, also on error.

    Args:
        engine_factory: returns a fresh :class:`~muxsim.live.engine.Engine`.
        models: catalog model names (case-insensitive; stored as catalog names).
        n_gpus: GPUs of the mesh the measurements stand for (recorded, not acted upon).
        sm_pcts: SM shares in % (each in (0, 100]); on CPU only recorded.
        batches: sequences per job (positive).
        seqs: tokens per sequence (positive).
        out: Parquet file to write; if it exists it is validated and extended (resume).
        warmup: discarded runs per phase and point (>= 0).
        repeats: timed runs per phase and point (>= 1).
        engine_name: the ``engine`` column (e.g. ``"transformers"``).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        threads: CPU threads of each model's worker (>= 1).
        cores: CPU cores every model's worker is pinned to (see
            :attr:`muxsim.live.engine.Partition.cores`); None leaves placement to the OS.
        progress: called as ``progress(done, total, label)`` after each measured point, with
            ``total`` the number of points this call measures (those not already in ``out``)
            and ``label`` naming the point; an exception it raises stops the sweep after that
            point was written.

    Returns:
        The whole table now in ``out`` (schema of the module docstring), sorted by the row key.

    Raises:
        ValueError: a bad argument (one line naming it and the allowed values), or ``out``
            exists but is not a valid calibration file.
        muxsim.live.engine.EngineError: the engine failed, or returned the wrong number of
            durations or a non-positive one; points measured before stay in ``out``.
    """
    names, n_gpus, sms, batches, seqs, warmup, repeats, threads = _check_args(
        models, n_gpus, sm_pcts, batches, seqs, warmup, repeats, engine_name, device, threads)
    out = Path(out)
    if out.exists() and not out.is_file():
        raise ValueError(f"out: {out} exists and is not a file")
    if out.exists():
        table = read_calibration(out)
    else:
        if not out.parent.is_dir():
            raise ValueError(f"out: folder {out.parent} does not exist")
        table = _typed(pd.DataFrame({c: [] for c in CALIBRATION_COLUMNS}))

    if timing not in ("engine", "round-trip"):
        raise ValueError(f"timing: expected 'engine' or 'round-trip', got {timing!r}")
    recorded_engine = engine_name if timing == "engine" else f"{engine_name}/round-trip"
    have = set(table[POINT_COLUMNS].itertuples(index=False, name=None))
    todo: list[tuple[float, str, int, int]] = [
        (sm, m, b, s) for sm in sms for m in names for b in batches for s in seqs
        if (recorded_engine, device, threads, m, n_gpus, sm, b, s) not in have]
    total = len(todo)
    rows: list[list] = []
    done = 0
    for sm in sms:
        mine = [t for t in todo if t[0] == sm]
        if not mine:
            continue
        engine = engine_factory()
        try:
            loaded: set[str] = set()
            for _, m, b, s in mine:
                if m not in loaded:
                    part = Partition(device=device, threads=threads,
                                     sm_pct=sm if device != "cpu" else None,
                                     cores=tuple(cores) if cores else None)
                    engine.load(m, get_model(m), part, seed=0)
                    loaded.add(m)
                label = _label(m, sm, b, s)
                if timing == "round-trip":
                    pre_s, dec_s = measure_round_trip(engine, m, b, s, warmup, repeats)
                else:
                    pre_s, dec_s = engine.measure(m, b, s, warmup, repeats)
                key = [recorded_engine, device, threads, m, n_gpus, sm, b, s]
                rows.append(key + ["prefill"] + _stats(pre_s, repeats, f"{label} prefill")
                            + [__version__])
                rows.append(key + ["decode"] + _stats(dec_s, repeats, f"{label} decode")
                            + [__version__])
                new = pd.DataFrame(rows, columns=CALIBRATION_COLUMNS)
                _write_atomic(_typed(pd.concat([table, new], ignore_index=True)), out)
                done += 1
                if progress is not None:
                    progress(done, total, label)
        finally:
            engine.close()
    if not rows:
        return table
    return _typed(pd.concat([table, pd.DataFrame(rows, columns=CALIBRATION_COLUMNS)],
                            ignore_index=True))


# --------------------------------------------------------------------------------------------
# To a profile frame


#: Statistics :func:`calibration_to_profile` can take as a point's latency.
PROFILE_STATS = ("median_ms", "p10_ms", "p90_ms", "min_ms", "max_ms")


def calibration_to_profile(df: pd.DataFrame, stat: str = "median_ms") -> pd.DataFrame:
    """Turn a calibration table into the frame :func:`muxsim.perf.profile.load_profile`
    returns, ready for :func:`muxsim.perf.fitted.fit_profile`.

    Args:
        df: a calibration table (schema of the module docstring; other columns are ignored)
            measured by one engine on one device with one thread count.
        stat: the column taken as each point's latency, one of :data:`PROFILE_STATS`; the
            median by default (a low quantile repeats better between runs on a busy machine,
            but predicts the typical job too fast).

    Returns:
        Columns :data:`muxsim.perf.profile.PROFILE_COLUMNS`: ``model`` (the catalog model's
        ``profile_name``, or its catalog name when it has none), ``n_gpus``, ``sm_pct``
        (int64 when every share is a whole number, else float64, %), ``batch``, ``seq``
        (int64), ``prefill_ms`` and ``decode_ms`` (float64, ``stat``), one row per point,
        sorted by the key columns.

    Raises:
        ValueError: the table breaks the schema, is empty, mixes several (engine, device,
            threads), names a model missing from the catalog, or ``stat`` is unknown.
    """
    from muxsim.perf.profile import PROFILE_COLUMNS

    if stat not in PROFILE_STATS:
        raise ValueError(f"stat: unknown statistic {stat!r}; allowed: {', '.join(PROFILE_STATS)}")
    # Columns a caller added (e.g. a spread) are ignored here; only files must be exact.
    df = validate_calibration(df[[c for c in df.columns if c in CALIBRATION_COLUMNS]])
    if df.empty:
        raise ValueError("calibration table holds no measurement points")
    setups = sorted(set(df[["engine", "device", "threads"]].itertuples(index=False, name=None)))
    if len(setups) > 1:
        raise ValueError("calibration table mixes several (engine, device, threads): "
                         + ", ".join(f"{e}/{d}/{t}" for e, d, t in setups)
                         + "; select one before fitting")
    wide = df.pivot(index=["model", "n_gpus", "sm_pct", "batch", "seq"], columns="phase",
                    values=stat).reset_index()
    names = {}
    for m in wide["model"].unique():
        try:
            spec = get_model(m)
        except ValueError as exc:
            raise ValueError(f"calibration table: {exc}") from None
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
