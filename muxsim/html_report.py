"""``report.html``: one run's outputs as a single self-contained web page.

The page holds the run facts, the summary tables (overall rows per cell x strategy, per-LLM
rows, infeasible runs when the summary has a ``status`` column), the ratios, every plot
(inline base64 PNG), the latency source of each model (roofline rows marked), the
placements (meshes, GPUs, LLMs, SM shares, estimated throughput), the placement's estimate
against the simulated throughput, and the resolved configuration. CSS is inline; there is no
script and nothing is fetched, so the file opens the same from a disk, a mail or an archive.

It is rendered with Jinja2 (``muxsim/templates/report.html.j2``, autoescaped: every value
from the run is HTML-escaped) from the frames and facts :func:`muxsim.report.write_outputs`
writes; nothing in it depends on the wall clock, so the same run gives the same bytes.
Tables are built from whatever columns the summary has (other columns appear as they are
added), with a chosen subset for the overview and all columns one click away.
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

__all__ = ["PLOT_CAPTIONS", "overview_columns", "render_report"]

#: What each plot shows, by file name (the caption under it in the page).
PLOT_CAPTIONS: dict[str, str] = {
    "throughput.png": "overall throughput against the swept parameter, one line per strategy, "
                      "with the offered rate (black, dotted).",
    "slo_attainment.png": "overall SLO attainment against the SLO scale (log axis), one panel per "
                          "cell; the dashed line is the goodput scale.",
    "slo_attainment_sweep.png": "overall SLO attainment at the goodput scale against the swept parameter.",
    "llm_throughput.png": "each LLM's throughput (log axis), LLMs in popularity order, with its "
                          "offered rate and the placement's estimate.",
}

_ALL = "all"
#: Overview columns in the order shown, those the summary has (``{g}``: the goodput scale):
#: keys and status, what was offered, estimated and served, SLO attainment, latency tails,
#: cost, requests. Where a newer name exists its older twin is left out (``_TWINS``).
_OVERVIEW = (
    "cell", "strategy", "status", "reason", "latency_source",
    "offered_rate_rps", "rate_rps", "estimated_throughput_rps", "total_throughput_rps",
    "request_throughput_rps", "throughput_rps", "output_throughput_tok_s", "request_goodput_rps", "goodput_rps",
    "slo_attainment@{g}", "slo_attainment_abs",
    "p99_ttft_ms", "ttft_p99_s", "p99_tpot_ms", "tpot_p99_s", "p99_itl_ms", "p99_e2el_ms", "latency_p99_s",
    "mean_ttft_ms", "mean_tpot_ms",
    "gpus", "cost_usd_per_hour", "usd_per_hour", "usd_per_million_output_tokens",
    "n_requests",
)
#: Older column -> the newer one that replaces it in the overview when both exist.
_TWINS = {"rate_rps": "offered_rate_rps", "throughput_rps": "request_throughput_rps",
          "goodput_rps": "request_goodput_rps", "ttft_p99_s": "p99_ttft_ms", "tpot_p99_s": "p99_tpot_ms",
          "latency_p99_s": "p99_e2el_ms", "usd_per_hour": "cost_usd_per_hour"}
#: Further columns shown in the overview when they exist, whatever their exact names: cost
#: columns added later.
_OVERVIEW_PATTERNS = (re.compile(r"(^|_)(usd|cost)(_|$)"),)
_MAX_OVERVIEW = 24
#: Columns whose values are text even when they look like numbers.
_TEXT = {"cell", "strategy", "llm", "model", "status", "reason", "latency_source", "slo_base"}


@dataclass
class _Cell:
    text: str
    cls: str = "num"
    title: str | None = None


@dataclass
class _Row:
    cells: list[_Cell]
    cls: str = ""


@dataclass
class _Table:
    columns: list[str]
    rows: list[_Row] = field(default_factory=list)


def _natural_key(name: object) -> tuple:
    # (0, number) / (1, text) pieces: llm-2 before llm-10, and any two names compare
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", str(name)))


def _is_missing(v: object) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v))


def _fmt_number(v: float) -> str:
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def _fmt(column: str, v: object) -> _Cell:
    """One table cell: text left-aligned, numbers right-aligned in a format the column's
    unit suggests (attainment as %, ratios as x, counts with thousands separators)."""
    if isinstance(v, np.generic):
        v = v.item()
    if _is_missing(v):
        return _Cell("n/a", "num muted")
    if column in _TEXT or isinstance(v, str) or not isinstance(v, (int, float)):
        return _text(str(v))
    if isinstance(v, bool):
        return _Cell(str(v), "text")
    if column.startswith("slo_attainment") or column.endswith("_fraction"):
        return _Cell(f"{v:.1%}", title=repr(v))
    if "/" in column:  # a ratio column of ratios.csv ("muxserve/spatial")
        return _Cell(f"{v:.2f}x", title=repr(v))
    if isinstance(v, int):
        return _Cell(f"{v:,}")
    return _Cell(_fmt_number(float(v)), title=repr(v))


def _text(text: str, extra: str = "") -> _Cell:
    # short texts (names, sources) stay on one line; long ones (reasons, lists) wrap
    return _Cell(text, " ".join(c for c in ("text", "nowrap" if len(text) <= 32 else "", extra) if c))


def _roofline_text(source: str) -> str:
    return f"{source} (not calibrated)" if source == "roofline" else f"{source} (roofline: not calibrated)"


def _flags(rec: Mapping, has_status: bool) -> str:
    """Row classes: ``roofline`` when its latency came (partly) from the roofline model,
    ``infeasible`` when its status says it was not run."""
    cls = []
    if "roofline" in str(rec.get("latency_source", "")):
        cls.append("roofline")
    if has_status and _not_run(rec.get("status")):
        cls.append("infeasible")
    return " ".join(cls)


def _not_run(status: object) -> bool:
    return not _is_missing(status) and str(status).strip().lower() not in ("", "ok", "feasible", "done", "run")


def _table(df: pd.DataFrame, columns: Sequence[str], has_status: bool = False,
           section_col: str | None = None) -> _Table:
    """Rows of ``df`` in the given columns (those it has), each formatted by :func:`_fmt`; a
    thicker line below the last row of each ``section_col`` value."""
    cols = [c for c in columns if c in df.columns]
    t = _Table(cols)
    recs = df.to_dict("records")
    for i, rec in enumerate(recs):
        cells = [_fmt(c, rec[c]) for c in cols]
        if "latency_source" in cols and "roofline" in str(rec.get("latency_source", "")):
            j = cols.index("latency_source")
            cells[j] = _text(_roofline_text(str(rec["latency_source"])))
        if has_status and "status" in cols and _not_run(rec.get("status")):
            j = cols.index("status")
            cells[j] = _text(str(rec["status"]), "bad")
        cls = _flags(rec, has_status)
        if section_col and (i + 1 == len(recs) or recs[i + 1][section_col] != rec[section_col]):
            cls = (cls + " section-end").strip()
        t.rows.append(_Row(cells, cls))
    return t


def _goodput_scale(summary: pd.DataFrame) -> float | None:
    if "goodput_scale" not in summary.columns:
        return None
    scales = pd.unique(summary["goodput_scale"].dropna())
    return float(scales[0]) if len(scales) == 1 else None


def overview_columns(summary: pd.DataFrame) -> list[str]:
    """The columns of the report's overview table that ``summary`` has, in display order: keys,
    status, latency source, offered / estimated / served rates (req/s, output tok/s), goodput,
    SLO attainment at the goodput scale (and against absolute SLOs), p99 latencies, cost,
    requests; a newer column replaces its older twin (``rate_rps`` -> ``offered_rate_rps``,
    ...); at most ``_MAX_OVERVIEW`` (every column is in the page's "all columns" table and in
    summary.csv)."""
    g = _goodput_scale(summary)
    wanted = [c.format(g=f"{g:g}") if "{g}" in c else c for c in _OVERVIEW if g is not None or "{g}" not in c]
    cols = [c for c in wanted if c in summary.columns and _TWINS.get(c) not in summary.columns]
    extra = [c for c in summary.columns if c not in cols and any(p.search(str(c)) for p in _OVERVIEW_PATTERNS)]
    at = cols.index("n_requests") if "n_requests" in cols else len(cols)
    cols = cols[:at] + extra + cols[at:]
    return cols[:_MAX_OVERVIEW]


def _png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk.

    Raises:
        ValueError: ``data`` is not a PNG.
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("report.html: a plot is not a PNG file")
    return struct.unpack(">II", data[16:24])


def _llm_order(values: Sequence[object]) -> list[str]:
    return sorted({str(v) for v in values}, key=_natural_key)


def _popularity_sorted(df: pd.DataFrame) -> pd.DataFrame:
    """``df``'s rows with their LLMs in natural order (llm-0 first), stable otherwise."""
    names = [str(v) for v in df["llm"]]
    return df.iloc[sorted(range(len(df)), key=lambda i: _natural_key(names[i]))]


def _per_llm(summary: pd.DataFrame, cols: list[str], has_status: bool) -> list[dict]:
    rows = summary[summary["llm"] != _ALL]
    if rows.empty:
        return []
    # overall-only figures (e.g. total_throughput_rps) are empty on per-LLM rows
    cols = ["llm", "model"] + [c for c in cols if c not in ("cell", "strategy") and c in rows.columns
                               and rows[c].notna().any()]
    out = []
    for (cell, strategy), g in rows.groupby(["cell", "strategy"], sort=False):
        g = _popularity_sorted(g)
        out.append({"title": f"{cell} | {strategy} ({len(g)} LLMs)", "table": _table(g, cols, has_status)})
    return out


def _ratio(num: pd.Series, den: pd.Series) -> np.ndarray:
    n, d = num.to_numpy(dtype=float, na_value=np.nan), den.to_numpy(dtype=float, na_value=np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > 0, n / d, np.nan)


def _estimate_tables(summary: pd.DataFrame, has_status: bool) -> tuple[_Table, _Table]:
    """Overall and per-LLM rows: offered rate, the placement's estimate and the simulated
    throughput (overall: the sum of per-LLM throughputs when the summary has it), with the
    ratios served / estimate and served / offered."""
    offered = "offered_rate_rps" if "offered_rate_rps" in summary.columns else "rate_rps"
    est = "estimated_throughput_rps"

    def with_ratios(df: pd.DataFrame, served: str) -> pd.DataFrame:
        out = df.copy()
        if est in out.columns and served in out.columns:
            out["served / estimate"] = _ratio(out[served], out[est])
        if offered in out.columns and served in out.columns:
            out["served / offered"] = _ratio(out[served], out[offered])
        return out

    served_all = "total_throughput_rps" if "total_throughput_rps" in summary.columns else "throughput_rps"
    overall = with_ratios(summary[summary["llm"] == _ALL], served_all)
    per = with_ratios(summary[summary["llm"] != _ALL], "throughput_rps")
    tail = [offered, est, "served / estimate", "served / offered"]
    return (_table(overall, ["cell", "strategy", "latency_source", offered, est, served_all, *tail[2:]],
                   has_status, section_col="cell"),
            _table(per, ["cell", "strategy", "llm", "model", "latency_source", offered, est, "throughput_rps",
                         *tail[2:]], has_status, section_col="strategy"))


def _pct(v: object) -> str:
    return f"{float(v):g}"


def _placements(facts: Mapping, llm_models: Mapping[str, str]) -> list[dict]:
    """Per run of ``facts["placements"]`` (run.json's): a title and a table of its meshes."""
    out = []
    for run, p in (facts.get("placements") or {}).items():
        if not isinstance(p, Mapping):
            continue
        est = p.get("estimated_throughput_rps") or {}
        meshes = p.get("meshes") or []
        t = _Table(["mesh", "node", "GPUs", "LLMs", "models", "SM share prefill / decode (%)",
                    "estimated throughput (req/s)"])
        for i, m in enumerate(meshes):
            llms = [str(n) for n in m.get("llms", [])]
            sm = m.get("sm") or {}
            shares = "; ".join(f"{n}: {_pct(sm[n][0])} / {_pct(sm[n][1])}" for n in llms if n in sm)
            models = ", ".join(f"{n}: {llm_models[n]}" for n in llms if n in llm_models)
            per_llm = "; ".join(f"{n}: {_fmt_number(float(est[n]))}" for n in llms if n in est)
            total = sum(float(est[n]) for n in llms if n in est)
            t.rows.append(_Row([_Cell(str(i)), _Cell(str(m.get("node", "n/a"))), _Cell(str(m.get("gpus", "n/a"))),
                                _Cell(", ".join(llms), "text"), _Cell(models, "text"), _Cell(shares, "text"),
                                _Cell(f"{_fmt_number(total)} ({per_llm})" if per_llm else "n/a", "text")]))
        gpus = sum(int(m.get("gpus", 0)) for m in meshes)
        total = sum(float(v) for v in est.values())
        bits = [f"method: {p.get('method', 'n/a')}"]
        for k in ("score", "layouts_searched", "candidates_simulated"):
            if k in p:
                bits.append(f"{k.replace('_', ' ')}: {p[k]}")
        out.append({"title": f"{run}: {len(meshes)} mesh{'es' if len(meshes) != 1 else ''}, {gpus} GPUs, "
                             f"estimate {_fmt_number(total)} req/s",
                    "facts": "; ".join(bits), "table": t})
    return out


def _latency(facts: Mapping, summary: pd.DataFrame) -> _Table | None:
    sources = facts.get("latency_model")
    if not isinstance(sources, Mapping) or not sources:
        return None
    t = _Table(["model", "latency source", "LLMs"])
    if "model" in summary.columns:
        per = summary[summary["llm"] != _ALL]
        llms_of = {m: _llm_order(g["llm"]) for m, g in per.groupby("model", sort=False)}
    else:
        llms_of = {}
    for model in sorted(sources, key=_natural_key):
        src = str(sources[model])
        roof = "roofline" in src
        names = llms_of.get(model, [])
        t.rows.append(_Row([_Cell(str(model), "text"),
                            _text(_roofline_text(src) if roof else src),
                            _Cell(", ".join(names) if len(names) <= 8 else f"{names[0]} ... {names[-1]} ({len(names)})",
                                  "text")], "roofline" if roof else ""))
    return t


def _facts(resolved_config: Mapping, seed: int, version: str, summary: pd.DataFrame,
           facts: Mapping) -> list[tuple[str, str]]:
    cfg = resolved_config if isinstance(resolved_config, Mapping) else {}
    out: list[tuple[str, str]] = [("experiment", str(cfg.get("name", "n/a"))), ("seed", str(seed)),
                                  ("muxsim version", str(version))]
    if "command" in facts:
        out.append(("command", str(facts["command"])))
    cluster = cfg.get("cluster")
    if isinstance(cluster, Mapping):
        out.append(("cluster", ", ".join(f"{k}: {cluster[k]}" for k in sorted(cluster) if cluster[k] is not None)))
    llms = cfg.get("llms")
    if isinstance(llms, list):
        out.append(("LLMs", ", ".join(f"{d.get('count', 1)} x {d.get('model')}" if isinstance(d, Mapping) else str(d)
                                      for d in llms)))
    if cfg.get("strategies"):
        out.append(("strategies", ", ".join(map(str, cfg["strategies"]))))
    cells = list(pd.unique(summary["cell"].astype(str))) if "cell" in summary.columns else []
    out.append(("cells", f"{len(cells)}: " + ", ".join(cells) if len(cells) <= 12
                else f"{len(cells)}: {cells[0]} ... {cells[-1]}"))
    overall = summary[summary["llm"] == _ALL] if "llm" in summary.columns else summary.iloc[:0]
    if "n_requests" in overall.columns:
        out.append(("simulated requests", f"{int(overall['n_requests'].sum()):,}"))
    slo = cfg.get("slo")
    if isinstance(slo, Mapping):
        out.append(("SLO", ", ".join(f"{k}: {slo[k]}" for k in sorted(slo) if slo[k] is not None)))
    for k in sorted(facts):
        v = facts[k]
        if k in ("command", "placements", "latency_model"):
            continue
        if isinstance(v, (str, int, float, bool)) or (isinstance(v, list) and all(
                isinstance(x, (str, int, float, bool)) for x in v)):
            out.append((k.replace("_", " "), (", ".join(map(str, v)) or "none") if isinstance(v, list) else str(v)))
    return out


def _notes(facts: Mapping, summary: pd.DataFrame) -> list[dict]:
    notes = []
    roof = facts.get("roofline_models") or []
    if roof:
        notes.append({"flag": "roofline:", "text": f"latencies of {', '.join(map(str, roof))} come from the roofline "
                      "model (not calibrated on this GPU); their rows are marked."})
    scaled = facts.get("fitted_scaled_models") or []
    if scaled:
        notes.append({"flag": "scaled:", "text": f"latencies of {', '.join(map(str, scaled))} are fitted curves scaled "
                      "to a mesh size that was not profiled."})
    if "status" in summary.columns:
        bad = summary[(summary["llm"] == _ALL) & summary["status"].map(_not_run)]
        if len(bad):
            notes.append({"flag": "not run:", "text": f"{len(bad)} cell x strategy runs could not be placed (see the table)."})
    return notes


@lru_cache(maxsize=1)
def _template():
    from importlib.resources import files

    import jinja2

    text = files("muxsim").joinpath("templates/report.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    return env.from_string(text)


def render_report(
    summary: pd.DataFrame,
    ratios: pd.DataFrame | None,
    resolved_config: Mapping,
    config_yaml: str,
    seed: int,
    version: str,
    plots: Mapping[str, bytes],
    facts: Mapping | None = None,
    files: Sequence[str] = (),
) -> str:
    """The run's ``report.html`` as text (UTF-8, ``\\n`` line ends).

    Args:
        summary: output of :func:`muxsim.metrics.summarize` (overall rows ``llm == "all"``
            and per-LLM rows; any further columns are shown too).
        ratios: output of :func:`muxsim.metrics.ratios` (ratios.csv), or None / empty.
        resolved_config: the resolved configuration (its name, cluster, LLMs, strategies, SLO
            are listed among the run facts).
        config_yaml: ``config.resolved.yaml``'s text, shown as it is.
        seed, version: the run's seed and muxsim version.
        plots: PNG bytes by file name, in the order shown (captions from :data:`PLOT_CAPTIONS`).
        facts: run.json's further facts (``placements``, ``latency_model``,
            ``roofline_models``, ``fitted_scaled_models``, ...); missing ones are said to be
            not recorded.
        files: the names of the run's other output files, for the footer.

    Returns:
        The page; the same inputs give the same text.

    Raises:
        ValueError: ``summary`` lacks ``cell``, ``strategy`` or ``llm``; a plot is not a PNG.
    """
    missing = [c for c in ("cell", "strategy", "llm") if c not in summary.columns]
    if missing:
        raise ValueError(f"render_report: summary lacks column(s) {missing}")
    facts = dict(facts or {})
    # every summary has status and reason; they are shown only when a run could not be placed
    has_status = "status" in summary.columns and bool(summary["status"].map(_not_run).any())
    if not has_status:
        summary = summary.drop(columns=[c for c in ("status", "reason") if c in summary.columns])
    overall = summary[summary["llm"] == _ALL].reset_index(drop=True)
    cols = overview_columns(summary)
    infeasible = None
    if has_status:
        bad = overall[overall["status"].map(_not_run)]
        if len(bad):
            infeasible = _table(bad, ["cell", "strategy", "status", "reason"], has_status)
    ratios_table = None
    if ratios is not None and not ratios.empty:
        ratios_table = _table(ratios, list(ratios.columns), section_col="cell")
    llm_models = {}
    if "model" in summary.columns:
        per = summary[summary["llm"] != _ALL]
        llm_models = {str(k): str(v) for k, v in zip(per["llm"], per["model"])}
    shown = []
    for name, data in plots.items():
        w, h = _png_size(data)
        shown.append({"id": name.rsplit(".", 1)[0].replace("_", "-"), "name": name, "width": w, "height": h,
                      "data": base64.b64encode(data).decode("ascii"), "caption": PLOT_CAPTIONS.get(name, ""),
                      "alt": f"{name}: {PLOT_CAPTIONS.get(name, 'plot')}"})
    est_overall, est_llm = _estimate_tables(summary, has_status)
    other = []
    for k in sorted(facts):
        v = facts[k]
        if k not in ("placements", "latency_model") and isinstance(v, Mapping):
            other.append((f"{k.replace('_', ' ')} (run.json)", json.dumps(v, indent=2, sort_keys=True)))
    name = str(resolved_config.get("name", "run")) if isinstance(resolved_config, Mapping) else "run"
    g = _goodput_scale(summary)
    nav = [("run", "Run"), ("summary", "Summary"), ("ratios", "Ratios"), ("plots", "Plots"),
           ("per-llm", "Per LLM"), ("estimate", "Estimate vs simulation"), ("latency", "Latency sources"),
           ("placements", "Placements"), ("config", "Configuration")]
    return _template().render(
        name=name,
        subtitle=(f"{len(overall)} runs (cell x strategy); seed {seed}; muxsim {version}"
                  + (f"; goodput and attainment at SLO scale {g:g}" if g is not None else "")),
        nav=nav, facts=_facts(resolved_config, seed, version, summary, facts), notes=_notes(facts, summary),
        has_status=has_status, overview=_table(overall, cols, has_status, section_col="cell"),
        overall_all=_table(overall, list(overall.columns), has_status, section_col="cell"),
        infeasible=infeasible, ratios=ratios_table, plots=shown,
        per_llm=_per_llm(summary, cols, has_status), estimate_overall=est_overall, estimate_llm=est_llm,
        latency=_latency(facts, summary), placements=_placements(facts, llm_models),
        config_yaml=config_yaml, other_facts=other, version=version, files=", ".join(files),
    )
