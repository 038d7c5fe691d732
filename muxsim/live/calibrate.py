"""Calibration sweep: measure prefill and decode latencies with a live engine, into Parquet.

:func:`run_calibration` loads each model on a partition of the device and, for every point of
the grid ``model x sm_pct x batch x seq``, asks the engine (:meth:`muxsim.live.engine.Engine.
measure`) to prefill ``batch`` prompts of ``seq`` tokens and to time decode iterations of that
batch (context ``seq`` tokens per request), ``warmup`` discarded runs then ``repeats`` timed
ones of each phase. The table's schema, its reader and :func:`~muxsim.perf.table.
calibration_to_profile` (to the frame :func:`muxsim.perf.fitting.fit_profile` fits; ``muxsim
calibrate fit FILE.parquet`` does both) are in :mod:`muxsim.perf.table`, below the engines, so
that the latency model reads tables without importing this layer.

The file is rewritten atomically (temporary file in the same folder, then :func:`os.replace`)
after every point, so an interrupted sweep loses at most the point in progress, and a second run
with the same output resumes: points already present are skipped, the others appended.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from muxsim._version import __version__
from muxsim.catalog import get_model
from muxsim.files import atomic_file
from muxsim.live.engine import Engine, EngineError, Partition
from muxsim.perf.table import (
    CALIBRATION_COLUMNS,
    POINT_COLUMNS,
    point_label,
    read_calibration,
    typed_calibration,
)

__all__ = ["ROUND_TRIP_DECODE_STEPS", "measure_round_trip", "run_calibration"]

_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")


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
            # ValueError like every other bad argument (the docstring's contract).
            raise ValueError(f"models: expected catalog model names, got {m!r}")  # noqa: TRY004
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
    with atomic_file(out) as tmp:
        df.to_parquet(tmp, index=False)


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
            # The lambdas run at once, inside this iteration: the late binding of rids is moot.
            p = timed(lambda: engine.submit_prefill(llm, [(r, seq) for r in rids]))  # noqa: B023
            d = statistics.median(timed(lambda: engine.submit_decode(llm, rids))  # noqa: B023
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
        The whole table now in ``out`` (schema of :mod:`muxsim.perf.table`), sorted by the row key.

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
        table = typed_calibration(pd.DataFrame({c: [] for c in CALIBRATION_COLUMNS}))

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
                label = point_label(m, sm, b, s)
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
                _write_atomic(typed_calibration(pd.concat([table, new], ignore_index=True)), out)
                done += 1
                if progress is not None:
                    progress(done, total, label)
        finally:
            engine.close()
    if not rows:
        return table
    return typed_calibration(
        pd.concat([table, pd.DataFrame(rows, columns=CALIBRATION_COLUMNS)], ignore_index=True))
