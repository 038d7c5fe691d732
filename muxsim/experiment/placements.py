"""Each cell's placements: MuxServe's search (or the config's explicit placement), spatial
partitioning, and muxsim's simulation-guided search; which kinds an experiment needs; the cheap
checks run before any work."""

from __future__ import annotations

import pandas as pd

from muxsim.catalog import get_gpu, get_model
from muxsim.config import Cell, ExperimentConfig
from muxsim.core.placement import (
    LLMDemand,
    Placement,
    PlacementContext,
    check_fits_somewhere,
    explicit_placement,
    muxserve_placement,
    spatial_placement,
)
from muxsim.core.strategies import get_strategy
from muxsim.perf import get_latency_model
from muxsim.perf.overhead import OverheadLatency

from .workloads import seq_tokens, workload_context, workload_means

__all__ = ["latency_models", "placement_context", "placement_for", "placement_kinds", "preflight",
           "simulated_placement", "strategy_placement"]


def latency_models(cfg: ExperimentConfig, latency=None):
    """(the latency model jobs run on -- the GPU's, or ``latency``, plus the job-overhead model
    of ``cfg.overhead`` --, the model without overheads, which SLO bases use)."""
    base = latency if latency is not None else get_latency_model(cfg.cluster.gpu)
    return OverheadLatency(base, cfg.overhead.model()), base


def placement_context(cfg: ExperimentConfig, cell: Cell, latency=None, kv_fraction: float | None = None) -> PlacementContext:
    """The placement search's view of a cell (:class:`muxsim.core.placement.PlacementContext`):
    its LLMs and rates, the GPU, the latency model with job overheads, the workload's lengths
    and the scheduler's memory and batching limits; ``kv_fraction`` caps each GPU's KV cache
    (the spatial baseline's). The cell's own cluster (a cluster sweep's) sets the GPU."""
    cfg = cfg.for_cell(cell)
    mean_prompt, mean_output = workload_means(cfg)
    demands = [LLMDemand(n, get_model(m), r)
               for n, m, r in zip(cfg.llm_names(), cfg.llm_models(), cell.rates)]
    s = cfg.scheduler
    return PlacementContext(demands, get_gpu(cfg.cluster.gpu), latency_models(cfg, latency)[0],
                            mean_prompt, mean_output, s.activation_reserve_gib,
                            s.context_reserve_gib, s.max_num_seqs,
                            100.0 * (s.sm_units + s.sm_overload_units) / s.sm_units,
                            kv_fraction=kv_fraction, estimator=cfg.placement.estimator,
                            ctx_tokens=workload_context(cfg), sm_units=s.sm_units,
                            max_prefill_tokens=s.max_prefill_tokens)


def placement_for(cfg: ExperimentConfig, cell: Cell, kind: str, latency=None) -> Placement:
    """Placement of a cell: ``kind`` ``"spatial"`` or ``"muxserve"`` (searched, or the config's
    explicit placement when given). ``latency`` replaces the GPU's default latency model (the
    job-overhead model is added to it either way).

    Raises:
        muxsim.core.placement.PlacementError: nothing feasible.
    """
    cfg = cfg.for_cell(cell)
    c = cfg.cluster
    if kind == "spatial":
        ctx = placement_context(cfg, cell, latency, kv_fraction=cfg.scheduler.spatial_kv_fraction)
        return spatial_placement(ctx, c.nodes, c.gpus_per_node)
    ctx = placement_context(cfg, cell, latency)
    if cfg.placement.meshes is not None:
        return explicit_placement(ctx, cfg.placement.meshes, c.nodes, c.gpus_per_node)
    return muxserve_placement(ctx, c.nodes, c.gpus_per_node)


def strategy_placement(cfg: ExperimentConfig, strategy: str) -> str:
    """The placement kind ``strategy`` runs on in ``cfg``: its registry entry's, except that
    ``placement.search: simulated`` makes MuxServe's own placement the simulated one."""
    kind = get_strategy(strategy).placement
    return "simulated" if kind == "muxserve" and cfg.placement.search == "simulated" else kind


def placement_kinds(cfg: ExperimentConfig) -> list[str]:
    """Placement kinds an experiment needs per cell, sorted: those of its strategies, plus
    ``muxserve`` when the request counts follow its estimate or a simulated search starts
    from it."""
    kinds = {strategy_placement(cfg, s) for s in cfg.strategies}
    req = cfg.workload.requests
    if (req is not None and req.rule == "estimate") or "simulated" in kinds:
        kinds.add("muxserve")
    return sorted(kinds)


def simulated_placement(cfg: ExperimentConfig, cell: Cell, workload: pd.DataFrame, latency=None) -> Placement:
    """muxsim's simulation-guided placement of a cell (:func:`muxsim.sim.search.simulated_search`):
    MuxServe's ``placement.starts`` best layouts (or the explicit placement), improved by
    local moves scored by simulating ``workload`` (its first ``placement.prefix_s`` seconds of
    arrivals when set; the result is then checked on all of it and the start kept unless the
    result is at least as good in throughput and attainment).

    Raises:
        muxsim.core.placement.PlacementError: no feasible start.
    """
    from muxsim.core.placement import muxserve_placements
    from muxsim.sim.search import MeshEvaluator, SearchSettings, simulated_search

    cfg = cfg.for_cell(cell)
    pc, c = cfg.placement, cfg.cluster
    ctx = placement_context(cfg, cell, latency)
    if pc.meshes is not None:
        starts = [explicit_placement(ctx, pc.meshes, c.nodes, c.gpus_per_node)]
    else:
        starts = muxserve_placements(ctx, c.nodes, c.gpus_per_node, top=pc.starts)
    models = [get_model(m) for m in cfg.llm_models()]
    _, base = latency_models(cfg, latency)

    def evaluator(wl):
        return MeshEvaluator(ctx, wl, models, cfg.scheduler, seq_tokens(cfg), base, cfg.slo.base,
                             cfg.slo.goodput_scale, cfg.workload.drain_limit_s)

    wl = workload if pc.prefix_s is None else workload[workload["arrival_s"] < pc.prefix_s]
    settings = SearchSettings(pc.objective, pc.candidates, pc.budget_s, pc.seed, pc.starts, cfg.slo.goodput_scale)
    found = simulated_search(ctx, starts, evaluator(wl), c.nodes, c.gpus_per_node, settings)
    if pc.prefix_s is None:
        return found
    full = evaluator(workload)
    start_m, got_m = full.evaluate(starts[0]), full.evaluate(found)
    keep = got_m[0] >= start_m[0] - 1e-9 and got_m[2] >= start_m[2] - 1e-9
    out = found if keep else starts[0]
    out.search = {**found.search, "prefix_s": pc.prefix_s, "whole_workload": {
        "start_throughput_rps": start_m[0], "start_attainment": start_m[2],
        "throughput_rps": got_m[0], "attainment": got_m[2],
        "kept": "search result" if keep else "start (the result was not at least as good on the whole workload)"}}
    return out


def preflight(cfg: ExperimentConfig) -> dict[tuple[int, str], str]:
    """Cheap checks of every cell's placements, run before any long search or simulation: that
    each LLM fits on some mesh of the cell's cluster, that spatial partitioning fits it, that
    the explicit placement is feasible on it.

    Returns:
        (cell index in ``cfg.cells()``, placement kind) -> the one-line reason that kind
        cannot be placed on that cell, for the kinds these checks refuse; the run goes on
        without them (:mod:`muxsim.experiment.plan`).

    Raises:
        muxsim.core.placement.PlacementError: these checks refuse every strategy of every
            cell (the first refusal's message).
        muxsim.experiment.guards.SizeError: the run is larger than ``cfg.limits`` allow.
    """
    from muxsim.core.placement import PlacementError

    from .guards import check_size

    check_size(cfg)
    kinds = placement_kinds(cfg)
    refused: dict[tuple[int, str], str] = {}
    possible = False
    first = None
    for k, cell in enumerate(cfg.cells()):
        cc = cfg.for_cell(cell)
        c = cc.cluster
        ctx = placement_context(cc, cell)
        try:
            check_fits_somewhere(ctx, c.gpus_per_node)
            why = {}
            if "spatial" in kinds:
                try:
                    placement_for(cc, cell, "spatial")
                except PlacementError as e:
                    why["spatial"] = str(e)
            if cfg.placement.meshes is not None:
                try:
                    explicit_placement(ctx, cfg.placement.meshes, c.nodes, c.gpus_per_node)
                except PlacementError as e:
                    why.update({kind: str(e) for kind in kinds if kind != "spatial"})
        except PlacementError as e:
            why = {kind: str(e) for kind in kinds}
        req = cfg.workload.requests
        if "muxserve" in why and req is not None and req.rule == "estimate":
            why.update({kind: why["muxserve"] for kind in kinds})  # no workload without its estimate
        if "muxserve" in why and "simulated" in kinds:
            why["simulated"] = why["muxserve"]
        refused.update({(k, kind): r for kind, r in why.items()})
        first = first or next(iter(why.values()), None)
        possible = possible or any(strategy_placement(cfg, s) not in why for s in cfg.strategies)
    if not possible:
        raise PlacementError(first)
    return refused
