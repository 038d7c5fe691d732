"""Request-level and aggregate serving metrics as MuxServe defines them (../shared/docs/muxserve.md
§9).

Input is one request table (a :class:`pandas.DataFrame`, one row per request, all cells of a sweep
concatenated) with the columns of :data:`REQUEST_COLUMNS` plus any sweep-parameter columns that
are constant within a cell (e.g. ``alpha``, ``max_rate``). Times are simulation seconds measured
from the start of the run (time 0, when arrivals begin); ``NaN`` means "not reached".

Definitions (per request):

- TTFT (s) = ``first_token_s - arrival_s``.
- TPOT (s/token) = ``(finish_s - first_token_s) / output_tokens`` (the paper divides by all output
  tokens, not ``output_tokens - 1``).
- latency (s) = ``finish_s - arrival_s``.
- The request meets its SLO at scale ``s`` when it finished and ``latency <= s * slo_base_s``,
  ``slo_base_s`` being its latency served alone.

Definitions (per group, e.g. one cell x strategy, and per LLM inside it):

- last completion (s) = the largest ``finish_s`` of the finished requests (clock starts at 0).
- throughput (req/s) = finished requests / last completion. The overall row (``llm == "all"``)
  uses ALL finished requests of the group over the last completion of ANY of its LLMs; it is
  therefore not the sum of the per-LLM throughputs (each of those has its own denominator).
  A group with no finished request has throughput 0.
- goodput at scale ``g`` (req/s) = requests meeting the SLO at scale ``g`` / last completion
  (the same denominator as throughput).
- SLO attainment at scale ``s`` = requests meeting the SLO at ``s`` / all requests that arrived;
  unfinished requests count as misses.
- total throughput (req/s, MuxServe's reported figure) = the sum of the group's per-LLM
  throughputs; rate-weighted throughput (the paper's throughput figure) = sum_i rate_i x
  throughput_i / N over the experiment's N LLMs (:func:`add_serving_columns`).
- TTFT / TPOT / latency percentiles (linear interpolation, like :func:`numpy.percentile`) are
  over FINISHED requests only, so the three describe the same population. Requests cut off by the
  drain limit do not appear in them; the attainment columns are what penalises them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from muxsim.core.records import REQUEST_COLUMNS as _RECORD_COLUMNS

__all__ = [
    "REQUEST_COLUMNS",
    "PERCENTILES",
    "ALL_LLMS",
    "request_metrics",
    "summarize",
    "ratios",
    "sweep_columns",
    "attainment_column",
    "base_attainment_column",
    "add_serving_columns",
]

#: Columns of a run's request table: the cell and strategy, then what both drivers write for
#: every request (:data:`muxsim.core.records.REQUEST_COLUMNS`).
REQUEST_COLUMNS: tuple[str, ...] = ("cell", "strategy") + _RECORD_COLUMNS

#: Percentiles reported for TTFT, TPOT and latency (in percent).
PERCENTILES: tuple[int, ...] = (50, 90, 99)

#: The ``llm`` (and ``model``) value of a group's overall row in :func:`summarize`'s output.
ALL_LLMS = "all"

_REQUEST_METRIC_COLUMNS = ("ttft_s", "tpot_s", "latency_s")
_LATENCY_METRICS = ("ttft", "tpot", "latency")

# Inputs summarize() reads (besides the group columns).
_SUMMARY_INPUTS = (
    "llm",
    "arrival_s",
    "first_token_s",
    "finish_s",
    "prompt_tokens",
    "output_tokens",
    "preemptions",
    "finished",
    "slo_base_s",
)

_ATTAINMENT_PREFIX = "slo_attainment@"

# Columns of summarize()'s output that are metrics, not keys or sweep parameters, in output
# order around the attainment columns.
_COUNT_COLUMNS = ("goodput_scale", "n_requests", "n_finished", "n_unfinished", "last_completion_s",
                  "throughput_rps", "goodput_rps")
#: Columns :func:`add_serving_columns` adds (metrics, not sweep parameters).
_SERVING_COLUMNS = ("slo_base", "rate_rps", "estimated_throughput_rps", "total_throughput_rps",
                    "weighted_throughput_rps")
_PERCENTILE_COLUMNS = tuple(f"{m}_p{p}_s" for m in _LATENCY_METRICS for p in PERCENTILES)
_TAIL_COLUMNS = ("mean_prompt_tokens", "mean_output_tokens", "preemptions")
_SUMMARY_METRIC_COLUMNS = frozenset(_COUNT_COLUMNS + _PERCENTILE_COLUMNS + _TAIL_COLUMNS + _SERVING_COLUMNS)


def _require(df: pd.DataFrame, columns: Iterable[str], where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; have {list(df.columns)}")


def _as_float(s: pd.Series) -> np.ndarray:
    # na_value covers nullable dtypes (Int64, Float64), whose NA would not convert otherwise.
    return s.to_numpy(dtype=float, na_value=np.nan)


def attainment_column(scale: float) -> str:
    """Name of the SLO-attainment column for SLO scale ``scale`` (``:g`` format, e.g. ``8`` ->
    ``"slo_attainment@8"``, ``2.5`` -> ``"slo_attainment@2.5"``)."""
    return f"{_ATTAINMENT_PREFIX}{float(scale):g}"


def base_attainment_column(base: str, scale: float) -> str:
    """Name of the SLO-attainment column under SLO base ``base`` (``alone``, ``reference``) at
    ``scale``, e.g. ``"slo_attainment_reference@8"``; :func:`summarize` writes them at the
    goodput scale for every base its input carries."""
    return f"slo_attainment_{base}@{float(scale):g}"


def request_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """Per-request TTFT, TPOT and latency.

    Args:
        df: request table with at least ``arrival_s``, ``first_token_s``, ``finish_s`` (s) and
            ``output_tokens`` (tokens); any other columns are kept.

    Returns:
        A new frame (same rows, same index; the input is not modified) with the columns
        ``ttft_s`` (s), ``tpot_s`` (s per output token) and ``latency_s`` (s) added or replaced.
        A metric is ``NaN`` when a time it needs is ``NaN`` (not reached); ``tpot_s`` is also
        ``NaN`` when ``output_tokens <= 0``.

    Raises:
        ValueError: a required column is missing.
    """
    _require(df, ("arrival_s", "first_token_s", "finish_s", "output_tokens"), "request_metrics")
    arrival = _as_float(df["arrival_s"])
    first = _as_float(df["first_token_s"])
    finish = _as_float(df["finish_s"])
    tokens = _as_float(df["output_tokens"])
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(tokens > 0, (finish - first) / tokens, np.nan)
    return df.assign(ttft_s=first - arrival, tpot_s=tpot, latency_s=finish - arrival)


def _finished_mask(df: pd.DataFrame) -> np.ndarray:
    col = df["finished"]
    if col.isna().any():
        # astype(bool) would turn NaN into True and count lost requests as served.
        raise ValueError(f"column 'finished' has {int(col.isna().sum())} missing value(s)")
    return col.to_numpy(dtype=bool)


def _scale_labels(slo_scales: Sequence[float], goodput_scale: float) -> dict[str, float]:
    scales = [float(s) for s in slo_scales] + [float(goodput_scale)]
    bad = [s for s in scales if not (math.isfinite(s) and s > 0)]
    if bad:
        raise ValueError(f"SLO scales must be finite and > 0, got {bad}")
    # Keyed by the formatted label so 8 and 8.0 (same column name) collapse into one.
    return {attainment_column(s): s for s in sorted(set(scales))}


def _aggregate(
    work: pd.DataFrame, keys: list[str], labels: list[str], goodput_label: str
) -> pd.DataFrame:
    """Metrics of each group of ``work`` (one row per group, in order of first appearance)."""
    g = work.groupby(keys, sort=False, observed=True)
    named = {
        "n_requests": ("finished", "size"),
        "n_finished": ("finished", "sum"),
        "last_completion_s": ("finish_s", "max"),
        "mean_prompt_tokens": ("prompt_tokens", "mean"),
        "mean_output_tokens": ("output_tokens", "mean"),
        "preemptions": ("preemptions", "sum"),
        "_first_row": ("_row", "min"),
    }
    named.update({f"_meet{i}": (f"_meet{i}", "sum") for i in range(len(labels))})
    agg = g.agg(**named)

    qs = [p / 100 for p in PERCENTILES]
    quant = g[list(_REQUEST_METRIC_COLUMNS)].quantile(qs)
    # unstack() re-sorts the group keys; reindex restores first-appearance order.
    quant = quant.unstack(level=-1).reindex(agg.index)
    for metric, col in zip(_LATENCY_METRICS, _REQUEST_METRIC_COLUMNS):
        for p, q in zip(PERCENTILES, qs):
            agg[f"{metric}_p{p}_s"] = quant[(col, q)].to_numpy(dtype=float) if len(agg) else []

    n = agg["n_requests"].to_numpy(dtype=float)
    n_fin = agg["n_finished"].to_numpy(dtype=float)
    last = agg["last_completion_s"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        # No completion: nothing was served, so 0 req/s rather than NaN (0 / undefined time).
        agg["throughput_rps"] = np.where(n_fin > 0, n_fin / last, 0.0)
        hits = agg[f"_meet{labels.index(goodput_label)}"].to_numpy(dtype=float)
        agg["goodput_rps"] = np.where(hits > 0, hits / last, 0.0)
        for i, label in enumerate(labels):
            agg[label] = agg[f"_meet{i}"].to_numpy(dtype=float) / n
    agg["n_unfinished"] = agg["n_requests"] - agg["n_finished"]
    agg = agg.drop(columns=[f"_meet{i}" for i in range(len(labels))])
    return agg.reset_index()


def sweep_columns(
    summary: pd.DataFrame, cell_cols: Sequence[str] = ("cell",), strategy_col: str = "strategy"
) -> list[str]:
    """Sweep-parameter columns of a :func:`summarize` output (e.g. ``["alpha", "max_rate"]``).

    These are the columns that are neither keys (``cell_cols``, ``strategy_col``, ``llm``,
    ``model``) nor metrics. Returns them in column order; an empty list when there are none.
    """
    keys = set(cell_cols) | {strategy_col, "llm", "model"}
    return [
        c
        for c in summary.columns
        if c not in keys
        and c not in _SUMMARY_METRIC_COLUMNS
        and not str(c).startswith("slo_attainment")
    ]


def summarize(
    df: pd.DataFrame,
    slo_scales: Sequence[float],
    goodput_scale: float,
    group_cols: Sequence[str] = ("cell", "strategy"),
) -> pd.DataFrame:
    """Aggregate metrics per group and LLM, plus one overall row per group.

    Args:
        df: request table (see :data:`REQUEST_COLUMNS`); needs ``group_cols`` and ``llm``,
            ``arrival_s``, ``first_token_s``, ``finish_s``, ``slo_base_s`` (s), ``prompt_tokens``,
            ``output_tokens`` (tokens), ``preemptions`` (count), ``finished`` (bool). ``model``
            is carried when present. Any column outside the request schema that is constant
            within every group (a sweep parameter such as ``alpha``) is carried to the output;
            columns that vary within a group are dropped.
        slo_scales: SLO scales (> 0) to report attainment at, one ``slo_attainment@<scale>``
            column each (scale formatted with ``:g``).
        goodput_scale: SLO scale (> 0) that defines goodput; attainment at this scale is always
            reported too, even if absent from ``slo_scales``.
        group_cols: columns identifying one simulated configuration (default cell x strategy).

    Returns:
        One row per (group..., llm) followed by the group's overall row (``llm == "all"``,
        ``model == "all"``). Groups appear in their order of first appearance in ``df``; LLMs in
        natural order (``llm-2`` before ``llm-10``). Columns: ``group_cols``, ``llm``, ``model``
        (when in ``df``), sweep parameters, ``goodput_scale``, ``n_requests``, ``n_finished``,
        ``n_unfinished`` (counts), ``last_completion_s`` (s; NaN without completion),
        ``throughput_rps``, ``goodput_rps`` (req/s), ``slo_attainment@<scale>`` (fraction 0..1,
        ascending scales), ``{ttft,tpot,latency}_p{50,90,99}_s`` (s; TPOT in s per token),
        ``mean_prompt_tokens``, ``mean_output_tokens`` (tokens, over all arrived requests) and
        ``preemptions`` (total count). Definitions in the module docstring.

    Raises:
        ValueError: a required column is missing; ``group_cols`` is empty, repeated or contains
            ``llm``; a key column has missing values; an LLM is named ``"all"``; ``finished``
            has missing values; a finished request lacks ``first_token_s`` or ``finish_s``; a
            scale is not finite and > 0.
    """
    group_cols = list(group_cols)
    if not group_cols or len(set(group_cols)) != len(group_cols) or "llm" in group_cols:
        raise ValueError(
            f"summarize: group_cols must be non-empty, distinct and exclude 'llm', got {group_cols}"
        )
    _require(df, [*group_cols, *_SUMMARY_INPUTS], "summarize")
    labels = _scale_labels(slo_scales, goodput_scale)
    for c in [*group_cols, "llm"]:
        if df[c].isna().any():
            # groupby would silently drop these rows.
            n_missing = int(df[c].isna().sum())
            raise ValueError(f"summarize: key column {c!r} has {n_missing} missing value(s)")

    finished = _finished_mask(df)
    m = request_metrics(df[["arrival_s", "first_token_s", "finish_s", "output_tokens"]])
    finish = _as_float(df["finish_s"])
    broken = finished & (np.isnan(finish) | np.isnan(_as_float(df["first_token_s"])))
    if broken.any():
        raise ValueError(
            f"summarize: {int(broken.sum())} finished request(s) have no first_token_s or finish_s"
        )

    # Keys are factorized once into integer codes: grouping 2M rows by string columns again for
    # every aggregation (and converting them back and forth) would dominate the run time.
    # ngroup(sort=False) numbers groups in order of first appearance.
    gcode = df.groupby(group_cols, sort=False, observed=True).ngroup().to_numpy()
    lcode, llm_names = pd.factorize(df["llm"].astype(str))
    llm_names = np.asarray(llm_names, dtype=object)
    if (llm_names == ALL_LLMS).any():
        raise ValueError(f"summarize: an LLM is named {ALL_LLMS!r}, reserved for overall rows")

    work = pd.DataFrame({"_g": gcode, "_l": lcode, "_row": np.arange(len(df))})
    work["finished"] = finished
    work["finish_s"] = np.where(finished, finish, np.nan)
    for col in _REQUEST_METRIC_COLUMNS:
        work[col] = np.where(finished, m[col].to_numpy(dtype=float), np.nan)
    work["prompt_tokens"] = _as_float(df["prompt_tokens"])
    work["output_tokens"] = _as_float(df["output_tokens"])
    work["preemptions"] = _as_float(df["preemptions"])
    latency = work["latency_s"].to_numpy()
    base = _as_float(df["slo_base_s"])
    label_list = list(labels)
    for i, scale in enumerate(labels.values()):
        # NaN latency (unfinished) or NaN base compares False: a miss.
        work[f"_meet{i}"] = latency <= scale * base

    goodput_label = attainment_column(goodput_scale)
    # attainment at the goodput scale under each SLO base the table carries (both are written
    # per request; the plain columns use slo_base_s)
    for base in ("alone", "reference"):
        col = f"slo_base_{base}_s"
        if col in df.columns:
            label_list.append(base_attainment_column(base, goodput_scale))
            work[f"_meet{len(label_list) - 1}"] = latency <= float(goodput_scale) * _as_float(df[col])
    fine = _aggregate(work, ["_g", "_l"], label_list, goodput_label)
    coarse = _aggregate(work, ["_g"], label_list, goodput_label).sort_values("_g")
    fine["llm"] = llm_names[fine["_l"].to_numpy()] if len(fine) else np.array([], dtype=object)
    coarse["llm"] = ALL_LLMS
    has_model = "model" in df.columns
    if has_model:
        # The first request's model; taking only those rows avoids converting the whole column.
        fine["model"] = df["model"].iloc[fine["_first_row"].to_numpy()].to_numpy()
        coarse["model"] = ALL_LLMS

    # Order: groups by first appearance, inside a group the LLMs naturally sorted, overall last.
    out = pd.concat([fine.drop(columns="_l"), coarse], ignore_index=True)
    out["_all"] = out["llm"] == ALL_LLMS
    llm_s = out["llm"].astype(str)
    out["_prefix"] = llm_s.str.replace(r"\d+$", "", regex=True)
    out["_num"] = pd.to_numeric(llm_s.str.extract(r"(\d+)$")[0], errors="coerce")
    out = out.sort_values(["_g", "_all", "_prefix", "_num", "llm"], kind="mergesort")

    sweep = _constant_extras(df, group_cols, gcode)
    keys = df[[*group_cols, *sweep]].iloc[coarse["_first_row"].to_numpy()].reset_index(drop=True)
    keys["_g"] = coarse["_g"].to_numpy()
    out = out.merge(keys, on="_g", how="left")
    out["goodput_scale"] = float(goodput_scale)

    order = [
        *group_cols,
        "llm",
        *(["model"] if has_model else []),
        *sweep,
        *_COUNT_COLUMNS,
        *label_list,
        *_PERCENTILE_COLUMNS,
        *_TAIL_COLUMNS,
    ]
    out = out[order].reset_index(drop=True)
    for c in ("n_requests", "n_finished", "n_unfinished", "preemptions"):
        out[c] = out[c].astype("int64")
    return out


def _constant_extras(df: pd.DataFrame, group_cols: list[str], gcode: np.ndarray) -> list[str]:
    """Non-schema columns of ``df`` that hold one value per group (the sweep parameters)."""
    known = set(REQUEST_COLUMNS) | set(_REQUEST_METRIC_COLUMNS) | set(group_cols) | {
        "slo_base_alone_s", "slo_base_reference_s"}
    extras = [c for c in df.columns if c not in known]
    if not extras or df.empty:
        # Without rows every extra column is trivially constant; keep it for a stable schema.
        return extras
    counts = df[extras].groupby(gcode, sort=False).nunique(dropna=False)
    return [c for c in extras if int(counts[c].max()) <= 1]


def add_serving_columns(summary: pd.DataFrame, llm_facts: pd.DataFrame, n_llms: int,
                        slo_base: str, keys: Sequence[str] = ("cell", "strategy")) -> pd.DataFrame:
    """Add the offered rate, the placement's estimate and MuxServe's throughput figures to a
    :func:`summarize` output.

    Args:
        summary: :func:`summarize` output grouped by ``keys``.
        llm_facts: one row per (``keys``..., ``llm``): ``rate_rps`` (the LLM's arrival rate,
            req/s) and ``estimated_throughput_rps`` (its placement's estimate, req/s).
        n_llms: LLMs of the experiment (N of the rate-weighted mean: an LLM with no request
            counts as 0).
        slo_base: the SLO base the attainment columns use (for the ``slo_base`` column).

    Returns:
        A copy with columns ``slo_base``; ``rate_rps`` and ``estimated_throughput_rps`` (per LLM;
        their sums on overall rows); ``total_throughput_rps`` (sum of the per-LLM throughputs,
        req/s) and ``weighted_throughput_rps`` (sum_i rate_i x throughput_i / N, req^2/s^2, the
        paper's throughput figure) on overall rows, NaN on per-LLM rows.

    Raises:
        ValueError: a required column is missing.
    """
    keys = list(keys)
    _require(llm_facts, [*keys, "llm", "rate_rps", "estimated_throughput_rps"], "add_serving_columns")
    out = summary.merge(llm_facts[[*keys, "llm", "rate_rps", "estimated_throughput_rps"]],
                        on=[*keys, "llm"], how="left")
    per = out[out["llm"] != ALL_LLMS]
    g = per.groupby(keys, sort=False)
    totals = pd.DataFrame({
        "_rate": g["rate_rps"].sum(min_count=1),
        "_est": g["estimated_throughput_rps"].sum(min_count=1),
        "_total": g["throughput_rps"].sum(),
        "_weighted": g.apply(lambda d: float((d["rate_rps"] * d["throughput_rps"]).sum()) / n_llms,
                             include_groups=False),
    }).reset_index()
    out = out.merge(totals, on=keys, how="left")
    overall = out["llm"] == ALL_LLMS
    out.loc[overall, "rate_rps"] = out.loc[overall, "_rate"]
    out.loc[overall, "estimated_throughput_rps"] = out.loc[overall, "_est"]
    out["total_throughput_rps"] = np.where(overall, out["_total"], np.nan)
    out["weighted_throughput_rps"] = np.where(overall, out["_weighted"], np.nan)
    out = out.drop(columns=["_rate", "_est", "_total", "_weighted"])
    out.insert(out.columns.get_loc("throughput_rps"), "slo_base", slo_base)
    cols = list(out.columns)
    for c in ("rate_rps", "estimated_throughput_rps", "total_throughput_rps", "weighted_throughput_rps"):
        cols.remove(c)
    at = cols.index("throughput_rps")
    return out[cols[:at] + ["rate_rps", "estimated_throughput_rps", "throughput_rps",
                            "total_throughput_rps", "weighted_throughput_rps"] + cols[at + 1:]]


def ratios(
    summary: pd.DataFrame,
    reference: str = "muxserve",
    on: str = "throughput_rps",
    cell_cols: Sequence[str] = ("cell",),
    strategy_col: str = "strategy",
) -> pd.DataFrame:
    """The reference strategy's overall metric divided by each other strategy's, per cell.

    Args:
        summary: output of :func:`summarize`; only its overall rows (``llm == "all"``) are used.
        reference: the strategy in the numerator.
        on: the metric column to compare (e.g. ``"throughput_rps"``, ``"goodput_rps"``).
        cell_cols: columns identifying a cell.
        strategy_col: column naming the strategy.

    Returns:
        One row per cell (order of first appearance): ``cell_cols``, the cell's sweep-parameter
        columns, ``metric`` (= ``on``) and one column ``"<reference>/<strategy>"`` per other
        strategy (order of first appearance), dimensionless. NaN where either strategy is absent
        from the cell or both values are 0; ``inf`` where only the other strategy's value is 0.

    Raises:
        ValueError: a required column is missing; ``reference`` has no overall row; a cell has
            more than one overall row for one strategy.
    """
    cell_cols = list(cell_cols)
    _require(summary, [*cell_cols, strategy_col, "llm", on], "ratios")
    rows = summary[summary["llm"] == ALL_LLMS]
    if not (rows[strategy_col] == reference).any():
        raise ValueError(
            f"ratios: reference strategy {reference!r} not among "
            f"{rows[strategy_col].unique().tolist()}"
        )
    if rows.duplicated(subset=[*cell_cols, strategy_col]).any():
        keys = ", ".join([*cell_cols, strategy_col])
        raise ValueError(f"ratios: several overall rows for one ({keys})")

    sweep = [c for c in sweep_columns(summary, cell_cols, strategy_col) if c in rows.columns]
    out = rows[[*cell_cols, *sweep]].drop_duplicates(subset=cell_cols).reset_index(drop=True)
    out["metric"] = on

    def values_of(strategy: str) -> np.ndarray:
        part = rows.loc[rows[strategy_col] == strategy, [*cell_cols, on]]
        # A left merge keeps the cells' order and yields NaN for cells the strategy lacks.
        return _as_float(out[cell_cols].merge(part, on=cell_cols, how="left")[on])

    ref = values_of(reference)
    others = [s for s in pd.unique(rows[strategy_col]) if s != reference]
    with np.errstate(divide="ignore", invalid="ignore"):
        for s in others:
            out[f"{reference}/{s}"] = ref / values_of(s)
    return out
