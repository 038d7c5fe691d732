"""Calibration sweeps (``muxsim.live.calibrate``) with the real transformers engine, their
Parquet tables (``muxsim.perf.table``) and the fit of those (``muxsim.perf.calibration``).

The sweeps run real forward passes of the catalog's ``llama-tiny-s`` in single-thread worker
processes (``muxsim.live.transformers.TransformersEngine``); they skip when torch or transformers is not
installed. Counting the engine's ``measure`` calls wraps the real engine in a subclass: every
point is still measured for real.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from muxsim.catalog import get_gpu, get_model
from muxsim.live.calibrate import run_calibration
from muxsim.live.engine import Partition
from muxsim.perf.calibration import fit_and_save, load_calibration
from muxsim.perf.fitting import fit_profile
from muxsim.perf.profile import PROFILE_COLUMNS
from muxsim.perf.table import (
    CALIBRATION_COLUMNS,
    POINT_COLUMNS,
    ROW_KEY_COLUMNS,
    calibration_to_profile,
    read_calibration,
)

MODEL = "llama-tiny-s"
CPU = get_gpu("cpu-core")
# Error bar of the task, over the measured points: median and p90 of |pred / measured - 1|.
MEDIAN_BAR = 0.05
P90_BAR = 0.15

_DTYPES = {"engine": "str", "device": "str", "threads": "int", "model": "str", "n_gpus": "int",
           "sm_pct": "float", "batch": "int", "seq": "int", "phase": "str", "n": "int",
           "median_ms": "float", "p10_ms": "float", "p90_ms": "float", "min_ms": "float",
           "max_ms": "float", "muxsim_version": "str"}


def _real_engine_class():
    """The real engine class; skips the test when torch or transformers is missing."""
    pytest.importorskip("torch", reason="torch is not installed: the real engine cannot run")
    pytest.importorskip("transformers",
                        reason="transformers is not installed: the real engine cannot run")
    from muxsim.live.transformers import TransformersEngine

    return TransformersEngine


def _counting_factory(calls: list[tuple[str, int, int]]):
    """A factory of real engines whose ``measure`` also records (llm, batch, seq) in ``calls``."""
    base = _real_engine_class()

    class CountingEngine(base):
        def measure(self, llm, batch, seq, warmup, repeats):
            calls.append((llm, batch, seq))
            return super().measure(llm, batch, seq, warmup, repeats)

    return CountingEngine


def _no_engine():
    raise AssertionError("the engine must not be started")


def _check_schema(df: pd.DataFrame) -> None:
    assert list(df.columns) == CALIBRATION_COLUMNS
    for col, kind in _DTYPES.items():
        check = {"str": pd.api.types.is_string_dtype, "int": pd.api.types.is_integer_dtype,
                 "float": pd.api.types.is_float_dtype}[kind]
        assert check(df[col]), (col, df[col].dtype)
    assert not df.duplicated(ROW_KEY_COLUMNS).any()
    assert (df.groupby(POINT_COLUMNS)["phase"].apply(sorted).map(tuple)
            == ("decode", "prefill")).all()
    assert df.equals(df.sort_values(ROW_KEY_COLUMNS, ignore_index=True))
    assert ((df.min_ms <= df.p10_ms) & (df.p10_ms <= df.median_ms) & (df.median_ms <= df.p90_ms)
            & (df.p90_ms <= df.max_ms) & (df.min_ms > 0)).all()


def _points(df: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(df.batch, df.seq))


# ------------------------------------------------------------------------------------------
# Real sweeps


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """A 1-model, 2 x 2 real sweep (warm-up 1, 2 repeats) and the measure calls it made."""
    calls: list = []
    out = tmp_path_factory.mktemp("tiny") / "cal.parquet"
    labels: list = []
    df = run_calibration(_counting_factory(calls), [MODEL], 1, [100], [1, 2], [8, 16], out,
                         warmup=1, repeats=2, progress=lambda d, t, lab: labels.append((d, t, lab)))
    return out, df, calls, labels


def test_tiny_sweep_writes_documented_schema(tiny_sweep):
    out, df, calls, labels = tiny_sweep
    assert len(calls) == 4
    assert [(d, t) for d, t, _ in labels] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert labels[0][2] == f"{MODEL} sm 100% batch 1 seq 8"
    on_disk = pd.read_parquet(out)
    _check_schema(on_disk)
    assert on_disk.equals(df)
    assert len(df) == 8
    assert set(df.engine) == {"transformers"} and set(df.device) == {"cpu"}
    assert set(df.threads) == {1} and set(df.n_gpus) == {1} and set(df.sm_pct) == {100.0}
    assert set(df.model) == {MODEL} and set(df.n) == {2}
    assert _points(df) == {(1, 8), (1, 16), (2, 8), (2, 16)}
    assert [p.name for p in out.parent.iterdir()] == ["cal.parquet"]  # no temp file left


def test_resume_measures_only_new_points(tiny_sweep, tmp_path):
    src, first, _, _ = tiny_sweep
    out = tmp_path / "cal.parquet"
    out.write_bytes(src.read_bytes())
    calls: list = []
    df = run_calibration(_counting_factory(calls), [MODEL], 1, [100], [1, 2, 3], [8, 16, 24],
                         out, warmup=1, repeats=2)
    assert sorted(calls) == sorted([(MODEL, 1, 24), (MODEL, 2, 24), (MODEL, 3, 8),
                                    (MODEL, 3, 16), (MODEL, 3, 24)])
    _check_schema(df)
    assert len(df) == 2 * 9
    assert pd.read_parquet(out).equals(df)
    # The points measured before are kept as they were.
    old = df.merge(first[ROW_KEY_COLUMNS], on=ROW_KEY_COLUMNS)
    assert len(old) == len(first)
    kept = df.set_index(ROW_KEY_COLUMNS).loc[first.set_index(ROW_KEY_COLUMNS).index]
    assert np.array_equal(kept.median_ms.to_numpy(), first.median_ms.to_numpy())
    # Everything present: nothing measured, no engine started, file unchanged.
    before = out.read_bytes()
    again = run_calibration(_no_engine, [MODEL], 1, [100], [1, 3], [8, 24], out,
                            warmup=1, repeats=2)
    assert again.equals(df) and out.read_bytes() == before


def test_interrupted_sweep_keeps_finished_points(tmp_path):
    out = tmp_path / "cal.parquet"
    calls: list = []

    def stop_after_two(done, total, label):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_calibration(_counting_factory(calls), [MODEL], 1, [100], [1, 2], [8, 16], out,
                        warmup=0, repeats=1, progress=stop_after_two)
    df = read_calibration(out)
    _check_schema(df)
    assert len(calls) == 2
    assert _points(df) == {(1, 8), (1, 16)}
    assert [p.name for p in tmp_path.iterdir()] == ["cal.parquet"]


# ------------------------------------------------------------------------------------------
# Fit of a real sweep

# Cheap points of the small model (<= 2048 prompt tokens; about 10 s): 20 points, full form.
FIT_BATCHES = [1, 2, 4, 8, 16]
FIT_SEQS = [16, 32, 64, 128]


# Reference points timed by a separate worker before, during (every DRIFT_EVERY points) and
# after the sweep, and the largest change of their fastest run that counts as a steady machine.
DRIFT_POINTS = [(1, 128), (4, 64), (16, 32)]
DRIFT_EVERY = 5
DRIFT_LIMIT = 0.15


def _fastest(engine, points) -> np.ndarray:
    """Fastest prefill and decode (s) of each point, shape (len(points), 2)."""
    return np.array([(min(p), min(d))
                     for p, d in (engine.measure(MODEL, b, s, 1, 5) for b, s in points)])


@pytest.fixture(scope="module")
def fit_sweep(tmp_path_factory):
    """A 20-point real sweep of the small model, and how much the machine's speed drifted
    meanwhile: the largest relative change of the fastest prefill / decode of
    ``DRIFT_POINTS``, timed by a separate worker, from before the sweep to any later check."""
    out = tmp_path_factory.mktemp("fit") / "tiny.parquet"
    # Sweep and reference take turns on one pinned core: no migrations, caches stay warm, and a
    # co-tenant on another core does not touch them.
    core = (max(os.sched_getaffinity(0)),) if hasattr(os, "sched_getaffinity") else None
    with _real_engine_class()() as ref:
        ref.load(MODEL, get_model(MODEL), Partition(cores=core), seed=0)
        checks = [_fastest(ref, DRIFT_POINTS)]

        def check(done, total, label):
            if done % DRIFT_EVERY == 0:
                checks.append(_fastest(ref, DRIFT_POINTS))

        run_calibration(_counting_factory([]), [MODEL], 1, [100], FIT_BATCHES, FIT_SEQS, out,
                        warmup=2, repeats=7, progress=check, cores=core)
    return out, max(float(np.max(np.abs(c / checks[0] - 1))) for c in checks[1:])


def test_calibration_to_profile_frame(fit_sweep):
    table = read_calibration(fit_sweep[0])
    prof = calibration_to_profile(table)
    assert list(prof.columns) == PROFILE_COLUMNS
    assert len(prof) == len(FIT_BATCHES) * len(FIT_SEQS)
    assert set(prof.model) == {MODEL} and set(prof.n_gpus) == {1}
    assert prof.sm_pct.dtype == "int64" and set(prof.sm_pct) == {100}
    pre = table[table.phase == "prefill"].sort_values(["batch", "seq"])
    assert np.allclose(prof.sort_values(["batch", "seq"]).prefill_ms, pre.median_ms)
    low = calibration_to_profile(table, stat="min_ms").sort_values(["batch", "seq"])
    assert np.allclose(low.prefill_ms, pre.min_ms)
    with pytest.raises(ValueError, match="stat: unknown statistic 'mean_ms'; allowed: median_ms"):
        calibration_to_profile(table, stat="mean_ms")
    mixed = pd.concat([table, table.assign(threads=2)], ignore_index=True)
    with pytest.raises(ValueError, match="mixes several"):
        calibration_to_profile(mixed)


def _overall(report: pd.DataFrame) -> pd.Series:
    return report[(report.model == "ALL") & (report.phase == "all")].iloc[0]


def test_fit_of_real_sweep_meets_bar_and_ignores_sm(fit_sweep):
    path, drift = fit_sweep
    if drift > DRIFT_LIMIT:
        pytest.skip(f"the machine's speed drifted by {drift:.0%} during the sweep (another job "
                    "running?): the fit bar needs a steady machine")
    table = read_calibration(path)
    # The bar is checked on each point's fastest repeat: on a shared machine another job
    # sometimes slows a whole point by 20 % or more, which moves its median but rarely all of
    # its repeats, so the minimum is what shows whether the form follows the machine's cost.
    prof = calibration_to_profile(table, stat="min_ms")
    coeffs, report = fit_profile(prof, gpu="cpu-core")
    curves = coeffs["curves"][MODEL]["1"]
    assert curves["prefill"]["sm_knots"] == [100] and curves["decode"]["sm_knots"] == [100]
    assert "fit_form" not in curves["prefill"] and "fit_form" not in curves["decode"]
    row = _overall(report)
    assert row.n_points == 2 * len(prof)
    assert row.median_abs_rel_err <= MEDIAN_BAR, report.to_string()
    assert row.p90_abs_rel_err <= P90_BAR, report.to_string()
    # The medians (what `calibrate fit` uses) carry those disturbances: a looser check.
    _, report = fit_profile(calibration_to_profile(table), gpu="cpu-core")
    assert _overall(report).median_abs_rel_err <= 2 * MEDIAN_BAR, report.to_string()
    # One measured SM share: the policy's share does not change a CPU worker's latency.
    from muxsim.perf.curves import FittedCurve

    c = FittedCurve(MODEL, 1, "cpu-core", curves["prefill"], curves["decode"])
    for sm in (5, 30, 55.5, 100, 120):
        assert c.prefill_s(256, 4, sm) == c.prefill_s(256, 4, 100)
        assert c.decode_s(4, 256, sm) == c.decode_s(4, 256, 100)


def test_fit_and_save_parquet(fit_sweep, tmp_path, monkeypatch):
    fit_sweep = fit_sweep[0]
    out = tmp_path / "cal" / "cpu-core.json"
    report = fit_and_save(fit_sweep, out)  # gpu derived: measured on cpu -> cpu-core
    assert not report[report.model != "ALL"].median_abs_rel_err.isna().any()
    doc = json.loads(out.read_text())
    assert doc["gpu"] == "cpu-core"
    for word in (fit_sweep.name, "transformers", "device cpu", "1 thread"):
        assert word in doc["source"], (word, doc["source"])
    assert doc["profile_file"] == fit_sweep.name and doc["engine"] == "transformers"
    assert doc["device"] == "cpu" and doc["threads"] == 1 and len(doc["profile_sha256"]) == 64
    assert "single_sm_share" in doc["form"]
    text = out.read_text()
    for v in read_calibration(fit_sweep).median_ms:  # no measured row in the file
        assert f"{v:.7g}" not in text
    model = load_calibration(out)
    assert model.calibrated == [(MODEL, 1)]
    monkeypatch.setenv("MUXSIM_CALIBRATION_DIR", str(out.parent))
    from muxsim.perf.calibration import default_latency_model

    curve = default_latency_model("cpu-core").curve(get_model(MODEL), 1, CPU)
    assert curve.source == "fitted" and curve.model == MODEL
    assert 0 < curve.prefill_s(64, 2, 100) < 1 and 0 < curve.decode_s(2, 64, 100) < 1
    # Another model of the catalog has no curve on this "device": roofline.
    assert default_latency_model("cpu-core").curve(get_model("llama-tiny-m"), 1, CPU).source \
        == "roofline"


# ------------------------------------------------------------------------------------------
# Fit with one SM share or few points (synthetic frames: no engine needed)


def _synthetic(models=("llama-tiny-s",), sms=(100,), batches=(1, 2, 4, 8, 16),
               seqs=(32, 64, 128, 256)) -> pd.DataFrame:
    rows = []
    for m in models:
        for sm in sms:
            slow = 100 / sm
            for b in batches:
                for s in seqs:
                    rows.append((m, 1, sm, b, s, slow * (5 + 0.1 * b * s),
                                 slow * (3 + 0.2 * b) + 0.002 * b * s))
    return pd.DataFrame(rows, columns=PROFILE_COLUMNS)


def test_fit_single_sm_share_full_and_reduced_forms():
    coeffs, report = fit_profile(_synthetic(), gpu="cpu-core")
    pp = coeffs["curves"]["llama-tiny-s"]["1"]["prefill"]
    assert pp["sm_knots"] == [100] and "fit_form" not in pp  # 20 points: full form
    assert (report.median_abs_rel_err.dropna() < 0.05).all()
    few = _synthetic(batches=(1, 4, 16), seqs=(32, 128, 256))
    coeffs, report = fit_profile(few, gpu="cpu-core")
    c = coeffs["curves"]["llama-tiny-s"]["1"]
    assert c["prefill"]["fit_form"] == "reduced" and c["decode"]["fit_form"] == "reduced"
    assert c["decode"]["alpha_ms_per_token"] == 0.0
    assert (report.p90_abs_rel_err.dropna() < 0.1).all()
    # Too few points even for the reduced form: no curve, NaN errors.
    coeffs, report = fit_profile(_synthetic(batches=(1, 2), seqs=(32, 64)), gpu="cpu-core")
    assert coeffs["curves"] == {}
    assert report[report.model != "ALL"].median_abs_rel_err.isna().all()


def test_fit_two_sm_shares_still_depends_on_sm():
    coeffs, _ = fit_profile(_synthetic(sms=(50, 100)), gpu="cpu-core")
    from muxsim.perf.curves import FittedCurve

    c = coeffs["curves"]["llama-tiny-s"]["1"]
    curve = FittedCurve("llama-tiny-s", 1, "cpu-core", c["prefill"], c["decode"])
    assert curve.prefill_s(512, 4, 50) > 1.5 * curve.prefill_s(512, 4, 100)


# ------------------------------------------------------------------------------------------
# Bad input


def _good_table(n_points: int = 1) -> pd.DataFrame:
    rows = []
    for i in range(n_points):
        for phase in ("decode", "prefill"):
            rows.append(["transformers", "cpu", 1, MODEL, 1, 100.0, 1 + i, 8, phase, 2,
                         2.0, 1.5, 2.5, 1.0, 3.0, "0.1.0"])
    return pd.DataFrame(rows, columns=CALIBRATION_COLUMNS)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.drop(columns=["p90_ms"]), "missing column.*p90_ms"),
    (lambda d: d.assign(extra=1), "unexpected column.*extra"),
    (lambda d: d.assign(batch=d.batch.astype(float)), "column batch must be integer"),
    (lambda d: d.assign(median_ms=-1.0), "median_ms must be finite and > 0"),
    (lambda d: d.assign(phase=["decode", "prefil"]), "unknown phase.*'prefil'"),
    (lambda d: pd.concat([d, d.iloc[:1]], ignore_index=True), "duplicate row"),
    (lambda d: d.iloc[:1], "lacks one of the phases"),
    (lambda d: d.assign(sm_pct=150.0), "sm_pct must be in"),
])
def test_malformed_existing_file_is_refused(tmp_path, mutate, message):
    out = tmp_path / "cal.parquet"
    mutate(_good_table()).to_parquet(out, index=False)
    before = out.read_bytes()
    with pytest.raises(ValueError, match=message) as exc:
        run_calibration(_no_engine, [MODEL], 1, [100], [1], [8], out)
    assert str(out) in str(exc.value) and "\n" not in str(exc.value)
    assert out.read_bytes() == before


def test_non_parquet_existing_file_is_refused(tmp_path):
    out = tmp_path / "cal.parquet"
    out.write_text("not parquet")
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        run_calibration(_no_engine, [MODEL], 1, [100], [1], [8], out)
    with pytest.raises(ValueError, match="calibration file not found"):
        read_calibration(tmp_path / "none.parquet")


def test_good_table_round_trips(tmp_path):
    out = tmp_path / "cal.parquet"
    _good_table(2).to_parquet(out, index=False)
    _check_schema(read_calibration(out))
    # Every point present: nothing to measure, no engine started.
    df = run_calibration(_no_engine, [MODEL], 1, [100], [1, 2], [8], out)
    assert len(df) == 4


@pytest.mark.parametrize("kwargs, message", [
    ({"models": []}, "models: expected a non-empty list"),
    ({"models": ["gpt-9"]}, "models: unknown model 'gpt-9'; allowed: .*llama-tiny-s"),
    ({"models": [MODEL, MODEL.upper()]}, "models: duplicate"),
    ({"models": MODEL}, "models: expected a list"),
    ({"n_gpus": 0}, "n_gpus: expected a positive integer"),
    ({"sm_pcts": []}, "sm_pcts: expected a non-empty list"),
    ({"sm_pcts": [0]}, r"sm_pcts: each SM share must be a number in \(0, 100\]"),
    ({"sm_pcts": [101]}, r"sm_pcts: .*\(0, 100\]"),
    ({"sm_pcts": [math.nan]}, "sm_pcts"),
    ({"batches": []}, "batches: expected a non-empty list of positive integers"),
    ({"batches": [0]}, "batches: expected a positive integer"),
    ({"batches": [1.5]}, "batches: expected a positive integer"),
    ({"seqs": [-8]}, "seqs: expected a positive integer"),
    ({"seqs": [8, 8]}, "seqs: duplicate value"),
    ({"warmup": -1}, "warmup: expected an integer >= 0"),
    ({"repeats": 0}, "repeats: expected a positive integer"),
    ({"threads": 0}, "threads: expected a positive integer"),
    ({"device": "tpu"}, "device: expected 'cpu', 'cuda' or 'cuda:N'"),
    ({"engine_name": " "}, "engine_name: expected a non-empty name"),
])
def test_argument_validation(tmp_path, kwargs, message):
    args = {"engine_factory": _no_engine, "models": [MODEL], "n_gpus": 1, "sm_pcts": [100],
            "batches": [1], "seqs": [8], "out": tmp_path / "cal.parquet", **kwargs}
    with pytest.raises(ValueError, match=message) as exc:
        run_calibration(**args)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "cal.parquet").exists()


def test_missing_output_folder(tmp_path):
    with pytest.raises(ValueError, match="out: folder .* does not exist"):
        run_calibration(_no_engine, [MODEL], 1, [100], [1], [8], tmp_path / "no" / "c.parquet")
    with pytest.raises(ValueError, match="out: .* exists and is not a file"):
        run_calibration(_no_engine, [MODEL], 1, [100], [1], [8], tmp_path)


def test_fit_and_save_parquet_needs_gpu_for_cuda(tmp_path):
    table = pd.concat([_good_table(12).assign(device="cuda:0")], ignore_index=True)
    table["seq"] = np.repeat(np.arange(12) % 3 + 1, 2) * 8
    table["batch"] = np.repeat(np.arange(12) // 3 + 1, 2)
    path = tmp_path / "gpu.parquet"
    table.to_parquet(path, index=False)
    with pytest.raises(ValueError, match="gpu: required for gpu.parquet, measured on 'cuda:0'"):
        fit_and_save(path, tmp_path / "x.json")
    with pytest.raises(ValueError, match="unknown GPU"):
        fit_and_save(path, tmp_path / "x.json", gpu="tpu-v9")
    assert not (tmp_path / "x.json").exists()
