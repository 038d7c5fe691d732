"""Tests for muxsim.workload: popularity rates, arrivals, lengths, generation and Parquet I/O."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import muxsim.workload.arrivals as arrivals_mod
from muxsim.workload import (
    SHAREGPT_LENGTHS_PATH,
    SHAREGPT_V3_LENGTHS_PATH,
    WORKLOAD_COLUMNS,
    EmpiricalLengths,
    FixedLengths,
    LengthSampler,
    arrival_times,
    generate_workload,
    load_workload,
    popularity_rates,
    save_workload,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED_CSV = ROOT.parent / "shared" / "data" / "traces" / "sharegpt_8k_lengths_llama2.csv"
SHARED_V3_CSV = ROOT.parent / "shared" / "data" / "traces" / "sharegpt_v3_first_turns_llama.csv"
FAST = settings(max_examples=25, deadline=None)


@pytest.fixture(scope="module")
def sharegpt() -> EmpiricalLengths:
    return EmpiricalLengths.sharegpt()


# ---------------------------------------------------------------- popularity


@FAST
@given(
    n=st.integers(1, 40),
    alpha=st.floats(0.0, 3.0),
    max_rate=st.floats(1e-3, 1e3),
)
def test_popularity_ratios_are_power_law(n, alpha, max_rate):
    r = popularity_rates(n, alpha, max_rate)
    assert r.shape == (n,) and r.dtype == np.float64
    assert r[0] == max_rate
    np.testing.assert_allclose(r / r[0], np.arange(1, n + 1, dtype=float) ** -alpha, rtol=1e-12)
    assert np.all(np.diff(r) <= 0)


@pytest.mark.parametrize(
    "args, word",
    [((0, 1.0, 1.0), "n_llms"), ((3, -0.1, 1.0), "alpha"), ((3, 1.0, 0.0), "max_rate"),
     ((3, 1.0, -2.0), "max_rate"), ((3, float("nan"), 1.0), "alpha"), ((2.5, 1.0, 1.0), "n_llms")],
)
def test_popularity_rejects_bad_inputs(args, word):
    with pytest.raises(ValueError, match=word):
        popularity_rates(*args)


# ---------------------------------------------------------------- arrivals


@FAST
@given(
    rate=st.floats(0.05, 200.0),
    duration=st.floats(0.1, 50.0),
    gamma=st.booleans(),
    cv=st.floats(0.2, 4.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_arrivals_sorted_within_window(rate, duration, gamma, cv, seed):
    process, cv = ("gamma", cv) if gamma else ("poisson", 1.0)
    t = arrival_times(np.random.default_rng(seed), rate, duration, process, cv)
    assert t.dtype == np.float64 and t.ndim == 1
    assert np.all(np.diff(t) >= 0)
    if len(t):
        assert t[0] >= 0 and t[-1] < duration


def _gap_cv(t: np.ndarray) -> float:
    g = np.diff(t)
    return float(g.std() / g.mean())


def test_poisson_gaps_have_cv_one_and_right_mean():
    t = arrival_times(np.random.default_rng(1), 50.0, 2000.0)
    assert abs(_gap_cv(t) - 1.0) < 0.02
    assert abs(np.diff(t).mean() * 50.0 - 1.0) < 0.02


@pytest.mark.parametrize("cv", [0.5, 2.0])
def test_gamma_gaps_have_requested_cv(cv):
    t = arrival_times(np.random.default_rng(2), 50.0, 2000.0, "gamma", cv)
    assert abs(_gap_cv(t) / cv - 1.0) < 0.05
    assert abs(np.diff(t).mean() * 50.0 - 1.0) < 0.03


def test_arrivals_top_up_when_first_block_is_short(monkeypatch):
    real = arrivals_mod._gaps

    def short(rng, process, rate, cv, n):  # a tenth of the gaps asked for: forces top-ups
        return real(rng, process, rate, cv, max(1, n // 10))

    monkeypatch.setattr(arrivals_mod, "_gaps", short)
    t = arrival_times(np.random.default_rng(3), 100.0, 100.0)
    assert np.all(np.diff(t) >= 0) and t[-1] < 100.0
    assert abs(len(t) - 10_000) < 4 * math.sqrt(10_000)
    assert t[-1] > 99.0


@pytest.mark.parametrize(
    "kwargs, word",
    [({"rate": 0.0}, "rate"), ({"rate": -1.0}, "rate"), ({"rate": float("inf")}, "rate"),
     ({"duration_s": 0.0}, "duration_s"), ({"process": "gamma", "cv": 0.0}, "cv"),
     ({"process": "weibull"}, "process"), ({"process": "poisson", "cv": 2.0}, "cv")],
)
def test_arrivals_reject_bad_inputs(kwargs, word):
    args = {"rate": 1.0, "duration_s": 10.0} | kwargs
    with pytest.raises(ValueError, match=word):
        arrival_times(np.random.default_rng(0), **args)


# ---------------------------------------------------------------- lengths


def test_sharegpt_lengths_obey_filters_and_means(sharegpt):
    assert isinstance(sharegpt, LengthSampler)
    p, o = sharegpt.sample(np.random.default_rng(4), 100_000)
    assert p.shape == o.shape == (100_000,)
    assert p.dtype == o.dtype == np.int64
    assert p.min() >= 4 and o.min() >= 4 and p.max() <= 1024 and (p + o).max() <= 2048
    # Figures of ../shared/data/README.md, reproduced by traces/derive_sharegpt_lengths.py.
    assert sharegpt.mean_prompt == pytest.approx(136.2, abs=0.1)
    assert sharegpt.mean_output == pytest.approx(472.1, abs=0.1)
    assert p.mean() == pytest.approx(sharegpt.mean_prompt, rel=0.03)
    assert o.mean() == pytest.approx(sharegpt.mean_output, rel=0.03)
    spec = json.loads(SHAREGPT_LENGTHS_PATH.read_text())
    assert stats.spearmanr(p, o).statistic == pytest.approx(spec["spearman_rho"], abs=0.015)
    for name, x in (("prompt", p), ("output", o)):
        assert np.median(x) == pytest.approx(spec[name]["quantiles"]["0.5"], rel=0.05)


def test_sharegpt_lengths_deterministic(sharegpt):
    a = sharegpt.sample(np.random.default_rng(9), 1000)
    b = sharegpt.sample(np.random.default_rng(9), 1000)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert sharegpt.sample(np.random.default_rng(9), 0)[0].shape == (0,)


def test_empirical_lengths_redraws_pairs_outside_filters(tmp_path):
    spec = json.loads(SHAREGPT_LENGTHS_PATH.read_text())
    spec["filters"]["max_total_tokens"] = 600  # both marginals reach 1024, so many are redrawn
    path = tmp_path / "tight.json"
    path.write_text(json.dumps(spec))
    p, o = EmpiricalLengths(path).sample(np.random.default_rng(5), 20_000)
    assert (p + o).max() <= 600 and p.min() >= 4 and o.min() >= 4


def test_empirical_lengths_rejects_malformed_json(tmp_path):
    spec = json.loads(SHAREGPT_LENGTHS_PATH.read_text())
    del spec["quantile_table"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="malformed"):
        EmpiricalLengths(path)
    with pytest.raises(FileNotFoundError):
        EmpiricalLengths(tmp_path / "absent.json")


def test_fixed_lengths():
    f = FixedLengths(128, 256)
    p, o = f.sample(np.random.default_rng(0), 7)
    assert p.dtype == o.dtype == np.int64
    assert p.tolist() == [128] * 7 and o.tolist() == [256] * 7
    assert (f.mean_prompt, f.mean_output) == (128.0, 256.0)
    for bad in [(0, 1), (1, 0), (1.5, 2), (True, 2)]:
        with pytest.raises(ValueError, match="FixedLengths"):
            FixedLengths(*bad)


def test_length_tables_are_package_data():
    # Found through importlib.resources in the package, so an installed wheel needs no checkout;
    # the derive script writes to the same place by default.
    pkg_data = ROOT / "muxsim" / "data" / "lengths"
    assert SHAREGPT_LENGTHS_PATH == pkg_data / "sharegpt_first_turn_lengths.json"
    assert SHAREGPT_V3_LENGTHS_PATH == pkg_data / "sharegpt_v3_first_turn_lengths.json"
    assert SHAREGPT_LENGTHS_PATH.is_file() and SHAREGPT_V3_LENGTHS_PATH.is_file()
    derive = _derive_module()
    assert derive.DEFAULT_OUT == SHAREGPT_LENGTHS_PATH and derive.V3_OUT == SHAREGPT_V3_LENGTHS_PATH


def _derive_module():
    spec_file = ROOT / "traces" / "derive_sharegpt_lengths.py"
    mod_spec = importlib.util.spec_from_file_location("derive_sharegpt_lengths", spec_file)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(
    not SHARED_CSV.is_file(), reason="needs ../shared/data (absent on a fresh clone)"
)
def test_derived_json_matches_source():
    fresh = _derive_module().derive(SHARED_CSV)
    shipped = json.loads(SHAREGPT_LENGTHS_PATH.read_text())
    assert fresh["n"] == shipped["n"] == 5316
    assert fresh["quantile_table"] == shipped["quantile_table"]
    assert fresh["prompt"] == shipped["prompt"] and fresh["output"] == shipped["output"]
    assert round(fresh["prompt"]["mean"]) == 136 and round(fresh["output"]["mean"]) == 472


def test_sharegpt_v3_lengths_obey_filters_and_means():
    v3 = EmpiricalLengths.sharegpt_v3()
    assert v3.path == SHAREGPT_V3_LENGTHS_PATH
    spec = json.loads(SHAREGPT_V3_LENGTHS_PATH.read_text())
    # Figures of ../shared/data/README.md, reproduced by derive_sharegpt_lengths.py --source v3.
    assert spec["n"] == v3.n_source == 15485
    assert round(v3.mean_prompt, 1) == 247.7 and round(v3.mean_output, 1) == 233.3
    assert spec["prompt"]["quantiles"]["0.5"] == 113 and spec["output"]["quantiles"]["0.5"] == 149
    assert spec["source"]["file"].endswith("sharegpt_v3_first_turns_llama.csv")
    p, o = v3.sample(np.random.default_rng(0), 200_000)
    assert p.dtype == o.dtype == np.int64
    # V3 outputs reach 1,902 tokens, so unlike the 8k tables the total filter does bite here.
    assert p.min() >= 4 and o.min() >= 4 and p.max() <= 1024 and (p + o).max() <= 2048
    assert p.mean() == pytest.approx(spec["prompt"]["mean"], rel=0.01)
    assert o.mean() == pytest.approx(spec["output"]["mean"], rel=0.01)
    assert stats.spearmanr(p, o).statistic == pytest.approx(spec["spearman_rho"], abs=0.01)


@pytest.mark.skipif(
    not SHARED_V3_CSV.is_file(), reason="needs ../shared/data (absent on a fresh clone)"
)
def test_derived_v3_json_matches_source():
    fresh = _derive_module().derive(SHARED_V3_CSV, source="v3")
    shipped = json.loads(SHAREGPT_V3_LENGTHS_PATH.read_text())
    # Everything but the sampler's fit check (which needs the written file) is re-derived.
    shipped.pop("fit_check")
    assert json.loads(json.dumps(fresh)) == shipped
    assert fresh["n_first_turns_before_filters"] == 17400 and fresh["n"] == 15485
    assert round(fresh["prompt"]["mean"], 1) == 247.7 and round(fresh["output"]["mean"], 1) == 233.3
    assert fresh["prompt"]["quantiles"]["0.5"] == 113 and fresh["output"]["quantiles"]["0.5"] == 149


# ---------------------------------------------------------------- generate


LLMS = ["llm-0", "llm-1", "llm-2"]


def _gen(seed=0, llms=LLMS, rates=(4.0, 2.0, 1.0), duration=50.0, lengths=None, **kw):
    lengths = lengths or FixedLengths(16, 32)
    return generate_workload(llms, list(rates), duration, lengths, seed, **kw)


def test_generate_schema_and_order(sharegpt):
    df = _gen(lengths=sharegpt)
    assert list(df.columns) == list(WORKLOAD_COLUMNS)
    assert df["request_id"].dtype == np.int64 and df["arrival_s"].dtype == np.float64
    assert df["prompt_tokens"].dtype == np.int64 and df["output_tokens"].dtype == np.int64
    assert pd.api.types.is_string_dtype(df["llm"].dtype)
    assert df["request_id"].tolist() == list(range(len(df)))
    assert df["arrival_s"].is_monotonic_increasing
    assert set(df["llm"]) <= set(LLMS)
    assert isinstance(df.index, pd.RangeIndex)


def test_generate_is_deterministic(sharegpt):
    a = _gen(seed=7, lengths=sharegpt)
    b = _gen(seed=7, lengths=sharegpt)
    pd.testing.assert_frame_equal(a, b)
    c = _gen(seed=8, lengths=sharegpt)
    assert len(a) != len(c) or not np.array_equal(a["arrival_s"], c["arrival_s"])


def _per_llm(df, name):
    return df[df["llm"] == name].drop(columns="request_id").reset_index(drop=True)


def test_appending_an_llm_keeps_other_streams(sharegpt):
    a = _gen(seed=3, lengths=sharegpt)
    b = _gen(seed=3, llms=LLMS + ["llm-3"], rates=(4.0, 2.0, 1.0, 0.5), lengths=sharegpt)
    for name in LLMS:
        pd.testing.assert_frame_equal(_per_llm(a, name), _per_llm(b, name))
    assert (b["llm"] == "llm-3").any()


def test_length_sampler_does_not_move_arrivals(sharegpt):
    a = _gen(seed=5, lengths=sharegpt)
    b = _gen(seed=5, lengths=FixedLengths(1, 1))
    pd.testing.assert_frame_equal(a[["llm", "arrival_s"]], b[["llm", "arrival_s"]])


def test_counts_follow_popularity_rates():
    rates = popularity_rates(6, 1.3, 20.0)
    duration = 1000.0
    df = generate_workload([f"m{i}" for i in range(6)], rates, duration, FixedLengths(8, 8), 11)
    counts = df["llm"].value_counts()
    for i, r in enumerate(rates):
        mu = r * duration
        assert abs(counts.get(f"m{i}", 0) - mu) < 4 * math.sqrt(mu), (i, counts.get(f"m{i}"), mu)


def test_gamma_workload_cv():
    df = _gen(seed=2, llms=["a"], rates=[20.0], duration=2000.0, process="gamma", cv=3.0)
    assert abs(_gap_cv(df["arrival_s"].to_numpy()) / 3.0 - 1.0) < 0.1


def test_per_llm_cap_keeps_first_arrivals():
    full = _gen(seed=4)
    capped = _gen(seed=4, max_requests_per_llm=5)
    assert capped["llm"].value_counts().max() == 5
    for name in LLMS:
        pd.testing.assert_frame_equal(_per_llm(capped, name), _per_llm(full, name).head(5))
    assert capped["request_id"].tolist() == list(range(len(capped)))


def test_ties_keep_llm_order(monkeypatch):
    import muxsim.workload.generate as gen_mod

    monkeypatch.setattr(gen_mod, "arrival_times", lambda rng, *a, **k: np.array([1.0, 2.0]))
    df = _gen(llms=["z", "a", "m"], rates=[1.0, 1.0, 1.0])
    assert df["llm"].tolist() == ["z", "a", "m", "z", "a", "m"]


@pytest.mark.parametrize(
    "kwargs, word",
    [({"rates": (4.0, 0.0, 1.0)}, "rate"), ({"rates": (4.0, 2.0)}, "same length"),
     ({"llms": ["a", "a", "b"]}, "unique"), ({"llms": [], "rates": []}, "at least one"),
     ({"seed": -1}, "seed"), ({"max_requests_per_llm": 0}, "max_requests_per_llm"),
     ({"duration": -1.0}, "duration_s"), ({"process": "gamma", "cv": -1.0}, "cv")],
)
def test_generate_rejects_bad_inputs(kwargs, word):
    with pytest.raises(ValueError, match=word):
        _gen(**kwargs)


# ---------------------------------------------------------------- save / load


def test_save_load_round_trip(tmp_path, sharegpt):
    df = _gen(seed=1, lengths=sharegpt)
    path = save_workload(df, tmp_path / "w.parquet")
    back = load_workload(path)
    pd.testing.assert_frame_equal(back, df)
    assert [p.name for p in tmp_path.iterdir()] == ["w.parquet"]  # no temporary file left


def test_save_load_empty_frame(tmp_path):
    df = _gen(duration=1e-6)  # almost surely no arrivals
    pd.testing.assert_frame_equal(load_workload(save_workload(df, tmp_path / "e.parquet")), df)


@pytest.mark.parametrize("col", list(WORKLOAD_COLUMNS))
def test_load_rejects_missing_column(tmp_path, col):
    path = tmp_path / "w.parquet"
    _gen().drop(columns=col).to_parquet(path, index=False)
    with pytest.raises(ValueError, match=f"missing column.*{col}"):
        load_workload(path)


def test_load_rejects_bad_dtype(tmp_path):
    path = tmp_path / "w.parquet"
    df = _gen()
    df["prompt_tokens"] = df["prompt_tokens"].astype(float)
    df.to_parquet(path, index=False)
    with pytest.raises(ValueError, match="prompt_tokens"):
        load_workload(path)


def test_save_rejects_bad_frame(tmp_path):
    df = _gen()
    df.loc[0, "output_tokens"] = 0
    with pytest.raises(ValueError, match="output_tokens"):
        save_workload(df, tmp_path / "w.parquet")
    assert not any(tmp_path.iterdir())


def test_scaled_lengths_keep_the_shape_at_a_smaller_size():
    from muxsim.workload import ScaledLengths

    base = EmpiricalLengths.sharegpt()
    s = ScaledLengths(base, 0.25)
    p, o = s.sample(np.random.default_rng(3), 50_000)
    assert p.min() >= 4 and o.min() >= 4
    assert abs(o.mean() / (0.25 * base.mean_output) - 1) < 0.03
    assert abs(s.mean_output - o.mean()) / o.mean() < 0.02
    with pytest.raises(ValueError):
        ScaledLengths(base, 0)
