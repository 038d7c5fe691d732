"""Tests of muxsim.metrics and muxsim.report on hand-built request tables.

Expected values are computed by hand in the comments next to them.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muxsim import metrics as M
from muxsim import report as R

NAN = float("nan")


def _frame(rows: list[dict]) -> pd.DataFrame:
    """Request table with the simulator's columns; rows give the fields that matter."""
    defaults = {
        "model": "llama-7b",
        "prefill_start_s": NAN,
        "prompt_tokens": 10,
        "preemptions": 0,
        "reason": "",
        "finished": True,
    }
    full = []
    for i, r in enumerate(rows):
        rec = {**defaults, "request_id": i, **r}
        if not rec["finished"] and rec["reason"] == "":
            rec["reason"] = "drain limit reached"
        full.append(rec)
    df = pd.DataFrame(full)
    for c in ("request_id", "prompt_tokens", "output_tokens", "preemptions"):
        df[c] = df[c].astype("int64")
    for c in ("arrival_s", "prefill_start_s", "first_token_s", "finish_s", "slo_base_s"):
        df[c] = df[c].astype("float64")
    df["finished"] = df["finished"].astype(bool)
    return df


def _cell(cell: str, alpha: float, time_scale: float = 1.0) -> list[dict]:
    """One cell: muxserve (4 requests, one unfinished) and spatial (2 requests).

    muxserve (times x time_scale):
      r0 llm-0: arrive 0, first 1,   finish 5,  out 4, base 2 -> TTFT 1,   TPOT 4/3, E2E 5
      r1 llm-0: arrive 2, first 2.5, finish 4,  out 3, base 1 -> TTFT 0.5, TPOT 3/4, E2E 2
      r2 llm-1: arrive 1, first 3,   finish 10, out 7, base 4 -> TTFT 2,   TPOT 7/6, E2E 9
      r3 llm-1: arrive 3, never served (drain limit), out 5, base 1
    spatial:
      s0 llm-0: arrive 0, first 2, finish 8, out 4, base 2 -> TTFT 2, TPOT 2, E2E 8
      s1 llm-1: arrive 1, first 2, finish 4, out 2, base 4 -> TTFT 1, TPOT 2, E2E 3
    (TPOT = (E2E - TTFT) / (out - 1), vLLM's.)
    """
    k = time_scale
    common = {"cell": cell, "alpha": alpha}
    return [
        {**common, "strategy": "muxserve", "llm": "llm-0", "arrival_s": 0.0, "first_token_s": 1 * k,
         "finish_s": 5 * k, "output_tokens": 4, "slo_base_s": 2 * k, "prompt_tokens": 10},
        {**common, "strategy": "muxserve", "llm": "llm-0", "arrival_s": 2 * k,
         "first_token_s": 2.5 * k, "finish_s": 4 * k, "output_tokens": 3, "slo_base_s": 1 * k,
         "prompt_tokens": 20, "preemptions": 1},
        {**common, "strategy": "muxserve", "llm": "llm-1", "model": "llama-13b", "arrival_s": 1 * k,
         "first_token_s": 3 * k, "finish_s": 10 * k, "output_tokens": 7, "slo_base_s": 4 * k,
         "prompt_tokens": 30},
        {**common, "strategy": "muxserve", "llm": "llm-1", "model": "llama-13b", "arrival_s": 3 * k,
         "first_token_s": NAN, "finish_s": NAN, "output_tokens": 5, "slo_base_s": 1 * k,
         "prompt_tokens": 40, "preemptions": 2, "finished": False},
        {**common, "strategy": "spatial", "llm": "llm-0", "arrival_s": 0.0, "first_token_s": 2 * k,
         "finish_s": 8 * k, "output_tokens": 4, "slo_base_s": 2 * k},
        {**common, "strategy": "spatial", "llm": "llm-1", "model": "llama-13b", "arrival_s": 1 * k,
         "first_token_s": 2 * k, "finish_s": 4 * k, "output_tokens": 2, "slo_base_s": 4 * k},
    ]


# Module scope: summarize() is the slow part of setup; tests treat both frames as read-only.
@pytest.fixture(scope="module")
def requests() -> pd.DataFrame:
    return _frame(_cell("alpha=0.7", 0.7) + _cell("alpha=1.3", 1.3, time_scale=2.0))


@pytest.fixture(scope="module")
def summary(requests: pd.DataFrame) -> pd.DataFrame:
    return M.summarize(requests, slo_scales=[1, 8], goodput_scale=2)


def _row(summary: pd.DataFrame, cell: str, strategy: str, llm: str) -> pd.Series:
    sel = summary[(summary.cell == cell) & (summary.strategy == strategy) & (summary.llm == llm)]
    assert len(sel) == 1
    return sel.iloc[0]


# --- request_metrics ----------------------------------------------------------------------


def test_request_metrics_hand_values(requests):
    before = requests.copy()
    m = M.request_metrics(requests)
    pd.testing.assert_frame_equal(requests, before)  # input untouched
    first = m.iloc[:4]
    np.testing.assert_allclose(first.ttft_s.to_numpy(), [1, 0.5, 2, NAN])
    np.testing.assert_allclose(first.tpot_s.to_numpy(), [4 / 3, 0.75, 7 / 6, NAN])
    np.testing.assert_allclose(first.e2el_s.to_numpy(), [5, 2, 9, NAN])
    assert list(m.index) == list(requests.index)


def test_request_metrics_one_output_token_has_no_tpot():
    # vLLM: no second token, no TPOT (left out of the TPOT statistics)
    df = pd.DataFrame({"arrival_s": [0.0, 0.0, 0.0], "first_token_s": [1.0, 1.0, 1.0],
                       "finish_s": [1.0, 1.0, 3.0], "output_tokens": [0, 1, 2]})
    m = M.request_metrics(df)
    assert math.isnan(m.tpot_s.iloc[0]) and math.isnan(m.tpot_s.iloc[1]) and m.tpot_s.iloc[2] == 2.0
    assert m.ttft_s.iloc[1] == 1.0 and m.e2el_s.iloc[2] == 3.0


def test_request_metrics_missing_column_named():
    with pytest.raises(ValueError, match="finish_s"):
        M.request_metrics(pd.DataFrame({"arrival_s": [0.0], "first_token_s": [1.0],
                                        "output_tokens": [3]}))


# --- summarize ----------------------------------------------------------------------------


def test_per_llm_throughput_goodput_attainment(summary):
    r = _row(summary, "alpha=0.7", "muxserve", "llm-0")
    assert (r.n_requests, r.n_finished, r.n_unfinished) == (2, 2, 0)
    assert r.last_completion_s == 5
    assert r.throughput_rps == pytest.approx(2 / 5)
    # scale 2: r0 5 <= 4 no, r1 2 <= 2 yes -> 1 hit over the last completion (5 s)
    assert r.goodput_rps == pytest.approx(1 / 5)
    assert r["slo_attainment@1"] == 0.0  # 5 > 2, 2 > 1
    assert r["slo_attainment@2"] == 0.5
    assert r["slo_attainment@8"] == 1.0
    assert r.model == "llama-7b"

    r = _row(summary, "alpha=0.7", "muxserve", "llm-1")
    assert (r.n_requests, r.n_finished, r.n_unfinished) == (2, 1, 1)
    assert r.throughput_rps == pytest.approx(1 / 10)
    assert r.goodput_rps == 0.0  # 9 > 2 x 4
    # the unfinished request counts as a miss at every scale: 1 of 2 meets 9 <= 8 x 4
    assert r["slo_attainment@8"] == 0.5
    assert r.model == "llama-13b"
    assert r.preemptions == 2


def test_overall_row(summary):
    r = _row(summary, "alpha=0.7", "muxserve", "all")
    assert r.model == "all"
    assert (r.n_requests, r.n_finished, r.n_unfinished) == (4, 3, 1)
    assert r.last_completion_s == 10
    # all completed / last completion of any LLM -- not the sum of per-LLM rates (0.4 + 0.1)
    assert r.throughput_rps == pytest.approx(3 / 10)
    assert r.goodput_rps == pytest.approx(1 / 10)
    assert r["slo_attainment@1"] == 0.0
    assert r["slo_attainment@2"] == 0.25
    assert r["slo_attainment@8"] == 0.75
    assert r.mean_prompt_tokens == 25.0
    assert r.mean_output_tokens == pytest.approx(19 / 4)
    assert r.preemptions == 3
    assert r.alpha == 0.7 and r.goodput_scale == 2.0

    s = _row(summary, "alpha=0.7", "spatial", "all")
    assert s.throughput_rps == pytest.approx(2 / 8)
    assert s.goodput_rps == pytest.approx(1 / 8)  # 8 > 4, 3 <= 8


def test_latency_statistics_over_finished_requests(summary):
    r = _row(summary, "alpha=0.7", "muxserve", "all")
    # finished TTFTs [0.5, 1, 2] s: linear interpolation at positions 1, 1.8, 1.98; in ms
    assert r.median_ttft_ms == pytest.approx(1000.0)
    assert r.p90_ttft_ms == pytest.approx(1800.0)
    assert r.p99_ttft_ms == pytest.approx(1980.0)
    assert r.mean_ttft_ms == pytest.approx(3500 / 3)
    # population std (ddof 0): mean 7/6, squared deviations (4/6)^2 + (1/6)^2 + (5/6)^2 = 42/36
    assert r.std_ttft_ms == pytest.approx(1e3 * math.sqrt(42 / 36 / 3))
    # E2E latencies [2, 5, 9] s
    assert (r.median_e2el_ms, r.p90_e2el_ms, r.p99_e2el_ms) == pytest.approx((5000.0, 8200.0, 8920.0))
    assert r.mean_e2el_ms == pytest.approx(16000 / 3)
    # TPOTs (E2E - TTFT) / (out - 1): [4/3, 3/4, 7/6] s
    tpots = np.array([4 / 3, 3 / 4, 7 / 6])
    assert r.mean_tpot_ms == pytest.approx(1e3 * tpots.mean())
    assert r.median_tpot_ms == pytest.approx(7000 / 6)
    assert r.std_tpot_ms == pytest.approx(1e3 * np.std(tpots))
    assert r.p99_tpot_ms == pytest.approx(1e3 * np.percentile(tpots, 99))
    one = _row(summary, "alpha=0.7", "muxserve", "llm-1")  # one finished request: std 0
    assert one.std_ttft_ms == 0.0 and one.mean_ttft_ms == one.p99_ttft_ms == 2000.0
    # no ITL histograms given: unknown, not 0
    assert all(math.isnan(r[M.stat_column(st, "itl")]) for st in M.STATISTICS)


def test_token_throughput_and_arrival_rate(summary):
    r = _row(summary, "alpha=0.7", "muxserve", "all")
    # finished: r0 (10 prompt, 4 out), r1 (20, 3), r2 (30, 7) over the last completion, 10 s;
    # r3 (40, 5) never finished and counts for neither
    assert r.request_throughput_rps == r.throughput_rps == pytest.approx(3 / 10)
    assert r.output_throughput_tok_s == pytest.approx(14 / 10)
    assert r.total_token_throughput_tok_s == pytest.approx(74 / 10)
    # 4 arrivals in the window [0, 3 s] (the last arrival, r3)
    assert r.arrival_rate_rps == pytest.approx(4 / 3)
    a = _row(summary, "alpha=0.7", "muxserve", "llm-0")  # r0, r1 over its own last completion, 5 s
    assert a.output_throughput_tok_s == pytest.approx(7 / 5)
    assert a.total_token_throughput_tok_s == pytest.approx(37 / 5)
    assert a.arrival_rate_rps == pytest.approx(2 / 3)  # the group's window
    b = _row(summary, "alpha=0.7", "muxserve", "llm-1")
    assert b.output_throughput_tok_s == pytest.approx(7 / 10)
    assert b.arrival_rate_rps == pytest.approx(2 / 3)
    s = _row(summary, "alpha=1.3", "spatial", "all")  # times doubled: arrivals 0, 2 s
    assert s.arrival_rate_rps == pytest.approx(2 / 2)
    assert s.output_throughput_tok_s == pytest.approx(6 / 16)
    # no absolute SLO given
    assert math.isnan(r.request_goodput_rps) and math.isnan(r.slo_attainment_abs)


def _abs_frame() -> pd.DataFrame:
    """One group, one LLM (times s):
      a: arrive 0,   first 0.1, finish 1.1, out 11 -> TTFT 100 ms, TPOT 100 ms, E2E 1100 ms
      b: arrive 0,   first 0.3, finish 0.3, out 1  -> TTFT 300 ms, no TPOT,     E2E 300 ms
      c: arrive 0.5, first 0.6, finish 3.6, out 6  -> TTFT 100 ms, TPOT 600 ms, E2E 3100 ms
      d: arrive 1,   never served, out 5
    """
    common = {"cell": "c", "strategy": "muxserve", "llm": "llm-0", "slo_base_s": 1.0}
    return _frame([
        {**common, "arrival_s": 0.0, "first_token_s": 0.1, "finish_s": 1.1, "output_tokens": 11},
        {**common, "arrival_s": 0.0, "first_token_s": 0.3, "finish_s": 0.3, "output_tokens": 1},
        {**common, "arrival_s": 0.5, "first_token_s": 0.6, "finish_s": 3.6, "output_tokens": 6},
        {**common, "arrival_s": 1.0, "first_token_s": NAN, "finish_s": NAN, "output_tokens": 5,
         "finished": False},
    ])


@pytest.mark.parametrize("slo, good", [
    ({"ttft_ms": 200}, 2),  # a, c
    ({"tpot_ms": 150}, 2),  # a, b (one output token: TPOT 0, as vLLM)
    ({"e2e_ms": 1100}, 2),  # a (1100 <= 1100), b
    ({"ttft_ms": 200, "tpot_ms": 150}, 1),  # a
    ({"ttft_ms": 400, "tpot_ms": 150}, 2),  # a, b
    ({"ttft_ms": 400, "tpot_ms": 150, "e2e_ms": 1000}, 1),  # b
    ({"ttft_ms": 50}, 0),
    ({"ttft_ms": None, "e2e_ms": 1e9}, 3),  # None: not set; d (unfinished) misses anyway
])
def test_absolute_slo_goodput_and_attainment(slo, good):
    s = M.summarize(_abs_frame(), [1], 1, abs_slo=slo)
    for r in (s.iloc[0], s.iloc[1]):  # the LLM's row and the overall row
        assert r.request_goodput_rps == pytest.approx(good / 3.6)  # over the last completion
        assert r.slo_attainment_abs == pytest.approx(good / 4)  # over every arrival


def test_absolute_slo_unset_and_tpot_population():
    s = M.summarize(_abs_frame(), [1], 1, abs_slo={})
    r = s.iloc[-1]
    assert math.isnan(r.request_goodput_rps) and math.isnan(r.slo_attainment_abs)
    # TPOT over a and c only (b has one output token): [100, 600] ms
    assert r.mean_tpot_ms == pytest.approx(350.0) and r.median_tpot_ms == pytest.approx(350.0)
    assert r.std_tpot_ms == pytest.approx(250.0)
    assert r.mean_ttft_ms == pytest.approx(500 / 3)  # a, b, c


@pytest.mark.parametrize("slo, match", [({"ttft": 100}, "unknown"), ({"tpot_ms": 0}, "> 0"),
                                        ({"e2e_ms": float("inf")}, "finite")])
def test_absolute_slo_errors(slo, match):
    with pytest.raises(ValueError, match=match):
        M.summarize(_abs_frame(), [1], 1, abs_slo=slo)


def test_time_scaled_cell(summary):
    # Every time doubled: rates halve, attainment is unchanged (bases doubled too).
    a = _row(summary, "alpha=0.7", "muxserve", "all")
    b = _row(summary, "alpha=1.3", "muxserve", "all")
    assert b.throughput_rps == pytest.approx(a.throughput_rps / 2)
    assert b["slo_attainment@8"] == a["slo_attainment@8"]
    assert b.p99_e2el_ms == pytest.approx(2 * a.p99_e2el_ms)
    assert b.alpha == 1.3


def test_layout_and_columns(summary):
    assert list(summary.columns[:5]) == ["cell", "strategy", "llm", "model", "alpha"]
    keys = list(zip(summary.cell, summary.strategy, summary.llm))
    assert keys[:6] == [
        ("alpha=0.7", "muxserve", "llm-0"), ("alpha=0.7", "muxserve", "llm-1"),
        ("alpha=0.7", "muxserve", "all"), ("alpha=0.7", "spatial", "llm-0"),
        ("alpha=0.7", "spatial", "llm-1"), ("alpha=0.7", "spatial", "all"),
    ]
    assert len(summary) == 12
    # the goodput scale (2) is reported even though slo_scales was [1, 8]
    att = [c for c in summary.columns if c.startswith("slo_attainment@")]
    assert att == ["slo_attainment@1", "slo_attainment@2", "slo_attainment@8"]
    for c in ("n_requests", "n_finished", "n_unfinished", "preemptions"):
        assert summary[c].dtype == np.int64
    stats = [f"{st}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el")
             for st in ("mean", "median", "std", "p90", "p99")]
    at = list(summary.columns).index("mean_ttft_ms")
    assert list(summary.columns[at:at + 20]) == stats
    assert not [c for c in summary.columns if c.endswith("_s") and c[:4] in ("ttft", "tpot", "late")]
    for c in ("request_throughput_rps", "output_throughput_tok_s", "total_token_throughput_tok_s",
              "arrival_rate_rps", "request_goodput_rps", "slo_attainment_abs"):
        assert c in summary.columns
    assert M.sweep_columns(summary) == ["alpha"]


def test_natural_llm_order_and_scale_labels():
    rows = [
        {"cell": "c", "strategy": "muxserve", "llm": f"llm-{i}", "arrival_s": 0.0,
         "first_token_s": 1.0, "finish_s": 2.0, "output_tokens": 1, "slo_base_s": 1.0}
        for i in (10, 2, 1)
    ]
    s = M.summarize(_frame(rows), slo_scales=[1.0, 2.5, 8.0, 8], goodput_scale=8.0)
    assert list(s.llm) == ["llm-1", "llm-2", "llm-10", "all"]
    assert [c for c in s.columns if c.startswith("slo_attainment@")] == [
        "slo_attainment@1", "slo_attainment@2.5", "slo_attainment@8"]


def test_group_without_completions():
    rows = [{"cell": "c", "strategy": "temporal", "llm": "llm-0", "arrival_s": 1.0,
             "first_token_s": NAN, "finish_s": NAN, "output_tokens": 5, "slo_base_s": 1.0,
             "finished": False}]
    r = M.summarize(_frame(rows), [1], 1).iloc[-1]
    assert r.throughput_rps == 0.0 and r.goodput_rps == 0.0
    assert math.isnan(r.last_completion_s) and math.isnan(r.p99_ttft_ms)
    assert r.output_throughput_tok_s == 0.0 and r.total_token_throughput_tok_s == 0.0
    assert r["slo_attainment@1"] == 0.0 and r.n_unfinished == 1


def test_sweep_columns_constant_kept_varying_dropped(requests):
    df = requests.assign(max_rate=40.0, mesh=np.arange(len(requests)))
    s = M.summarize(df, [8], 8)
    assert "max_rate" in s.columns and (s.max_rate == 40.0).all()
    assert "mesh" not in s.columns


def test_custom_group_cols(requests):
    s = M.summarize(requests, [8], 8, group_cols=["strategy"])
    r = s[(s.strategy == "muxserve") & (s.llm == "all")].iloc[0]
    # both cells together: 6 of 8 finished, last completion 20 s (second cell, times x 2)
    assert r.n_finished == 6 and r.throughput_rps == pytest.approx(6 / 20)
    assert "cell" not in s.columns and "alpha" not in s.columns  # alpha varies per strategy


def test_summarize_empty_frame(requests):
    s = M.summarize(requests.iloc[:0], [8], 8)
    assert s.empty and "throughput_rps" in s.columns


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.drop(columns=["slo_base_s"]), "slo_base_s"),
        (lambda d: d.drop(columns=["cell", "llm"]), r"\['cell', 'llm'\]"),
        (lambda d: d.assign(llm="all"), "reserved"),
        (lambda d: d.assign(finished=d.finished.astype(object).where(d.index != 0, None)),
         "finished"),
        (lambda d: d.assign(finish_s=NAN), "finished request"),
        (lambda d: d.assign(cell=d.cell.where(d.index != 0, None)), "cell"),
    ],
)
def test_summarize_errors(requests, mutate, match):
    with pytest.raises(ValueError, match=match):
        M.summarize(mutate(requests), [1], 8)


@pytest.mark.parametrize("scales, g", [([0], 8), ([1], -1), ([float("inf")], 8), ([1], NAN)])
def test_summarize_bad_scales(requests, scales, g):
    with pytest.raises(ValueError, match="scale"):
        M.summarize(requests, scales, g)


def test_summarize_bad_group_cols(requests):
    with pytest.raises(ValueError, match="group_cols"):
        M.summarize(requests, [1], 8, group_cols=["cell", "llm"])


# A naive per-request loop, to check the vectorised implementation on random tables.
def _naive(df: pd.DataFrame, scale: float) -> dict[tuple, tuple]:
    out = {}
    for (cell, strat), grp in df.groupby(["cell", "strategy"]):
        for llm, sub in [*grp.groupby("llm"), ("all", grp)]:
            fin = sub[sub.finished]
            last = fin.finish_s.max() if len(fin) else NAN
            hits = sum(
                1 for r in sub.itertuples()
                if r.finished and r.finish_s - r.arrival_s <= scale * r.slo_base_s
            )
            thr = len(fin) / last if len(fin) else 0.0
            good = hits / last if hits else 0.0
            lat = (fin.finish_s - fin.arrival_s).to_numpy()
            p90 = float(np.percentile(lat, 90)) * 1e3 if len(lat) else NAN
            two = fin[fin.output_tokens > 1]
            tpot = ((two.finish_s - two.first_token_s) / (two.output_tokens - 1)).to_numpy()
            tpot_mean = float(np.mean(tpot)) * 1e3 if len(tpot) else NAN
            tok = fin.output_tokens.sum() / last if len(fin) else 0.0
            out[(cell, strat, llm)] = (len(sub), thr, good, hits / len(sub), p90, tpot_mean, tok)
    return out


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]), st.sampled_from(["muxserve", "spatial"]),
            st.sampled_from(["llm-0", "llm-1", "llm-2"]),
            st.floats(0, 100), st.floats(0, 10), st.floats(0, 50), st.integers(1, 50),
            st.floats(0.1, 20), st.booleans(),
        ),
        min_size=1, max_size=30,
    )
)
def test_matches_naive_reference(records):
    rows = [
        {"cell": c, "strategy": s, "llm": l, "arrival_s": a, "first_token_s": a + t if f else NAN,
         "finish_s": a + t + d if f else NAN, "output_tokens": o, "slo_base_s": b, "finished": f}
        for c, s, l, a, t, d, o, b, f in records
    ]
    df = _frame(rows)
    s = M.summarize(df, [3], 3)
    expected = _naive(df, 3.0)
    assert len(s) == len(expected)
    for _, r in s.iterrows():
        n, thr, good, att, p90, tpot_mean, tok = expected[(r.cell, r.strategy, r.llm)]
        assert r.n_requests == n
        assert r.throughput_rps == pytest.approx(thr)
        assert r.goodput_rps == pytest.approx(good)
        assert r["slo_attainment@3"] == pytest.approx(att)
        assert r.p90_e2el_ms == pytest.approx(p90, nan_ok=True)
        assert r.mean_tpot_ms == pytest.approx(tpot_mean, nan_ok=True)
        assert r.output_throughput_tok_s == pytest.approx(tok)


# --- ratios -------------------------------------------------------------------------------


def test_ratios(summary):
    r = M.ratios(summary)
    assert list(r.columns) == ["cell", "alpha", "metric", "muxserve/spatial"]
    assert list(r.cell) == ["alpha=0.7", "alpha=1.3"]
    # 0.3 / 0.25 in both cells (the second has every time doubled)
    np.testing.assert_allclose(r["muxserve/spatial"], [1.2, 1.2])
    assert (r.metric == "throughput_rps").all()

    g = M.ratios(summary, reference="spatial", on="goodput_rps")
    # spatial 1/8 over muxserve 1/10
    np.testing.assert_allclose(g["spatial/muxserve"], [1.25, 1.25])


def test_ratios_missing_strategy_and_zero(summary):
    extra = _row(summary, "alpha=0.7", "spatial", "all").copy()
    extra["strategy"], extra["throughput_rps"] = "temporal", 0.0
    s = pd.concat([summary, extra.to_frame().T], ignore_index=True)
    r = M.ratios(s)
    assert math.isinf(r["muxserve/temporal"].iloc[0])  # baseline served nothing
    assert math.isnan(r["muxserve/temporal"].iloc[1])  # temporal absent from the cell


def test_ratios_errors(summary):
    with pytest.raises(ValueError, match="fcfs"):
        M.ratios(summary, reference="fcfs")
    with pytest.raises(ValueError, match="no_such"):
        M.ratios(summary, on="no_such")
    dup = pd.concat([summary, summary.iloc[[2]]], ignore_index=True)
    with pytest.raises(ValueError, match="several"):
        M.ratios(dup)


# --- report -------------------------------------------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC and os.path.getsize(path) > 1000


def test_console_table(summary):
    from rich.console import Console

    console = Console(record=True, width=200)
    R.print_report(summary, M.ratios(summary), console=console)
    text = console.export_text()
    assert "1.20x" in text and "alpha=1.3" in text and "spatial" in text
    assert "0.300" in text  # muxserve throughput in the first cell
    assert "25.0%" in text  # muxserve attainment at the goodput scale 2
    # 1.40 output tok/s; the latency table: mean TTFT 1167 ms, p99 TTFT 1980 ms, p99 TPOT
    # 1000 x percentile([4/3, 3/4, 7/6], 99) = 1330 ms, p99 E2E 8920 ms
    assert "1.40" in text and "1,167" in text and "1,980" in text and "1,330" in text and "8,920" in text
    assert "ITL" not in text and "USD" not in text and "SLO abs" not in text  # unknown: left out
    table = R.console_table(summary, None)
    assert [c.header for c in table.columns] == ["cell", "strategy", "throughput (req/s)", "goodput@2 (req/s)",
                                                 "output tok/s", "SLO attain. @2"]
    assert table.row_count == 4
    lat = R.latency_table(summary)
    assert [c.header for c in lat.columns][2:] == ["TTFT mean", "TTFT p99", "TPOT mean", "TPOT p99", "E2E p99"]


def test_console_tables_itl_abs_slo_and_cost(summary):
    from rich.console import Console

    s = summary.assign(mean_itl_ms=9.876, p99_itl_ms=12.345, slo_attainment_abs=0.5, gpus=4, cost_usd_per_hour=10.8,
                       usd_per_million_output_tokens=np.where(summary.llm == "all", 2142.857, NAN))
    s.loc[(s.strategy == "spatial") & (s.llm == "all"), "usd_per_million_output_tokens"] = np.inf
    console = Console(record=True, width=250)
    R.print_report(s, None, console=console)
    text = console.export_text()
    assert "ITL p99" in text and "12.3" in text and "9.88" in text
    assert "SLO abs." in text and "50.0%" in text
    # one cluster price for every row: said once, in the title
    assert "cluster USD 10.8/h" in text and "2,143" in text and "inf" in text
    assert R.latency_table(s).columns[-1].header == "USD/M out tok"
    s.loc[s.strategy == "spatial", "cost_usd_per_hour"] = 21.6
    headers = [c.header for c in R.latency_table(s).columns]
    assert headers[-2:] == ["USD/h", "USD/M out tok"]


def test_console_tables_mark_roofline_runs(summary):
    from rich.console import Console

    s = summary.assign(latency_source=np.where(summary.strategy == "spatial", "fitted+roofline", "fitted"))
    for table in (R.console_table(s, None), R.latency_table(s)):
        console = Console(record=True, width=250)
        console.print(table)
        text = console.export_text()
        assert text.count("spatial *") == 2 and "muxserve *" not in text  # two cells
        assert "* latency from the roofline model (not calibrated)" in text
    console = Console(record=True, width=250)
    console.print(R.console_table(summary.assign(latency_source="fitted"), None))
    assert "roofline" not in console.export_text()


@pytest.mark.parametrize("x", ["alpha", "missing", "max_rate"])
def test_plot_throughput(summary, tmp_path, x):
    s = summary.assign(max_rate=40.0)  # constant: falls back to bars
    path = R.plot_throughput(s, tmp_path / "thr.png", x=x)
    assert _is_png(path)
    assert sorted(os.listdir(tmp_path)) == ["thr.png"]  # no temporary file left behind


def test_plot_throughput_facets_other_sweep_params(summary, tmp_path):
    two = pd.concat(
        [summary.assign(scale=1.0), summary.assign(scale=2.0, cell=summary.cell + ",s=2")],
        ignore_index=True,
    )
    assert _is_png(R.plot_throughput(two, tmp_path / "thr.png", x="alpha"))


def test_plot_slo_attainment(summary, tmp_path):
    path = R.plot_slo_attainment(summary, tmp_path / "slo.png")
    assert _is_png(path) and sorted(os.listdir(tmp_path)) == ["slo.png"]


def test_write_outputs_files_and_determinism(requests, summary, tmp_path):
    ratios = M.ratios(summary)
    config = {"seed": 7, "cells": [{"alpha": 0.7}, {"alpha": 1.3}], "name": "synthetic"}
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        d.mkdir()
        written = R.write_outputs(M.request_metrics(requests), summary, ratios, d, config,
                                  seed=7, version="0.1.0")
        assert [p.name for p in written] == list(R.OUTPUT_FILES)
        assert sorted(os.listdir(d)) == sorted(R.OUTPUT_FILES)
    for name in R.OUTPUT_FILES:
        assert (dirs[0] / name).read_bytes() == (dirs[1] / name).read_bytes(), name

    d = dirs[0]
    run = json.loads((d / "run.json").read_text())
    assert run == {"seed": 7, "version": "0.1.0",
                   "files": sorted(f for f in R.OUTPUT_FILES if f != "run.json")}
    assert yaml.safe_load((d / "config.resolved.yaml").read_text()) == config
    back = pd.read_parquet(d / "summary.parquet")
    pd.testing.assert_frame_equal(back, summary, check_dtype=False)
    assert len(pd.read_parquet(d / "requests.parquet")) == len(requests)
    assert pd.read_csv(d / "ratios.csv")["muxserve/spatial"].tolist() == pytest.approx([1.2, 1.2])
    assert _is_png(d / "throughput.png") and _is_png(d / "slo_attainment.png")


def test_write_outputs_without_ratios_and_with_extra(requests, summary, tmp_path):
    extra = {"placements": {"alpha=0.7 | muxserve": {"mesh-0": ["llm-0", "llm-1"]}}}
    R.write_outputs(requests, summary, None, tmp_path, {}, 1, "0.1.0", extra=extra)
    assert (tmp_path / "ratios.csv").read_text() == "cell,metric\n"
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["placements"] == extra["placements"] and run["seed"] == 1
    assert sorted(os.listdir(tmp_path)) == sorted(R.OUTPUT_FILES)


def test_write_outputs_errors(requests, summary, tmp_path):
    ratios = M.ratios(summary)
    with pytest.raises(FileNotFoundError):
        R.write_outputs(requests, summary, ratios, tmp_path / "nope", {}, 0, "0.1.0")
    with pytest.raises(TypeError):
        R.write_outputs(requests, summary, ratios, tmp_path, {}, "0", "0.1.0")
    with pytest.raises(yaml.representer.RepresenterError):
        R.write_outputs(requests, summary, ratios, tmp_path, {"x": object()}, 0, "0.1.0")
    with pytest.raises(ValueError, match="seed"):
        R.write_outputs(requests, summary, ratios, tmp_path, {}, 0, "0.1.0", extra={"seed": 1})
    with pytest.raises(TypeError):
        R.write_outputs(requests, summary, ratios, tmp_path, {}, 0, "0.1.0", extra={"x": object()})
    assert os.listdir(tmp_path) == []  # the bad config was caught before any file was written


# --- ITL ----------------------------------------------------------------------------------


class _ExactGaps:
    """Every gap kept (s), with ITLHistogram's interface (mean_ms, std_ms, percentile_ms,
    merge): summarize's use of the interface checked on exact numbers."""

    def __init__(self, gaps):
        self.gaps = np.asarray(gaps, dtype=float)
        self.n = len(self.gaps)

    @staticmethod
    def merge(hists):
        return _ExactGaps(np.concatenate([h.gaps for h in hists]))

    def mean_ms(self):
        return float(np.mean(self.gaps)) * 1e3 if self.n else NAN

    def std_ms(self):
        return float(np.std(self.gaps)) * 1e3 if self.n else NAN

    def percentile_ms(self, p):
        return float(np.percentile(self.gaps, p)) * 1e3 if self.n else NAN


def test_itl_columns_from_histograms(requests):
    g0, g1 = [0.01, 0.02, 0.03], [0.1, 0.5]
    itl = {("alpha=0.7", "muxserve", "llm-0"): _ExactGaps(g0),
           ("alpha=0.7", "muxserve", "llm-1"): _ExactGaps(g1),
           ("alpha=0.7", "spatial", "llm-0"): _ExactGaps([0.2])}  # spatial llm-1 has none
    s = M.summarize(requests, [8], 8, itl=itl)
    r = _row(s, "alpha=0.7", "muxserve", "llm-0")
    assert r.mean_itl_ms == pytest.approx(20.0) and r.median_itl_ms == pytest.approx(20.0)
    assert r.std_itl_ms == pytest.approx(1e3 * np.std(g0)) and r.p90_itl_ms == pytest.approx(28.0)
    a = _row(s, "alpha=0.7", "muxserve", "all")  # pooled gaps of both LLMs
    pooled = np.array(g0 + g1)
    assert a.mean_itl_ms == pytest.approx(1e3 * pooled.mean())
    assert a.p99_itl_ms == pytest.approx(1e3 * np.percentile(pooled, 99))
    assert a.median_itl_ms == pytest.approx(30.0)
    assert _row(s, "alpha=0.7", "spatial", "llm-0").mean_itl_ms == pytest.approx(200.0)
    # an LLM without a histogram: its row and its group's overall row are unknown
    assert math.isnan(_row(s, "alpha=0.7", "spatial", "llm-1").mean_itl_ms)
    assert math.isnan(_row(s, "alpha=0.7", "spatial", "all").p99_itl_ms)
    assert math.isnan(_row(s, "alpha=1.3", "muxserve", "all").mean_itl_ms)
    with pytest.raises(ValueError, match="itl key"):
        M.summarize(requests, [8], 8, itl={("alpha=0.7", "llm-0"): _ExactGaps(g0)})


# --- cost ---------------------------------------------------------------------------------


def _run_facts(summary, price=2.5):
    keys = summary[["cell", "strategy"]].drop_duplicates()
    return keys.assign(gpus=np.where(keys.strategy == "muxserve", 3, 4), cluster_gpus=4, usd_per_gpu_hour=price)


def test_cost_columns(summary):
    out = M.add_cost_columns(summary, _run_facts(summary))
    assert list(out.columns[-3:]) == ["gpus", "cost_usd_per_hour", "usd_per_million_output_tokens"]
    assert out.gpus.dtype == np.int64
    r = _row(out, "alpha=0.7", "muxserve", "all")
    # the cluster's 4 GPUs are booked, though the placement uses 3: 4 x 2.5 = 10 USD/h;
    # 1.4 output tok/s -> 5,040 tokens an hour -> 10 / 5040 x 1e6 USD per million
    assert r.gpus == 3 and r.cost_usd_per_hour == pytest.approx(10.0)
    assert r.usd_per_million_output_tokens == pytest.approx(10 / (3600 * 1.4) * 1e6)
    per_llm = out[out.llm != "all"]
    assert (per_llm.cost_usd_per_hour == 10.0).all() and per_llm.usd_per_million_output_tokens.isna().all()
    assert _row(out, "alpha=0.7", "spatial", "llm-0").gpus == 4


def test_cost_columns_edge_cases(summary):
    s = summary.copy()
    s.loc[(s.strategy == "spatial") & (s.llm == "all"), "output_throughput_tok_s"] = 0.0
    out = M.add_cost_columns(s, _run_facts(s))
    assert math.isinf(_row(out, "alpha=0.7", "spatial", "all").usd_per_million_output_tokens)
    unknown = M.add_cost_columns(summary, _run_facts(summary, price=NAN))
    assert unknown.cost_usd_per_hour.isna().all() and unknown.usd_per_million_output_tokens.isna().all()
    with pytest.raises(ValueError, match="no run facts"):
        M.add_cost_columns(summary, _run_facts(summary).iloc[:1])
    with pytest.raises(ValueError, match="cluster_gpus"):
        M.add_cost_columns(summary, _run_facts(summary).drop(columns="cluster_gpus"))


def test_gpu_prices_and_config_override():
    from pydantic import ValidationError

    from muxsim.catalog import GPUS
    from muxsim.config.sections import ClusterConfig, SLOConfig

    for name in ("a100-80gb", "h100-80gb", "h200-141gb"):
        g = GPUS[name]
        assert 0 < g.usd_per_gpu_hour < 20 and g.price_source.startswith("https://") and g.price_date
    assert GPUS["cpu-core"].usd_per_gpu_hour is None
    c = ClusterConfig(nodes=2, gpus_per_node=8, gpu="h100-80gb")
    assert c.price_per_gpu_hour() == GPUS["h100-80gb"].usd_per_gpu_hour
    assert ClusterConfig(nodes=1, gpus_per_node=8, usd_per_gpu_hour=1.25).price_per_gpu_hour() == 1.25
    assert ClusterConfig(nodes=1, gpus_per_node=1, gpu="cpu-core").price_per_gpu_hour() is None
    for bad in (0, -1, 1e6):
        with pytest.raises(ValidationError, match="usd_per_gpu_hour"):
            ClusterConfig(nodes=1, gpus_per_node=8, usd_per_gpu_hour=bad)
    assert SLOConfig().absolute() == {}
    assert SLOConfig(ttft_ms=200, e2e_ms=5000).absolute() == {"ttft_ms": 200.0, "e2e_ms": 5000.0}
    with pytest.raises(ValidationError, match="tpot_ms"):
        SLOConfig(tpot_ms=0)


def test_itl_and_cost_columns_of_a_real_simulation(tmp_path):
    """ITL from the simulator's histograms: its mean is exactly the finished requests' time from
    first to last token over their gaps (every request finishes here), per LLM and pooled; the
    cost columns from the config's cluster and the catalog's price (or the config's)."""
    from muxsim.config import load_config
    from muxsim.experiment import experiment_results, run_experiment

    cfg = {"name": "itl", "seed": 3, "cluster": {"nodes": 1, "gpus_per_node": 2},
           "llms": [{"model": "llama-7b", "count": 3}], "strategies": ["muxserve", "temporal"],
           "workload": {"duration_s": 4, "lengths": {"kind": "sharegpt_v3"},
                        "popularity": {"alpha": 1.0, "max_rate": 3}}}
    path = tmp_path / "itl.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cfg = load_config(path)
    plans, runs = run_experiment(cfg, jobs=1)
    res = experiment_results(cfg, plans, runs)
    df = res.read_requests()
    assert df.finished.all()
    s = res.summary
    for (strategy, llm), r in s.set_index(["strategy", "llm"]).iterrows():
        sub = df[df.strategy == strategy] if llm == "all" else df[(df.strategy == strategy) & (df.llm == llm)]
        want = 1e3 * (sub.finish_s - sub.first_token_s).sum() / (sub.output_tokens - 1).sum()
        assert r.mean_itl_ms == pytest.approx(want, rel=1e-9), (strategy, llm)
        assert 0 < r.median_itl_ms <= r.p90_itl_ms <= r.p99_itl_ms and r.std_itl_ms > 0
    from muxsim.catalog import GPUS

    price = GPUS["a100-80gb"].usd_per_gpu_hour
    for run in runs:  # the overall row pools the run's LLMs
        pooled = type(next(iter(run.itl.values()))).merge(run.itl.values())
        r = _row(s, run.cell, run.strategy, "all")
        assert r.p99_itl_ms == pytest.approx(pooled.percentile_ms(99)) and r.std_itl_ms == pytest.approx(pooled.std_ms())
        # cost: the cluster's 2 GPUs at the catalog's price, whatever the placement uses
        assert r.gpus == sum(m.gpus for m in run.placement.meshes)
        assert r.cost_usd_per_hour == pytest.approx(2 * price)
        assert r.usd_per_million_output_tokens == pytest.approx(2 * price / (3600 * r.output_throughput_tok_s) * 1e6)
    cheap = experiment_results(cfg.model_copy(update={"cluster": cfg.cluster.model_copy(
        update={"usd_per_gpu_hour": 1.0})}), plans, runs).summary
    assert (cheap.cost_usd_per_hour == 2.0).all()
