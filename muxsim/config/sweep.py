"""The sweep: an experiment's cells, one per combination of swept values, rate set, trace alpha
or replayed file."""

from __future__ import annotations

import itertools

from muxsim.workload import popularity_rates

from .cells import Cell, replay_cell
from .traces import trace_cells

__all__ = ["sweep_cells", "workload_cells"]


def sweep_cells(cfg) -> list[Cell]:
    """The sweep of ``cfg``: :func:`workload_cells`, times every cluster of a cluster sweep
    (``cluster.nodes`` / ``gpus_per_node`` / ``gpu`` lists; clusters outermost, in
    :meth:`~muxsim.config.ClusterConfig.clusters` order). A swept cell carries ``nodes``,
    ``gpus_per_node``, ``gpu`` and ``n_gpus`` as params and its cluster as ``Cell.cluster``;
    its label is the workload cell's (left out when there is only one workload cell), then the
    cluster fields that take more than one value, e.g. ``alpha=0.9,nodes=2``.

    Raises:
        ConfigError: as :func:`workload_cells`.
    """
    c = cfg.cluster
    if not c.swept:
        return workload_cells(cfg)
    base = workload_cells(cfg)
    named = c.swept_fields()
    cells = []
    for cl in c.clusters():
        for cell in base:
            label = ([cell.label] if len(base) > 1 and cell.label else []) + [f"{k}={getattr(cl, k)}" for k in named]
            params = {**cell.params, "nodes": cl.nodes, "gpus_per_node": cl.gpus_per_node, "gpu": cl.gpu,
                      "n_gpus": cl.nodes * cl.gpus_per_node}
            cells.append(cell.model_copy(update={"label": ",".join(label) or cell.label, "params": params,
                                                 "cluster": (cl.nodes, cl.gpus_per_node, cl.gpu)}))
    return cells


def workload_cells(cfg) -> list[Cell]:
    """The workload sweep of ``cfg`` (an :class:`~muxsim.config.ExperimentConfig`): one cell per
    (alpha, max_rate, rate_scale) combination, each with per-LLM rates; or one per rate set,
    labelled with its label, with param ``avg_rate`` (mean of its rates, req/s) for plotting;
    or one per ``workload.trace`` alpha (:func:`muxsim.config.traces.trace_cells`); or the
    replayed file's single cell.

    Popularity cells always carry ``alpha`` and ``rate_scale`` as params (``max_rate`` when
    it is swept); their labels name the swept values only.

    Raises:
        ConfigError: a replayed file or trace that cannot be read or synthesized.
    """
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
