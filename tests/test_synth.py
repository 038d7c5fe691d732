"""Tests for muxsim.workload.synth: multi-LLM workloads synthesized from one trace."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from muxsim.workload import save_workload
from muxsim.workload.synth import (
    SynthSpec,
    SynthSpecError,
    burstiness_cv,
    condense,
    cut_window,
    drifting_split,
    load_synth_spec,
    mean_rate,
    power_law_weights,
    rescale_to_rate,
    split_among_llms,
    synthesize,
)

FAST = settings(max_examples=25, deadline=None)


def _trace(t, seed: int = 0, **extra) -> pd.DataFrame:
    """A single-stream trace with arrival times ``t`` and random lengths."""
    t = np.asarray(t, dtype=np.float64)
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "request_id": np.arange(len(t), dtype=np.int64),
        "llm": pd.Series(["src"] * len(t), dtype=str),
        "arrival_s": t,
        "prompt_tokens": rng.integers(1, 2000, len(t)).astype(np.int64),
        "output_tokens": rng.integers(1, 500, len(t)).astype(np.int64),
        **extra,
    })


def _gamma_trace(n: int, cv: float, rate: float = 5.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    shape = 1.0 / cv**2
    t = np.cumsum(rng.gamma(shape, 1.0 / (rate * shape), n))
    return _trace(t - t[0], seed)


@pytest.fixture(scope="module")
def bursty() -> pd.DataFrame:
    return _gamma_trace(30_000, cv=2.5)


# ------------------------------------------------------------------------------ split


@FAST
@given(n=st.integers(0, 300), m=st.integers(1, 6), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_split_keeps_every_request_and_its_columns(n, m, seed, data):
    t = np.sort(data.draw(st.lists(st.floats(0, 1e4), min_size=n, max_size=n)))
    w = data.draw(st.lists(st.floats(0, 10), min_size=m, max_size=m).filter(lambda x: sum(x) > 0))
    tr = _trace(t, seed % 1000)
    names = [f"m{i}" for i in range(m)]
    out = split_among_llms(tr, names, w, seed)
    assert len(out) == n
    assert list(out.columns[:3]) == ["request_id", "llm", "arrival_s"]
    np.testing.assert_array_equal(out.request_id, np.arange(n))
    np.testing.assert_array_equal(out.arrival_s, tr.arrival_s)
    np.testing.assert_array_equal(out.prompt_tokens, tr.prompt_tokens)
    assert set(out.llm) <= {nm for nm, x in zip(names, w) if x > 0}


def test_split_sorts_an_unsorted_trace_and_leaves_input_alone():
    tr = _trace([3.0, 1.0, 2.0, 1.0])
    before = tr.copy()
    out = split_among_llms(tr, ["a", "b"], [1, 1], 0)
    pd.testing.assert_frame_equal(tr, before)
    assert out.arrival_s.tolist() == [1.0, 1.0, 2.0, 3.0]
    # stable: the two requests at 1 s keep their file order
    assert out.prompt_tokens.tolist() == tr.prompt_tokens.iloc[[1, 3, 2, 0]].tolist()


def test_shares_follow_weights(bursty):
    w = np.array([4.0, 2.0, 1.0, 1.0])
    out = split_among_llms(bursty, ["a", "b", "c", "d"], w, seed=1)
    n = len(out)
    share = out.llm.value_counts(normalize=True).reindex(["a", "b", "c", "d"]).to_numpy()
    p = w / w.sum()
    assert np.all(np.abs(share - p) < 5 * np.sqrt(p * (1 - p) / n)), (share, p)


def test_split_keeps_burstiness(bursty):
    c = burstiness_cv(bursty.arrival_s)
    assert 2.3 < c < 2.7
    w = power_law_weights(3, 1.0)
    out = split_among_llms(bursty, ["a", "b", "c"], w, seed=2)
    # the aggregate is the input stream itself
    assert burstiness_cv(out.arrival_s) == pytest.approx(c, rel=1e-12)
    for name, p in zip("abc", w):
        cv = burstiness_cv(out.arrival_s[out.llm == name])
        assert cv > 1.2, (name, cv)
        # thinning a renewal stream with gap CV c by p gives CV sqrt(1 + p (c^2 - 1))
        assert cv == pytest.approx(math.sqrt(1 + p * (c**2 - 1)), rel=0.15)


def test_poisson_stays_poisson_per_llm():
    rng = np.random.default_rng(5)
    tr = _trace(np.cumsum(rng.exponential(0.1, 20_000)))
    out = split_among_llms(tr, ["a", "b"], [3, 1], 3)
    for name in "ab":
        assert burstiness_cv(out.arrival_s[out.llm == name]) == pytest.approx(1.0, abs=0.06)


def test_zero_weight_is_never_picked():
    tr = _trace(np.arange(2000.0))
    out = split_among_llms(tr, ["a", "b", "c", "d"], [0, 1, 0, 1], 4)
    assert set(out.llm) == {"b", "d"}


def test_sessions_stay_on_one_llm():
    n = 3000
    rng = np.random.default_rng(0)
    sess = pd.Series(rng.integers(0, 300, n)).astype(object)
    sess[::7] = None  # requests without a session are drawn one by one
    tr = _trace(np.arange(float(n)), session_id=sess)
    out = split_among_llms(tr, [f"m{i}" for i in range(5)], [1] * 5, 0)
    with_s = out[out.session_id.notna()]
    assert (with_s.groupby("session_id").llm.nunique() == 1).all()
    assert out[out.session_id.isna()].llm.nunique() == 5


def test_split_is_deterministic_for_a_seed(bursty):
    names = ["a", "b", "c"]
    a = split_among_llms(bursty, names, [1, 2, 3], 7)
    b = split_among_llms(bursty, names, [1, 2, 3], 7)
    pd.testing.assert_frame_equal(a, b)
    c = split_among_llms(bursty, names, [1, 2, 3], 8)
    assert (a.llm != c.llm).any()


@pytest.mark.parametrize("llms,weights,seed,msg", [
    (["a", "b"], [1], 0, "one entry per LLM"),
    (["a", "b"], [1, -1], 0, ">= 0"),
    (["a", "b"], [0, 0], 0, "positive sum"),
    (["a", "a"], [1, 1], 0, "unique"),
    ([], [], 0, "at least one"),
    (["a"], [1], -1, "seed"),
    (["a"], [float("nan")], 0, "finite"),
])
def test_split_rejects_bad_arguments(llms, weights, seed, msg):
    with pytest.raises(ValueError, match=msg):
        split_among_llms(_trace([0.0, 1.0]), llms, weights, seed)


def test_split_needs_arrival_times():
    with pytest.raises(ValueError, match="arrival_s"):
        split_among_llms(_trace([0.0]).drop(columns="arrival_s"), ["a"], [1], 0)


# ------------------------------------------------------------------------------ drift


def test_drift_changes_shares_between_windows():
    tr = _trace(np.arange(0.0, 3000.0, 0.5))
    out = drifting_split(tr, ["a", "b", "c"],
                         [(1000.0, [1, 0, 0]), (2000.0, [0, 1, 1]), (None, power_law_weights(3, 2.0))], 0)
    first = out[out.arrival_s < 1000]
    mid = out[(out.arrival_s >= 1000) & (out.arrival_s < 2000)]
    last = out[out.arrival_s >= 2000]
    assert set(first.llm) == {"a"}
    assert set(mid.llm) == {"b", "c"}
    assert abs((mid.llm == "b").mean() - 0.5) < 0.05
    assert (last.llm == "a").mean() == pytest.approx(power_law_weights(3, 2.0)[0], abs=0.05)
    assert len(out) == len(tr)


def test_one_window_drift_equals_split(bursty):
    a = split_among_llms(bursty, ["a", "b"], [2, 1], 11)
    b = drifting_split(bursty, ["a", "b"], [(None, [2, 1])], 11)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("windows,msg", [
    ([], "at least one"),
    ([(10.0, [1, 1]), (5.0, [1, 1]), (None, [1, 1])], "increase"),
    ([(None, [1, 1]), (None, [1, 1])], "only the last"),
    ([(10.0, [1, 1, 1])], "window 0 weights"),
])
def test_drift_rejects_bad_windows(windows, msg):
    with pytest.raises(ValueError, match=msg):
        drifting_split(_trace([0.0, 1.0]), ["a", "b"], windows, 0)


# ------------------------------------------------------------------------------ time axis


@FAST
@given(factor=st.floats(1e-3, 1e4), data=st.data())
def test_condense_divides_times(factor, data):
    t = np.sort(data.draw(st.lists(st.floats(0, 1e5), min_size=1, max_size=50)))
    tr = _trace(t)
    out = condense(tr, factor)
    np.testing.assert_allclose(out.arrival_s, t / factor)
    pd.testing.assert_frame_equal(out.drop(columns="arrival_s"), tr.drop(columns="arrival_s"))


@FAST
@given(rate=st.floats(1e-3, 1e4), n=st.integers(2, 200), seed=st.integers(0, 100))
def test_rescale_to_rate_hits_the_target(rate, n, seed):
    tr = _gamma_trace(n, cv=2.0, seed=seed)
    out = rescale_to_rate(tr, rate)
    assert mean_rate(out.arrival_s) == pytest.approx(rate, rel=1e-9)
    assert len(out) == n
    if n >= 3:
        assert burstiness_cv(out.arrival_s) == pytest.approx(burstiness_cv(tr.arrival_s), rel=1e-9)


def test_mean_rate_is_requests_over_span():
    assert mean_rate([0.0, 1.0, 2.0, 10.0]) == pytest.approx(0.4)
    for bad in ([1.0], [2.0, 2.0]):
        with pytest.raises(ValueError):
            mean_rate(bad)


def test_cut_window_keeps_half_open_interval_and_rezeroes():
    tr = _trace(np.arange(10.0))
    out = cut_window(tr, 3.0, 7.0)
    assert out.arrival_s.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert out.request_id.tolist() == [0, 1, 2, 3]
    assert out.prompt_tokens.tolist() == tr.prompt_tokens[3:7].tolist()
    assert cut_window(tr, 8.5).arrival_s.tolist() == [0.5]
    assert len(cut_window(tr, 20.0, 30.0)) == 0
    for args in ((-1.0, 2.0), (5.0, 5.0), (float("nan"), None)):
        with pytest.raises(ValueError):
            cut_window(tr, *args)


@pytest.mark.parametrize("f", [0, -2.0, float("inf"), float("nan")])
def test_condense_and_rescale_reject_bad_factors(f):
    with pytest.raises(ValueError, match="condense factor"):
        condense(_trace([0.0, 1.0]), f)
    with pytest.raises(ValueError, match="target rate"):
        rescale_to_rate(_trace([0.0, 1.0]), f)


def test_burstiness_cv():
    rng = np.random.default_rng(0)
    assert burstiness_cv(np.cumsum(rng.exponential(1.0, 50_000))) == pytest.approx(1.0, abs=0.03)
    assert burstiness_cv(np.arange(100.0)) == pytest.approx(0.0, abs=1e-12)
    assert burstiness_cv([5.0, 1.0, 3.0]) == pytest.approx(0.0)  # sorted first
    assert math.isnan(burstiness_cv([1.0, 2.0]))
    assert math.isnan(burstiness_cv([1.0, 1.0, 1.0]))
    with pytest.raises(ValueError):
        burstiness_cv([0.0, np.inf, 1.0])


@FAST
@given(n=st.integers(1, 40), alpha=st.floats(0, 3))
def test_power_law_weights(n, alpha):
    w = power_law_weights(n, alpha)
    assert w.shape == (n,) and w.sum() == pytest.approx(1.0)
    assert np.all(np.diff(w) <= 1e-15)
    if n > 1:
        assert w[0] / w[1] == pytest.approx(2.0**alpha)


# ------------------------------------------------------------------------------ spec


def _write_spec(tmp_path: Path, spec: dict | str, name: str = "spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    return p


@pytest.fixture()
def parquet_source(tmp_path) -> Path:
    """1000 requests, one per second from 0 s, saved as a workload Parquet."""
    path = tmp_path / "src.parquet"
    save_workload(_trace(np.arange(1000.0)), path)
    return path


def test_synthesize_applies_steps_in_order(tmp_path, parquet_source):
    spec = load_synth_spec(_write_spec(tmp_path, {
        "source": {"path": str(parquet_source)},
        "window": {"start_s": 100, "end_s": 600},   # 500 requests, 0..499 s
        "condense": 10,                              # 0..49.9 s
        "llms": 3,
        "popularity": {"alpha": 1.0},
        "seed": 4,
        "max_requests": 200,                         # the first 200: 0..19.9 s
    }))
    df = synthesize(spec)
    assert len(df) == 200
    np.testing.assert_allclose(df.arrival_s, np.arange(200) / 10)
    assert df.request_id.tolist() == list(range(200))
    assert set(df.llm) == {"llm-0", "llm-1", "llm-2"}
    src = pd.read_parquet(parquet_source)
    assert df.prompt_tokens.tolist() == src.prompt_tokens[100:300].tolist()
    pd.testing.assert_frame_equal(df, synthesize(spec))
    other = synthesize(spec.model_copy(update={"seed": 5}))
    assert (other.llm != df.llm).any()


def test_synthesize_target_rate_and_names(tmp_path, parquet_source):
    spec = SynthSpec.model_validate({
        "source": {"path": str(parquet_source)}, "target_rate": 20.0,
        "llms": ["x", "y"], "popularity": {"weights": [3, 1]}})
    df = synthesize(spec)
    assert mean_rate(df.arrival_s) == pytest.approx(20.0)
    assert set(df.llm) == {"x", "y"} and len(df) == 1000
    assert (df.llm == "x").mean() == pytest.approx(0.75, abs=0.07)


def test_synthesize_keeps_source_labels_without_a_split(tmp_path, parquet_source):
    df = synthesize(SynthSpec.model_validate({"source": {"path": str(parquet_source)}, "condense": 2}))
    assert set(df.llm) == {"src"} and df.arrival_s.iloc[-1] == pytest.approx(499.5)
    eq = synthesize(SynthSpec.model_validate({"source": {"path": str(parquet_source)}, "llms": 4}))
    assert eq.llm.nunique() == 4


def test_synthesize_drift_and_relative_paths(tmp_path, parquet_source, monkeypatch):
    sub = tmp_path / "specs"
    sub.mkdir()
    spec_path = _write_spec(sub, {
        "source": {"path": "../src.parquet"},
        "popularity": {"drift": [{"until_s": 500, "weights": [1, 0]}, {"weights": [0, 1]}]}})
    monkeypatch.chdir("/")  # "../src.parquet" is not there
    df = synthesize(load_synth_spec(spec_path), base_dir=sub)
    assert set(df.llm[df.arrival_s < 500]) == {"llm-0"} and set(df.llm[df.arrival_s >= 500]) == {"llm-1"}
    with pytest.raises(FileNotFoundError, match="source.path"):
        synthesize(load_synth_spec(spec_path))  # not beside the cwd, no base_dir


def test_synthesize_refuses_a_drift_window_no_request_reaches(parquet_source):
    """Drift times are on the output axis: after condensing 1000 s by 10 the trace ends at
    99.9 s, so a window from 500 s would get no request (the README's example did this)."""
    drift = {"drift": [{"until_s": 500, "alpha": 0.5}, {"alpha": 2.0}]}
    base = {"source": {"path": str(parquet_source)}, "llms": 3, "popularity": drift}
    with pytest.raises(ValueError, match=r"popularity.drift.1: starts at 500 s .*last arrival at 99.9 s"):
        synthesize(SynthSpec.model_validate({**base, "condense": 10}))
    # the cap counts too: the first 400 arrivals end at 399 s
    with pytest.raises(ValueError, match=r"popularity.drift.1: .*last arrival at 399.0 s"):
        synthesize(SynthSpec.model_validate({**base, "max_requests": 400}))
    # a window the trace reaches is kept: both laws are used
    ok = synthesize(SynthSpec.model_validate({**base, "popularity": {"drift": [
        {"until_s": 50, "weights": [1, 0, 0]}, {"weights": [0, 0, 1]}]}, "condense": 10}))
    assert set(ok.llm[ok.arrival_s < 50]) == {"llm-0"} and set(ok.llm[ok.arrival_s >= 50]) == {"llm-2"}


def test_synthesize_empty_window_is_an_error(parquet_source):
    spec = SynthSpec.model_validate({"source": {"path": str(parquet_source)},
                                     "window": {"start_s": 5000}})
    with pytest.raises(ValueError, match="window: .* keeps no requests"):
        synthesize(spec)


def test_synthesize_timed_source_refuses_a_rate(parquet_source):
    spec = SynthSpec.model_validate({"source": {"path": str(parquet_source), "rate": 3}})
    with pytest.raises(ValueError, match="source.rate"):
        synthesize(spec)


def test_synthesize_from_csv_traces(tmp_path):
    pytest.importorskip("muxsim.workload.formats")
    azure = tmp_path / "azure.csv"
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.gamma(0.25, 0.4, 4000))
    pd.DataFrame({"arrived_at": t, "num_prefill_tokens": rng.integers(1, 900, len(t)),
                  "num_decode_tokens": rng.integers(1, 300, len(t))}).to_csv(azure, index=False)
    spec = load_synth_spec(_write_spec(tmp_path, {
        "source": {"path": "azure.csv"}, "llms": 4, "popularity": {"alpha": 0.9}, "seed": 1}))
    df = synthesize(spec, base_dir=tmp_path)
    assert len(df) == 4000 and df.llm.nunique() == 4
    assert burstiness_cv(df.arrival_s) > 1.5
    assert all(burstiness_cv(g.arrival_s) > 1.0 for _, g in df.groupby("llm"))

    lengths = tmp_path / "lengths.csv"
    pd.DataFrame({"num_prefill_tokens": rng.integers(1, 900, 3000),
                  "num_decode_tokens": rng.integers(1, 300, 3000)}).to_csv(lengths, index=False)
    no_rate = SynthSpec.model_validate({"source": {"path": str(lengths), "format": "lengths"}, "llms": 2})
    with pytest.raises(ValueError, match="source.rate: required"):
        synthesize(no_rate)
    spec = SynthSpec.model_validate({"source": {"path": str(lengths), "rate": 8.0, "arrival": "gamma", "cv": 2.0},
                                     "llms": 2})
    df = synthesize(spec)
    assert len(df) == 3000
    assert mean_rate(df.arrival_s) == pytest.approx(8.0, rel=0.2)
    assert burstiness_cv(df.arrival_s) == pytest.approx(2.0, rel=0.2)


def test_synthesize_rates_file(tmp_path):
    pytest.importorskip("muxsim.workload.formats")
    rates = tmp_path / "models.yaml"
    rates.write_text(yaml.safe_dump({"models": [
        {"name": "chat-a", "model": "/ckpt/huggyllama/llama-7b", "rate": 6.0},
        {"name": "chat-b", "model": "/ckpt/huggyllama/llama-13b", "rate": 2.0}]}))
    src = tmp_path / "src.parquet"
    save_workload(_trace(np.arange(4000.0)), src)
    df = synthesize(SynthSpec.model_validate({"source": {"path": str(src)},
                                              "popularity": {"rates_file": str(rates)}}))
    assert set(df.llm) == {"chat-a", "chat-b"}
    assert (df.llm == "chat-a").mean() == pytest.approx(0.75, abs=0.04)
    with pytest.raises(ValueError, match="popularity.rates_file: lists 2 LLMs but llms gives 3"):
        synthesize(SynthSpec.model_validate({"source": {"path": str(src)}, "llms": 3,
                                             "popularity": {"rates_file": str(rates)}}))


BAD_SPECS = {
    "unknown key": ({"source": {"path": "x"}, "llm": 3}, "llm: unknown key"),
    "nested unknown key": ({"source": {"path": "x", "fromat": "azure"}}, "source.fromat: unknown key"),
    "missing source": ({"llms": 2}, "source: required field is missing"),
    "negative alpha": ({"source": {"path": "x"}, "llms": 2, "popularity": {"alpha": -1}}, "popularity.alpha"),
    "two laws": ({"source": {"path": "x"}, "llms": 2, "popularity": {"alpha": 1, "weights": [1, 2]}},
                 "popularity: give exactly one of alpha, weights, rates_file, drift"),
    "alpha without llms": ({"source": {"path": "x"}, "popularity": {"alpha": 1}}, "popularity: the number of LLMs is unknown"),
    "count mismatch": ({"source": {"path": "x"}, "llms": 3, "popularity": {"weights": [1, 2]}},
                       "popularity: weights are for 2 LLMs but llms gives 3"),
    "condense and rate": ({"source": {"path": "x"}, "condense": 2, "target_rate": 3}, "target_rate: give condense or target_rate"),
    "zero condense": ({"source": {"path": "x"}, "condense": 0}, "condense"),
    "zero llms": ({"source": {"path": "x"}, "llms": 0}, "llms: must be a count >= 1"),
    "duplicate llms": ({"source": {"path": "x"}, "llms": ["a", "a"]}, "llms: must be unique"),
    "cv with poisson": ({"source": {"path": "x", "cv": 2}}, "source: cv=2.0 only applies to arrival: gamma"),
    "bad arrival": ({"source": {"path": "x", "arrival": "weibull"}}, "source.arrival"),
    "unknown format": ({"source": {"path": "x", "format": "csv"}}, "unknown trace format 'csv'; allowed: parquet, azure"),
    "window order": ({"source": {"path": "x"}, "window": {"start_s": 10, "end_s": 5}}, "window: end_s (5) must be > start_s (10)"),
    "drift order": ({"source": {"path": "x"}, "llms": 2, "popularity": {"drift": [
        {"until_s": 10, "alpha": 1}, {"until_s": 5, "alpha": 2}, {"alpha": 0}]}}, "drift.1.until_s must be > 10"),
    "drift window law": ({"source": {"path": "x"}, "llms": 2, "popularity": {"drift": [{"until_s": 10}]}},
                         "popularity.drift.0: give exactly one of alpha, weights"),
    "negative weight": ({"source": {"path": "x"}, "popularity": {"weights": [1, -1]}}, "popularity.weights"),
    "max_requests": ({"source": {"path": "x"}, "max_requests": 0}, "max_requests"),
    "not a mapping": ("- 1\n- 2\n", "expected a mapping"),
    "malformed yaml": ("source: [unclosed\n", "malformed YAML"),
}


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_bad_specs_give_one_line_errors(tmp_path, case):
    if case == "unknown format":
        pytest.importorskip("muxsim.workload.formats")
    raw, expected = BAD_SPECS[case]
    path = _write_spec(tmp_path, raw)
    with pytest.raises(SynthSpecError) as e:
        load_synth_spec(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    assert expected in msg, msg


def test_missing_spec_file(tmp_path):
    with pytest.raises(ValueError, match="synth spec not found"):
        load_synth_spec(tmp_path / "nope.yaml")


def test_spec_is_frozen_and_defaults():
    spec = SynthSpec.model_validate({"source": {"path": "t.csv"}})
    assert spec.seed == 0 and spec.llms is None and spec.popularity is None
    assert spec.source.arrival == "poisson" and spec.source.cv == 1.0
    with pytest.raises(ValidationError, match="frozen"):
        spec.seed = 3
