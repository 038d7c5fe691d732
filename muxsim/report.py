"""Console table, plots and on-disk outputs of one simulation run.

Inputs are the frames of :mod:`muxsim.metrics`: the request table, its
:func:`~muxsim.metrics.summarize` output and its :func:`~muxsim.metrics.ratios` output. Every
file is written to a temporary name in the destination directory and moved into place with
:func:`os.replace`, so a reader never sees a half-written file. Nothing written depends on the
wall clock: the same inputs give byte-identical files (on the same library versions).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

if "matplotlib.pyplot" not in sys.modules:
    # Runs are headless (CI, device machines): an interactive backend would need a display. A
    # caller that already imported pyplot (a notebook) chose its backend and keeps it.
    matplotlib.use("Agg")

import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import yaml  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator, PercentFormatter  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from muxsim.files import atomic_file  # noqa: E402
from muxsim.html_report import render_report  # noqa: E402
from muxsim.metrics import (  # noqa: E402
    ALL_LLMS,
    attainment_column,
    base_attainment_column,
    sweep_columns,
)

__all__ = [
    "OUTPUT_FILES",
    "console_table",
    "latency_table",
    "print_report",
    "plot_throughput",
    "plot_slo_attainment",
    "plot_attainment_sweep",
    "plot_llm_throughput",
    "nice_log_ticks",
    "natural_key",
    "write_outputs",
]

#: Files :func:`write_outputs` writes, in the order it writes them.
OUTPUT_FILES: tuple[str, ...] = (
    "requests.parquet",
    "summary.parquet",
    "summary.csv",
    "ratios.csv",
    "config.resolved.yaml",
    "throughput.png",
    "slo_attainment.png",
    "slo_attainment_sweep.png",
    "llm_throughput.png",
    "report.html",
    "run.json",
)

_ATTAINMENT_PREFIX = "slo_attainment@"
_DPI = 120


def _require(df: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; have {list(df.columns)}")


def _overall(summary: pd.DataFrame, where: str) -> pd.DataFrame:
    _require(summary, ["cell", "strategy", "llm", "throughput_rps"], where)
    return summary[summary["llm"] == ALL_LLMS].reset_index(drop=True)


def _goodput_scale(summary: pd.DataFrame, where: str) -> float:
    _require(summary, ["goodput_scale"], where)
    scales = pd.unique(summary["goodput_scale"].dropna())
    if len(scales) != 1:
        raise ValueError(f"{where}: expected one goodput_scale, found {list(scales)}")
    return float(scales[0])


def _fmt(value: float, spec: str, scale: float = 1.0) -> str:
    if value is None or not np.isfinite(value):
        return "inf" if value is not None and np.isinf(value) else "n/a"
    v = value * scale
    if spec == "sig":
        # latencies (ms) and prices span orders of magnitude: 3 significant digits, no exponent
        return format(v, ",.0f") if abs(v) >= 100 else format(v, ".1f") if abs(v) >= 10 else format(v, ".2f")
    return format(v, spec)


def _any_known(rows: pd.DataFrame, col: str) -> bool:
    """Whether ``rows`` has column ``col`` with a value other than NaN (inf counts)."""
    return col in rows.columns and bool(rows[col].notna().any())


def _ratio_lookup(ratios: pd.DataFrame | None) -> tuple[dict[tuple[str, str], float], str | None, str | None]:
    """(cell, strategy) -> ratio of the first metric of ``ratios``, the reference strategy and
    that metric (None, None without ratios)."""
    ratio_of: dict[tuple[str, str], float] = {}
    reference = metric = None
    if ratios is not None and not ratios.empty:
        _require(ratios, ["cell"], "console_table (ratios)")
        rcols = [c for c in ratios.columns if "/" in str(c)]
        if rcols:
            reference = rcols[0].split("/", 1)[0]
            metric = str(ratios["metric"].iloc[0]) if "metric" in ratios.columns else "metric"
        picked = ratios[ratios["metric"] == metric] if "metric" in ratios.columns else ratios
        for rec in picked.to_dict("records"):
            for c in rcols:
                ratio_of[(str(rec["cell"]), c.split("/", 1)[1])] = rec[c]
    return ratio_of, reference, metric


def _rows_table(title: str, rows: pd.DataFrame, cols: list[tuple[str, str, str, float]],
                extra: tuple[str, Callable[[dict], str]] | None = None) -> Table:
    """A table of ``rows`` (overall rows): cell, strategy, then ``cols`` (header, column,
    format, scale) and an ``extra`` (header, cell function) column; a section per cell. A run
    whose latencies came from the roofline model (``latency_source`` names it) is marked ``*``
    after its strategy, and the caption says what the mark means. A row whose ``status`` is
    ``infeasible`` (a strategy that could not be placed on its cell) shows ``infeasible``
    instead of its values, and the caption one line ``<cell> <strategy>: infeasible:
    <reason>`` per such row (in a cell the reason, often long, would wrap the whole row)."""
    table = Table(title=title)
    # Names wrap rather than being cut to "alpha=..." on narrow (e.g. CI, 80-column) consoles.
    table.add_column("cell", overflow="fold", min_width=min(24, int(rows["cell"].astype(str).str.len().max())))
    table.add_column("strategy", no_wrap=True)
    for header, *_ in cols:
        table.add_column(header, justify="right")
    if extra is not None:
        table.add_column(extra[0], justify="right")
    cells = rows["cell"].astype(str).to_numpy()
    marked = False
    refused: list[str] = []
    for i, rec in enumerate(rows.to_dict("records")):
        roofline = "roofline" in str(rec.get("latency_source", ""))
        marked |= roofline
        cells_row = [str(rec["cell"]), str(rec["strategy"]) + (" *" if roofline else "")]
        if rec.get("status") == "infeasible":
            cells_row += ["infeasible"] + [""] * (len(cols) - 1 + (extra is not None))
            refused.append(f"{rec['cell']} {rec['strategy']}: infeasible: {rec.get('reason', '')}")
        else:
            cells_row += [_fmt(rec[c], spec, scale) for _, c, spec, scale in cols]
            if extra is not None:
                cells_row.append(extra[1](rec))
        last_of_cell = i + 1 == len(rows) or cells[i + 1] != cells[i]
        table.add_row(*cells_row, end_section=last_of_cell)
    notes = refused + (["* latency from the roofline model (not calibrated): an estimate, not a measurement"]
                       if marked else [])
    if notes:
        table.caption = "\n".join(notes)
        table.caption_justify = "left"
    return table


def console_table(summary: pd.DataFrame, ratios: pd.DataFrame | None) -> Table:
    """A rich table of the overall row of every cell x strategy: what was served.

    Columns: cell, strategy; when the summary has them (:func:`muxsim.metrics.add_serving_columns`)
    the offered rate, the placement's estimate and the total throughput (sum of per-LLM
    throughputs, MuxServe's figure), all req/s, else muxsim's throughput (all requests / last
    completion) and goodput (req/s); the output token throughput (tok/s); SLO attainment (%) at
    the goodput scale under the summary's SLO base, and under each base the table carries; the
    attainment of the absolute SLOs (%, when set); and -- from ``ratios`` -- the reference
    strategy's metric divided by this row's (``n/a`` on the reference's own row; the first
    metric of ``ratios``). Unknown values print ``n/a``. Latencies and cost are in
    :func:`latency_table`.

    Args:
        summary: output of :func:`muxsim.metrics.summarize` (default group columns).
        ratios: output of :func:`muxsim.metrics.ratios` for the same summary (one or several
            metrics), or ``None`` (or an empty frame) to leave the ratio column out.

    Raises:
        ValueError: a required column is missing, or the summary holds several goodput scales.
    """
    rows = _overall(summary, "console_table")
    g = _goodput_scale(summary, "console_table")
    att = attainment_column(g)
    _require(rows, ["goodput_rps", att, "output_throughput_tok_s"], "console_table")
    ratio_of, reference, metric = _ratio_lookup(ratios)

    base = str(rows["slo_base"].iloc[0]) if "slo_base" in rows.columns else None
    bases = [b for b in ("alone", "reference") if base_attainment_column(b, g) in rows.columns]
    served = "total_throughput_rps" in rows.columns
    cols: list[tuple[str, str, str, float]] = []  # (header, column, format, scale)
    if served:
        # MuxServe's figures; muxsim's own throughput and goodput stay in summary.csv
        cols += [("offered req/s", "offered_rate_rps", ".1f", 1.0),
                 ("estimate req/s", "estimated_throughput_rps", ".1f", 1.0),
                 ("served req/s", "total_throughput_rps", ".1f", 1.0)]
    else:
        cols += [("throughput (req/s)", "throughput_rps", ".3f", 1.0),
                 (f"goodput@{g:g} (req/s)", "goodput_rps", ".3f", 1.0)]
    cols += [("output tok/s", "output_throughput_tok_s", "sig", 1.0)]
    if bases:
        short_base = {"alone": "alone", "reference": "ref."}
        cols += [(f"SLO@{g:g} {short_base[b]}", base_attainment_column(b, g), ".1%", 1.0) for b in bases]
    else:
        cols += [(f"SLO attain. @{g:g}", att, ".1%", 1.0)]
    if _any_known(rows, "slo_attainment_abs"):
        cols += [("SLO abs.", "slo_attainment_abs", ".1%", 1.0)]
    extra = None
    if reference is not None:
        short = {"total_throughput_rps": "served", "throughput_rps": "thr.", "goodput_rps": "goodput"}

        def ratio(rec: dict) -> str:
            r = ratio_of.get((str(rec["cell"]), str(rec["strategy"])))
            return "n/a" if r is None else _fmt(r, ".2f") + "x"

        extra = (f"{reference}/this {short.get(metric, metric)}", ratio)
    title = (f"Overall results (SLO scale {g:g} for goodput and attainment"
             + (f"; SLO base: {base}" if base else "")
             + ("; served = sum of per-LLM throughputs" if served else "") + ")")
    return _rows_table(title, rows, cols, extra)


def latency_table(summary: pd.DataFrame) -> Table:
    """A rich table of the overall row of every cell x strategy: latencies and cost.

    Columns: cell, strategy; mean and p99 of TTFT, TPOT and (when known) ITL, and p99 E2E
    latency, all ms (vLLM ``benchmark_serving``'s ``mean_*_ms``, ``p99_*_ms``); when the
    summary has them (:func:`muxsim.metrics.add_cost_columns`) the cluster's cost (USD/h; in the
    title when every row has the same) and USD per million output tokens. Unknown values print
    ``n/a``.

    Raises:
        ValueError: a required column is missing.
    """
    rows = _overall(summary, "latency_table")
    metrics_shown = ["ttft", "tpot"] + (["itl"] if _any_known(rows, "p99_itl_ms") else [])
    cols = [(f"{m.upper()} {st}", f"{st}_{m}_ms", "sig", 1.0) for m in metrics_shown for st in ("mean", "p99")]
    cols += [("E2E p99", "p99_e2el_ms", "sig", 1.0)]
    _require(rows, [c for _, c, _, _ in cols], "latency_table")
    cost_once = None
    if _any_known(rows, "cost_usd_per_hour"):
        costs = pd.unique(rows["cost_usd_per_hour"])
        if len(costs) == 1:
            cost_once = float(costs[0])  # one cluster for every row: said once, in the title
        else:
            cols += [("USD/h", "cost_usd_per_hour", "sig", 1.0)]
        cols += [("USD/M out tok", "usd_per_million_output_tokens", "sig", 1.0)]
    title = ("Latencies (ms, over finished requests)"
             + (f"; cluster USD {_fmt(cost_once, 'sig')}/h" if cost_once is not None else ""))
    return _rows_table(title, rows, cols)


def print_report(
    summary: pd.DataFrame, ratios: pd.DataFrame | None, console: Console | None = None
) -> None:
    """Print :func:`console_table` and :func:`latency_table` to ``console`` (default: a new
    stdout console).

    Raises:
        ValueError: as :func:`console_table`, :func:`latency_table`.
    """
    con = console or Console()
    con.print(console_table(summary, ratios))
    con.print(latency_table(summary))


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` for a temporary file beside ``path``, then move it onto ``path``
    (:func:`muxsim.files.atomic_file`)."""
    with atomic_file(path) as tmp:
        write(tmp)


def _save_figure(fig: matplotlib.figure.Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    try:
        # No "Software" entry: the PNG then does not change with the matplotlib version.
        _atomic_write(
            path,
            lambda tmp: fig.savefig(
                tmp, dpi=_DPI, bbox_inches="tight", metadata={"Software": None}
            ),
        )
    finally:
        plt.close(fig)
    return path


def _auto_x(rows: pd.DataFrame) -> str | None:
    # the paper plots throughput against the rate scale, one panel per alpha
    cols = sweep_columns(rows)
    cols = [c for c in ("rate_scale", "avg_rate") if c in cols] + [c for c in cols if c not in ("rate_scale", "avg_rate")]
    for c in cols:
        if pd.api.types.is_numeric_dtype(rows[c]) and rows[c].nunique() > 1:
            return c
    return None


#: Axis names of the usual sweep parameters; any other column is named as it is.
_AXIS_NAMES = {"rate_scale": "rate scale", "alpha": "Zipf alpha (popularity skew)",
               "avg_rate": "average rate (req/s)", "max_rate": "max rate (req/s)"}
#: Marker and line style per strategy, in the strategies' order: lines that lie on each other
#: stay distinguishable by their markers, in greyscale too.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
_LINESTYLES = ("-", (0, (5, 2)), "-.", (0, (1, 1.5)), (0, (8, 2, 2, 2)), (0, (3, 1, 1, 1, 1, 1)))
#: Horizontal offset between neighbouring strategies, as a fraction of the x span (linear) or
#: of the decades spanned (log): small enough that a point stays over its tick.
_DODGE = 0.012
_OFFERED = {"color": "black", "linestyle": ":", "marker": "x", "linewidth": 1.2, "markersize": 6}


def natural_key(name: object) -> tuple:
    """Sort key putting ``llm-2`` before ``llm-10`` (the popularity order of generated names);
    any two names compare (number pieces before text pieces)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", str(name)))


def _strategy_order(rows: pd.DataFrame, strategies: Sequence[str] | None) -> list[str]:
    """The config's strategy order (those present), then any others in order of appearance."""
    seen = [str(s) for s in pd.unique(rows["strategy"])]
    first = [s for s in (strategies or ()) if s in seen]
    return first + [s for s in seen if s not in first]


def _styles(order: Sequence[str]) -> dict[str, dict]:
    colors = sns.color_palette("tab10" if len(order) <= 10 else "husl", len(order))
    return {s: {"color": colors[i], "marker": _MARKERS[i % len(_MARKERS)],
                "linestyle": _LINESTYLES[i % len(_LINESTYLES)]} for i, s in enumerate(order)}


def _is_roofline(rows: pd.DataFrame) -> np.ndarray:
    """Per row: its latency came (partly) from the roofline model (not calibrated)."""
    if "latency_source" not in rows.columns:
        return np.zeros(len(rows), dtype=bool)
    return rows["latency_source"].astype(str).str.contains("roofline").to_numpy()


def _offered_column(rows: pd.DataFrame) -> str | None:
    # rate_rps is the configured offered rate; a later summary names it offered_rate_rps
    return next((c for c in ("offered_rate_rps", "rate_rps") if c in rows.columns and rows[c].notna().any()), None)


def nice_log_ticks(lo: float, hi: float, max_ticks: int = 8) -> list[float]:
    """Tick values for a log axis over ``[lo, hi]`` (> 0) that read as plain numbers: the
    densest of 1-2-3-4-5-6-8, 1-2-5, 1-3, 1 per decade (then every other decade, ...) that
    puts at most ``max_ticks`` ticks in the range. Always at least ``lo`` and ``hi`` rounded
    to such numbers when no decade tick falls inside."""
    lo, hi = float(lo), float(hi)
    if not (lo > 0 and hi >= lo):
        return []
    for subs in ((1, 2, 3, 4, 5, 6, 8), (1, 2, 5), (1, 3), (1,)):
        ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
                 for m in subs if lo * (1 - 1e-9) <= m * 10.0 ** e <= hi * (1 + 1e-9)]
        if len(ticks) <= max_ticks:
            break
    else:
        step = math.ceil(len(ticks) / max_ticks)
        ticks = ticks[::step]
    if len(ticks) < 2:
        ticks = sorted({float(f"{lo:.2g}"), float(f"{hi:.2g}")})
    return [float(f"{t:.12g}") for t in ticks]


def _plain(v: float, _pos: object = None) -> str:
    return f"{v:g}"


def _log_axis(ax: matplotlib.axes.Axes, values: np.ndarray, axis: str = "x") -> None:
    """A log axis labelled with plain numbers (1, 2, 5, 10, ...) that do not overlap."""
    values = values[np.isfinite(values) & (values > 0)]
    which = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    if len(values):
        which.set_major_locator(FixedLocator(nice_log_ticks(values.min(), values.max())))
    which.set_major_formatter(FuncFormatter(_plain))
    which.set_minor_locator(NullLocator())


def _dodged(x: np.ndarray, i: int, n: int, span: float, log: bool) -> np.ndarray:
    shift = (i - (n - 1) / 2) * _DODGE * span
    return x * 10.0 ** shift if log else x + shift


def _span(values: np.ndarray, log: bool) -> float:
    v = values[np.isfinite(values) & ((values > 0) if log else True)]
    if len(v) < 2:
        return 0.0
    return float(np.log10(v.max() / v.min())) if log else float(v.max() - v.min())


def _series(ax: matplotlib.axes.Axes, x: np.ndarray, y: np.ndarray, roof: np.ndarray, style: dict) -> None:
    """One strategy's line; its points filled, or hollow where the latency was roofline."""
    ax.plot(x, y, color=style["color"], linestyle=style["linestyle"], linewidth=1.6, zorder=2)
    for hollow in (False, True):
        sel = roof == hollow
        if sel.any():
            ax.plot(x[sel], y[sel], linestyle="none", marker=style["marker"], markersize=6,
                    color=style["color"], markerfacecolor="white" if hollow else style["color"],
                    markeredgewidth=1.3, zorder=3)


def _legend_handles(order: Sequence[str], styles: dict, roof_of: dict[str, np.ndarray],
                    offered: bool) -> list[Line2D]:
    handles = []
    for s in order:
        r = roof_of.get(s, np.zeros(0, dtype=bool))
        note = " (roofline)" if len(r) and r.all() else (" (partly roofline)" if r.any() else "")
        st = styles[s]
        handles.append(Line2D([], [], color=st["color"], linestyle=st["linestyle"], marker=st["marker"],
                              markerfacecolor="white" if note == " (roofline)" else st["color"],
                              label=s + note))
    if offered:
        handles.append(Line2D([], [], label="offered rate", **_OFFERED))
    if any(r.any() for r in roof_of.values()):
        handles.append(Line2D([], [], color="grey", linestyle="none", marker="o", markerfacecolor="white",
                              label="hollow: roofline latency\n(not calibrated)"))
    return handles


def _figure_legend(fig: matplotlib.figure.Figure, handles: list[Line2D], title: str | None = "strategy") -> None:
    # outside the axes, right of them: inside, it would hide points of some panel
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title=title)


def _suptitle(fig: matplotlib.figure.Figure, title: str, experiment: str | None) -> None:
    fig.suptitle(f"{experiment}: {title}" if experiment else title, y=1.0, fontsize="large")


def _percent(ax: matplotlib.axes.Axes) -> None:
    ax.set_ylim(-0.02, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))


def plot_throughput(
    summary: pd.DataFrame, path: str | os.PathLike, x: str | None = "alpha",
    experiment: str | None = None, strategies: Sequence[str] | None = None,
) -> Path:
    """Plot overall throughput against a sweep parameter, one line per strategy, with the
    offered rate.

    With MuxServe's figures in the summary (:func:`muxsim.metrics.add_serving_columns`) two
    rows of panels: the paper's rate-weighted throughput (sum_i rate_i x throughput_i / N) and
    the total (sum of per-LLM throughputs, req/s, drawn with the offered rate: the summary's
    ``offered_rate_rps`` or ``rate_rps`` of the overall rows, the sum of the LLMs' configured
    rates); else muxsim's throughput (req/s) with the offered rate.

    Each strategy has its own colour, marker and line style, and is shifted sideways by a
    little (``_DODGE`` of the x span per strategy) so that coinciding lines stay visible;
    hollow markers and "(roofline)" in the legend mark points whose latency came from the
    roofline model (``latency_source``). Other sweep parameters that vary get one panel per
    combination, titled with it. When ``x`` is missing, not numeric or constant (or still does
    not single out one cell per strategy and panel), falls back to grouped bars per cell.

    Args:
        summary: output of :func:`muxsim.metrics.summarize` (default group columns).
        path: destination PNG; written atomically (``<stem>.tmp.png``, then renamed).
        x: sweep-parameter column for the x axis; ``None`` picks the first numeric sweep
            column that varies.
        experiment: the experiment's name, for the title.
        strategies: the config's strategy order (the legend's); others follow as they appear.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: a required column is missing or the summary has no overall row.
    """
    if "weighted_throughput_rps" in summary.columns:
        return _plot_overall(summary, path, x, ["weighted_throughput_rps", "total_throughput_rps"],
                             ["rate-weighted throughput\n(paper's figure)", "total throughput\n(sum of per-LLM, req/s)"],
                             "overall throughput", "plot_throughput", offered_on=("total_throughput_rps",),
                             experiment=experiment, strategies=strategies)
    return _plot_overall(summary, path, x, "throughput_rps", "throughput (req/s)", "overall throughput",
                         "plot_throughput", offered_on=("throughput_rps",), experiment=experiment,
                         strategies=strategies)


def plot_attainment_sweep(
    summary: pd.DataFrame, path: str | os.PathLike, x: str | None = None,
    experiment: str | None = None, strategies: Sequence[str] | None = None,
) -> Path:
    """Plot overall SLO attainment (%) at the goodput scale against a sweep parameter (e.g.
    ``alpha``, or ``avg_rate`` of a ``rate_sets`` sweep), one line per strategy.

    Same layout, styles and fallbacks as :func:`plot_throughput` (panels for other varying
    sweep parameters; grouped bars per cell when ``x`` does not work as an axis).

    Args:
        summary: output of :func:`muxsim.metrics.summarize` (default group columns).
        path: destination PNG; written atomically (``<stem>.tmp.png``, then renamed).
        x: sweep-parameter column for the x axis; ``None`` picks the first numeric sweep
            column that varies.
        experiment: the experiment's name, for the title.
        strategies: the config's strategy order (the legend's).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: a required column is missing, the summary holds several goodput scales, or
            it has no overall row.
    """
    g = _goodput_scale(summary, "plot_attainment_sweep")
    att = attainment_column(g)
    _require(summary, [att], "plot_attainment_sweep")
    base = _slo_base(summary)
    return _plot_overall(summary, path, x, att, f"SLO attainment @{g:g}",
                         f"SLO attainment at SLO scale {g:g}" + (f" (base: {base})" if base else ""),
                         "plot_attainment_sweep", percent=True, experiment=experiment, strategies=strategies)


def _slo_base(summary: pd.DataFrame) -> str | None:
    if "slo_base" not in summary.columns:
        return None
    bases = pd.unique(summary["slo_base"].dropna())
    return str(bases[0]) if len(bases) == 1 else None


def _plot_overall(
    summary: pd.DataFrame,
    path: str | os.PathLike,
    x: str | None,
    y: str | list[str],
    ylabel: str | list[str],
    title: str,
    where: str,
    percent: bool = False,
    offered_on: Sequence[str] = (),
    experiment: str | None = None,
    strategies: Sequence[str] | None = None,
) -> Path:
    ys = [y] if isinstance(y, str) else list(y)
    ylabels = [ylabel] if isinstance(ylabel, str) else list(ylabel)
    rows = _overall(summary, where)
    if rows.empty:
        raise ValueError(f"{where}: summary has no overall (llm == 'all') rows")
    if x is None:
        x = _auto_x(rows)
    order = _strategy_order(rows, strategies)
    styles = _styles(order)
    offered_col = _offered_column(rows)

    facet = None
    usable = (
        x is not None
        and x in rows.columns
        and pd.api.types.is_numeric_dtype(rows[x])
        and rows[x].nunique() > 1
    )
    if usable:
        # Sweep parameters are numeric; text columns carried along (``latency_source``, which
        # differs between strategies whose meshes differ) are not facets.
        # nor is the offered rate (it follows the swept rate), under either of its names
        others = [c for c in sweep_columns(rows) if c != x and rows[c].nunique(dropna=False) > 1
                  and pd.api.types.is_numeric_dtype(rows[c]) and c not in ("rate_rps", "offered_rate_rps")]
        if others:
            facet = "_facet"
            rows[facet] = [
                ", ".join(f"{c}={v:g}" if isinstance(v, float) else f"{c}={v}" for c, v in zip(others, vals))
                for vals in rows[others].itertuples(index=False)
            ]
        keys = ["strategy", x] + ([facet] if facet else [])
        # A line would silently join cells that share a point; show them as bars instead.
        usable = not rows.duplicated(subset=keys).any()
    if not usable:
        return _plot_bars(rows, path, ys, ylabels, title, percent, offered_on, offered_col,
                          experiment, order, styles)

    facets = list(pd.unique(rows[facet])) if facet else [None]
    if len(ys) > 1:
        nrows, ncols = len(ys), len(facets)
    else:
        ncols = min(4, len(facets))
        nrows = math.ceil(len(facets) / ncols)
    xv = rows[x].to_numpy(dtype=float)
    span = _span(xv, log=False)
    roof = _is_roofline(rows)
    roof_of = {s: roof[rows["strategy"].to_numpy() == s] for s in order}
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols + 0.4, 2.9 * nrows + 0.5), squeeze=False,
                                 sharex=True, sharey="row" if len(ys) > 1 else True)
        for k in range(nrows * ncols):
            r, c = divmod(k, ncols)
            ax = axes[r][c]
            if len(ys) > 1:
                metric, label, fv = ys[r], ylabels[r], facets[c]
            elif k < len(facets):
                metric, label, fv = ys[0], ylabels[0], facets[k]
            else:
                ax.set_visible(False)
                continue
            sel = rows[rows[facet] == fv] if facet else rows
            for i, s in enumerate(order):
                d = sel[sel["strategy"] == s].sort_values(x, kind="mergesort")
                if d.empty:
                    continue
                _series(ax, _dodged(d[x].to_numpy(dtype=float), i, len(order), span, False),
                        d[metric].to_numpy(dtype=float), _is_roofline(d), styles[s])
            if offered_col and metric in offered_on:
                o = sel.groupby(x, sort=True)[offered_col].mean()
                ax.plot(o.index.to_numpy(dtype=float), o.to_numpy(dtype=float), zorder=1, **_OFFERED)
            if percent:
                _percent(ax)
            if fv is not None and (r == 0 or len(ys) == 1):
                ax.set_title(str(fv), fontsize="medium")
            ax.set_ylabel(label if c == 0 else "")
            ax.set_xlabel(_AXIS_NAMES.get(x, x) if r == nrows - 1 or (len(ys) == 1 and k + ncols >= len(facets)) else "")
            if len(ys) == 1 and k + ncols >= len(facets):
                ax.xaxis.set_tick_params(labelbottom=True)
        _figure_legend(fig, _legend_handles(order, styles, roof_of, bool(offered_col and set(ys) & set(offered_on))))
        _suptitle(fig, f"{title} vs {_AXIS_NAMES.get(x, x)}", experiment)
        fig.tight_layout()
    return _save_figure(fig, path)


def _plot_bars(rows: pd.DataFrame, path: str | os.PathLike, ys: list[str], ylabels: list[str], title: str,
               percent: bool, offered_on: Sequence[str], offered_col: str | None, experiment: str | None,
               order: list[str], styles: dict) -> Path:
    """Grouped bars per cell (one per strategy, in ``order``), hatched where the latency was
    roofline, with the offered rate as a black tick over each cell's group."""
    cells = list(pd.unique(rows["cell"].astype(str)))
    pos = np.arange(len(cells))
    width = 0.8 / max(1, len(order))
    roof_of = {s: _is_roofline(rows[rows["strategy"] == s]) for s in order}
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(len(ys), 1, figsize=(max(5.0, 0.9 * len(cells) + 2), 3.4 * len(ys) + 0.4),
                                 squeeze=False, sharex=True)
        for ax, metric, label in zip(axes[:, 0], ys, ylabels):
            for i, s in enumerate(order):
                d = rows[rows["strategy"] == s].set_index(rows.loc[rows["strategy"] == s, "cell"].astype(str))
                d = d[~d.index.duplicated()].reindex(cells)
                roof = _is_roofline(d)  # a cell this strategy lacks reads "nan": not roofline
                bars = ax.bar(pos + (i - (len(order) - 1) / 2) * width, d[metric].to_numpy(dtype=float), width,
                              color=styles[s]["color"], edgecolor="black", linewidth=0.5)
                for bar, hollow in zip(bars, roof):
                    if hollow:
                        bar.set_hatch("//")
                        bar.set_alpha(0.55)
            if offered_col and metric in offered_on:
                o = rows.groupby(rows["cell"].astype(str), sort=False)[offered_col].mean().reindex(cells)
                # a black bar across each cell's group: the load every strategy of it was offered
                ax.hlines(o.to_numpy(dtype=float), pos - 0.42, pos + 0.42, colors="black", linewidth=1.8, zorder=3)
            ax.set_ylabel(label)
            if percent:
                _percent(ax)
        ax = axes[-1, 0]
        ax.set_xticks(pos, cells, rotation=30, ha="right")
        ax.set_xlabel("cell")
        handles = [matplotlib.patches.Patch(facecolor=styles[s]["color"], edgecolor="black",
                                            hatch="//" if roof_of[s].any() else None,
                                            label=s + (" (roofline)" if roof_of[s].all() and len(roof_of[s])
                                                       else " (partly roofline)" if roof_of[s].any() else ""))
                   for s in order]
        if offered_col and set(ys) & set(offered_on):
            handles.append(Line2D([], [], color="black", marker="_", linestyle="none", markersize=14,
                                  markeredgewidth=1.6, label="offered rate"))
        if any(r.any() for r in roof_of.values()):
            handles.append(matplotlib.patches.Patch(facecolor="white", edgecolor="black", hatch="//",
                                                    label="hatched: roofline latency\n(not calibrated)"))
        _figure_legend(fig, handles)
        _suptitle(fig, f"{title} per cell", experiment)
        fig.tight_layout()
    return _save_figure(fig, path)


def plot_slo_attainment(summary: pd.DataFrame, path: str | os.PathLike, experiment: str | None = None,
                        strategies: Sequence[str] | None = None) -> Path:
    """Plot overall SLO attainment (%) against SLO scale (log x, labelled 1, 2, 5, 10, ...),
    one panel per cell titled with the cell.

    One line per strategy, from the ``slo_attainment@<scale>`` columns of the overall rows,
    styled and dodged as in :func:`plot_throughput` (hollow markers: roofline latency). A
    dashed vertical line marks the goodput scale when the summary has one.

    Args:
        summary: output of :func:`muxsim.metrics.summarize` (default group columns).
        path: destination PNG; written atomically (``<stem>.tmp.png``, then renamed).
        experiment: the experiment's name, for the title.
        strategies: the config's strategy order (the legend's).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: a required column is missing, there is no attainment column or no overall row.
    """
    rows = _overall(summary, "plot_slo_attainment")
    att_cols = [c for c in rows.columns if str(c).startswith(_ATTAINMENT_PREFIX)]
    if not att_cols or rows.empty:
        raise ValueError(
            "plot_slo_attainment: need slo_attainment@<scale> columns and overall rows"
        )
    scales = np.array([float(str(c)[len(_ATTAINMENT_PREFIX):]) for c in att_cols])
    by_scale = np.argsort(scales, kind="mergesort")
    scales, att_cols = scales[by_scale], [att_cols[i] for i in by_scale]
    cells = list(pd.unique(rows["cell"]))
    order = _strategy_order(rows, strategies)
    styles = _styles(order)
    goodput_scale = None
    if "goodput_scale" in summary.columns:
        goodput_scale = _goodput_scale(summary, "plot_slo_attainment")
    log = bool(len(scales) and scales.min() > 0)
    span = _span(scales, log)
    roof = _is_roofline(rows)
    roof_of = {s: roof[rows["strategy"].to_numpy() == s] for s in order}
    ncols = min(4, len(cells))
    nrows = math.ceil(len(cells) / ncols)
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols + 0.4, 2.9 * nrows + 0.5), squeeze=False,
                                 sharex=True, sharey=True)
        for k, ax in enumerate(axes.flat):
            if k >= len(cells):
                ax.set_visible(False)
                continue
            cell = cells[k]
            sel = rows[rows["cell"] == cell]
            for i, s in enumerate(order):
                d = sel[sel["strategy"] == s]
                if d.empty:
                    continue
                r = d.iloc[0]
                _series(ax, _dodged(scales, i, len(order), span, log), r[att_cols].to_numpy(dtype=float),
                        np.repeat(_is_roofline(d.iloc[:1]), len(scales)), styles[s])
            if log:
                _log_axis(ax, scales)
            if goodput_scale is not None:
                ax.axvline(goodput_scale, color="grey", linestyle="--", linewidth=0.8, zorder=1)
            _percent(ax)
            ax.set_title(str(cell), fontsize="medium")
            ax.set_ylabel("SLO attainment" if k % ncols == 0 else "")
            if k + ncols >= len(cells):
                ax.set_xlabel("SLO scale (x the base latency)")
                ax.xaxis.set_tick_params(labelbottom=True)
        handles = _legend_handles(order, styles, roof_of, False)
        if goodput_scale is not None:
            handles.append(Line2D([], [], color="grey", linestyle="--", linewidth=0.8,
                                  label=f"goodput scale {goodput_scale:g}"))
        _figure_legend(fig, handles)
        base = _slo_base(summary)
        _suptitle(fig, "SLO attainment vs SLO scale" + (f" (base: {base})" if base else ""), experiment)
        fig.tight_layout()
    return _save_figure(fig, path)


def plot_llm_throughput(summary: pd.DataFrame, path: str | os.PathLike, experiment: str | None = None,
                        strategies: Sequence[str] | None = None) -> Path:
    """Plot each LLM's throughput (req/s, log y) against its popularity rank (``llm-0``
    first, natural order), one panel per cell, one line per strategy, with each LLM's offered
    rate (``offered_rate_rps`` or ``rate_rps``) and the placement's estimate
    (``estimated_throughput_rps``, the first strategy's when they differ: thin grey).

    Args:
        summary: output of :func:`muxsim.metrics.summarize` (default group columns), per-LLM rows.
        path: destination PNG; written atomically.
        experiment: the experiment's name, for the title.
        strategies: the config's strategy order (the legend's).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: a required column is missing or the summary has no per-LLM row.
    """
    _require(summary, ["cell", "strategy", "llm", "throughput_rps"], "plot_llm_throughput")
    rows = summary[summary["llm"] != ALL_LLMS].reset_index(drop=True)
    if rows.empty:
        raise ValueError("plot_llm_throughput: summary has no per-LLM rows")
    llms = sorted(pd.unique(rows["llm"].astype(str)), key=natural_key)
    rank = {n: i for i, n in enumerate(llms)}
    cells = list(pd.unique(rows["cell"]))
    order = _strategy_order(rows, strategies)
    styles = _styles(order)
    offered_col = _offered_column(rows)
    has_est = "estimated_throughput_rps" in rows.columns and rows["estimated_throughput_rps"].notna().any()
    roof = _is_roofline(rows)
    roof_of = {s: roof[rows["strategy"].to_numpy() == s] for s in order}
    ncols = min(3, len(cells))
    nrows = math.ceil(len(cells) / ncols)
    values = [rows["throughput_rps"].to_numpy(dtype=float)]
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(nrows, ncols, figsize=(max(4.0, 0.28 * len(llms) + 1.5) * ncols + 0.4,
                                                        3.0 * nrows + 0.6), squeeze=False, sharex=True, sharey=True)
        for k, ax in enumerate(axes.flat):
            if k >= len(cells):
                ax.set_visible(False)
                continue
            sel = rows[rows["cell"] == cells[k]]
            for i, s in enumerate(order):
                d = sel[sel["strategy"] == s]
                d = d.iloc[np.argsort([rank[str(n)] for n in d["llm"]], kind="mergesort")]
                if d.empty:
                    continue
                xs = np.array([rank[str(n)] for n in d["llm"]], dtype=float)
                _series(ax, _dodged(xs, i, len(order), max(1.0, len(llms) - 1.0), False),
                        d["throughput_rps"].to_numpy(dtype=float), _is_roofline(d), styles[s])
            first = sel[sel["strategy"] == next((s for s in order if (sel["strategy"] == s).any()), None)]
            first = first.iloc[np.argsort([rank[str(n)] for n in first["llm"]], kind="mergesort")]
            fx = np.array([rank[str(n)] for n in first["llm"]], dtype=float)
            if offered_col:
                ax.plot(fx, first[offered_col].to_numpy(dtype=float), zorder=1, **_OFFERED)
                values.append(first[offered_col].to_numpy(dtype=float))
            if has_est:
                ax.plot(fx, first["estimated_throughput_rps"].to_numpy(dtype=float), color="grey",
                        linewidth=1.0, linestyle="--", zorder=1)
                values.append(first["estimated_throughput_rps"].to_numpy(dtype=float))
            ax.set_title(str(cells[k]), fontsize="medium")
            ax.set_ylabel("throughput (req/s)" if k % ncols == 0 else "")
            if k + ncols >= len(cells):
                step = max(1, math.ceil(len(llms) / 24))
                ax.set_xticks(range(0, len(llms), step), llms[::step], rotation=90, fontsize="small")
                ax.xaxis.set_tick_params(labelbottom=True)
                ax.set_xlabel("LLM (popularity order)")
        for ax in axes.flat:
            if ax.get_visible():
                _log_axis(ax, np.concatenate(values), axis="y")
        handles = _legend_handles(order, styles, roof_of, bool(offered_col))
        if has_est:
            handles.append(Line2D([], [], color="grey", linestyle="--", linewidth=1.0, label="placement estimate"))
        _figure_legend(fig, handles)
        _suptitle(fig, "per-LLM throughput", experiment)
        fig.tight_layout()
    return _save_figure(fig, path)

def write_outputs(
    requests_df: pd.DataFrame | Callable[[Path], None],
    summary: pd.DataFrame,
    ratios: pd.DataFrame | None,
    out_dir: str | os.PathLike,
    resolved_config: dict,
    seed: int,
    version: str,
    plot_x: str | None = None,
    extra: dict | None = None,
) -> list[Path]:
    """Write a run's outputs into an existing (staging) directory.

    Files (:data:`OUTPUT_FILES`): ``requests.parquet`` (``requests_df`` as given, no index, or
    written by ``requests_df`` when it is a function),
    ``summary.parquet`` and ``summary.csv``, ``ratios.csv``, ``config.resolved.yaml``
    (``resolved_config`` through :func:`yaml.safe_dump`, keys sorted), ``throughput.png``
    (:func:`plot_throughput` against ``plot_x``), ``slo_attainment.png``,
    ``slo_attainment_sweep.png`` (:func:`plot_attainment_sweep` against ``plot_x``),
    ``llm_throughput.png`` (:func:`plot_llm_throughput`), ``report.html`` (every table, plot and
    fact above in one self-contained page: :func:`muxsim.html_report.render_report`) and
    ``run.json`` (``seed``, ``version``, the sorted names of the other files and the entries of
    ``extra``; deliberately no timestamp, so that the same config and seed reproduce every
    byte). Plot titles name the experiment (``resolved_config["name"]``) and legends follow
    its ``strategies`` order. Each file
    is written to a temporary name and moved into place; the caller renames the directory into
    place.

    Args:
        requests_df: the request table (one row per request), or a function that writes it as
            Parquet to the path it is given (a temporary name, then moved into place), so that
            a caller can stream a table too large to hold
            (:meth:`muxsim.experiment.results.RequestStore.write_parquet`).
        summary: output of :func:`muxsim.metrics.summarize`.
        ratios: output of :func:`muxsim.metrics.ratios`, or ``None`` (a single strategy): then
            ``ratios.csv`` holds only the header ``cell,metric``, so the file set stays fixed.
        out_dir: existing directory; files already there with these names are replaced.
        resolved_config: the fully resolved run configuration (plain YAML-safe types).
        seed: the run's random seed.
        version: muxsim version string.
        plot_x: sweep column for the x axis of the throughput and attainment-sweep plots;
            ``None`` picks the first numeric
            sweep column that varies (bar plot per cell when there is none).
        extra: further JSON-serialisable facts of the run (e.g. placements, latency-model
            sources), added as top-level keys of ``run.json``; they must be deterministic too.

    Returns:
        Paths of the written files, in :data:`OUTPUT_FILES` order.

    Raises:
        FileNotFoundError: ``out_dir`` does not exist. NotADirectoryError: it is not a directory.
        TypeError: ``seed`` is not an integer, or ``extra`` is not JSON-serialisable.
        yaml.representer.RepresenterError: the config holds a type ``safe_dump`` cannot write
            (e.g. a numpy scalar). ValueError: ``extra`` reuses ``seed``, ``version`` or
            ``files``; as the plot functions.
    """
    out = Path(out_dir)
    if not out.exists():
        raise FileNotFoundError(f"write_outputs: output directory {out} does not exist")
    if not out.is_dir():
        raise NotADirectoryError(f"write_outputs: {out} is not a directory")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"write_outputs: seed must be an integer, got {seed!r}")

    def text(content: str) -> Callable[[Path], None]:
        return lambda tmp: tmp.write_text(content, encoding="utf-8", newline="\n")

    # YAML and JSON are rendered before anything is written: bad input then leaves no files.
    config_text = yaml.safe_dump(
        resolved_config, sort_keys=True, default_flow_style=False, allow_unicode=True
    )
    run_info = {
        "seed": int(seed),
        "version": str(version),
        "files": sorted(f for f in OUTPUT_FILES if f != "run.json"),
    }
    clash = sorted(set(extra or {}) & set(run_info))
    if clash:
        raise ValueError(f"write_outputs: extra must not set {clash}")
    run_info.update(extra or {})
    run_text = json.dumps(run_info, indent=2, sort_keys=True) + "\n"
    if ratios is None:
        ratios = pd.DataFrame(columns=["cell", "metric"])
    writers: dict[str, Callable[[Path], None]] = {
        "requests.parquet": (requests_df if callable(requests_df)
                             else lambda tmp: requests_df.to_parquet(tmp, index=False, engine="pyarrow")),
        "summary.parquet": lambda tmp: summary.to_parquet(tmp, index=False, engine="pyarrow"),
        "summary.csv": lambda tmp: summary.to_csv(tmp, index=False, lineterminator="\n"),
        "ratios.csv": lambda tmp: ratios.to_csv(tmp, index=False, lineterminator="\n"),
        "config.resolved.yaml": text(config_text),
        "run.json": text(run_text),
    }
    written = []
    experiment = resolved_config.get("name") if isinstance(resolved_config, dict) else None
    strategies = resolved_config.get("strategies") if isinstance(resolved_config, dict) else None
    for name in OUTPUT_FILES:
        path = out / name
        if name == "throughput.png":
            plot_throughput(summary, path, x=plot_x, experiment=experiment, strategies=strategies)
        elif name == "slo_attainment.png":
            plot_slo_attainment(summary, path, experiment=experiment, strategies=strategies)
        elif name == "slo_attainment_sweep.png":
            plot_attainment_sweep(summary, path, x=plot_x, experiment=experiment, strategies=strategies)
        elif name == "llm_throughput.png":
            plot_llm_throughput(summary, path, experiment=experiment, strategies=strategies)
        elif name == "report.html":
            # after the plots: the page holds their bytes
            pngs = {n: (out / n).read_bytes() for n in OUTPUT_FILES if n.endswith(".png")}
            page = render_report(summary, ratios, resolved_config, config_text, int(seed), str(version), pngs,
                                 extra, files=[f for f in OUTPUT_FILES if f != "report.html"])
            _atomic_write(path, text(page))
        else:
            _atomic_write(path, writers[name])
        written.append(path)
    return written
