"""Plots that read well (issue 14 item 7): what the figures draw, checked on the figure itself
(its ticks, titles, legend, lines) on a hand-built summary, and the last partial bin of
``trace inspect``."""

from __future__ import annotations

import itertools

import matplotlib.colors
import numpy as np
import pandas as pd
import pytest

from muxsim import report as R
from muxsim.cli.trace import _plot_rates, rate_over_time

SCALES = [1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 75, 100]
STRATEGIES = ["muxserve", "spatial", "temporal"]


def _summary(latency: dict[str, str] | None = None) -> pd.DataFrame:
    """Overall and per-LLM rows for 2 alphas x 3 rate scales x 3 strategies; muxserve and
    spatial serve the same (their lines coincide), temporal less; 11 LLMs (llm-10 sorts
    after llm-9 only in natural order)."""
    rows = []
    for alpha, scale in itertools.product([0.9, 2.1], [0.5, 1.0, 1.5]):
        cell = f"alpha={alpha:g},scale={scale:g}"
        for s in STRATEGIES:
            served = 0.6 if s == "temporal" else 0.9
            rates = [10 * scale * (i + 1) ** -alpha for i in range(11)]
            src = (latency or {}).get(s, "fitted")
            for i, r in enumerate(rates):
                rows.append({"cell": cell, "strategy": s, "llm": f"llm-{i}", "model": "llama-7b", "alpha": alpha,
                             "rate_scale": scale, "latency_source": src, "goodput_scale": 8.0,
                             "rate_rps": r, "estimated_throughput_rps": r, "throughput_rps": served * r,
                             "goodput_rps": served * r, "slo_base": "reference",
                             **{f"slo_attainment@{k}": min(1.0, served * k / 10) for k in SCALES}})
            total = sum(rates)
            rows.append({"cell": cell, "strategy": s, "llm": "all", "model": "all", "alpha": alpha,
                         "rate_scale": scale, "latency_source": src, "goodput_scale": 8.0, "rate_rps": total,
                         "estimated_throughput_rps": total, "throughput_rps": served * total * 0.5,
                         "total_throughput_rps": served * total, "weighted_throughput_rps": served * total / 11,
                         "goodput_rps": served * total * 0.5, "slo_base": "reference",
                         **{f"slo_attainment@{k}": min(1.0, served * k / 10) for k in SCALES}})
    # per-LLM rows are written in a non-natural order (llm-10 before llm-2), as a string sort would
    df = pd.DataFrame(rows)
    return df.iloc[np.argsort(df["llm"].to_numpy(), kind="mergesort")].reset_index(drop=True)


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save, kept open for inspection (then closed)."""
    kept = []
    save = R._save_figure

    def keep(fig, path):
        fig.canvas.draw()
        kept.append(fig)
        return save(fig, path)

    monkeypatch.setattr(R, "_save_figure", keep)
    # saving closes the figure in pyplot's registry; the Figure object and its artists remain
    yield kept


def _legend(fig) -> list[str]:
    return [t.get_text() for t in fig.legends[0].get_texts()]


def _no_overlap(labels) -> bool:
    boxes = [t.get_window_extent() for t in labels if t.get_text()]
    return all(not a.overlaps(b) for a, b in itertools.combinations(boxes, 2))


def test_nice_log_ticks():
    assert R.nice_log_ticks(1, 100) == [1, 2, 5, 10, 20, 50, 100]
    assert R.nice_log_ticks(1, 8) == [1, 2, 3, 4, 5, 6, 8]
    assert R.nice_log_ticks(0.5, 1000) == [1, 3, 10, 30, 100, 300, 1000]
    assert len(R.nice_log_ticks(1e-3, 1e9)) <= 8
    assert R.nice_log_ticks(3, 4) == [3, 4]


def test_slo_attainment_plot_reads(figures, tmp_path):
    s = _summary()
    R.plot_slo_attainment(s, tmp_path / "slo.png", experiment="zipf_small", strategies=STRATEGIES)
    (fig,) = figures
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert fig._suptitle.get_text() == "zipf_small: SLO attainment vs SLO scale (base: reference)"
    assert [ax.get_title() for ax in axes] == list(pd.unique(s.cell))
    labelled = 0
    for ax in axes:
        assert ax.get_xscale() == "log"
        labels = [t for t in ax.get_xticklabels() if t.get_text()]
        # panels above another share its x axis and show no tick labels
        if labels:
            labelled += 1
            assert [t.get_text() for t in labels] == ["1", "2", "5", "10", "20", "50", "100"]
            assert _no_overlap(labels)
    assert labelled == 4  # the lowest panel of each of the 4 columns
    ys = [t.get_text() for t in axes[0].get_yticklabels() if t.get_text()]
    assert ys and all(y.endswith("%") for y in ys) and "100%" in ys
    assert _legend(fig)[:3] == STRATEGIES and "goodput scale 8" in _legend(fig)


def test_throughput_plot_offered_order_styles_dodge(figures, tmp_path):
    s = _summary()
    order = ["temporal", "muxserve", "spatial"]
    R.plot_throughput(s, tmp_path / "thr.png", x=None, experiment="zipf_small", strategies=order)
    (fig,) = figures
    assert fig._suptitle.get_text() == "zipf_small: overall throughput vs rate scale"
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes[:2]] == ["alpha=0.9", "alpha=2.1"]
    assert _legend(fig) == order + ["offered rate"]
    handles = fig.legends[0].legend_handles
    assert len({h.get_marker() for h in handles[:3]}) == 3
    assert len({str(h.get_linestyle()) for h in handles[:3]}) == 3
    # the total-throughput panel of alpha=0.9 (second row, first column) draws the offered rate
    total = axes[2]
    offered = [ln for ln in total.get_lines() if ln.get_marker() == "x"]
    assert len(offered) == 1
    want = s[(s.llm == "all") & (s.alpha == 0.9)].groupby("rate_scale")["rate_rps"].mean()
    np.testing.assert_allclose(offered[0].get_xdata(), want.index)
    np.testing.assert_allclose(offered[0].get_ydata(), want.to_numpy())
    # muxserve and spatial coincide; the dodge keeps them apart by a little, in order
    lines = [ln for ln in total.get_lines() if ln.get_marker() in ("None", None, "") and ln.get_linestyle() != ":"]
    xs = [np.asarray(ln.get_xdata(), dtype=float) for ln in lines]
    assert len(xs) == 3
    shifts = [x - np.array([0.5, 1.0, 1.5]) for x in xs]
    assert shifts[0][0] < shifts[1][0] < shifts[2][0]
    assert max(abs(d).max() for d in shifts) < 0.03  # within 3 % of the x span (1.0)


def test_offered_rate_column_renamed(figures, tmp_path):
    s = _summary().rename(columns={"rate_rps": "offered_rate_rps"})
    R.plot_throughput(s, tmp_path / "thr.png", x="rate_scale")
    assert "offered rate" in _legend(figures[0])


def test_roofline_series_marked(figures, tmp_path):
    s = _summary({"temporal": "roofline", "spatial": "fitted+roofline"})
    s.loc[(s.strategy == "spatial") & (s.alpha == 0.9), "latency_source"] = "fitted"
    R.plot_attainment_sweep(s, tmp_path / "sweep.png", x="rate_scale", strategies=STRATEGIES)
    (fig,) = figures
    legend = _legend(fig)
    assert legend[:3] == ["muxserve", "spatial (partly roofline)", "temporal (roofline)"]
    assert any(t.startswith("hollow: roofline") for t in legend)
    white = matplotlib.colors.to_rgba("white")
    temporal = matplotlib.colors.to_rgba(R._styles(STRATEGIES)["temporal"]["color"])
    points = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_linestyle() == "None"]
    hollow = [ln for ln in points if matplotlib.colors.to_rgba(ln.get_markerfacecolor()) == white]
    assert hollow and all(matplotlib.colors.to_rgba(ln.get_color()) != matplotlib.colors.to_rgba(
        R._styles(STRATEGIES)["muxserve"]["color"]) for ln in hollow)
    assert any(matplotlib.colors.to_rgba(ln.get_color()) == temporal for ln in hollow)
    assert all(t.get_text().endswith("%") for ax in fig.axes for t in ax.get_yticklabels() if t.get_text())


def test_bar_fallback_marks_roofline_and_offered(figures, tmp_path):
    s = _summary({"temporal": "roofline"}).assign(rate_scale=1.0, alpha=1.0)
    R.plot_throughput(s, tmp_path / "bars.png", x="rate_scale", strategies=STRATEGIES)
    (fig,) = figures
    assert "per cell" in fig._suptitle.get_text()
    assert _legend(fig)[:3] == ["muxserve", "spatial", "temporal (roofline)"] and "offered rate" in _legend(fig)
    hatched = [p for ax in fig.axes for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 2 * s.cell.nunique()  # temporal's bars, both panels


def test_llm_plot_popularity_order(figures, tmp_path):
    R.plot_llm_throughput(_summary(), tmp_path / "llm.png", experiment="zipf_small")
    (fig,) = figures
    bottom = [ax for ax in fig.axes if ax.get_visible()][-1]
    assert [t.get_text() for t in bottom.get_xticklabels()] == [f"llm-{i}" for i in range(11)]
    assert bottom.get_yscale() == "log"
    assert _no_overlap([t for t in bottom.get_yticklabels() if t.get_text()])
    assert "offered rate" in _legend(fig) and "placement estimate" in _legend(fig)


@pytest.mark.parametrize("last,drawn_end", [(25.0, 25.0), (21.0, 20.0)])
def test_trace_plot_last_partial_bin(last, drawn_end):
    # 10 req/s throughout, ending at `last`: 25 s covers half of the last 10-s bin, which is
    # drawn at its true rate up to 25 s; 21 s covers a tenth of it, which is left out
    t = np.arange(0.0, last, 0.1)
    t[-1] = last
    df = pd.DataFrame({"llm": "llm-0", "arrival_s": t})
    rates = rate_over_time(df, 10.0)
    assert rates["width_s"].iloc[-1] == pytest.approx(last - 20.0)
    fig = _plot_rates(rates, 10.0, "t.csv")
    try:
        top = fig.axes[0]
        line = top.get_lines()[0]
        x, y = np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)
        assert x[-1] == pytest.approx(drawn_end)
        assert y.min() > 8.5, y  # no false drop at the end
        assert ("left out" in top.get_title()) == (drawn_end == 20.0)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_trace_plot_legend_in_popularity_order():
    names = ["llm-10", "llm-2", "llm-0", "llm-1"]
    df = pd.DataFrame({"llm": names * 50, "arrival_s": np.arange(200) * 0.25})
    fig = _plot_rates(rate_over_time(df, 5.0), 5.0, "t.csv")
    try:
        labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
        assert labels == ["llm-0", "llm-1", "llm-2", "llm-10"]
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
