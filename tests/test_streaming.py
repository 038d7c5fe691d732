"""Whole-run memory (issue 13, item 3): the main process keeps one run's request table at a
time. Each run's table goes to a Parquet file as it arrives (RequestStore.add), the summary is
joined from the runs' own summaries and requests.parquet is streamed from the files. These
tests hold the streamed outputs against what the whole concatenated table gives (the path
before), on a small experiment and on tables made to differ in their columns."""

from __future__ import annotations

import dataclasses
import gc
import io
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from muxsim.cli import app
from muxsim.config import load_config
from muxsim.experiment import experiment_results, experiment_summary, run_experiment
from muxsim.experiment.results import RequestStore, request_store, summarize_runs
from muxsim.experiment.tasks import map_tasks

ROOT = Path(__file__).resolve().parents[1]


def _small_config(tmp_path: Path) -> Path:
    # tests/test_cli.py's reduced zipf_alpha, shorter: 2 cells x 2 strategies
    cfg = yaml.safe_load((ROOT / "experiments" / "zipf_alpha.yaml").read_text())
    cfg["workload"]["duration_s"] = 6
    cfg["workload"]["popularity"] = {"alpha": [0.9, 2.1], "max_rate": 6}
    cfg["strategies"] = ["muxserve", "spatial"]
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(config, plans, runs with their tables) of the small experiment, simulated once."""
    tmp = tmp_path_factory.mktemp("small")
    cfg = load_config(_small_config(tmp))
    plans, runs = run_experiment(cfg, jobs=1)
    return cfg, plans, runs


def _old_latency_source(summary: pd.DataFrame, requests: pd.DataFrame) -> list[str]:
    """The latency-source column as results.py computed it from the whole table (before)."""
    keys = ["cell", "strategy", "llm"]
    per_llm = requests.groupby(keys, sort=False)["latency_source"].first()
    per_group = requests.groupby(["cell", "strategy"], sort=False)["latency_source"].agg(
        lambda s: "+".join(sorted(set(s))))
    return [per_group[(c, s)] if llm == "all" else per_llm[(c, s, llm)]
            for c, s, llm in zip(summary["cell"], summary["strategy"], summary["llm"])]


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False, engine="pyarrow")
    return buf.getvalue()


def _assert_same_parquet(got: bytes | Path, want: bytes) -> None:
    """Same table: schema (pandas metadata included), columns and values, in order."""
    src = (lambda b: pq.read_table(io.BytesIO(b))) if isinstance(got, bytes) else pq.read_table
    g, w = src(got), pq.read_table(io.BytesIO(want))
    assert g.schema.equals(w.schema, check_metadata=True), (g.schema, w.schema)
    assert g.equals(w)
    a = pd.read_parquet(io.BytesIO(got) if isinstance(got, bytes) else got)
    pd.testing.assert_frame_equal(a, pd.read_parquet(io.BytesIO(want)), check_exact=True)


def _store_of(cfg, tables, folder=None, itls=None) -> RequestStore:
    from muxsim.experiment.simulation import CellRun

    store = RequestStore(cfg, folder)
    for k, df in enumerate(tables):
        itl = itls[k] if itls is not None else {}
        run = CellRun(df["cell"].iloc[0], df["strategy"].iloc[0], df, None, 0.0, 0, {}, 0.0, 0.0, itl)
        assert store.add(k, run).requests is None
    return store


def test_streamed_experiment_equals_the_whole_table(small, tmp_path):
    cfg, plans, runs = small
    whole = pd.concat([r.requests for r in runs], ignore_index=True)
    with request_store(cfg, tmp_path / "runs") as store:
        light = [store.add(k, r) for k, r in enumerate(runs)]
        assert all(r.requests is None for r in light) and all(r.requests is not None for r in runs)
        res = experiment_results(cfg, plans, light, store)
        assert res.n_requests == len(whole) > 0
        res.write(tmp_path / "out")
        pd.testing.assert_frame_equal(res.read_requests(), whole, check_exact=True)
    assert not (tmp_path / "runs").exists()
    out = tmp_path / "out"
    # requests.parquet: the table the whole concatenation writes, in one row group per run
    _assert_same_parquet(out / "requests.parquet", _parquet_bytes(whole))
    assert pq.ParquetFile(out / "requests.parquet").num_row_groups == len(runs)
    # the summary, computed as before from the whole table, to the byte
    want = experiment_summary(cfg, plans, runs, summarize_runs(cfg, whole, runs))
    want["latency_source"] = _old_latency_source(want, whole)
    want = want.assign(status="ok", reason="")  # every run was placed
    pd.testing.assert_frame_equal(res.summary, want, check_exact=True)
    csv = want.to_csv(index=False, lineterminator="\n").encode()
    assert (out / "summary.csv").read_bytes() == csv
    _assert_same_parquet(out / "summary.parquet", _parquet_bytes(want))


def test_joined_summary_and_parquet_follow_concat_when_tables_differ(small):
    """Tables that differ in their extra columns: one run's latency source varies within it
    (so no run carries it), one run lacks a sweep column (NaN there, float in the join), one
    carries an int column the others lack (float in the join), one a text column only it has."""
    cfg, _, runs = small
    tables = [r.requests.copy() for r in runs]
    assert len(tables) >= 4
    llm0 = tables[0]["llm"] == tables[0]["llm"].iloc[0]
    tables[0].loc[llm0, "latency_source"] = "roofline"
    tables[1] = tables[1].drop(columns="rate_scale")
    tables[2]["extra_int"] = 7
    tables[3]["note"] = "x"
    whole = pd.concat(tables, ignore_index=True)
    store = _store_of(cfg, tables, itls=[r.itl for r in runs])
    got = store.summary()
    want = summarize_runs(cfg, whole, runs)
    assert "latency_source" not in want.columns and "rate_scale" in want.columns  # the cases bite
    assert want["extra_int"].dtype == "float64"
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert got.to_csv(index=False) == want.to_csv(index=False)
    assert store.latency_source(got) == _old_latency_source(want, whole)
    buf = io.BytesIO()
    store.write_parquet(buf)
    _assert_same_parquet(buf.getvalue(), _parquet_bytes(whole))


def test_store_refuses_what_would_change_the_summary(small):
    cfg, _, runs = small
    a, b = runs[0].requests, runs[1].requests
    with pytest.raises(ValueError, match="not all"):
        _store_of(cfg, [pd.concat([a, b], ignore_index=True)])
    with pytest.raises(ValueError, match="both"):
        _store_of(cfg, [a, a])
    store = _store_of(cfg, [a])
    with pytest.raises(ValueError, match="added already"):
        store.add(0, runs[0])
    store.add(2, runs[2])
    with pytest.raises(ValueError, match="runs 0 to 1 expected"):
        store.summary()


def test_request_store_folder_is_removed_however_the_block_ends(small, tmp_path):
    cfg, _, runs = small
    with pytest.raises(KeyboardInterrupt):
        with request_store(cfg, tmp_path / "runs") as store:
            store.add(0, runs[0])
            assert (tmp_path / "runs" / "run_00000.parquet").is_file()
            raise KeyboardInterrupt
    assert not (tmp_path / "runs").exists()


class _Result:
    def __init__(self, k):
        self.k = k


def test_map_tasks_keeps_what_on_result_returns_and_no_result():
    made = []

    def fn(k):
        r = _Result(k)
        made.append(weakref.ref(r))
        return r

    seen = []

    def on_result(k, r):
        seen.append(k)
        return -r.k

    for ex in (None, ThreadPoolExecutor(2)):
        made.clear()
        seen.clear()
        out = map_tasks(ex, fn, list(range(6)), lambda label: None, str, on_result)
        assert out == [0, -1, -2, -3, -4, -5] and sorted(seen) == list(range(6))
        gc.collect()
        assert len(made) == 6 and all(w() is None for w in made)  # nothing held a result
        if ex is not None:
            ex.shutdown()


def test_cli_run_streams_into_the_staging_folder_and_leaves_nothing(tmp_path, small):
    cfg, plans, runs = small
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", str(_small_config(tmp_path)), "--out", str(out), "--jobs", "2"])
    assert res.exit_code == 0, res.output
    whole = pd.concat([r.requests for r in runs], ignore_index=True)
    assert f"{len(whole):,} requests in" in res.output
    _assert_same_parquet(out / "requests.parquet", _parquet_bytes(whole))
    assert not (out / ".runs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "small.yaml"]  # no staging left


def test_store_keeps_nothing_of_a_table_it_took(small, tmp_path):
    """What the store keeps of a run (its first row, its summary) must not share the run's
    Arrow buffers: a slice of a pyarrow-backed column does, and kept every run's text columns
    alive (about 2.5 MB per run of zipf_alpha) before the first row became a take."""
    cfg, _, runs = small
    store = RequestStore(cfg, tmp_path)
    gc.collect()
    start = pa.total_allocated_bytes()
    big = pd.concat([runs[0].requests] * 100, ignore_index=True)
    # text columns rebuilt from Python strings: new Arrow buffers of this table's own (concat
    # and astype share the pieces' buffers)
    big = big.assign(**{c: pd.array(big[c].tolist(), dtype="string[pyarrow]")
                        for c in ("cell", "strategy", "llm", "model", "reason", "latency_source")})
    n = len(big)
    held = pa.total_allocated_bytes() - start
    assert held > 1_000_000  # the text columns live in Arrow memory
    run = store.add(0, dataclasses.replace(runs[0], requests=big))
    del big
    gc.collect()
    assert run.requests is None and pa.total_allocated_bytes() - start < 0.05 * held
    assert len(store.read_requests()) == n
