"""Tests of the latency model: profile loader, fitted curves, calibration file, roofline.

Tests that need the measured profile (../shared/data, not part of the repository) skip with a
reason when it is absent; the committed calibration file is tested either way.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muxsim.catalog import GPUS, MODELS, get_gpu, get_model
from muxsim.perf.base import LatencyCurve
from muxsim.perf.calibration import (
    CALIBRATION_DIR_ENV,
    calibration_dir,
    default_latency_model,
    fit_and_save,
    get_latency_model,
    load_calibration,
    save_calibration,
    shipped_calibration_dir,
)
from muxsim.perf.curves import FittedCurve, FittedLatencyModel
from muxsim.perf.fitting import fit_profile
from muxsim.perf.profile import PROFILE_COLUMNS, load_profile
from muxsim.perf.roofline import RooflineCurve

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PROFILE = DATA / "profiles" / "muxserve_llama_a100_80g.json"
# Shipped as package data (pyproject.toml), found by muxsim.perf.calibration.calibration_dir.
CALIBRATION = REPO / "muxsim" / "data" / "calibration" / "a100-80gb.json"

needs_profile = pytest.mark.skipif(
    not PROFILE.is_file(),
    reason=f"measured profile not available at {PROFILE} (../shared/data is not in the repo)",
)

A100 = get_gpu("a100-80gb")

# Error bar of the task: over all measured points, median and p90 of |pred / measured - 1|.
MEDIAN_BAR = 0.05
P90_BAR = 0.15


# ------------------------------------------------------------------------------------------
# Loader


def _write(tmp_path: Path, obj, name="p.json") -> Path:
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


SMALL = {
    "llama-7b": {
        "1": {
            "100": {
                "1": {"32": {"prefill": 14.0, "decoding": 11.2},
                      "64": {"prefill": -1, "decoding": 11.3}},
                "2": {"32": {"prefill": 15.5, "decoding": -1}},
            },
            "50": {"1": {"32": {"prefill": 16, "decoding": 12.0}}},
        }
    }
}


def test_load_small_profile(tmp_path):
    df = load_profile(_write(tmp_path, SMALL))
    assert list(df.columns) == PROFILE_COLUMNS
    assert len(df) == 4
    assert df["model"].tolist() == ["llama-7b"] * 4
    for col in ("n_gpus", "sm_pct", "batch", "seq"):
        assert df[col].dtype == np.int64
    row = df[(df.sm_pct == 100) & (df.batch == 1) & (df.seq == 64)].iloc[0]
    assert math.isnan(row.prefill_ms) and row.decode_ms == pytest.approx(11.3)
    row = df[(df.sm_pct == 100) & (df.batch == 2)].iloc[0]
    assert row.prefill_ms == pytest.approx(15.5) and math.isnan(row.decode_ms)
    assert df[df.sm_pct == 50].iloc[0].prefill_ms == pytest.approx(16.0)


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{not json", "invalid JSON"),
        ([1, 2], "expected an object"),
        ({"llama-7b": {"one": {}}}, "'one'"),
        ({"llama-7b": {"1": {"100": {"1": {"32": 5.0}}}}}, "'32'"),
        ({"llama-7b": {"1": {"100": {"1": {"32": {"prefill": 1.0}}}}}}, "decoding"),
        ({"llama-7b": {"1": {"100": {"1": {"32": {"prefill": "x", "decoding": 1}}}}}},
         "prefill"),
        ({"llama-7b": {"1": {"100": {"1": {"32": {"prefill": -3, "decoding": 1}}}}}},
         "prefill"),
        ({"llama-7b": {"1": {"130": {}}}}, "exceeds 100"),
        ({}, "no measurement"),
    ],
)
def test_load_bad_profile(tmp_path, content, fragment):
    p = _write(tmp_path, content)
    with pytest.raises(ValueError) as exc:
        load_profile(p)
    msg = str(exc.value)
    assert fragment in msg
    assert str(p) in msg
    assert "\n" not in msg


def test_load_missing_profile(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_profile(tmp_path / "absent.json")


# ------------------------------------------------------------------------------------------
# Fit on the real profile


@pytest.fixture(scope="module")
def profile_df():
    if not PROFILE.is_file():
        pytest.skip(f"measured profile not available at {PROFILE}")
    return load_profile(PROFILE)


@pytest.fixture(scope="module")
def fitted(profile_df):
    return fit_profile(profile_df)


def _overall(report: pd.DataFrame, phase: str) -> pd.Series:
    return report[(report.model == "ALL") & (report.phase == phase)].iloc[0]


@needs_profile
def test_fit_meets_error_bar(fitted):
    coeffs, report = fitted
    assert coeffs["gpu"] == "a100-80gb"
    assert set(coeffs["curves"]) == {"llama-7b", "llama-13b", "llama-30b", "llama-65b"}
    assert set(coeffs["curves"]["llama-30b"]) == {"2", "4"}
    allrow = _overall(report, "all")
    assert allrow.n_points == 8994
    assert allrow.median_abs_rel_err <= MEDIAN_BAR
    assert allrow.p90_abs_rel_err <= P90_BAR
    for phase in ("prefill", "decode"):
        row = _overall(report, phase)
        assert row.median_abs_rel_err <= MEDIAN_BAR, phase
        assert row.p90_abs_rel_err <= P90_BAR, phase
    groups = report[report.model != "ALL"]
    assert len(groups) == 24  # 12 (model, n_gpus) x 2 phases
    assert (groups.median_abs_rel_err <= MEDIAN_BAR).all()
    assert (groups.p90_abs_rel_err <= 0.2).all()


@needs_profile
def test_fit_and_save_roundtrip(tmp_path):
    # One (model, n_gpus) group keeps this fast; the full fit is covered above.
    sub = {"llama-7b": {"1": json.loads(PROFILE.read_text())["llama-7b"]["1"]}}
    profile = _write(tmp_path, sub, "sub.json")
    out = tmp_path / "cal" / "a100-80gb.json"
    report = fit_and_save(profile, out)
    assert isinstance(report, pd.DataFrame)
    assert list(report.phase) == ["prefill", "decode", "prefill", "decode", "all"]
    assert [p.name for p in out.parent.iterdir()] == ["a100-80gb.json"]  # no temp file left
    doc = json.loads(out.read_text())
    assert doc["profile_sha256"] and doc["gpu"] == "a100-80gb"
    model = load_calibration(out)
    assert model.calibrated == [("llama-7b", 1)]
    assert _overall(report, "all").p90_abs_rel_err <= P90_BAR


def _prediction_errors(model: FittedLatencyModel, df: pd.DataFrame) -> dict[str, np.ndarray]:
    errs: dict[str, list[float]] = {"prefill": [], "decode": []}
    for (name, n), grp in df.groupby(["model", "n_gpus"]):
        c = model.curve(get_model(name), int(n), A100)
        assert c.source == "fitted"
        for r in grp.itertuples():
            tok = r.batch * r.seq
            if not math.isnan(r.prefill_ms):
                errs["prefill"].append(abs(c.prefill_s(tok, r.batch, r.sm_pct) * 1e3
                                           / r.prefill_ms - 1))
            if not math.isnan(r.decode_ms):
                errs["decode"].append(abs(c.decode_s(r.batch, tok, r.sm_pct) * 1e3
                                          / r.decode_ms - 1))
    return {k: np.array(v) for k, v in errs.items()}


@needs_profile
def test_committed_calibration_reproduces_profile(profile_df):
    errs = _prediction_errors(load_calibration(CALIBRATION), profile_df)
    both = np.concatenate([errs["prefill"], errs["decode"]])
    assert both.size == 8994
    assert np.median(both) <= MEDIAN_BAR
    assert np.quantile(both, 0.9) <= P90_BAR
    for phase, e in errs.items():
        assert np.median(e) <= MEDIAN_BAR, phase
        assert np.quantile(e, 0.9) <= P90_BAR, phase


# ------------------------------------------------------------------------------------------
# Calibration file (works without ../shared/data)


def test_committed_calibration_file():
    doc = json.loads(CALIBRATION.read_text())
    assert doc["gpu"] == "a100-80gb"
    assert "MuxServe" in doc["source"] and "A100-80GB" in doc["source"]
    assert "prefill" in doc["form"] and "decode" in doc["form"]
    overall = {r["phase"]: r for r in doc["fit_error"] if r["model"] == "ALL"}
    assert overall["all"]["median_abs_rel_err"] <= MEDIAN_BAR
    assert overall["all"]["p90_abs_rel_err"] <= P90_BAR

    # Only coefficients: no list in the coefficients is longer than the SM knots.
    def lists(node):
        if isinstance(node, dict):
            for v in node.values():
                yield from lists(v)
        elif isinstance(node, list):
            yield node

    assert max(len(x) for x in lists(doc["coefficients"])) <= 8
    model = load_calibration(CALIBRATION)
    assert len(model.calibrated) == 12


def test_load_calibration_bad(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_calibration(tmp_path / "none.json")
    with pytest.raises(ValueError, match="invalid JSON"):
        load_calibration(_write(tmp_path, "{", "a.json"))
    with pytest.raises(ValueError, match="not a"):
        load_calibration(_write(tmp_path, {"gpu": "a100-80gb"}, "b.json"))
    doc = json.loads(CALIBRATION.read_text())
    doc["coefficients"]["llama-7b"]["1"]["decode"]["log_g_attn"][0] = 1.0  # not monotone
    with pytest.raises(ValueError, match="log_g"):
        load_calibration(_write(tmp_path, doc, "c.json"))
    doc = json.loads(CALIBRATION.read_text())
    del doc["coefficients"]["llama-7b"]["1"]["prefill"]["O_ms"]
    with pytest.raises(ValueError, match="O_ms"):
        load_calibration(_write(tmp_path, doc, "d.json"))


def test_save_calibration_atomic(tmp_path):
    model = load_calibration(CALIBRATION)
    c = model._fitted[("llama-7b", 1)]
    coeffs = {"gpu": "a100-80gb",
              "curves": {"llama-7b": {"1": {"prefill": c.prefill_params,
                                            "decode": c.decode_params}}}}
    report = pd.DataFrame([("ALL", None, "all", 0, math.nan, math.nan, math.nan)],
                          columns=["model", "n_gpus", "phase", "n_points",
                                   "median_abs_rel_err", "p90_abs_rel_err", "max_abs_rel_err"])
    out = tmp_path / "x.json"
    out.write_text("old")
    save_calibration(coeffs, report, out, "test note")
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
    again = load_calibration(out)
    c2 = again.curve(get_model("llama-7b"), 1, A100)
    assert c2.decode_s(37, 37 * 300, 45) == c.decode_s(37, 37 * 300, 45)
    with pytest.raises(ValueError):
        save_calibration({"curves": {}}, report, out)


def test_default_model_sources(monkeypatch, tmp_path):
    model = default_latency_model("a100-80gb")
    c = model.curve(get_model("llama-7b"), 1, A100)
    assert isinstance(c, FittedCurve) and c.source == "fitted" and c.model == "llama-7b"
    # Unprofiled architecture on the calibrated GPU: roofline.
    r = model.curve(get_model("llama-3-8b"), 1, A100)
    assert isinstance(r, RooflineCurve) and r.source == "roofline"
    # Profiled architecture on an uncalibrated GPU: roofline.
    h100 = get_gpu("h100-80gb")
    r = get_latency_model("h100-80gb").curve(get_model("llama-7b"), 1, h100)
    assert r.source == "roofline" and r.gpu == "h100-80gb"
    r = model.curve(get_model("llama-7b"), 1, h100)
    assert r.source == "roofline"
    # A GPU count without measurements: adapted from the nearest measured count.
    s = model.curve(get_model("llama-30b"), 8, A100)
    assert s.source == "fitted-scaled" and s.derived_from == 4 and s.n_gpus == 8
    four = model.curve(get_model("llama-30b"), 4, A100)
    assert s.prefill_s(2048, 8, 100) < four.prefill_s(2048, 8, 100)
    assert model.curve(get_model("llama-30b"), 8, A100) is s  # cached
    # No calibration file: roofline only.
    monkeypatch.setenv("MUXSIM_CALIBRATION_DIR", str(tmp_path))
    assert calibration_dir() == tmp_path
    empty = default_latency_model("a100-80gb")
    assert empty.curve(get_model("llama-7b"), 1, A100).source == "roofline"
    assert get_latency_model("a100-80gb").curve(get_model("llama-7b"), 1, A100).source == (
        "roofline")


def test_calibration_lookup(monkeypatch, tmp_path):
    # Unset or empty: the files shipped as package data, this checkout's copy here.
    monkeypatch.delenv(CALIBRATION_DIR_ENV, raising=False)
    assert calibration_dir() == shipped_calibration_dir()
    assert Path(str(shipped_calibration_dir() / "a100-80gb.json")).resolve() == CALIBRATION
    monkeypatch.setenv(CALIBRATION_DIR_ENV, "")
    assert calibration_dir() == shipped_calibration_dir()
    assert default_latency_model("a100-80gb").calibrated == load_calibration(
        CALIBRATION).calibrated
    # Set: that folder replaces the shipped one; a file there is found, one for another GPU
    # is refused.
    doc = json.loads(CALIBRATION.read_text())
    (tmp_path / "a100-80gb.json").write_text(json.dumps(doc))
    (tmp_path / "h100-80gb.json").write_text(json.dumps(doc))
    monkeypatch.setenv(CALIBRATION_DIR_ENV, str(tmp_path))
    assert calibration_dir() == tmp_path
    assert default_latency_model("a100-80gb").calibrated == load_calibration(
        CALIBRATION).calibrated
    with pytest.raises(ValueError, match="holds GPU 'a100-80gb', expected 'h100-80gb'"):
        default_latency_model("h100-80gb")


def test_edge_inputs():
    c = load_calibration(CALIBRATION).curve(get_model("llama-7b"), 1, A100)
    for curve in (c, RooflineCurve(get_model("llama-7b"), 1, A100)):
        assert curve.prefill_s(0, 0, 50) == 0.0
        assert curve.decode_s(0, 0, 50) == 0.0
        assert curve.prefill_s(100, 0, 50) == curve.prefill_s(100, 1, 50)
        assert curve.decode_s(4, 0, 100) > 0
        assert curve.prefill_s(128, 1, 150) == curve.prefill_s(128, 1, 100)
        with pytest.raises(ValueError):
            curve.prefill_s(128, 1, 0)
        with pytest.raises(ValueError):
            curve.decode_s(1, 10, -5)


# ------------------------------------------------------------------------------------------
# Shape: monotonicity, positivity, off-grid interpolation


def _all_curves() -> list[LatencyCurve]:
    model = load_calibration(CALIBRATION)
    curves: list[LatencyCurve] = [model.curve(get_model(m), n, A100) for m, n in model.calibrated]
    curves.append(model.curve(get_model("llama-30b"), 8, A100))  # fitted-scaled
    curves.append(model.curve(get_model("llama-65b"), 2, A100))
    for gpu in GPUS.values():
        for name in ("llama-7b", "llama-2-70b", "llama-3-8b", "mistral-7b", "llama-65b"):
            for n in (1, 4, 8):
                curves.append(RooflineCurve(MODELS[name], n, gpu))
    return curves


CURVES = _all_curves()
curve_st = st.sampled_from(CURVES)
sm_st = st.floats(min_value=1.0, max_value=100.0, allow_nan=False)
HYP = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _le(a: float, b: float) -> bool:
    return a <= b * (1 + 1e-12) + 1e-15


@HYP
@given(curve_st, st.integers(1, 300_000), st.integers(1, 300_000), st.integers(1, 512), sm_st)
def test_prefill_monotone_tokens(c, n1, n2, b, sm):
    lo, hi = sorted((n1, n2))
    t_lo, t_hi = c.prefill_s(lo, b, sm), c.prefill_s(hi, b, sm)
    assert 0 < t_lo and math.isfinite(t_hi)
    assert _le(t_lo, t_hi)


@HYP
@given(curve_st, st.integers(1, 4096), st.integers(1, 4096), st.integers(1, 2048), sm_st)
def test_prefill_monotone_seqs(c, b1, b2, seq, sm):
    lo, hi = sorted((b1, b2))
    assert _le(c.prefill_s(lo * seq, lo, sm), c.prefill_s(hi * seq, hi, sm))


@HYP
@given(curve_st, st.integers(1, 100_000), st.integers(1, 256), sm_st, sm_st)
def test_prefill_monotone_sm(c, n, b, s1, s2):
    lo, hi = sorted((s1, s2))
    assert _le(c.prefill_s(n, b, hi), c.prefill_s(n, b, lo))


@HYP
@given(curve_st, st.integers(1, 5000), st.integers(1, 5000), st.integers(0, 4096), sm_st)
def test_decode_monotone_batch(c, b1, b2, ctx_per_req, sm):
    lo, hi = sorted((b1, b2))
    t_lo = c.decode_s(lo, lo * ctx_per_req, sm)
    t_hi = c.decode_s(hi, hi * ctx_per_req, sm)
    assert 0 < t_lo and math.isfinite(t_hi)
    assert _le(t_lo, t_hi)


@HYP
@given(curve_st, st.integers(1, 2048), st.integers(0, 10**7), st.integers(0, 10**7), sm_st)
def test_decode_monotone_ctx(c, b, c1, c2, sm):
    lo, hi = sorted((c1, c2))
    assert _le(c.decode_s(b, lo, sm), c.decode_s(b, hi, sm))


@HYP
@given(curve_st, st.integers(1, 2048), st.integers(0, 4096), sm_st, sm_st)
def test_decode_monotone_sm(c, b, ctx_per_req, s1, s2):
    lo, hi = sorted((s1, s2))
    assert _le(c.decode_s(b, b * ctx_per_req, hi), c.decode_s(b, b * ctx_per_req, lo))


FITTED = [c for c in CURVES if c.source == "fitted"]


@pytest.mark.parametrize("c", FITTED, ids=lambda c: f"{c.model}-{c.n_gpus}")
def test_off_grid_between_neighbours(c):
    for sm in (35, 45, 55, 65, 75, 85, 95):
        lo, hi = sm - 5, sm + 5
        for n, b in ((64, 1), (512, 4), (2048, 16), (10_000, 40)):
            assert _le(c.prefill_s(n, b, hi), c.prefill_s(n, b, sm))
            assert _le(c.prefill_s(n, b, sm), c.prefill_s(n, b, lo))
        for b in (1, 37, 200):
            assert _le(c.decode_s(b, b * 300, hi), c.decode_s(b, b * 300, sm))
            assert _le(c.decode_s(b, b * 300, sm), c.decode_s(b, b * 300, lo))
    for sm in (35, 50, 100):
        assert _le(c.decode_s(32, 32 * 200, sm), c.decode_s(37, 37 * 200, sm))
        assert _le(c.decode_s(37, 37 * 200, sm), c.decode_s(64, 64 * 200, sm))
        assert _le(c.prefill_s(1024, 4, sm), c.prefill_s(1500, 4, sm))
        assert _le(c.prefill_s(1500, 4, sm), c.prefill_s(2048, 4, sm))
    # Below the lowest measured share latency keeps growing, at most like 1 / share.
    t30 = c.prefill_s(4096, 8, 30)
    t15 = c.prefill_s(4096, 8, 15)
    assert t30 <= t15 <= t30 * 2 * (1 + 1e-9)


# ------------------------------------------------------------------------------------------
# Roofline against the measurements


@needs_profile
def test_roofline_within_factor_of_measurements(profile_df):
    ratios = []
    for (name, n), grp in profile_df.groupby(["model", "n_gpus"]):
        r = RooflineCurve(get_model(name), int(n), A100)
        for row in grp.itertuples():
            tok = row.batch * row.seq
            # Typical points: what the simulator sees (prefills up to 2048 tokens, decode
            # batches up to 128).
            if tok <= 2048 and not math.isnan(row.prefill_ms):
                ratios.append(r.prefill_s(tok, row.batch, row.sm_pct) * 1e3 / row.prefill_ms)
            if row.batch <= 128 and not math.isnan(row.decode_ms):
                ratios.append(r.decode_s(row.batch, tok, row.sm_pct) * 1e3 / row.decode_ms)
    factor = np.exp(np.abs(np.log(np.array(ratios))))
    assert 1 / 1.5 <= np.median(ratios) <= 1.5
    assert np.quantile(factor, 0.9) <= 1.5
