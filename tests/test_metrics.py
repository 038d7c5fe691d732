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
      r0 llm-0: arrive 0, first 1,   finish 5,  out 4, base 2 -> TTFT 1,   TPOT 1,   lat 5
      r1 llm-0: arrive 2, first 2.5, finish 4,  out 3, base 1 -> TTFT 0.5, TPOT 0.5, lat 2
      r2 llm-1: arrive 1, first 3,   finish 10, out 7, base 4 -> TTFT 2,   TPOT 1,   lat 9
      r3 llm-1: arrive 3, never served (drain limit), out 5, base 1
    spatial:
      s0 llm-0: arrive 0, first 2, finish 8, out 4, base 2 -> TTFT 2, TPOT 1.5, lat 8
      s1 llm-1: arrive 1, first 2, finish 4, out 2, base 4 -> TTFT 1, TPOT 1,   lat 3
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
    np.testing.assert_allclose(first.tpot_s.to_numpy(), [1, 0.5, 1, NAN])
    np.testing.assert_allclose(first.latency_s.to_numpy(), [5, 2, 9, NAN])
    assert list(m.index) == list(requests.index)


def test_request_metrics_zero_output_tokens_gives_nan_tpot():
    df = pd.DataFrame({"arrival_s": [0.0], "first_token_s": [1.0], "finish_s": [1.0],
                       "output_tokens": [0]})
    m = M.request_metrics(df)
    assert math.isnan(m.tpot_s.iloc[0]) and m.ttft_s.iloc[0] == 1.0


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


def test_percentiles_over_finished_requests(summary):
    r = _row(summary, "alpha=0.7", "muxserve", "all")
    # finished TTFTs [0.5, 1, 2]: linear interpolation at positions 1, 1.8, 1.98
    assert r.ttft_p50_s == pytest.approx(1.0)
    assert r.ttft_p90_s == pytest.approx(1.8)
    assert r.ttft_p99_s == pytest.approx(1.98)
    # latencies [2, 5, 9]
    assert r.latency_p50_s == pytest.approx(5.0)
    assert r.latency_p90_s == pytest.approx(8.2)
    assert r.latency_p99_s == pytest.approx(8.92)
    # TPOTs [0.5, 1, 1]
    assert (r.tpot_p50_s, r.tpot_p90_s, r.tpot_p99_s) == pytest.approx((1.0, 1.0, 1.0))


def test_time_scaled_cell(summary):
    # Every time doubled: rates halve, attainment is unchanged (bases doubled too).
    a = _row(summary, "alpha=0.7", "muxserve", "all")
    b = _row(summary, "alpha=1.3", "muxserve", "all")
    assert b.throughput_rps == pytest.approx(a.throughput_rps / 2)
    assert b["slo_attainment@8"] == a["slo_attainment@8"]
    assert b.latency_p99_s == pytest.approx(2 * a.latency_p99_s)
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
    for c in (f"{m}_p{p}_s" for m in ("ttft", "tpot", "latency") for p in (50, 90, 99)):
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
    assert math.isnan(r.last_completion_s) and math.isnan(r.ttft_p99_s)
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
            p90 = float(np.percentile(lat, 90)) if len(lat) else NAN
            out[(cell, strat, llm)] = (len(sub), thr, good, hits / len(sub), p90)
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
        n, thr, good, att, p90 = expected[(r.cell, r.strategy, r.llm)]
        assert r.n_requests == n
        assert r.throughput_rps == pytest.approx(thr)
        assert r.goodput_rps == pytest.approx(good)
        assert r["slo_attainment@3"] == pytest.approx(att)
        assert r.latency_p90_s == pytest.approx(p90, nan_ok=True)


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
    table = R.console_table(summary, None)
    assert len(table.columns) == 7 and table.row_count == 4


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
