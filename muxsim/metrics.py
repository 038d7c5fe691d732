"""Request-level and aggregate serving metrics: MuxServe's (../shared/docs/muxserve.md §9) and
vLLM ``benchmark_serving``'s, under vLLM's names and definitions.

Input is one request table (a :class:`pandas.DataFrame`, one row per request, all cells of a sweep
concatenated) with the columns of :data:`REQUEST_COLUMNS` plus any sweep-parameter columns that
are constant within a cell (e.g. ``alpha``, ``max_rate``). Times are simulation seconds measured
from the start of the run (time 0, when arrivals begin); ``NaN`` means "not reached".

Definitions (per request, vLLM ``benchmark_serving``'s):

- TTFT (s) = ``first_token_s - arrival_s``.
- E2E latency, "e2el" (s) = ``finish_s - arrival_s`` (MuxServe's "latency").
- TPOT (s/token) = ``(e2el - ttft) / (output_tokens - 1)``, defined for requests with
  ``output_tokens > 1`` only (vLLM leaves the others out of its TPOT statistics; MuxServe's
  paper divided by all output tokens, which this module no longer reports).
- ITL (s): every gap between two consecutive tokens of a request, pooled over the requests
  (vLLM's ``itls``); the simulator records them in a :class:`muxsim.core.itl.ITLHistogram` per
  LLM and run, which :func:`summarize` takes. When every request finished their mean is
  ``sum(finish_s - first_token_s) / sum(output_tokens - 1)``. The simulator records the gaps of
  every token it emitted, so a request cut off by the drain limit after its first tokens adds
  its gaps too (unlike TTFT / TPOT / E2E, which are over finished requests).
- The request meets its SLO at (relative) scale ``s`` when it finished and ``e2el <= s *
  slo_base_s``, ``slo_base_s`` being its latency served alone (MuxServe's SLO).
- The request meets the absolute SLOs (``slo.ttft_ms``, ``slo.tpot_ms``, ``slo.e2e_ms``, any
  subset; vLLM's ``--goodput ttft:.. tpot:.. e2el:..``) when it finished and each given limit
  holds (``<=``); a request with ``output_tokens <= 1`` meets the TPOT limit (vLLM counts its
  TPOT as 0).

Definitions (per group, e.g. one cell x strategy, and per LLM inside it):

- duration = last completion (s) = the largest ``finish_s`` of the finished requests (clock
  starts at 0; vLLM's ``duration`` is the benchmark's wall time, which ends at its last
  completion too).
- throughput (req/s) = finished requests / last completion (``throughput_rps``, MuxServe's;
  ``request_throughput_rps`` is the same figure under vLLM's name). The overall row
  (``llm == "all"``) uses ALL finished requests of the group over the last completion of ANY of
  its LLMs; it is therefore not the sum of the per-LLM throughputs (each of those has its own
  denominator). A group with no finished request has throughput 0 (every rate below too).
- output token throughput (tok/s) = output tokens of the finished requests / last completion;
  total token throughput (tok/s) = (prompt + output) tokens of the finished requests / last
  completion.
- goodput at scale ``g`` (req/s) = requests meeting the SLO at scale ``g`` / last completion
  (``goodput_rps``); ``request_goodput_rps`` (vLLM's goodput) = requests meeting every given
  absolute SLO / last completion, NaN when no absolute SLO is set.
- SLO attainment at scale ``s`` = requests meeting the SLO at ``s`` / all requests that arrived;
  ``slo_attainment_abs`` likewise for the absolute SLOs (NaN when none is set). Unfinished
  requests count as misses.
- arrival rate (req/s) = requests that arrived / the arrival window, the window being ``[0, the
  group's last arrival]`` on every row of the group (per-LLM rows too, as
  :func:`muxsim.config.cells.rates_over_span` measures a replayed workload's rates); NaN when
  the window is 0 s long.
- TTFT / TPOT / E2E latency statistics (``mean``, ``median``, ``std`` with ddof 0, ``p90``,
  ``p99`` with linear interpolation: :func:`numpy.mean`, :func:`numpy.median`,
  :func:`numpy.std`, :func:`numpy.percentile`, as vLLM) are over FINISHED requests only (TPOT:
  those with ``output_tokens > 1``), in ms, so they describe the same population. Requests cut
  off by the drain limit do not appear in them; the attainment columns are what penalises them.
  A statistic without any sample is NaN (vLLM writes 0 there). ITL statistics come from the
  histograms (their percentiles within 0.1 %, :mod:`muxsim.core.itl`), NaN without one.
- total throughput (req/s, MuxServe's reported figure) = the sum of the group's per-LLM
  throughputs; rate-weighted throughput (the paper's throughput figure) = sum_i rate_i x
  throughput_i / N over the experiment's N LLMs (:func:`add_serving_columns`).
- cost (:func:`add_cost_columns`): USD per hour of the cluster and USD per million output
  tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from muxsim.core.records import REQUEST_COLUMNS as _RECORD_COLUMNS

__all__ = [
    "REQUEST_COLUMNS",
    "PERCENTILES",
    "LATENCY_METRICS",
    "STATISTICS",
    "ABS_SLO_KEYS",
    "ALL_LLMS",
    "stat_column",
    "request_metrics",
    "summarize",
    "ratios",
    "sweep_columns",
    "attainment_column",
    "base_attainment_column",
    "add_serving_columns",
    "add_cost_columns",
]

#: Columns of a run's request table: the cell and strategy, then what both drivers write for
#: every request (:data:`muxsim.core.records.REQUEST_COLUMNS`).
REQUEST_COLUMNS: tuple[str, ...] = ("cell", "strategy") + _RECORD_COLUMNS

#: Percentiles reported for every latency metric besides the median (in percent; vLLM's
#: ``--metric-percentiles`` choice of 90 and 99).
PERCENTILES: tuple[int, ...] = (90, 99)

#: Latency metrics with statistics in the summary, under vLLM ``benchmark_serving``'s names.
LATENCY_METRICS: tuple[str, ...] = ("ttft", "tpot", "itl", "e2el")

#: Statistics of each latency metric (module docstring), in column order.
STATISTICS: tuple[str, ...] = ("mean", "median", "std") + tuple(f"p{p}" for p in PERCENTILES)

#: Absolute SLOs :func:`summarize` takes (``slo.ttft_ms``, ``slo.tpot_ms``, ``slo.e2e_ms``; ms).
ABS_SLO_KEYS: tuple[str, ...] = ("ttft_ms", "tpot_ms", "e2e_ms")

#: The ``llm`` (and ``model``) value of a group's overall row in :func:`summarize`'s output.
ALL_LLMS = "all"

#: Per-request metrics of :func:`request_metrics` (s; TPOT s per token).
_REQUEST_METRIC_COLUMNS = ("ttft_s", "tpot_s", "e2el_s")
# the metrics request_metrics computes, in its column order
_TABLE_METRICS = ("ttft", "tpot", "e2el")

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


def stat_column(stat: str, metric: str) -> str:
    """Name of a latency statistic's summary column (ms), vLLM's: ``stat_column("p99", "ttft")``
    -> ``"p99_ttft_ms"``; ``stat`` one of :data:`STATISTICS`, ``metric`` of
    :data:`LATENCY_METRICS`."""
    return f"{stat}_{metric}_ms"


# Columns of summarize()'s output that are metrics, not keys or sweep parameters, in output
# order around the attainment columns.
_COUNT_COLUMNS = ("goodput_scale", "n_requests", "n_finished", "n_unfinished", "last_completion_s",
                  "throughput_rps", "goodput_rps")
#: vLLM benchmark_serving's rates and the absolute-SLO columns, after the counts.
_VLLM_COLUMNS = ("arrival_rate_rps", "request_throughput_rps", "output_throughput_tok_s",
                 "total_token_throughput_tok_s", "request_goodput_rps", "slo_attainment_abs")
#: Columns :func:`add_serving_columns` adds (metrics, not sweep parameters).
_SERVING_COLUMNS = ("slo_base", "offered_rate_rps", "estimated_throughput_rps", "total_throughput_rps",
                    "weighted_throughput_rps")
#: Columns :func:`add_cost_columns` adds.
_COST_COLUMNS = ("gpus", "cost_usd_per_hour", "usd_per_million_output_tokens")
_STAT_COLUMNS = tuple(stat_column(s, m) for m in LATENCY_METRICS for s in STATISTICS)
_TAIL_COLUMNS = ("mean_prompt_tokens", "mean_output_tokens", "preemptions")
_SUMMARY_METRIC_COLUMNS = frozenset(_COUNT_COLUMNS + _VLLM_COLUMNS + _STAT_COLUMNS + _TAIL_COLUMNS
                                    + _SERVING_COLUMNS + _COST_COLUMNS)


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
    """Per-request TTFT, TPOT and E2E latency (vLLM ``benchmark_serving``'s definitions, module
    docstring).

    Args:
        df: request table with at least ``arrival_s``, ``first_token_s``, ``finish_s`` (s) and
            ``output_tokens`` (tokens); any other columns are kept.

    Returns:
        A new frame (same rows, same index; the input is not modified) with the columns
        ``ttft_s`` (s), ``tpot_s`` (s per output token after the first:
        ``(e2el - ttft) / (output_tokens - 1)``) and ``e2el_s`` (s) added or replaced. A metric
        is ``NaN`` when a time it needs is ``NaN`` (not reached); ``tpot_s`` is also ``NaN``
        when ``output_tokens <= 1`` (no second token: vLLM leaves it out of its TPOT figures).

    Raises:
        ValueError: a required column is missing.
    """
    _require(df, ("arrival_s", "first_token_s", "finish_s", "output_tokens"), "request_metrics")
    arrival = _as_float(df["arrival_s"])
    first = _as_float(df["first_token_s"])
    finish = _as_float(df["finish_s"])
    tokens = _as_float(df["output_tokens"])
    ttft = first - arrival
    e2el = finish - arrival
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(tokens > 1, (e2el - ttft) / (tokens - 1), np.nan)
    return df.assign(ttft_s=ttft, tpot_s=tpot, e2el_s=e2el)


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


def _abs_limits(abs_slo: Mapping[str, float | None] | None) -> dict[str, float]:
    """The given absolute SLOs (ms) of ``abs_slo``, None values dropped.

    Raises:
        ValueError: an unknown key, or a value not finite and > 0.
    """
    limits = {k: v for k, v in (abs_slo or {}).items() if v is not None}
    unknown = sorted(set(limits) - set(ABS_SLO_KEYS))
    if unknown:
        raise ValueError(f"summarize: unknown absolute SLO(s) {unknown}; allowed: {', '.join(ABS_SLO_KEYS)}")
    bad = {k: v for k, v in limits.items() if not (math.isfinite(float(v)) and float(v) > 0)}
    if bad:
        raise ValueError(f"summarize: absolute SLOs must be finite and > 0 ms, got {bad}")
    return {k: float(v) for k, v in limits.items()}


def _aggregate(
    work: pd.DataFrame, keys: list[str], labels: list[str], goodput_label: str, has_abs: bool
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
        "_window": ("_window", "first"),
        "_out_fin": ("_out_fin", "sum"),
        "_tok_fin": ("_tok_fin", "sum"),
        "_abs": ("_abs", "sum"),
    }
    named.update({f"_meet{i}": (f"_meet{i}", "sum") for i in range(len(labels))})
    agg = g.agg(**named)

    cols = [f"{m}_s" for m in _TABLE_METRICS]
    qs = [0.5] + [p / 100 for p in PERCENTILES]
    quant = g[cols].quantile(qs)
    # unstack() re-sorts the group keys; reindex restores first-appearance order.
    quant = quant.unstack(level=-1).reindex(agg.index)
    mean = g[cols].mean()
    std = g[cols].std(ddof=0)
    for metric, col in zip(_TABLE_METRICS, cols):
        per = {"mean": mean[col], "std": std[col], "median": quant[(col, 0.5)] if len(agg) else []}
        per.update({f"p{p}": quant[(col, p / 100)] if len(agg) else [] for p in PERCENTILES})
        for stat in STATISTICS:
            # s -> ms
            agg[stat_column(stat, metric)] = np.asarray(per[stat], dtype=float) * 1e3

    n = agg["n_requests"].to_numpy(dtype=float)
    n_fin = agg["n_finished"].to_numpy(dtype=float)
    last = agg["last_completion_s"].to_numpy(dtype=float)
    window = agg["_window"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # No completion: nothing was served, so 0 req/s rather than NaN (0 / undefined time).
        agg["throughput_rps"] = np.where(n_fin > 0, n_fin / last, 0.0)
        hits = agg[f"_meet{labels.index(goodput_label)}"].to_numpy(dtype=float)
        agg["goodput_rps"] = np.where(hits > 0, hits / last, 0.0)
        agg["arrival_rate_rps"] = np.where(window > 0, n / window, np.nan)
        agg["request_throughput_rps"] = agg["throughput_rps"]
        agg["output_throughput_tok_s"] = np.where(n_fin > 0, agg["_out_fin"].to_numpy(dtype=float) / last, 0.0)
        agg["total_token_throughput_tok_s"] = np.where(n_fin > 0, agg["_tok_fin"].to_numpy(dtype=float) / last, 0.0)
        good = agg["_abs"].to_numpy(dtype=float)
        agg["request_goodput_rps"] = np.where(good > 0, good / last, 0.0) if has_abs else np.nan
        agg["slo_attainment_abs"] = good / n if has_abs else np.nan
        for i, label in enumerate(labels):
            agg[label] = agg[f"_meet{i}"].to_numpy(dtype=float) / n
    agg["n_unfinished"] = agg["n_requests"] - agg["n_finished"]
    agg = agg.drop(columns=[f"_meet{i}" for i in range(len(labels))] + ["_window", "_out_fin", "_tok_fin", "_abs"])
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


def _itl_stats(hist) -> list[float]:
    """:data:`STATISTICS` of an ITL histogram (ms), NaN for None."""
    if hist is None:
        return [math.nan] * len(STATISTICS)
    pct = {f"p{p}": hist.percentile_ms(float(p)) for p in PERCENTILES}
    by = {"mean": hist.mean_ms(), "median": hist.percentile_ms(50.0), "std": hist.std_ms(), **pct}
    return [float(by[s]) for s in STATISTICS]


def _itl_columns(out: pd.DataFrame, group_keys: dict[int, tuple], itl: Mapping[tuple, object]) -> None:
    """Fill ``out``'s ITL statistics (in place) from ``itl`` (see :func:`summarize`)."""
    width = len(next(iter(group_keys.values()))) + 1 if group_keys else None
    by_group: dict[tuple, dict[str, object]] = {}
    for key, hist in itl.items():
        key = tuple(key)
        if width is not None and len(key) != width:
            raise ValueError(f"summarize: itl key {key!r} is not (group values..., llm) of length {width}")
        by_group.setdefault(key[:-1], {})[str(key[-1])] = hist
    rows = []
    llms_of: dict[int, list[str]] = {}
    for g, llm in zip(out["_g"].to_numpy(), out["llm"].astype(str).to_numpy()):
        if llm != ALL_LLMS:
            llms_of.setdefault(int(g), []).append(llm)
    for g, llm in zip(out["_g"].to_numpy(), out["llm"].astype(str).to_numpy()):
        hists = by_group.get(group_keys[int(g)], {})
        if llm != ALL_LLMS:
            rows.append(_itl_stats(hists.get(llm)))
        elif hists and all(n in hists for n in llms_of.get(int(g), [])):
            # every LLM of the group measured: the pooled gaps of all of them (LLMs without a
            # request, absent from the table, have no gaps to add)
            first = next(iter(hists.values()))
            rows.append(_itl_stats(type(first).merge(hists.values())))
        else:
            rows.append(_itl_stats(None))
    vals = np.asarray(rows, dtype=float).reshape(len(out), len(STATISTICS))
    for j, stat in enumerate(STATISTICS):
        out[stat_column(stat, "itl")] = vals[:, j]


def summarize(
    df: pd.DataFrame,
    slo_scales: Sequence[float],
    goodput_scale: float,
    group_cols: Sequence[str] = ("cell", "strategy"),
    itl: Mapping[tuple, object] | None = None,
    abs_slo: Mapping[str, float | None] | None = None,
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
        itl: inter-token latencies: (group values..., llm name) -> histogram
            (:class:`muxsim.core.itl.ITLHistogram`: ``mean_ms``, ``std_ms``, ``percentile_ms``,
            ``merge``), e.g. ``{(cell, strategy, llm): run.itl[llm]}``. A row without one has
            NaN ITL columns; an overall row pools (``merge``) its group's histograms when every
            LLM row of the group has one, else NaN. None: every ITL column NaN.
        abs_slo: absolute SLOs in ms, keys among :data:`ABS_SLO_KEYS` (``ttft_ms``,
            ``tpot_ms``, ``e2e_ms``; None values are ignored): any subset defines
            ``request_goodput_rps`` and ``slo_attainment_abs``; none: both NaN.

    Returns:
        One row per (group..., llm) followed by the group's overall row (``llm == "all"``,
        ``model == "all"``). Groups appear in their order of first appearance in ``df``; LLMs in
        natural order (``llm-2`` before ``llm-10``). Columns: ``group_cols``, ``llm``, ``model``
        (when in ``df``), sweep parameters, ``goodput_scale``, ``n_requests``, ``n_finished``,
        ``n_unfinished`` (counts), ``last_completion_s`` (s; NaN without completion),
        ``throughput_rps``, ``goodput_rps`` (req/s, MuxServe's), ``arrival_rate_rps``,
        ``request_throughput_rps`` (req/s), ``output_throughput_tok_s``,
        ``total_token_throughput_tok_s`` (tok/s), ``request_goodput_rps`` (req/s),
        ``slo_attainment_abs`` (fraction 0..1), ``slo_attainment@<scale>`` (fraction 0..1,
        ascending scales, then ``slo_attainment_<base>@<goodput scale>`` for each SLO base the
        table carries), ``{mean,median,std,p90,p99}_{ttft,tpot,itl,e2el}_ms`` (ms; TPOT and ITL
        ms per token), ``mean_prompt_tokens``, ``mean_output_tokens`` (tokens, over all arrived
        requests) and ``preemptions`` (total count). Definitions in the module docstring.

    Raises:
        ValueError: a required column is missing; ``group_cols`` is empty, repeated or contains
            ``llm``; a key column has missing values; an LLM is named ``"all"``; ``finished``
            has missing values; a finished request lacks ``first_token_s`` or ``finish_s``; a
            scale is not finite and > 0; an absolute SLO is unknown or not finite and > 0; an
            ``itl`` key is not (group values..., llm).
    """
    group_cols = list(group_cols)
    if not group_cols or len(set(group_cols)) != len(group_cols) or "llm" in group_cols:
        raise ValueError(
            f"summarize: group_cols must be non-empty, distinct and exclude 'llm', got {group_cols}"
        )
    _require(df, [*group_cols, *_SUMMARY_INPUTS], "summarize")
    labels = _scale_labels(slo_scales, goodput_scale)
    limits = _abs_limits(abs_slo)
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
    work["_out_fin"] = np.where(finished, work["output_tokens"].to_numpy(), 0.0)
    work["_tok_fin"] = np.where(finished, work["output_tokens"].to_numpy() + work["prompt_tokens"].to_numpy(), 0.0)
    # the arrival window of every row: [0, its group's last arrival]
    arrival = _as_float(df["arrival_s"])
    window = pd.Series(arrival).groupby(gcode, sort=False).max() if len(df) else pd.Series(dtype=float)
    work["_window"] = window.reindex(gcode).to_numpy(dtype=float)
    ttft, tpot, e2el = (work[c].to_numpy() for c in _REQUEST_METRIC_COLUMNS)
    meet_abs = finished.copy()
    # vLLM's test: slo / 1000 >= metric (s); NaN (unfinished) compares False
    if "ttft_ms" in limits:
        meet_abs &= ttft <= limits["ttft_ms"] / 1e3
    if "tpot_ms" in limits:
        # a request with one output token has no TPOT: vLLM counts it as 0, which meets any limit
        meet_abs &= np.where(work["output_tokens"].to_numpy() > 1, tpot, 0.0) <= limits["tpot_ms"] / 1e3
    if "e2e_ms" in limits:
        meet_abs &= e2el <= limits["e2e_ms"] / 1e3
    work["_abs"] = meet_abs
    base = _as_float(df["slo_base_s"])
    label_list = list(labels)
    for i, scale in enumerate(labels.values()):
        # NaN latency (unfinished) or NaN base compares False: a miss.
        work[f"_meet{i}"] = e2el <= scale * base

    goodput_label = attainment_column(goodput_scale)
    # attainment at the goodput scale under each SLO base the table carries (both are written
    # per request; the plain columns use slo_base_s)
    for base in ("alone", "reference"):
        col = f"slo_base_{base}_s"
        if col in df.columns:
            label_list.append(base_attainment_column(base, goodput_scale))
            work[f"_meet{len(label_list) - 1}"] = e2el <= float(goodput_scale) * _as_float(df[col])
    has_abs = bool(limits)
    fine = _aggregate(work, ["_g", "_l"], label_list, goodput_label, has_abs)
    coarse = _aggregate(work, ["_g"], label_list, goodput_label, has_abs).sort_values("_g")
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
    group_keys = {int(g): tuple(v) for g, v in zip(keys["_g"], keys[group_cols].itertuples(index=False, name=None))}
    _itl_columns(out, group_keys, itl or {})
    out = out.merge(keys, on="_g", how="left")
    out["goodput_scale"] = float(goodput_scale)

    order = [
        *group_cols,
        "llm",
        *(["model"] if has_model else []),
        *sweep,
        *_COUNT_COLUMNS,
        *_VLLM_COLUMNS,
        *label_list,
        *_STAT_COLUMNS,
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
        llm_facts: one row per (``keys``..., ``llm``): ``offered_rate_rps`` (the LLM's
            configured arrival rate in the cell, req/s) and ``estimated_throughput_rps`` (its
            placement's estimate, req/s).
        n_llms: LLMs of the experiment (N of the rate-weighted mean: an LLM with no request
            counts as 0).
        slo_base: the SLO base the attainment columns use (for the ``slo_base`` column).

    Returns:
        A copy with columns ``slo_base``; ``offered_rate_rps`` and ``estimated_throughput_rps``
        (per LLM; their sums over the LLMs with requests on overall rows);
        ``total_throughput_rps`` (sum of the per-LLM throughputs, req/s) and
        ``weighted_throughput_rps`` (sum_i rate_i x throughput_i / N, req^2/s^2, the paper's
        throughput figure) on overall rows, NaN on per-LLM rows.

    Raises:
        ValueError: a required column is missing.
    """
    keys = list(keys)
    _require(llm_facts, [*keys, "llm", "offered_rate_rps", "estimated_throughput_rps"], "add_serving_columns")
    out = summary.merge(llm_facts[[*keys, "llm", "offered_rate_rps", "estimated_throughput_rps"]],
                        on=[*keys, "llm"], how="left")
    per = out[out["llm"] != ALL_LLMS]
    g = per.groupby(keys, sort=False)
    totals = pd.DataFrame({
        "_rate": g["offered_rate_rps"].sum(min_count=1),
        "_est": g["estimated_throughput_rps"].sum(min_count=1),
        "_total": g["throughput_rps"].sum(),
        "_weighted": g.apply(lambda d: float((d["offered_rate_rps"] * d["throughput_rps"]).sum()) / n_llms,
                             include_groups=False),
    }).reset_index()
    out = out.merge(totals, on=keys, how="left")
    overall = out["llm"] == ALL_LLMS
    out.loc[overall, "offered_rate_rps"] = out.loc[overall, "_rate"]
    out.loc[overall, "estimated_throughput_rps"] = out.loc[overall, "_est"]
    out["total_throughput_rps"] = np.where(overall, out["_total"], np.nan)
    out["weighted_throughput_rps"] = np.where(overall, out["_weighted"], np.nan)
    out = out.drop(columns=["_rate", "_est", "_total", "_weighted"])
    out.insert(out.columns.get_loc("throughput_rps"), "slo_base", slo_base)
    cols = list(out.columns)
    for c in ("offered_rate_rps", "estimated_throughput_rps", "total_throughput_rps", "weighted_throughput_rps"):
        cols.remove(c)
    at = cols.index("throughput_rps")
    return out[cols[:at] + ["offered_rate_rps", "estimated_throughput_rps", "throughput_rps",
                            "total_throughput_rps", "weighted_throughput_rps"] + cols[at + 1:]]


def add_cost_columns(summary: pd.DataFrame, run_facts: pd.DataFrame,
                     keys: Sequence[str] = ("cell", "strategy")) -> pd.DataFrame:
    """Add what each (cell, strategy) costs to a :func:`summarize` output.

    The cost is what is booked: every GPU of the cluster, whether or not the placement uses it
    (a cluster is rented whole; a placement that leaves GPUs idle still pays for them, which is
    what makes a sparser placement dearer per token).

    Args:
        summary: :func:`summarize` output grouped by ``keys`` (needs ``llm`` and
            ``output_throughput_tok_s``).
        run_facts: one row per (``keys``...): ``gpus`` (GPUs the placement's meshes use),
            ``cluster_gpus`` (GPUs of the cluster) and ``usd_per_gpu_hour`` (USD per GPU-hour;
            NaN when unknown, e.g. a catalog GPU without a price and no
            ``cluster.usd_per_gpu_hour``).

    Returns:
        A copy with, appended: ``gpus`` (int64) and ``cost_usd_per_hour`` (cluster_gpus x
        usd_per_gpu_hour, USD/h) on every row of the (cell, strategy), and
        ``usd_per_million_output_tokens`` = cost_usd_per_hour / (3600 x
        output_throughput_tok_s) x 1e6 (USD) on overall rows, NaN on per-LLM rows (the
        cluster is shared, its cost is not split among the LLMs). IEEE division decides the
        edge cases: no output token served at a known price gives ``inf``; an unknown price
        gives NaN.

    Raises:
        ValueError: a required column is missing, or a (cell, strategy) of ``summary`` has no
            row in ``run_facts``.
    """
    keys = list(keys)
    _require(summary, [*keys, "llm", "output_throughput_tok_s"], "add_cost_columns")
    _require(run_facts, [*keys, "gpus", "cluster_gpus", "usd_per_gpu_hour"], "add_cost_columns")
    facts = run_facts[[*keys, "gpus", "cluster_gpus", "usd_per_gpu_hour"]]
    out = summary.merge(facts, on=keys, how="left", validate="many_to_one")
    if out["gpus"].isna().any():
        missing = out.loc[out["gpus"].isna(), keys].drop_duplicates().head(3).to_dict("records")
        raise ValueError(f"add_cost_columns: no run facts for {missing}")
    out["gpus"] = out["gpus"].astype("int64")
    cost = out["cluster_gpus"].to_numpy(dtype=float) * out["usd_per_gpu_hour"].to_numpy(dtype=float)
    out["cost_usd_per_hour"] = cost
    tok_s = out["output_throughput_tok_s"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        per_million = cost / (3600.0 * tok_s) * 1e6
    out["usd_per_million_output_tokens"] = np.where(out["llm"] == ALL_LLMS, per_million, np.nan)
    return out.drop(columns=["cluster_gpus", "usd_per_gpu_hour"])


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
