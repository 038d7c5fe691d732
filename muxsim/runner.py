"""Run an experiment: every sweep cell under every strategy, in parallel processes.

A cell's workload is drawn once from the experiment seed and the cell's index, so every strategy
of a cell sees the same requests. MuxServe and temporal multiplexing share the cell's placement
(searched once); spatial partitioning gets its own. Results are gathered in cell and strategy
order, so the output does not depend on ``jobs``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from muxsim.catalog import get_gpu, get_model
from muxsim.config import Cell, ExperimentConfig, trace_workload
from muxsim.core.placement import (
    LLMDemand,
    Placement,
    PlacementContext,
    check_fits_somewhere,
    explicit_placement,
    muxserve_placement,
    spatial_placement,
)
from muxsim.perf import get_latency_model
from muxsim.sim.driver import simulate
from muxsim.workload import EmpiricalLengths, FixedLengths, ScaledLengths, generate_workload, load_workload

__all__ = ["CellRun", "lengths_sampler", "cell_seed", "cell_workload", "cell_placement",
           "run_experiment", "placement_for", "preflight", "workload_means"]


@dataclass
class CellRun:
    """One simulated (cell, strategy): its per-request table and run facts."""

    cell: str
    strategy: str
    requests: pd.DataFrame
    placement: Placement
    sim_time_s: float
    n_jobs: int
    latency_sources: dict[str, str]
    wall_s: float


@lru_cache(maxsize=8)
def _sharegpt_matching(mean_prompt: float, mean_output: float) -> ScaledLengths:
    # the factor search samples the base distribution; cells and strategies share its result
    return ScaledLengths.matching_means(EmpiricalLengths.sharegpt(), mean_prompt, mean_output)


def lengths_sampler(cfg: ExperimentConfig):
    """The config's length sampler (ShareGPT-derived empirical, scaled by one factor or to
    given mean prompt/output lengths, or fixed)."""
    lc = cfg.workload.lengths
    if lc.kind == "fixed":
        return FixedLengths(lc.prompt, lc.output)
    if lc.mean_prompt is not None:
        return _sharegpt_matching(float(lc.mean_prompt), float(lc.mean_output))
    if lc.scale != 1.0:
        return ScaledLengths(EmpiricalLengths.sharegpt(), lc.scale)
    return EmpiricalLengths.sharegpt()


def cell_seed(cfg: ExperimentConfig, cell_index: int) -> int:
    """Seed of a cell's workload, derived from the experiment seed and the cell's index."""
    return int(np.random.SeedSequence([cfg.seed, cell_index]).generate_state(1)[0])


def cell_workload(cfg: ExperimentConfig, cell: Cell, cell_index: int) -> pd.DataFrame:
    """Draw the cell's workload (see :func:`muxsim.workload.generate_workload`), read the
    replayed file, or synthesize it from the trace (:func:`muxsim.config.trace_workload`)."""
    w = cfg.workload
    if w.file is not None:
        return load_workload(w.file)
    if w.trace is not None:
        return trace_workload(cfg, cell_index)
    return generate_workload(cfg.llm_names(), cell.rates, w.duration_s, lengths_sampler(cfg),
                             seed=cell_seed(cfg, cell_index), process=w.arrival, cv=w.cv,
                             max_requests_per_llm=w.max_requests_per_llm)


@lru_cache(maxsize=8)
def _file_means(path: str) -> tuple[float, float]:
    wl = load_workload(path)
    return float(wl["prompt_tokens"].mean()), float(wl["output_tokens"].mean())


def workload_means(cfg: ExperimentConfig) -> tuple[float, float]:
    """Mean prompt and output tokens of the config's workload (the replayed file's, or the
    synthesized trace's, when given: a split keeps every request, so all cells share them)."""
    if cfg.workload.file is not None:
        return _file_means(cfg.workload.file)
    if cfg.workload.trace is not None:
        wl = trace_workload(cfg, 0)
        return float(wl["prompt_tokens"].mean()), float(wl["output_tokens"].mean())
    lengths = lengths_sampler(cfg)
    return lengths.mean_prompt, lengths.mean_output


def _context(cfg: ExperimentConfig, cell: Cell, latency=None) -> PlacementContext:
    mean_prompt, mean_output = workload_means(cfg)
    demands = [LLMDemand(n, get_model(m), r)
               for n, m, r in zip(cfg.llm_names(), cfg.llm_models(), cell.rates)]
    s = cfg.scheduler
    latency = latency if latency is not None else get_latency_model(cfg.cluster.gpu)
    return PlacementContext(demands, get_gpu(cfg.cluster.gpu), latency,
                            mean_prompt, mean_output, s.activation_reserve_gib,
                            s.context_reserve_gib, s.max_num_seqs,
                            100.0 * (s.sm_units + s.sm_overload_units) / s.sm_units)


def placement_for(cfg: ExperimentConfig, cell: Cell, kind: str, latency=None) -> Placement:
    """Placement of a cell: ``kind`` ``"spatial"`` or ``"muxserve"`` (searched, or the config's
    explicit placement when given). ``latency`` replaces the GPU's default latency model.

    Raises:
        muxsim.core.placement.PlacementError: nothing feasible.
    """
    ctx = _context(cfg, cell, latency)
    c = cfg.cluster
    if kind == "spatial":
        return spatial_placement(ctx, c.nodes, c.gpus_per_node)
    if cfg.placement is not None:
        return explicit_placement(ctx, cfg.placement, c.nodes, c.gpus_per_node)
    return muxserve_placement(ctx, c.nodes, c.gpus_per_node)


def preflight(cfg: ExperimentConfig) -> None:
    """Cheap checks that every cell can be placed, run before any long search or simulation.

    Raises:
        muxsim.core.placement.PlacementError: an LLM fits on no mesh, spatial partitioning
            needs more GPUs than the cluster has, or the explicit placement is infeasible.
    """
    c = cfg.cluster
    for cell in cfg.cells():
        ctx = _context(cfg, cell)
        check_fits_somewhere(ctx, c.gpus_per_node)
        if "spatial" in cfg.strategies:
            spatial_placement(ctx, c.nodes, c.gpus_per_node)
        if cfg.placement is not None:
            explicit_placement(ctx, cfg.placement, c.nodes, c.gpus_per_node)


def cell_placement(args) -> Placement:
    """Process-pool entry: ``args = (config dict, cell index, kind)``."""
    cfg_dict, ci, kind = args
    cfg = ExperimentConfig.model_validate(cfg_dict)
    return placement_for(cfg, cfg.cells()[ci], kind)


def seq_tokens(cfg: ExperimentConfig) -> int:
    """Tokens per sequence ADBS quotas assume: the config's, else mean prompt + output."""
    if cfg.scheduler.quota_seq_tokens is not None:
        return cfg.scheduler.quota_seq_tokens
    return int(round(sum(workload_means(cfg))))


def run_cell(args) -> CellRun:
    """Process-pool entry: simulate ``args = (config dict, cell index, strategy, placement)``."""
    import time

    t0 = time.perf_counter()
    cfg_dict, ci, strategy, placement = args
    cfg = ExperimentConfig.model_validate(cfg_dict)
    cell = cfg.cells()[ci]
    wl = cell_workload(cfg, cell, ci)
    models = [get_model(m) for m in cfg.llm_models()]
    res = simulate(placement, strategy, wl, cfg.llm_names(), models, cell.rates,
                   get_gpu(cfg.cluster.gpu), get_latency_model(cfg.cluster.gpu), cfg.scheduler,
                   seq_tokens(cfg), cfg.workload.drain_limit_s)
    df = res.requests
    df.insert(0, "strategy", strategy)
    df.insert(0, "cell", cell.label)
    for k, v in cell.params.items():
        df[k] = v
    df["latency_source"] = df["model"].map(res.latency_sources)
    return CellRun(cell.label, strategy, df, placement, res.sim_time_s, res.n_jobs,
                   res.latency_sources, time.perf_counter() - t0)


def run_experiment(cfg: ExperimentConfig, jobs: int = 1,
                   progress: Callable[[str], None] | None = None) -> list[CellRun]:
    """Run every cell under every strategy.

    Args:
        cfg: the experiment.
        jobs: worker processes (1 runs in this process).
        progress: called with a short label after each placement search and each simulation.

    Returns:
        One :class:`CellRun` per (cell, strategy), in cell then config strategy order.

    Raises:
        muxsim.core.placement.PlacementError, ValueError: infeasible placement or bad input.
    """
    cells = cfg.cells()
    cfg_dict = cfg.model_dump(mode="json")
    place_tasks = []
    for ci in range(len(cells)):
        kinds = {"spatial" if s == "spatial" else "muxserve" for s in cfg.strategies}
        place_tasks += [(cfg_dict, ci, k) for k in sorted(kinds)]
    sim_order = [(ci, s) for ci in range(len(cells)) for s in cfg.strategies]

    def tick(label):
        if progress is not None:
            progress(label)

    if jobs <= 1:
        placements = {}
        for t in place_tasks:
            placements[(t[1], t[2])] = cell_placement(t)
            tick(f"placement {cells[t[1]].label} {t[2]}")
        runs = []
        for ci, s in sim_order:
            p = placements[(ci, "spatial" if s == "spatial" else "muxserve")]
            runs.append(run_cell((cfg_dict, ci, s, p)))
            tick(f"{cells[ci].label} {s}")
        return runs

    with ProcessPoolExecutor(max_workers=min(jobs, os.cpu_count() or 1)) as ex:
        placements = {}
        futs = {ex.submit(cell_placement, t): t for t in place_tasks}
        for f, t in futs.items():
            placements[(t[1], t[2])] = f.result()
            tick(f"placement {cells[t[1]].label} {t[2]}")
        # longest cells first keeps the workers busy to the end
        weight = {ci: sum(c for c in cells[ci].rates) for ci in range(len(cells))}
        submit_order = sorted(sim_order, key=lambda cs: -weight[cs[0]])
        futs2 = {}
        for ci, s in submit_order:
            p = placements[(ci, "spatial" if s == "spatial" else "muxserve")]
            futs2[(ci, s)] = ex.submit(run_cell, (cfg_dict, ci, s, p))
        done = {}
        from concurrent.futures import as_completed

        back = {f: k for k, f in futs2.items()}
        for f in as_completed(back):
            k = back[f]
            done[k] = f.result()
            tick(f"{cells[k[0]].label} {k[1]}")
        return [done[k] for k in sim_order]
