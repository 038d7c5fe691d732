"""A Perfetto timeline of a job log: what every mesh's GPUs did over simulated time.

Input is a job log (a :class:`pandas.DataFrame`, one row per job: a prefill batch or one decode
iteration) with the columns of :data:`JOB_COLUMNS`; :func:`write_perfetto_trace` writes it as a
trace in the Chrome JSON trace-event format, which https://ui.perfetto.dev opens (and so does
``chrome://tracing``).

Why the JSON format and not the ``perfetto`` package's protobuf trace builder: the JSON format is
a published spec (the "Trace Event Format" document) that Perfetto's importer implements, needs
no dependency at run time, can be checked event by event without Perfetto, and stays readable;
the builder (``perfetto.trace_builder.proto_builder``) is a thin wrapper over the generated
``TracePacket`` protobuf classes, leaving the track descriptors, UUIDs and interning to the
caller, and pulls in ``perfetto`` and ``protobuf``. What JSON costs: integer-microsecond times
(below) and a larger file (:attr:`TraceInfo.bytes`; a ``.gz`` path is written gzip-compressed,
which the Perfetto UI opens as it is).

Layout:

- one process per run (``cell | strategy``), pids 1, 2, ... in the order the runs first appear
  in the table, named by ``process_name`` metadata and ordered by ``process_sort_index``;
- in it one thread (a slice track) per mesh and SM partition, i.e. per ``(mesh, llm, phase)``,
  named ``"mesh 0 · llm-3 · decode"``; ``thread_sort_index`` and the thread ids both follow
  (mesh, LLM in natural order, prefill before decode), so a mesh's tracks stay together. Thread
  ids are unique in the whole trace, so no viewer can merge two runs' threads;
- one complete event (``ph: "X"``) per job, named ``prefill`` or ``decode``, with ``args``
  ``batch`` (sequences), ``tokens`` (prefill: prompt tokens processed; decode: KV tokens read),
  ``sm_pct`` (% of the mesh's SMs) and ``kv_blocks_used`` (blocks);
- counter events (``ph: "C"``) per process; Perfetto names a counter track ``"<name> <arg>"``:
  ``"mesh 0 kv_blocks_used"`` (KV blocks in use on mesh 0 right after each job start),
  ``"mesh 0 kv_blocks_total"`` (the pool's size, the bound of the former) and
  ``"mesh 0 · llm-3 queue_len"`` (requests of llm-3 waiting for admission at each of its job
  starts). A counter keeps its value until its next sample; samples that repeat the previous
  value are left out, and of several samples at one microsecond the last row's is kept.

Times: the format's ``ts`` and ``dur`` are microseconds. A job's start and end are each rounded
to the nearest integer microsecond (``numpy.rint(t_s * 1e6)``, ties to even) and ``dur`` is the
difference of the rounded end and start, never a rounded duration: rounding is monotone, so jobs
that do not overlap in seconds do not overlap after rounding, and every endpoint is within
0.5 us (plus one float ulp) of the simulated time. Integers, because a decimal fraction is not
exact in binary floating point (1.001 us x 1000 is 1000.9999999999999 ns in doubles), so a
reader's nanosecond value of it depends on how it rounds; an integer microsecond converts to
nanoseconds exactly (Perfetto's unit).

The bytes are a function of the table alone (same rows in the same order: same file; gzip with
its timestamp fixed at 0). Events are written in chunks as they are formatted, never as one
string. To look at part of a long run, filter the table first (e.g. one run, a time window).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from muxsim.files import atomic_file

__all__ = ["JOB_COLUMNS", "PHASES", "TraceInfo", "write_perfetto_trace", "track_name"]

#: Columns of the job log this module reads, with their kinds (``str``, ``int``, ``float``) and
#: units: cell (label), strategy, mesh (index within the run), llm, phase (:data:`PHASES`),
#: start_s / end_s (simulated s), batch (sequences), tokens (prefill: prompt tokens processed;
#: decode: KV tokens read), sm_pct (% of the mesh's SMs), kv_blocks_used (blocks in use on the
#: mesh's pool right after the job started), kv_blocks_total (blocks of the pool), queue_len
#: (requests of the LLM waiting for admission when the job started). Other columns are ignored.
JOB_COLUMNS = {
    "cell": "str", "strategy": "str", "mesh": "int", "llm": "str", "phase": "str",
    "start_s": "float", "end_s": "float", "batch": "int", "tokens": "int", "sm_pct": "float",
    "kv_blocks_used": "int", "kv_blocks_total": "int", "queue_len": "int",
}

#: Job phases, in the order their tracks appear within an LLM.
PHASES = ("prefill", "decode")

#: Rows formatted per write: bounds the text held in memory (about 150 bytes a job).
_CHUNK = 5_000


@dataclass(frozen=True)
class TraceInfo:
    """What :func:`write_perfetto_trace` wrote.

    Attributes:
        path: the trace file.
        runs: processes (one per cell x strategy).
        tracks: slice tracks (threads), one per (run, mesh, llm, phase).
        slices: complete events, one per job.
        counter_events: counter samples written (after leaving out repeats).
        bytes: size of the file on disk (compressed size for a ``.gz`` path).
    """

    path: Path
    runs: int
    tracks: int
    slices: int
    counter_events: int
    bytes: int


def track_name(mesh: int, llm: str, phase: str) -> str:
    """The name of the slice track of one SM partition, e.g. ``"mesh 0 · llm-3 · decode"``."""
    return f"mesh {mesh} · {llm} · {phase}"


def _natural(s: str) -> tuple:
    """Sort key that orders ``llm-2`` before ``llm-10``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s))


def _check(jobs: pd.DataFrame) -> None:
    """Raise ValueError (one line) for a table this module cannot draw."""
    if not isinstance(jobs, pd.DataFrame):
        raise ValueError(f"jobs must be a pandas DataFrame, not {type(jobs).__name__}")
    missing = [c for c in JOB_COLUMNS if c not in jobs.columns]
    if missing:
        raise ValueError(f"job log lacks column(s) {', '.join(missing)}; needs {', '.join(JOB_COLUMNS)}")
    for col, kind in JOB_COLUMNS.items():
        dt = jobs[col].dtype
        ok = (pd.api.types.is_integer_dtype(dt) if kind == "int" else
              pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt) if kind == "float" else
              pd.api.types.is_string_dtype(dt) or pd.api.types.is_object_dtype(dt))
        if not ok:
            raise ValueError(f"job log column {col} has dtype {dt}; needs {kind}")
        if jobs[col].isna().any():
            raise ValueError(f"job log column {col} has missing values; needs a value in every row")
        if kind == "float" and not np.isfinite(jobs[col].to_numpy(dtype=float)).all():
            raise ValueError(f"job log column {col} has infinite values; needs finite numbers")
    bad = sorted(set(jobs["phase"].unique()) - set(PHASES))
    if bad:
        raise ValueError(f"job log phase {bad[0]!r} unknown; allowed: {', '.join(PHASES)}")
    if (jobs["start_s"] < 0).any():
        raise ValueError("job log has a start_s below 0; simulated times start at 0")
    back = jobs["end_s"] < jobs["start_s"]
    if back.any():
        r = jobs[back].iloc[0]
        raise ValueError(f"job log has a job ending before it starts ({r.cell} | {r.strategy}, mesh {r.mesh}, "
                         f"{r.llm} {r.phase}: start_s {r.start_s!r}, end_s {r.end_s!r})")


def _dedupe(ts: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples (time-sorted) of a step counter reduced to what a viewer draws: the last value at
    each time, then only those that change the previous value."""
    if len(ts) == 0:
        return ts, v
    last = np.append(ts[1:] != ts[:-1], True)
    ts, v = ts[last], v[last]
    change = np.insert(v[1:] != v[:-1], 0, True)
    return ts[change], v[change]


class _Writer:
    """Comma-separated trace events streamed into a text file."""

    def __init__(self, f: io.TextIOBase):
        self.f = f
        self.first = True

    def write(self, events: list[str]) -> None:
        if not events:
            return
        self.f.write(("" if self.first else ",\n") + ",\n".join(events))
        self.first = False


def _meta(kind: str, pid: int, tid: int, args: dict) -> str:
    return (f'{{"ph":"M","name":"{kind}","pid":{pid},"tid":{tid},"ts":0,'
            f'"args":{json.dumps(args, ensure_ascii=False, separators=(",", ":"))}}}')


def _counter_events(name: str, key: str, pid: int, ts: np.ndarray, v: np.ndarray) -> Iterator[list[str]]:
    head = f'{{"ph":"C","name":{json.dumps(name, ensure_ascii=False)},"pid":{pid},"tid":{pid},"ts":'
    ts, v = _dedupe(ts, v)
    for a in range(0, len(ts), _CHUNK):
        yield [f'{head}{t},"args":{{"{key}":{x}}}}}'
               for t, x in zip(ts[a:a + _CHUNK].tolist(), v[a:a + _CHUNK].tolist())]


def write_perfetto_trace(jobs: pd.DataFrame, path: str | os.PathLike, *, compress: bool | None = None) -> TraceInfo:
    """Write the job log ``jobs`` as a Perfetto-readable trace (Chrome JSON trace-event format;
    layout, units and rounding in the module docstring) at ``path``, atomically (a temporary
    file beside it, renamed into place: nothing half-written on any error).

    Args:
        jobs: the job log, one row per job, with the columns of :data:`JOB_COLUMNS` (other
            columns are ignored); jobs of one (cell, strategy, mesh, llm, phase) must not
            overlap in time (each SM partition runs one job at a time). Any row order; rows of
            one run are drawn by start time, runs in order of first appearance.
        path: the output file; ``compress`` None (default) gzips it when the name ends in
            ``.gz`` (ui.perfetto.dev opens ``.json`` and ``.json.gz`` alike).
        compress: force gzip on (True) or off (False).

    Returns:
        :class:`TraceInfo` with the counts of what was written and the file size (bytes).

    Raises:
        ValueError: a missing column, a column of the wrong kind, missing values, infinite times or SM
            shares, a phase other than :data:`PHASES`, a negative start, a job ending before it
            starts, or two jobs of one track overlapping (named in the message).
    """
    _check(jobs)
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    n = len(jobs)
    cell_c, cells = pd.factorize(jobs["cell"])
    strat_c, strats = pd.factorize(jobs["strategy"])
    run_c, run_keys = pd.factorize(cell_c.astype(np.int64) * max(len(strats), 1) + strat_c)  # appearance order
    runs = [(str(cells[k // len(strats)]), str(strats[k % len(strats)])) for k in run_keys.tolist()]
    mesh_c, meshes = pd.factorize(jobs["mesh"], sort=True)
    llm_c, llms = pd.factorize(jobs["llm"])
    llm_names = [str(x) for x in llms]
    by_rank = sorted(range(len(llm_names)), key=lambda k: _natural(llm_names[k]))
    rank_of = np.empty(len(llm_names), dtype=np.int64)
    rank_of[by_rank] = np.arange(len(llm_names))
    llm_rank = rank_of[llm_c]
    phase_c, phase_u = pd.factorize(jobs["phase"])
    phase_i = np.array([PHASES.index(str(x)) for x in phase_u], dtype=np.int64)[phase_c] if n else phase_c
    start = jobs["start_s"].to_numpy(dtype=np.float64)
    end = jobs["end_s"].to_numpy(dtype=np.float64)

    # tracks, ordered by run, mesh, llm (natural order), phase; tids come after every pid (a
    # counter's and a process metadata event's tid is its pid), so the two never meet
    partition = mesh_c.astype(np.int64) * len(llm_names) + llm_rank  # (mesh, llm) within a run
    tid, track_keys = pd.factorize((run_c * max(len(meshes) * len(llm_names), 1) + partition) * 2 + phase_i,
                                   sort=True)
    tid += len(runs) + 1
    del partition, cell_c, strat_c, phase_c
    _check_overlap(runs, run_c, tid, start, end, jobs["mesh"].to_numpy(), llm_names, llm_c, phase_i)
    tracks: list[list[tuple[int, int, str, str]]] = [[] for _ in runs]
    for k, key in enumerate(track_keys.tolist()):
        part, ph = divmod(key, 2)
        r, part = divmod(part, max(len(meshes) * len(llm_names), 1))
        m, lr = divmod(part, len(llm_names))
        tracks[r].append((len(runs) + 1 + k, int(meshes[m]), llm_names[by_rank[lr]], PHASES[ph]))

    order = np.lexsort((start, run_c))  # stable: equal starts keep row order
    bounds = np.searchsorted(run_c[order], np.arange(len(runs) + 1))
    num = {c: jobs[c].to_numpy() for c in ("batch", "tokens", "sm_pct", "kv_blocks_used", "kv_blocks_total",
                                           "queue_len")}
    n_counter = 0
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as raw:
            # level 6 (gzip's default): a third of level 9's time for 12 % more bytes here
            stream = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) if compress else raw
            with io.TextIOWrapper(stream, encoding="utf-8", newline="\n") as f:
                f.write('{"traceEvents":[\n')
                w = _Writer(f)
                for r, (cell, strategy) in enumerate(runs):
                    pid = r + 1
                    meta = [_meta("process_name", pid, pid, {"name": f"{cell} | {strategy}"}),
                            _meta("process_sort_index", pid, pid, {"sort_index": r})]
                    for rank, (t, m, lm, ph) in enumerate(tracks[r]):
                        meta += [_meta("thread_name", pid, t, {"name": track_name(m, lm, ph)}),
                                 _meta("thread_sort_index", pid, t, {"sort_index": rank})]
                    w.write(meta)
                    idx = order[bounds[r]:bounds[r + 1]]  # the run's rows by start time
                    ts = np.rint(start[idx] * 1e6).astype(np.int64)
                    for c0 in range(0, len(idx), _CHUNK):
                        s = idx[c0:c0 + _CHUNK]
                        t0 = ts[c0:c0 + _CHUNK]
                        d = np.rint(end[s] * 1e6).astype(np.int64) - t0
                        w.write([f'{{"ph":"X","name":"{PHASES[ph]}","pid":{pid},"tid":{t},"ts":{a},"dur":{b},'
                                 f'"args":{{"batch":{bt},"tokens":{tk},"sm_pct":{sm!r},"kv_blocks_used":{kv}}}}}'
                                 for ph, t, a, b, bt, tk, sm, kv in zip(
                                     phase_i[s].tolist(), tid[s].tolist(), t0.tolist(), d.tolist(),
                                     num["batch"][s].astype(np.int64).tolist(),
                                     num["tokens"][s].astype(np.int64).tolist(),
                                     num["sm_pct"][s].astype(np.float64).tolist(),
                                     num["kv_blocks_used"][s].astype(np.int64).tolist())])
                    # counters: per mesh, then per (mesh, llm); a stable sort keeps start order
                    mo = np.argsort(mesh_c[idx], kind="stable")
                    for sel in np.split(mo, np.flatnonzero(np.diff(mesh_c[idx][mo])) + 1) if len(mo) else ():
                        rows = idx[sel]
                        m = int(meshes[mesh_c[rows[0]]])
                        for key in ("kv_blocks_used", "kv_blocks_total"):
                            for chunk in _counter_events(f"mesh {m}", key, pid, ts[sel],
                                                         num[key][rows].astype(np.int64)):
                                n_counter += len(chunk)
                                w.write(chunk)
                        lo = np.argsort(llm_rank[rows], kind="stable")
                        for part in np.split(lo, np.flatnonzero(np.diff(llm_rank[rows][lo])) + 1):
                            q = rows[part]
                            name = f"mesh {m} · {llm_names[llm_c[q[0]]]}"
                            for chunk in _counter_events(name, "queue_len", pid, ts[sel][part],
                                                         num["queue_len"][q].astype(np.int64)):
                                n_counter += len(chunk)
                                w.write(chunk)
                f.write("\n]}\n")
            if compress:
                stream.close()
    return TraceInfo(path=path, runs=len(runs), tracks=len(track_keys), slices=n,
                     counter_events=n_counter, bytes=path.stat().st_size)


def _check_overlap(runs, run_c, tid, start, end, mesh, llm_names, llm_c, phase_i) -> None:
    """Raise ValueError when two jobs of one track overlap in (float) seconds."""
    o = np.lexsort((start, tid))
    t, s, e = tid[o], start[o], end[o]
    bad = np.flatnonzero((t[1:] == t[:-1]) & (s[1:] < e[:-1]))
    if len(bad):
        i, j = o[bad[0]], o[bad[0] + 1]
        cell, strategy = runs[run_c[i]]
        raise ValueError(f"job log has overlapping jobs on one track ({cell} | {strategy}, "
                         f"{track_name(int(mesh[i]), llm_names[llm_c[i]], PHASES[phase_i[i]])}): "
                         f"[{start[i]!r}, {end[i]!r}] s and [{start[j]!r}, {end[j]!r}] s; "
                         "each SM partition runs one job at a time")
