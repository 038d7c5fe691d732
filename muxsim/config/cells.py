"""The sweep: an experiment's cells (one per combination of swept values, rate set, trace
alpha or replayed file), each with its per-LLM rates and a key that seeds its workload."""

from __future__ import annotations

import itertools
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from .errors import ConfigError

__all__ = ["Cell", "rates_over_span", "replay_cell", "sweep_cells"]


class Cell(BaseModel):
    """One point of the sweep: a label, its sweep parameters, per-LLM rates (req/s) and its
    ``key``: the full parameter values it was made from (not its position in the sweep), which
    seeds its workload, so a cell run alone draws what it draws inside a sweep."""

    model_config = ConfigDict(frozen=True)

    label: str
    params: dict[str, float]
    rates: list[float]
    key: str = ""


def replay_cell(path: str, names: list[str]) -> Cell:
    """The single cell of a replayed workload file: per-LLM rates = requests / span (req/s).

    Raises:
        ConfigError: unreadable file, or LLMs in the file that the config does not list.
    """
    from muxsim.workload import load_workload

    try:
        wl = load_workload(path)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise ConfigError(f"workload.file: {e}") from None
    unknown = sorted(set(wl["llm"]) - set(names))
    if unknown:
        raise ConfigError(f"workload.file names LLMs the config does not list: {unknown[:5]}; listed: llm-0..llm-{len(names) - 1}")
    return Cell(label=f"replay={Path(path).stem}", params={}, rates=rates_over_span(wl, names, None),
                key=f"replay={Path(path).stem}")


def rates_over_span(wl, names: list[str], span: float | None) -> list[float]:
    """Per-LLM requests / span (req/s; span = the last arrival when None), at least 1e-3: an LLM
    with no request still needs a positive rate for placement and KV quotas."""
    if span is None:
        span = float(wl["arrival_s"].max()) if len(wl) else 0.0
    span = max(span, 1e-9)
    counts = wl["llm"].value_counts()
    return [max(float(counts.get(n, 0)) / span, 1e-3) for n in names]


def sweep_cells(cfg) -> list[Cell]:
    """The sweep of ``cfg`` (an :class:`~muxsim.config.ExperimentConfig`): one cell per
    (alpha, max_rate, rate_scale) combination, each with per-LLM rates; or one per rate set,
    labelled with its label, with param ``avg_rate`` (mean of its rates, req/s) for plotting;
    or one per ``workload.trace`` alpha (:func:`muxsim.config.traces.trace_cells`); or the
    replayed file's single cell.

    Popularity cells always carry ``alpha`` and ``rate_scale`` as params (``max_rate`` when
    it is swept); their labels name the swept values only.

    Raises:
        ConfigError: a replayed file or trace that cannot be read or synthesized.
    """
    from muxsim.workload import popularity_rates

    from .traces import trace_cells

    n = sum(g.count for g in cfg.llms)
    if cfg.workload.file is not None:
        return [replay_cell(cfg.workload.file, cfg.llm_names())]
    if cfg.workload.trace is not None:
        return trace_cells(cfg)
    if cfg.workload.rate_sets is not None:
        return [Cell(label=rs.label, params={"avg_rate": sum(rs.rates) / len(rs.rates)},
                     rates=[float(r) for r in rs.rates], key=f"rate_set={rs.label}")
                for rs in cfg.workload.rate_sets]
    fixed = [g.rate for g in cfg.llms for _ in range(g.count)]
    pop = cfg.workload.popularity
    if pop is None:
        return [Cell(label="fixed rates", params={}, rates=[float(r) for r in fixed], key="fixed rates")]
    alphas, max_rates, scales = pop.alphas(), pop.max_rates(), pop.rate_scales()
    cells = []
    for alpha, max_rate, scale in itertools.product(alphas, max_rates, scales):
        law = popularity_rates(n, alpha, max_rate * scale)
        rates = [float(r if r is not None else law[i]) for i, r in enumerate(fixed)]
        params = {"alpha": float(alpha), "rate_scale": float(scale)}
        label = []
        if len(alphas) > 1 or (len(max_rates) == 1 and len(scales) == 1):
            label.append(f"alpha={alpha:g}")
        if len(max_rates) > 1:
            params["max_rate"] = float(max_rate)
            label.append(f"max_rate={max_rate:g}")
        if len(scales) > 1:
            label.append(f"scale={scale:g}")
        key = f"alpha={float(alpha)!r},max_rate={float(max_rate)!r},rate_scale={float(scale)!r}"
        cells.append(Cell(label=",".join(label), params=params, rates=rates, key=key))
    return cells
