"""Command line for real request traces: ``muxsim trace convert | inspect | synth``.

* ``convert`` reads a trace in any supported format (:mod:`muxsim.workload.formats`) and writes
  it as a workload Parquet (:func:`muxsim.workload.save_workload`) that ``workload.file`` of an
  experiment config replays;
* ``inspect`` prints per-LLM rates over time, burstiness and length statistics, and with
  ``--out`` writes them as ``stats.csv``, ``rate_over_time.csv`` and ``rate_over_time.png``;
* ``synth`` builds a multi-LLM workload from one trace as a YAML spec describes
  (:mod:`muxsim.workload.synth`).

As for the rest of the command line (:mod:`muxsim.cli`), bad input ends with one line
``error: ...`` on stderr and exit code 2, and leaves no output file behind: every file is
written under a temporary name and renamed into place once complete.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Optional

import typer

from muxsim.files import (
    check_output_file,
    check_output_folder,
    staged_folder,
    write_files,
)

from . import common
from .app import trace_app
from .common import Fail, guarded

__all__ = ["trace_app", "trace_stats", "rate_over_time"]


_FORMATS_HELP = ("azure, mooncake, lengths, burstgpt, sharegpt, muxserve-workload or parquet "
                 "(detected when omitted)")
#: Most bins `inspect` draws; beyond that --bin-s is surely a mistake.
MAX_BINS = 200_000


def _guarded(fn) -> None:
    """Run ``fn`` under :func:`muxsim.cli.common.guarded`, turning the loaders' other expected
    errors (OS errors, tokenizer imports, YAML) into one-line failures too."""
    import yaml

    def go():
        try:
            return fn()
        except (FileNotFoundError, PermissionError, IsADirectoryError):
            raise
        except (OSError, ImportError, yaml.YAMLError) as e:
            raise Fail((str(e).splitlines() or [type(e).__name__])[0]) from None

    guarded(go)


def _natural_key(name: str):
    """Sort key putting llm-2 before llm-10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(name))]


# --------------------------------------------------------------------------------------------
# statistics


def _llm_order(df) -> list[str]:
    return sorted(df["llm"].unique().tolist(), key=_natural_key)


def trace_stats(df, bin_s: float | None = None):
    """Per-LLM and overall statistics of a trace or workload.

    Args:
        df: frame with ``llm``, ``prompt_tokens``, ``output_tokens`` and, unless it is a
            length-only trace, ``arrival_s`` (s).
        bin_s: bin width, s, for the peak binned rate (``peak_rps``); None skips it.

    Returns:
        DataFrame, one row per LLM (natural name order) then one with ``llm == "all"``;
        columns ``llm``, ``requests``, ``share`` (fraction of all requests), ``start_s`` /
        ``end_s`` (first/last arrival, s), ``rate_rps`` (requests / span of the *whole* trace,
        so the per-LLM rates add up to the overall one), ``peak_rps`` (highest rate in one
        ``bin_s`` bin), ``cv`` (:func:`muxsim.workload.synth.burstiness_cv`), and for
        ``prompt`` and ``output`` tokens ``_mean``, ``_p50``, ``_p90``, ``_p99``, ``_max``.
        Time columns are NaN for a frame without ``arrival_s`` (and the rate when the span is
        0, the CV with fewer than 3 arrivals).
    """
    import numpy as np
    import pandas as pd

    from muxsim.workload.synth import burstiness_cv

    timed = "arrival_s" in df.columns
    n_all = len(df)
    span = float(df["arrival_s"].max() - df["arrival_s"].min()) if timed and n_all else math.nan
    rows = []
    groups = [(m, df[df["llm"] == m]) for m in _llm_order(df)] + [("all", df)]
    for name, g in groups:
        row = {"llm": name, "requests": len(g), "share": len(g) / n_all if n_all else math.nan}
        if timed and len(g):
            t = g["arrival_s"].to_numpy(dtype=np.float64)
            row.update(start_s=float(t.min()), end_s=float(t.max()),
                       rate_rps=len(g) / span if span > 0 else math.nan,
                       peak_rps=(float(np.bincount((t // bin_s).astype(np.int64)).max()) / bin_s
                                 if bin_s else math.nan),
                       cv=burstiness_cv(t))
        else:
            row.update(start_s=math.nan, end_s=math.nan, rate_rps=math.nan, peak_rps=math.nan, cv=math.nan)
        for side in ("prompt", "output"):
            x = g[f"{side}_tokens"].to_numpy(dtype=np.float64)
            if len(x):
                p50, p90, p99 = np.percentile(x, [50, 90, 99])
                row.update({f"{side}_mean": x.mean(), f"{side}_p50": p50, f"{side}_p90": p90,
                            f"{side}_p99": p99, f"{side}_max": x.max()})
            else:
                row.update({f"{side}_{k}": math.nan for k in ("mean", "p50", "p90", "p99", "max")})
        rows.append(row)
    out = pd.DataFrame(rows)
    out["requests"] = out["requests"].astype(np.int64)
    return out


def rate_over_time(df, bin_s: float):
    """Request rate per LLM (and overall) in fixed time bins.

    Args:
        df: frame with ``llm`` and ``arrival_s`` (s, >= 0).
        bin_s: bin width, s, > 0; bins are ``[k * bin_s, (k + 1) * bin_s)`` from 0 up to the
            bin holding the last arrival (at most :data:`MAX_BINS` bins).

    Returns:
        Long DataFrame with columns ``bin_start_s`` (s), ``llm`` (names, then ``"all"``),
        ``requests`` (int64), ``rate_rps`` (requests / ``bin_s``) and ``width_s`` (s, the part
        of the bin the trace covers: ``bin_s``, but for the last bin only up to the last
        arrival); every (bin, LLM) pair is present, empty bins with 0. ``rate_rps`` counts the
        last bin over its full width, so it reads low when the trace ends early in it
        (``requests / width_s`` is the rate over the covered part; the plot of
        :func:`_plot_rates` uses that, or leaves the bin out).

    Raises:
        ValueError: ``bin_s`` not a finite number > 0, too many bins, no ``arrival_s`` column
            or negative/non-finite arrival times.
    """
    import numpy as np
    import pandas as pd

    if not (isinstance(bin_s, (int, float)) and math.isfinite(bin_s) and bin_s > 0):
        raise ValueError(f"--bin-s must be a finite time > 0 s, got {bin_s!r}")
    if "arrival_s" not in df.columns:
        raise ValueError("the trace has no arrival times (a length-only format)")
    t = df["arrival_s"].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(t)) or (len(t) and t.min() < 0):
        raise ValueError("arrival times must be finite and >= 0 s")
    n_bins = int(t.max() // bin_s) + 1 if len(t) else 0
    if n_bins > MAX_BINS:
        raise ValueError(f"--bin-s {bin_s:g} gives {n_bins:,} bins over {t.max():.6g} s (at most "
                         f"{MAX_BINS:,}); use --bin-s {math.ceil(t.max() / MAX_BINS * 1.0001):g} or more")
    idx = (t // bin_s).astype(np.int64)
    names = _llm_order(df)
    llm = df["llm"].to_numpy()
    frames = []
    for name in names + ["all"]:
        sel = idx if name == "all" else idx[llm == name]
        counts = np.bincount(sel, minlength=n_bins)
        starts = np.arange(n_bins) * float(bin_s)
        width = np.full(n_bins, float(bin_s))
        if n_bins:
            width[-1] = float(t.max()) - starts[-1]
        frames.append(pd.DataFrame({"bin_start_s": starts,
                                    "llm": pd.Series([name] * n_bins, dtype=str),
                                    "requests": counts.astype(np.int64),
                                    "rate_rps": counts / float(bin_s),
                                    "width_s": width}))
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------
# printing


def _f(v, spec: str = ".3g") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _rates_table(stats, title: str, timed: bool):
    from rich.table import Table

    t = Table(title=title)
    peak = timed and bool(stats["peak_rps"].notna().any())
    cols = ["LLM", "requests", "share"] + (["mean req/s"] + (["peak req/s"] if peak else [])
                                           + ["burstiness CV", "first s", "last s"] if timed else []) \
        + ["prompt mean", "output mean"]
    for c in cols:
        t.add_column(c, justify="left" if c == "LLM" else "right")
    for r in stats.itertuples(index=False):
        if r.llm == "all":
            t.add_section()
        row = [r.llm, f"{r.requests:,}", _f(r.share, ".1%")]
        if timed:
            row += [_f(r.rate_rps, ".4g")] + ([_f(r.peak_rps, ".4g")] if peak else []) + \
                [_f(r.cv, ".3f"), _f(r.start_s, ".1f"), _f(r.end_s, ".1f")]
        row += [_f(r.prompt_mean, ".1f"), _f(r.output_mean, ".1f")]
        t.add_row(*row)
    return t


def _lengths_table(stats, title: str):
    from rich.table import Table

    t = Table(title=title)
    t.add_column("LLM")
    for side in ("prompt", "output"):
        for k in ("mean", "p50", "p90", "p99", "max"):
            t.add_column(f"{side} {k}", justify="right")
    for r in stats.to_dict("records"):
        if r["llm"] == "all":
            t.add_section()
        t.add_row(r["llm"], *[_f(r[f"{s}_{k}"], ".1f" if k == "mean" else ".0f")
                              for s in ("prompt", "output") for k in ("mean", "p50", "p90", "p99", "max")])
    return t


def _bins_table(rates, bin_s: float):
    from rich.table import Table

    wide = rates.pivot(index="bin_start_s", columns="llm", values="rate_rps")
    names = [c for c in rates["llm"].unique()]
    t = Table(title=f"rate over time (req/s, {bin_s:g} s bins)")
    t.add_column("from s", justify="right")
    for n in names:
        t.add_column(n, justify="right")
    for start, row in wide.iterrows():
        t.add_row(f"{start:g}", *[_f(row[n], ".3g") for n in names])
    return t


# --------------------------------------------------------------------------------------------
# writing


def _make_parents(path: Path) -> list[Path]:
    """Create the missing folders above ``path`` (outermost first); return them."""
    missing = []
    p = path.parent
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir()
    return list(reversed(missing))


def _remove_empty(dirs: list[Path]) -> None:
    for d in reversed(dirs):
        try:
            d.rmdir()
        except OSError:
            pass


def _save(df, out: Path) -> Path:
    """Save a workload atomically, creating missing folders (removed again on failure)."""
    from muxsim.workload import save_workload

    if out.is_dir():
        raise Fail(f"--out {out} is a folder; give a file name such as {out / 'workload.parquet'}")
    made = _make_parents(out)
    try:
        return save_workload(df, out)
    except BaseException:
        _remove_empty(made)
        raise


def _write_all(folder: Path, writers: dict) -> list[Path]:
    """Write every file of ``writers`` as the output folder ``folder``
    (:func:`muxsim.files.staged_folder`: all or none, and only where muxsim may write)."""
    with staged_folder(folder) as staging:
        names = [p.name for p in write_files(staging, writers)]
    return [folder / n for n in names]


def _plot_rates(rates, bin_s: float, title: str):
    """Figure with the overall rate (top) and each LLM's rate (bottom) over time.

    The trace ends inside its last bin, so that bin's count over the full ``bin_s`` would draw
    a drop that is not in the trace: it is drawn as requests over the part it covers
    (``width_s``, up to the last arrival) when that is at least half a bin, and left out
    (said in the title) when it is less, where so few arrivals make no rate.
    """
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # headless, as muxsim.report
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    rates = rates.copy()
    last_start = float(rates["bin_start_s"].max())
    is_last = rates["bin_start_s"] == last_start
    covered = float(rates.loc[is_last, "width_s"].iloc[0]) if "width_s" in rates.columns else bin_s
    end, note = last_start + bin_s, ""
    if covered < 0.5 * bin_s and rates["bin_start_s"].nunique() > 1:
        rates = rates[~is_last]
        end, note = last_start, f" (last bin, {covered:.3g} s of {bin_s:g} s, left out)"
    elif 0.5 * bin_s <= covered < bin_s:
        rates.loc[is_last, "rate_rps"] = rates.loc[is_last, "requests"] / covered
        end, note = last_start + covered, f" (last bin over its {covered:.3g} s up to the last arrival)"
    span = end
    unit, div = ("s", 1.0) if span <= 1200 else (("min", 60.0) if span <= 72_000 else ("h", 3600.0))
    # steps-post draws bin k from its start to the next point: repeat each series' last value
    # where the last drawn bin ends so that bin gets its step too
    last = rates[rates["bin_start_s"] == rates["bin_start_s"].max()].assign(bin_start_s=end)
    data = pd.concat([rates, last], ignore_index=True)
    data = data.assign(t=data["bin_start_s"] / div)
    per_llm = data[data["llm"] != "all"]
    n = per_llm["llm"].nunique()
    with sns.axes_style("whitegrid"):
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True,
                                          gridspec_kw={"height_ratios": [1, 1.6]})
        sns.lineplot(data=data[data["llm"] == "all"], x="t", y="rate_rps", ax=top, color="black",
                     drawstyle="steps-post", estimator=None, errorbar=None)
        top.set_ylabel("all LLMs (req/s)")
        top.set_ylim(bottom=0)
        top.set_title(f"{title}: request rate in {bin_s:g} s bins{note}")
        sns.lineplot(data=per_llm, x="t", y="rate_rps", hue="llm", ax=bottom, drawstyle="steps-post",
                     hue_order=sorted(per_llm["llm"].unique(), key=_natural_key),  # popularity order
                     estimator=None, errorbar=None, linewidth=1.0,
                     palette=sns.color_palette("husl" if n > 10 else "tab10", n))
        bottom.set_ylabel("per LLM (req/s)")
        bottom.set_xlabel(f"time ({unit})")
        bottom.set_ylim(bottom=0)
        sns.move_legend(bottom, "upper left", bbox_to_anchor=(1.0, 1.0), ncol=1 if n <= 20 else 2,
                        fontsize="small", title=None)
    return fig


# --------------------------------------------------------------------------------------------
# commands


def _load(path: Path, fmt: Optional[str], llm: str, tokenizer: Optional[str], turns: str = "first"):
    from muxsim.workload.synth import load_source

    if not path.exists():
        raise Fail(f"trace file not found: {path}")
    if path.is_dir():
        raise Fail(f"{path} is a folder, not a trace file")
    if turns not in ("first", "all"):
        raise Fail(f"--sharegpt-turns must be first or all, got {turns!r}")
    try:
        return load_source(path, fmt, llm=llm, tokenizer=tokenizer, sharegpt_turns=turns)
    except ValueError as e:  # the loaders speak of their argument; here it is an option
        msg = str(e).replace("pass fmt= one of", "pass --format, one of")
        if msg == str(e):
            raise
        raise Fail(msg) from None


def _notes(df, path: Path) -> None:
    dropped = df.attrs.get("dropped_rows", 0)
    if dropped:
        common.console.print(f"[yellow]note:[/] {dropped:,} rows of {path} with 0 prompt or output tokens were dropped")
    skipped = df.attrs.get("skipped_conversations", 0)
    if skipped:
        common.console.print(f"[yellow]note:[/] {skipped:,} conversations without a prompt/answer pair were skipped")


@trace_app.command()
def convert(
    trace: Path = typer.Argument(..., help="trace file"),
    out: Path = typer.Option(..., "--out", help="workload Parquet to write"),
    fmt: Optional[str] = typer.Option(None, "--format", help=_FORMATS_HELP),
    llm: str = typer.Option("llm-0", "--llm", help="LLM name of traces without a model column"),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="tokenizer name/path (sharegpt)"),
    turns: str = typer.Option("first", "--sharegpt-turns", help="first or all turns of a conversation"),
    rate: Optional[float] = typer.Option(None, "--rate", help="mean req/s of the arrivals given to a "
                                         "length-only trace (lengths, sharegpt)"),
    arrival: str = typer.Option("poisson", "--arrival", help="poisson or gamma (with --rate)"),
    cv: float = typer.Option(1.0, "--cv", help="gap coefficient of variation for --arrival gamma"),
    seed: int = typer.Option(0, "--seed", min=0, help="seed of the arrivals drawn with --rate"),
):
    """Convert a trace to the workload Parquet that `workload.file` replays."""

    def go():
        check_output_file(out, common.is_workload_file, kind="workload Parquet file")
        df = _load(trace, fmt, llm, tokenizer, turns)
        if "arrival_s" not in df.columns:
            if rate is None:
                raise Fail(f"{trace} is a length-only trace ({df.attrs.get('format', 'no times')}): "
                                "give --rate R (mean req/s) to draw arrival times [--arrival gamma --cv C] [--seed S]")
            from muxsim.workload.arrivals import assign_arrivals

            df = assign_arrivals(df, rate, seed, process=arrival, cv=cv)
        elif rate is not None or arrival != "poisson" or cv != 1.0:
            raise Fail(f"--rate/--arrival/--cv apply only to length-only traces; {trace} has arrival times")
        _save(df, out)
        _notes(df, trace)
        common.console.print(_rates_table(trace_stats(df), f"{trace.name} -> {out.name}", True))
        common.console.print(f"{len(df):,} requests written to {out}")

    _guarded(go)


@trace_app.command("inspect")
def inspect_cmd(
    trace: Path = typer.Argument(..., help="trace file or workload Parquet"),
    fmt: Optional[str] = typer.Option(None, "--format", help=_FORMATS_HELP),
    bin_s: float = typer.Option(60.0, "--bin-s", help="bin width of the rate over time, s"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for stats.csv, rate_over_time.csv/.png"),
    llm: str = typer.Option("llm-0", "--llm", help="LLM name of traces without a model column"),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="tokenizer name/path (sharegpt)"),
):
    """Print per-LLM rates over time, burstiness and request-length statistics."""

    def go():
        if not (math.isfinite(bin_s) and bin_s > 0):
            raise Fail(f"--bin-s must be a finite time > 0 s, got {bin_s:g}")
        if out is not None:
            check_output_folder(out)
        df = _load(trace, fmt, llm, tokenizer)
        timed = "arrival_s" in df.columns
        rates = rate_over_time(df, bin_s) if timed else None
        stats = trace_stats(df, bin_s if timed else None)
        writers = {}
        if out is not None:
            writers["stats.csv"] = lambda tmp: stats.to_csv(tmp, index=False, lineterminator="\n",
                                                            float_format="%.6g")
            if timed:
                writers["rate_over_time.csv"] = lambda tmp: rates.to_csv(tmp, index=False, lineterminator="\n",
                                                                         float_format="%.6g")

                def png(tmp):
                    import matplotlib.pyplot as plt

                    fig = _plot_rates(rates, bin_s, trace.name)
                    try:
                        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
                    finally:
                        plt.close(fig)

                writers["rate_over_time.png"] = png
            _write_all(out, writers)
        _notes(df, trace)
        title = f"{trace.name}: {len(df):,} requests"
        if timed:
            title += f" over {stats.end_s.iloc[-1] - stats.start_s.iloc[-1]:.1f} s"
        common.console.print(_rates_table(stats, title, timed))
        common.console.print(_lengths_table(stats, "request lengths (tokens)"))
        if not timed:
            common.console.print("[yellow]note:[/] length-only trace: no arrival times, so no rates or burstiness "
                              "(`muxsim trace convert --rate R` draws them)")
        else:
            n_bins = int(rates["bin_start_s"].nunique())
            if n_bins <= 24 and stats.shape[0] <= 13:
                common.console.print(_bins_table(rates, bin_s))
            else:
                common.console.print(f"rate over time: {n_bins:,} bins of {bin_s:g} s"
                                  + ("; the series is in rate_over_time.csv/.png" if out is not None
                                     else "; --out DIR writes the series and a plot"))
        if out is not None:
            common.console.print(f"outputs: {', '.join(str(out / n) for n in writers)}")

    _guarded(go)


@trace_app.command()
def synth(
    spec: Path = typer.Argument(..., help="synthesis spec YAML (see muxsim.workload.synth.SynthSpec)"),
    out: Path = typer.Option(..., "--out", help="workload Parquet to write"),
):
    """Build a multi-LLM workload from one trace as a YAML spec describes."""

    def go():
        check_output_file(out, common.is_workload_file, kind="workload Parquet file")
        from muxsim.workload.synth import load_synth_spec, synthesize

        s = load_synth_spec(spec)
        try:
            df = synthesize(s, base_dir=spec.parent)
        except (ValueError, OSError) as e:  # name the spec, as load_synth_spec does
            raise Fail(f"{spec}: {(str(e).splitlines() or [type(e).__name__])[0]}") from None
        _save(df, out)
        stats = trace_stats(df)
        common.console.print(_rates_table(stats, f"{spec.name}: {len(df):,} requests, {df['llm'].nunique()} LLMs", True))
        span = stats.end_s.iloc[-1] - stats.start_s.iloc[-1]
        common.console.print(f"{len(df):,} requests over {span:.1f} s written to {out}")

    _guarded(go)
