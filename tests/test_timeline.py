"""The Perfetto timeline (muxsim/timeline.py): the trace follows the JSON trace-event format,
keeps every job and its numbers, keeps each track's slices apart after rounding, is the same bytes
for the same table, streams, refuses bad tables, and (where a trace_processor_shell can be had)
parses in Perfetto's own trace processor without import errors."""

from __future__ import annotations

import gzip
import json
import os
import platform
import shutil
import socket
import sys
import tracemalloc
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest
import yaml

from muxsim.config import load_config
from muxsim.experiment import experiment_results, run_experiment
from muxsim.sim.driver import JOB_COLUMNS as SIM_COLUMNS
from muxsim.timeline import JOB_COLUMNS, PHASES, track_name, write_perfetto_trace

# --- job tables built by hand -------------------------------------------------------------------


def job_log(seed: int = 0, runs=(("alpha=0.7", "muxserve"), ("alpha=0.7", "spatial")),
            meshes: dict[int, list[str]] | None = None, jobs_per_track: int = 40) -> pd.DataFrame:
    """A job log as the simulator writes one: per run and mesh, each LLM's prefills back to back
    (with gaps) on one SM partition and its decode iterations on another, so a mesh's prefills
    and decodes overlap; KV blocks in use a random walk per mesh sampled at job starts, queue
    lengths small counts. Rows ordered by (cell, strategy, start_s, mesh)."""
    rng = np.random.default_rng(seed)
    meshes = meshes or {0: ["llm-0", "llm-3"], 1: ["llm-1"]}
    rows = []
    for cell, strategy in runs:
        for mesh, llms in meshes.items():
            total = int(rng.integers(2000, 4000))
            share = {"prefill": 100.0 / len(llms), "decode": 120.0 / len(llms)}
            for llm in llms:
                for phase in PHASES:
                    t = float(rng.uniform(0, 0.05))
                    for _ in range(jobs_per_track):
                        dur = float(rng.uniform(0.05, 0.3) if phase == "prefill" else rng.uniform(0.01, 0.04))
                        batch = int(rng.integers(1, 9) if phase == "prefill" else rng.integers(1, 65))
                        tokens = batch * int(rng.integers(50, 800))
                        rows.append(dict(cell=cell, strategy=strategy, mesh=mesh, llm=llm, phase=phase,
                                         start_s=t, end_s=t + dur, batch=batch, tokens=tokens,
                                         sm_pct=share[phase], kv_blocks_total=total,
                                         queue_len=int(rng.integers(0, 6))))
                        # back to back or after a gap (decode iterations mostly back to back)
                        t += dur + (float(rng.exponential(0.05)) if rng.random() < 0.4 else 0.0)
            # KV blocks in use: a walk over this mesh's jobs in time order
            mine = sorted((r for r in rows if (r["cell"], r["strategy"], r["mesh"]) == (cell, strategy, mesh)),
                          key=lambda r: r["start_s"])
            used = int(total * 0.2)
            for r in mine:
                used = int(np.clip(used + rng.integers(-40, 60), 0, total))
                r["kv_blocks_used"] = used
    df = pd.DataFrame(rows)[list(JOB_COLUMNS)]
    df = df.astype({"mesh": "int64", "batch": "int64", "tokens": "int64", "kv_blocks_used": "int64",
                    "kv_blocks_total": "int64", "queue_len": "int64"})
    run_order = {r: k for k, r in enumerate(runs)}
    df["_run"] = [run_order[(c, s)] for c, s in zip(df.cell, df.strategy)]
    return df.sort_values(["_run", "start_s", "mesh"], kind="stable").drop(columns="_run").reset_index(drop=True)


def load(path: Path) -> dict:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


# --- the format's rules, checked event by event ------------------------------------------------

METADATA = {"process_name", "thread_name", "process_sort_index", "thread_sort_index"}


def check_trace_events(trace: dict) -> dict:
    """Assert the rules of the JSON trace-event format (Trace Event Format spec: JSON Object
    Format, Complete/Counter/Metadata events) that a viewer relies on; return the events sorted
    by kind for further checks."""
    assert set(trace) == {"traceEvents"}
    events = trace["traceEvents"]
    assert isinstance(events, list)
    by = defaultdict(list)
    for e in events:
        for k in ("ph", "ts", "pid", "tid", "name"):
            assert k in e, (k, e)
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int) and e["pid"] > 0 and e["tid"] > 0, e
        assert isinstance(e["ts"], int) and e["ts"] >= 0, e
        assert e["ph"] in ("X", "C", "M"), e
        by[e["ph"]].append(e)
    process_names = {e["pid"]: e["args"]["name"] for e in by["M"] if e["name"] == "process_name"}
    thread_names = {(e["pid"], e["tid"]): e["args"]["name"] for e in by["M"] if e["name"] == "thread_name"}
    for e in by["M"]:
        assert e["name"] in METADATA, e
        if e["name"].endswith("_name"):
            assert isinstance(e["args"]["name"], str) and e["args"]["name"], e
        else:
            assert isinstance(e["args"]["sort_index"], int), e
    # one name per process and per thread, and thread ids unique across processes
    assert len([e for e in by["M"] if e["name"] == "process_name"]) == len(process_names)
    assert len({tid for _, tid in thread_names}) == len(thread_names)
    assert not {tid for _, tid in thread_names} & set(process_names)
    for e in by["X"]:
        assert isinstance(e["dur"], int) and e["dur"] >= 0, e
        assert e["pid"] in process_names and (e["pid"], e["tid"]) in thread_names, e
    for e in by["C"]:
        assert e["pid"] in process_names, e
        assert e["args"] and all(type(v) in (int, float) for v in e["args"].values()), e
    # slices of one track never overlap (Perfetto would nest or drop them)
    per_track = defaultdict(list)
    for e in by["X"]:
        per_track[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
    for spans in per_track.values():
        spans.sort()
        for (_, e0), (s1, _) in zip(spans, spans[1:]):
            assert s1 >= e0
    return {"X": by["X"], "C": by["C"], "M": by["M"], "process_names": process_names,
            "thread_names": thread_names}


# --- tests --------------------------------------------------------------------------------------


def check_slices(jobs: pd.DataFrame, ev: dict) -> None:
    """Every job is one slice on its run's track of its (mesh, llm, phase), named by its phase,
    at its rounded start and end, with its numbers."""
    got = sorted((ev["process_names"][e["pid"]], ev["thread_names"][(e["pid"], e["tid"])], e["name"], e["ts"],
                  e["dur"], e["args"]["batch"], e["args"]["tokens"], e["args"]["sm_pct"],
                  e["args"]["kv_blocks_used"]) for e in ev["X"])
    t0 = np.rint(jobs.start_s.to_numpy() * 1e6).astype(np.int64)
    t1 = np.rint(jobs.end_s.to_numpy() * 1e6).astype(np.int64)
    exp = sorted((f"{r.cell} | {r.strategy}", track_name(r.mesh, r.llm, r.phase), r.phase, int(a), int(b - a),
                  r.batch, r.tokens, r.sm_pct, r.kv_blocks_used)
                 for r, a, b in zip(jobs.itertuples(), t0, t1))
    assert got == exp


def overlapping_on_one_mesh(ev: dict) -> bool:
    """Whether two slices of different tracks of one mesh overlap in time (SM sharing)."""
    by_mesh = defaultdict(list)
    for e in ev["X"]:
        mesh = ev["thread_names"][(e["pid"], e["tid"])].split(" · ")[0]
        by_mesh[(e["pid"], mesh)].append((e["ts"], e["ts"] + e["dur"], e["tid"]))
    for spans in by_mesh.values():
        spans.sort()
        end, tid = -1, None
        for s0, s1, t in spans:
            if s0 < end and t != tid:
                return True
            if s1 > end:
                end, tid = s1, t
    return False


def test_trace_keeps_every_job_on_its_track(tmp_path):
    jobs = job_log()
    info = write_perfetto_trace(jobs, tmp_path / "t.json")
    ev = check_trace_events(load(info.path))
    assert info.slices == len(ev["X"]) == len(jobs)
    assert info.runs == 2 and info.tracks == 2 * 3 * 2
    assert info.bytes == (tmp_path / "t.json").stat().st_size

    # processes in run order, named "cell | strategy"
    assert ev["process_names"] == {1: "alpha=0.7 | muxserve", 2: "alpha=0.7 | spatial"}
    sort_index = {e["pid"]: e["args"]["sort_index"] for e in ev["M"] if e["name"] == "process_sort_index"}
    assert sort_index == {1: 0, 2: 1}
    # a thread per (mesh, llm, phase), ordered mesh, llm, prefill before decode
    want = [track_name(m, lm, ph) for m, lm in [(0, "llm-0"), (0, "llm-3"), (1, "llm-1")] for ph in PHASES]
    for pid in (1, 2):
        mine = sorted((tid, name) for (p, tid), name in ev["thread_names"].items() if p == pid)
        assert [name for _, name in mine] == want
        ranks = {e["tid"]: e["args"]["sort_index"] for e in ev["M"]
                 if e["name"] == "thread_sort_index" and e["pid"] == pid}
        assert [ranks[tid] for tid, _ in mine] == list(range(len(want)))

    check_slices(jobs, ev)
    # prefill and decode of one mesh overlap in this table: they are on separate tracks
    assert overlapping_on_one_mesh(ev)


def counter_series(ev: dict) -> dict[tuple[int, str], list[tuple[int, float]]]:
    """(pid, Perfetto's counter track name "<name> <arg>") -> time-sorted samples."""
    out = defaultdict(list)
    for e in ev["C"]:
        for k, v in e["args"].items():
            out[(e["pid"], f"{e['name']} {k}")].append((e["ts"], v))
    return {k: sorted(v) for k, v in out.items()}


def value_at(samples, t):
    """A step counter's value at time t (the last sample at or before t)."""
    vals = [v for ts, v in samples if ts <= t]
    return vals[-1] if vals else None


def check_counters(jobs: pd.DataFrame, ev: dict) -> None:
    """The counter tracks hold, at every job start, the table's KV blocks in use of the job's
    mesh and queue length of its LLM (the last row started at that microsecond), and the pool's
    size once; no sample repeats the one before."""
    series = counter_series(ev)
    pid_of = {name: pid for pid, name in ev["process_names"].items()}
    want = {(pid_of[f"{c} | {s}"], name) for c, s, m, lm in
            jobs[["cell", "strategy", "mesh", "llm"]].drop_duplicates().itertuples(index=False)
            for name in (f"mesh {m} kv_blocks_used", f"mesh {m} kv_blocks_total", f"mesh {m} · {lm} queue_len")}
    assert set(series) == want
    for s in series.values():  # repeats left out, one sample per microsecond
        assert all(a[1] != b[1] and a[0] < b[0] for a, b in zip(s, s[1:]))
    jobs = jobs.assign(ts=np.rint(jobs.start_s * 1e6).astype(np.int64)).sort_values(
        ["cell", "strategy", "start_s"], kind="stable")
    for (cell, strategy, mesh), g in jobs.groupby(["cell", "strategy", "mesh"], sort=False):
        pid = pid_of[f"{cell} | {strategy}"]
        last = g.groupby("ts", sort=True).tail(1)  # the last row started at each microsecond
        used = series[(pid, f"mesh {mesh} kv_blocks_used")]
        assert [value_at(used, t) for t in last.ts] == last.kv_blocks_used.tolist()
        assert series[(pid, f"mesh {mesh} kv_blocks_total")] == [(int(g.ts.min()), int(g.kv_blocks_total.iloc[0]))]
        for llm, q in g.groupby("llm"):
            queue = series[(pid, f"mesh {mesh} · {llm} queue_len")]
            lastq = q.groupby("ts", sort=True).tail(1)
            assert [value_at(queue, t) for t in lastq.ts] == lastq.queue_len.tolist()


def test_counters_follow_the_table(tmp_path):
    jobs = job_log(seed=1)
    ev = check_trace_events(load(write_perfetto_trace(jobs, tmp_path / "t.json").path))
    assert {name for _, name in counter_series(ev)} == {
        "mesh 0 kv_blocks_used", "mesh 0 kv_blocks_total", "mesh 1 kv_blocks_used", "mesh 1 kv_blocks_total",
        "mesh 0 · llm-0 queue_len", "mesh 0 · llm-3 queue_len", "mesh 1 · llm-1 queue_len"}
    check_counters(jobs, ev)


def test_rounding_keeps_each_tracks_slices_apart(tmp_path):
    """Back-to-back jobs whose boundaries sit on and around half microseconds, and float times
    that are not exact decimals, stay apart after rounding; each end point moves by <= 0.5 us."""
    rng = np.random.default_rng(7)
    ends = np.cumsum(np.concatenate([rng.uniform(1e-7, 3e-6, 400),  # sub-microsecond to a few us
                                     np.full(50, 0.5e-6), np.full(50, 1.5e-6),  # boundaries at .5 us
                                     rng.uniform(0.001, 0.03, 200)]))  # decode iterations
    starts = np.concatenate([[0.0], ends[:-1]])  # exactly back to back, as the simulator chains decodes
    starts[::7] += 1e-9  # some with tiny gaps
    starts = np.minimum(starts, ends)
    n = len(ends)
    jobs = pd.DataFrame(dict(cell="c", strategy="s", mesh=np.zeros(n, dtype=np.int64), llm="llm-0",
                             phase="decode", start_s=starts, end_s=ends, batch=np.ones(n, dtype=np.int64),
                             tokens=np.full(n, 10, dtype=np.int64), sm_pct=100.0,
                             kv_blocks_used=np.ones(n, dtype=np.int64), kv_blocks_total=np.full(n, 8, dtype=np.int64),
                             queue_len=np.zeros(n, dtype=np.int64)))
    ev = check_trace_events(load(write_perfetto_trace(jobs, tmp_path / "t.json").path))  # asserts no overlap
    x = sorted((e["ts"], e["dur"]) for e in ev["X"])
    assert len(x) == n
    assert np.abs(np.array([t for t, _ in x]) - starts * 1e6).max() <= 0.5 + 1e-6
    assert np.abs(np.array([t + d for t, d in x]) - ends * 1e6).max() <= 0.5 + 1e-6
    # a rounded duration instead of rounded end points would overlap here: the test has teeth
    naive = [(int(np.rint(s * 1e6)), int(np.rint((e - s) * 1e6))) for s, e in zip(starts, ends)]
    assert any(t1 < t0 + d0 for (t0, d0), (t1, _) in zip(naive, naive[1:]))


def test_same_table_same_bytes_gzip_too(tmp_path):
    jobs = job_log(seed=2)
    a = write_perfetto_trace(jobs, tmp_path / "a.json")
    b = write_perfetto_trace(jobs.copy(), tmp_path / "b.json")
    assert a.path.read_bytes() == b.path.read_bytes()
    g1 = write_perfetto_trace(jobs, tmp_path / "a.json.gz")
    g2 = write_perfetto_trace(jobs, tmp_path / "b.json.gz")
    assert g1.path.read_bytes() == g2.path.read_bytes()
    assert gzip.decompress(g1.path.read_bytes()) == a.path.read_bytes()
    assert g1.bytes < a.bytes / 3
    # rows of a run in another order draw the same bytes (a run's rows are drawn by start time)
    shuffled = jobs.sample(frac=1.0, random_state=0).sort_values(["cell", "strategy"], kind="stable")
    assert not shuffled.index.equals(jobs.index)
    c = write_perfetto_trace(shuffled, tmp_path / "c.json")
    assert c.path.read_bytes() == a.path.read_bytes()


def test_streams_instead_of_building_one_string(tmp_path):
    """The writer never holds the trace's text: its peak Python memory stays below the table's own
    size plus 4 MB (a few chunks of formatted events), while the trace is over twice the table."""
    runs = (("c", "muxserve"), ("c", "spatial"), ("d", "muxserve"), ("d", "spatial"))
    jobs = job_log(seed=3, runs=runs, meshes={0: ["llm-0", "llm-1"]}, jobs_per_track=2_500)
    table = int(jobs.memory_usage(deep=True).sum())
    tracemalloc.start()
    try:
        info = write_perfetto_trace(jobs, tmp_path / "t.json")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.slices == 40_000
    assert info.bytes > 2 * table
    assert peak < table + 4_000_000, (peak, table, info.bytes)
    # size per 1,000 jobs (README figure): under 300 kB as JSON
    assert info.bytes / info.slices * 1000 < 300_000


def test_empty_table_is_an_empty_trace(tmp_path):
    jobs = job_log().iloc[:0]
    info = write_perfetto_trace(jobs, tmp_path / "t.json")
    assert load(info.path) == {"traceEvents": []}
    assert (info.runs, info.slices, info.counter_events) == (0, 0, 0)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.drop(columns="queue_len"), "lacks column(s) queue_len"),
    (lambda d: d.assign(phase=d.phase.where(d.index != 3, "mixed")), "phase 'mixed' unknown; allowed: prefill, decode"),
    (lambda d: d.assign(start_s=d.start_s.where(d.index != 5, np.nan)), "start_s has missing values"),
    (lambda d: d.assign(end_s=d.end_s.where(d.index != 5, np.inf)), "end_s has infinite values"),
    (lambda d: d.assign(batch=d.batch.astype("Int64").where(d.index != 2, pd.NA)), "batch has missing values"),
    (lambda d: d.assign(end_s=d.end_s.where(d.index != 5, d.start_s - 1)), "ending before it starts"),
    (lambda d: d.assign(mesh=d.mesh.astype(float)), "mesh has dtype float64; needs int"),
    (lambda d: pd.concat([d, d.iloc[[0]].assign(start_s=d.start_s.iloc[0] + 1e-4,
                                                  end_s=d.end_s.iloc[0] + 1e-4)]), "overlapping jobs on one track"),
])
def test_bad_tables_are_refused_and_nothing_is_written(tmp_path, change, message):
    out = tmp_path / "t.json"
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        write_perfetto_trace(change(job_log()), out)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


# --- Perfetto's trace processor -----------------------------------------------------------------


def trace_processor_shell() -> str:
    """A trace_processor_shell binary, or skip saying why none could be had.

    Looked for: $MUXSIM_TRACE_PROCESSOR_SHELL, trace_processor_shell on PATH, then the `perfetto`
    package's own prebuilt (it downloads the binary from the host in its manifest on first use
    and caches it under ~/.local/share/perfetto/prebuilts; no PyPI or Debian package ships it).
    """
    path = os.environ.get("MUXSIM_TRACE_PROCESSOR_SHELL") or shutil.which("trace_processor_shell")
    if path:
        return path
    pytest.importorskip("perfetto.trace_processor", reason="the perfetto package is not installed (pip install perfetto)")
    from perfetto.prebuilts.manifests.trace_processor_shell import (
        TRACE_PROCESSOR_SHELL_MANIFEST,
    )
    from perfetto.prebuilts.perfetto_prebuilts import get_perfetto_prebuilt

    entry = next((m for m in TRACE_PROCESSOR_SHELL_MANIFEST if m["platform"] == sys.platform
                  and platform.machine().lower() in m["machine"]), None)
    if entry is None:
        pytest.skip(f"the perfetto package has no trace_processor_shell for {sys.platform}-{platform.machine()}")
    cached = Path.home() / ".local/share/perfetto/prebuilts" / f"trace_processor_shell-{entry['sha256'][:16]}"
    if not cached.exists():
        host = urlparse(entry["url"]).hostname
        try:  # the package's curl would wait minutes on a silent network; fail fast instead
            socket.create_connection((host, 443), timeout=5).close()
        except OSError as err:
            pytest.skip(f"trace_processor_shell not available offline: the perfetto package downloads it from "
                        f"{host}, which cannot be reached here ({err}); no PyPI or Debian package ships the "
                        "binary; set MUXSIM_TRACE_PROCESSOR_SHELL to a trace_processor_shell to run this test")
    return get_perfetto_prebuilt(TRACE_PROCESSOR_SHELL_MANIFEST)


@pytest.mark.parametrize("table", ["by hand", "simulated"])
def test_trace_processor_reads_the_trace(tmp_path, table, request):
    shell = trace_processor_shell()
    from perfetto.trace_processor import TraceProcessor, TraceProcessorConfig

    jobs = job_log(seed=4) if table == "by hand" else request.getfixturevalue("simulated_jobs")[0]
    runs = list(dict.fromkeys(f"{c} | {s}" for c, s in zip(jobs.cell, jobs.strategy)))
    info = write_perfetto_trace(jobs, tmp_path / "t.json")
    with TraceProcessor(trace=str(info.path), config=TraceProcessorConfig(bin_path=shell)) as tp:
        def q(sql):
            return tp.query(sql).as_pandas_dataframe()
        errors = q("select name, value from stats where severity in ('error', 'data_loss') and value > 0")
        assert errors.empty, errors.to_string()
        assert int(q("select count(*) n from slice").n[0]) == len(jobs)
        threads = q("select distinct t.name from slice s join thread_track tt on s.track_id = tt.id "
                    "join thread t using (utid)")
        assert sorted(threads.name) == sorted({track_name(r.mesh, r.llm, r.phase) for r in jobs.itertuples()})
        procs = q("select name from process where name is not null")
        assert sorted(procs.name) == sorted(runs)
        # slices: nanoseconds are the rounded microseconds x 1000, exactly
        sl = q("select ts, dur from slice order by ts, dur")
        t0 = np.rint(jobs.start_s.to_numpy() * 1e6).astype(np.int64)
        t1 = np.rint(jobs.end_s.to_numpy() * 1e6).astype(np.int64)
        assert sorted(zip(sl.ts, sl.dur)) == sorted(zip(t0 * 1000, (t1 - t0) * 1000))
        # counters: the KV track of the first job's mesh in the first run holds the trace's samples
        track = f"mesh {int(jobs.mesh.iloc[0])} kv_blocks_used"
        c = q("select c.ts, c.value from counter c join process_counter_track ct on c.track_id = ct.id "
              f"join process p using (upid) where p.name = '{runs[0]}' and ct.name = '{track}' order by c.ts")
        want = counter_series(check_trace_events(load(info.path)))[(1, track)]
        assert len(want) > 0
        assert list(zip(c.ts // 1000, c.value)) == [(t, float(v)) for t, v in want]


# --- a job log from the simulator ---------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def simulated_jobs(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """The job log of a small experiment (tests/test_streaming.py's reduced zipf_alpha: one cell,
    muxserve and spatial on the 19 LLMs, 6 s of arrivals), every job starting in [1, 4) s: as
    the run holds it, as jobs.parquet holds it, and the trace the run wrote beside it."""
    cfg = yaml.safe_load((ROOT / "experiments" / "zipf_alpha.yaml").read_text())
    cfg["workload"]["duration_s"] = 6
    cfg["workload"]["popularity"] = {"alpha": [0.9], "max_rate": 6}
    cfg["strategies"] = ["muxserve", "spatial"]
    cfg["timeline"] = {"window_s": [1, 4]}
    tmp = tmp_path_factory.mktemp("sim")
    (tmp / "small.yaml").write_text(yaml.safe_dump(cfg))
    cfg = load_config(tmp / "small.yaml")
    plans, runs = run_experiment(cfg, jobs=1)
    results = experiment_results(cfg, plans, runs)
    path, trace = results.write_job_log(tmp)
    assert (path.name, trace.name) == ("jobs.parquet", "timeline.json")
    return results.job_log(), pd.read_parquet(path), trace


def test_reads_the_columns_the_simulator_writes():
    assert list(JOB_COLUMNS) == ["cell", "strategy", *SIM_COLUMNS]


def test_trace_of_a_simulated_job_log(simulated_jobs, tmp_path):
    jobs, from_parquet, written = simulated_jobs
    assert list(jobs.columns) == list(JOB_COLUMNS)
    assert set(zip(jobs.cell, jobs.strategy)) == {("alpha=0.9", "muxserve"), ("alpha=0.9", "spatial")}
    info = write_perfetto_trace(jobs, tmp_path / "t.json")
    ev = check_trace_events(load(info.path))
    assert info.slices == len(jobs) > 1000
    assert list(ev["process_names"].values()) == ["alpha=0.9 | muxserve", "alpha=0.9 | spatial"]
    assert sorted(ev["thread_names"].values()) == sorted(
        track_name(m, lm, ph) for _, _, m, lm, ph in
        jobs[["cell", "strategy", "mesh", "llm", "phase"]].drop_duplicates().itertuples(index=False))
    check_slices(jobs, ev)
    check_counters(jobs, ev)
    # MuxServe runs several LLMs' prefills and decodes on one mesh at once: the trace shows it
    muxserve = {"X": [e for e in ev["X"] if e["pid"] == 1], "thread_names": ev["thread_names"]}
    assert overlapping_on_one_mesh(muxserve)
    # the log read back from jobs.parquet draws the same bytes
    again = write_perfetto_trace(from_parquet, tmp_path / "u.json")
    assert again.path.read_bytes() == info.path.read_bytes()
    # and it is the trace the run wrote beside its jobs.parquet
    assert written.read_bytes() == info.path.read_bytes()
