"""Console table, plots and on-disk outputs of one simulation run.

Inputs are the frames of :mod:`muxsim.metrics`: the request table, its
:func:`~muxsim.metrics.summarize` output and its :func:`~muxsim.metrics.ratios` output. Every
file is written to a temporary name in the destination directory and moved into place with
:func:`os.replace`, so a reader never sees a half-written file. Nothing written depends on the
wall clock: the same inputs give byte-identical files (on the same library versions).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

if "matplotlib.pyplot" not in sys.modules:
    # Runs are headless (CI, device machines): an interactive backend would need a display. A
    # caller that already imported pyplot (a notebook) chose its backend and keeps it.
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import yaml  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from muxsim.files import atomic_file  # noqa: E402
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


def plot_throughput(
    summary: pd.DataFrame, path: str | os.PathLike, x: str | None = "alpha"
) -> Path:
    """Plot overall throughput against a sweep parameter, one line per strategy.

    With MuxServe's figures in the summary (:func:`muxsim.metrics.add_serving_columns`) two
    rows of panels: the paper's rate-weighted throughput (sum_i rate_i x throughput_i / N) and
    the total (sum of per-LLM throughputs, req/s); else muxsim's throughput (req/s).

    Other sweep parameters that vary get one facet per combination. When ``x`` is missing,
    not numeric or constant (or still does not single out one cell per strategy and facet),
    falls back to a bar plot of throughput per cell and strategy.

    Args:
        summary: output of :func:`muxsim.metrics.summarize` (default group columns).
        path: destination PNG; written atomically (``<stem>.tmp.png``, then renamed).
        x: sweep-parameter column for the x axis; ``None`` picks the first numeric sweep
            column that varies.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: a required column is missing or the summary has no overall row.
    """
    if "weighted_throughput_rps" in summary.columns:
        return _plot_overall(summary, path, x, ["weighted_throughput_rps", "total_throughput_rps"],
                             ["rate-weighted throughput\n(paper's figure)", "total throughput\n(sum of per-LLM, req/s)"],
                             "Throughput", "plot_throughput")
    return _plot_overall(summary, path, x, "throughput_rps", "throughput (req/s)",
                         "Overall throughput", "plot_throughput")


def plot_attainment_sweep(
    summary: pd.DataFrame, path: str | os.PathLike, x: str | None = None
) -> Path:
    """Plot overall SLO attainment at the goodput scale against a sweep parameter (e.g.
    ``alpha``, or ``avg_rate`` of a ``rate_sets`` sweep), one line per strategy.

    Same layout and fallbacks as :func:`plot_throughput` (facets for other varying sweep
    parameters; a bar plot per cell when ``x`` does not work as an axis).

    Args:
        summary: output of :func:`muxsim.metrics.summarize` (default group columns).
        path: destination PNG; written atomically (``<stem>.tmp.png``, then renamed).
        x: sweep-parameter column for the x axis; ``None`` picks the first numeric sweep
            column that varies.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: a required column is missing, the summary holds several goodput scales, or
            it has no overall row.
    """
    g = _goodput_scale(summary, "plot_attainment_sweep")
    att = attainment_column(g)
    _require(summary, [att], "plot_attainment_sweep")
    return _plot_overall(summary, path, x, att, f"SLO attainment @{g:g}",
                         f"SLO attainment at SLO scale {g:g}", "plot_attainment_sweep",
                         ylim=(-0.02, 1.02))


def _plot_overall(
    summary: pd.DataFrame,
    path: str | os.PathLike,
    x: str | None,
    y: str | list[str],
    ylabel: str | list[str],
    title: str,
    where: str,
    ylim: tuple[float, float] | None = None,
) -> Path:
    ys = [y] if isinstance(y, str) else list(y)
    ylabels = [ylabel] if isinstance(ylabel, str) else list(ylabel)
    y, ylabel = ys[0], ylabels[0]
    rows = _overall(summary, where)
    if rows.empty:
        raise ValueError(f"{where}: summary has no overall (llm == 'all') rows")
    if x is None:
        x = _auto_x(rows)
    hue_order = list(pd.unique(rows["strategy"]))

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
        others = [c for c in sweep_columns(rows) if c != x and rows[c].nunique(dropna=False) > 1
                  and pd.api.types.is_numeric_dtype(rows[c])]
        if others:
            facet = "_facet"
            rows[facet] = [
                ", ".join(f"{c}={v}" for c, v in zip(others, vals))
                for vals in rows[others].itertuples(index=False)
            ]
        keys = ["strategy", x] + ([facet] if facet else [])
        # A line plot would silently average cells that share a point; show them as bars instead.
        usable = not rows.duplicated(subset=keys).any()

    with sns.axes_style("whitegrid"):
        if usable and len(ys) > 1:
            long = rows.melt(id_vars=[c for c in rows.columns if c not in ys], value_vars=ys,
                             var_name="_metric", value_name="_y")
            long["_metric"] = long["_metric"].map(dict(zip(ys, ylabels)))
            grid = sns.relplot(
                data=long.sort_values(x, kind="mergesort"), x=x, y="_y", hue="strategy",
                hue_order=hue_order, kind="line", marker="o", row="_metric", row_order=ylabels,
                col=facet, height=3.0, aspect=1.15, facet_kws={"sharey": "row"},
            )
            grid.set_titles("{col_name}" if facet else "")
            for label, axes in zip(ylabels, grid.axes):
                axes[0].set_ylabel(label)
            for ax in grid.axes[-1]:
                ax.set_xlabel(x)
            fig = grid.figure
        elif usable:
            grid = sns.relplot(
                data=rows.sort_values(x, kind="mergesort"),
                x=x,
                y=y,
                hue="strategy",
                hue_order=hue_order,
                kind="line",
                marker="o",
                col=facet,
                col_wrap=min(4, rows[facet].nunique()) if facet else None,
                height=3.5,
                aspect=1.3,
            )
            grid.set_axis_labels(x, ylabel)
            if ylim is not None:
                grid.set(ylim=ylim)
            if facet:
                grid.set_titles("{col_name}")
            fig = grid.figure
        else:
            fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * rows["cell"].nunique() + 2), 4))
            sns.barplot(data=rows, x="cell", y=y, hue="strategy", hue_order=hue_order, ax=ax)
            ax.set_ylabel(ylabel)
            if ylim is not None:
                ax.set_ylim(*ylim)
            ax.tick_params(axis="x", labelrotation=30)
            # Outside the axes: inside, the legend would hide bars of some cell.
            sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0))
        fig.suptitle(title, y=1.02)
    return _save_figure(fig, path)


def plot_slo_attainment(summary: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Plot overall SLO attainment (fraction) against SLO scale (log x), one facet per cell.

    One line per strategy, from the ``slo_attainment@<scale>`` columns of the overall rows. A
    dashed vertical line marks the goodput scale when the summary has one.

    Args:
        summary: output of :func:`muxsim.metrics.summarize` (default group columns).
        path: destination PNG; written atomically (``<stem>.tmp.png``, then renamed).

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
    long = rows.melt(
        id_vars=["cell", "strategy"], value_vars=att_cols, var_name="_col", value_name="attainment"
    )
    long["slo_scale"] = long["_col"].str.slice(len(_ATTAINMENT_PREFIX)).astype(float)
    long = long.sort_values(["slo_scale"], kind="mergesort")
    cells = list(pd.unique(rows["cell"]))
    goodput_scale = None
    if "goodput_scale" in summary.columns:
        goodput_scale = _goodput_scale(summary, "plot_slo_attainment")

    with sns.axes_style("whitegrid"):
        grid = sns.relplot(
            data=long,
            x="slo_scale",
            y="attainment",
            hue="strategy",
            hue_order=list(pd.unique(rows["strategy"])),
            col="cell",
            col_order=cells,
            col_wrap=min(4, len(cells)),
            kind="line",
            marker="o",
            height=3.2,
            aspect=1.2,
        )
        grid.set(xscale="log", ylim=(-0.02, 1.02))
        grid.set_axis_labels("SLO scale", "SLO attainment")
        grid.set_titles("{col_name}")
        if goodput_scale is not None:
            for ax in grid.axes.flat:
                ax.axvline(goodput_scale, color="grey", linestyle="--", linewidth=0.8)
        grid.figure.suptitle("SLO attainment vs SLO scale", y=1.02)
    return _save_figure(grid.figure, path)


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
    ``slo_attainment_sweep.png`` (:func:`plot_attainment_sweep` against ``plot_x``) and ``run.json``
    (``seed``, ``version``, the sorted names of the other files and the entries of ``extra``;
    deliberately no timestamp, so that the same config and seed reproduce every byte). Each file
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
    for name in OUTPUT_FILES:
        path = out / name
        if name == "throughput.png":
            plot_throughput(summary, path, x=plot_x)
        elif name == "slo_attainment.png":
            plot_slo_attainment(summary, path)
        elif name == "slo_attainment_sweep.png":
            plot_attainment_sweep(summary, path, x=plot_x)
        else:
            _atomic_write(path, writers[name])
        written.append(path)
    return written
