"""Run an experiment: every sweep cell under every strategy, in parallel processes.

The experiment plan is built once, in the calling process: the cells, each cell's placements
(searched in worker processes, one per placement kind a strategy needs) and each cell's workload,
drawn once from a seed keyed by the cell's parameters and served to every strategy of the cell
(as the paper served one workload file to all three systems). With the reference benchmark's
request counts (``workload.requests.rule: estimate``) a cell's workload depends on its MuxServe
placement's estimate, so placements come first. Results are gathered in cell and strategy
order, so the output does not depend on ``jobs``.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

from muxsim.catalog import get_gpu, get_model
from muxsim.config import Cell, ExperimentConfig, LengthsConfig, trace_workload
from muxsim.core.placement import (
    LLMDemand,
    Placement,
    PlacementContext,
    check_fits_somewhere,
    explicit_placement,
    muxserve_placement,
    spatial_placement,
)
from muxsim.core.replay import RunSpec
from muxsim.core.strategies import get_strategy
from muxsim.perf import get_latency_model
from muxsim.perf.overhead import OverheadLatency
from muxsim.sim.driver import simulate
from muxsim.workload import (
    EmpiricalLengths,
    FixedLengths,
    ScaledLengths,
    generate_workload,
    load_workload,
)

__all__ = ["CellRun", "CellPlan", "lengths_sampler", "cell_seed", "request_counts", "cell_workload",
           "plan_experiment", "run_experiment", "placement_for", "placement_kinds", "preflight",
           "workload_means", "seq_tokens", "simulate_cell", "latency_models", "simulated_placement",
           "strategy_placement", "workload_context"]


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


@dataclass
class CellPlan:
    """One cell of the experiment plan: the cell, its index, its placements by placement kind
    (``"muxserve"``, ``"spatial"``), its workload (drawn once, served to every strategy) and the
    per-LLM request counts it was drawn with (None: every arrival within ``duration_s``)."""

    index: int
    cell: Cell
    placements: dict[str, Placement] = field(default_factory=dict)
    workload: pd.DataFrame | None = None
    counts: list[int] | None = None


def _empirical(kind: str) -> EmpiricalLengths:
    return EmpiricalLengths.sharegpt_v3() if kind == "sharegpt_v3" else EmpiricalLengths.sharegpt()


@lru_cache(maxsize=8)
def _matching(kind: str, mean_prompt: float, mean_output: float) -> ScaledLengths:
    # the factor search samples the base distribution; cells and strategies share its result
    return ScaledLengths.matching_means(_empirical(kind), mean_prompt, mean_output)


def lengths_sampler(cfg: ExperimentConfig):
    """The config's length sampler (an empirical ShareGPT distribution, scaled by one factor or
    to given mean prompt/output lengths, or fixed)."""
    return _sampler(cfg.workload.lengths.model_dump_json())


@lru_cache(maxsize=8)
def _sampler(lengths_json: str):
    lc = LengthsConfig.model_validate_json(lengths_json)
    if lc.kind == "fixed":
        return FixedLengths(lc.prompt, lc.output)
    if lc.mean_prompt is not None:
        return _matching(lc.kind, float(lc.mean_prompt), float(lc.mean_output))
    if lc.scale != 1.0:
        return ScaledLengths(_empirical(lc.kind), lc.scale)
    return _empirical(lc.kind)


def cell_seed(cfg: ExperimentConfig, cell: Cell) -> int:
    """Seed of a cell's workload: the experiment seed and a hash of the cell's ``key`` (its full
    parameter values), so the same cell draws the same workload wherever it sits in a sweep."""
    digest = hashlib.sha256(cell.key.encode()).digest()
    words = np.frombuffer(digest[:16], dtype="<u4").tolist()
    return int(np.random.SeedSequence([cfg.seed, *words]).generate_state(1)[0])


def request_counts(cfg: ExperimentConfig, estimate: Placement | None) -> list[int] | None:
    """Per-LLM request counts of a drawn workload (``workload.requests``), or None for every
    arrival within ``duration_s``.

    Rule ``estimate``: int(factor x seconds x T_i), T_i the estimated throughput (req/s) of LLM
    i in ``estimate`` (the cell's MuxServe placement); an LLM it lacks gets 0.

    Raises:
        ValueError: rule ``estimate`` without a placement.
    """
    req = cfg.workload.requests
    if req is None:
        return None
    names = cfg.llm_names()
    if req.rule == "fixed":
        c = req.counts
        return [int(x) for x in c] if isinstance(c, list) else [int(c)] * len(names)
    if estimate is None:
        raise ValueError("workload.requests.rule 'estimate' needs the cell's MuxServe placement")
    est = estimate.est_throughput
    return [int(req.factor * req.seconds * est.get(n, 0.0)) if np.isfinite(est.get(n, 0.0)) else 0
            for n in names]


def cell_workload(cfg: ExperimentConfig, cell: Cell, cell_index: int,
                  counts: list[int] | None = None) -> pd.DataFrame:
    """Draw the cell's workload (see :func:`muxsim.workload.generate_workload`) with the given
    per-LLM ``counts`` (each LLM's first ``counts[i]`` arrivals), read the replayed file, or
    synthesize it from the trace (:func:`muxsim.config.trace_workload`, by ``cell_index``)."""
    w = cfg.workload
    if w.file is not None:
        return load_workload(w.file)
    if w.trace is not None:
        return trace_workload(cfg, cell_index)
    caps = counts
    if w.max_requests_per_llm is not None:
        caps = [min(c, w.max_requests_per_llm) for c in caps] if caps is not None else \
            [w.max_requests_per_llm] * len(cell.rates)
    return generate_workload(cfg.llm_names(), cell.rates, w.duration_s, lengths_sampler(cfg),
                             seed=cell_seed(cfg, cell), process=w.arrival, cv=w.cv,
                             max_requests_per_llm=caps)


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


def _batch_context(prompt: np.ndarray, output: np.ndarray) -> float:
    # a request decodes for `output` iterations holding prompt + output / 2 tokens on average,
    # so the running batch's mean context weights requests by their output length
    p = np.asarray(prompt, dtype=float)
    o = np.asarray(output, dtype=float)
    return float((o * (p + o / 2)).sum() / o.sum())


@lru_cache(maxsize=8)
def _sampler_context(lengths_json: str) -> float:
    p, o = _sampler(lengths_json).sample(np.random.default_rng(0), 200_000)
    return _batch_context(p, o)


def workload_context(cfg: ExperimentConfig) -> float:
    """Mean KV tokens a running sequence holds (tokens): the batch-weighted context
    sum_r o_r (p_r + o_r / 2) / sum_r o_r of the workload's lengths (200,000 draws of the
    length sampler, seed 0; the replayed file's or synthesized trace's own requests)."""
    w = cfg.workload
    if w.file is not None:
        wl = load_workload(w.file)
        return _batch_context(wl["prompt_tokens"], wl["output_tokens"])
    if w.trace is not None:
        wl = trace_workload(cfg, 0)
        return _batch_context(wl["prompt_tokens"], wl["output_tokens"])
    return _sampler_context(w.lengths.model_dump_json())


def latency_models(cfg: ExperimentConfig, latency=None):
    """(the latency model jobs run on -- the GPU's, or ``latency``, plus the job-overhead model
    of ``cfg.overhead`` --, the model without overheads, which SLO bases use)."""
    base = latency if latency is not None else get_latency_model(cfg.cluster.gpu)
    return OverheadLatency(base, cfg.overhead.model()), base


def _context(cfg: ExperimentConfig, cell: Cell, latency=None, kv_fraction: float | None = None) -> PlacementContext:
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
    c = cfg.cluster
    if kind == "spatial":
        ctx = _context(cfg, cell, latency, kv_fraction=cfg.scheduler.spatial_kv_fraction)
        return spatial_placement(ctx, c.nodes, c.gpus_per_node)
    ctx = _context(cfg, cell, latency)
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

    pc, c = cfg.placement, cfg.cluster
    ctx = _context(cfg, cell, latency)
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


def preflight(cfg: ExperimentConfig) -> None:
    """Cheap checks that every cell can be placed, run before any long search or simulation.

    Raises:
        muxsim.core.placement.PlacementError: an LLM fits on no mesh, spatial partitioning
            needs more GPUs than the cluster has, or the explicit placement is infeasible.
    """
    c = cfg.cluster
    kinds = placement_kinds(cfg)
    for cell in cfg.cells():
        ctx = _context(cfg, cell)
        check_fits_somewhere(ctx, c.gpus_per_node)
        if "spatial" in kinds:
            placement_for(cfg, cell, "spatial")
        if cfg.placement.meshes is not None:
            explicit_placement(ctx, cfg.placement.meshes, c.nodes, c.gpus_per_node)


def _place(args) -> Placement:
    """Process-pool entry: ``args = (config, cell, kind)``."""
    cfg, cell, kind = args
    return placement_for(cfg, cell, kind)


def _search(args) -> Placement:
    """Process-pool entry: ``args = (config, cell, workload)``."""
    cfg, cell, wl = args
    return simulated_placement(cfg, cell, wl)


def seq_tokens(cfg: ExperimentConfig) -> int:
    """Tokens per sequence ADBS quotas assume: the config's, else mean prompt + output."""
    if cfg.scheduler.quota_seq_tokens is not None:
        return cfg.scheduler.quota_seq_tokens
    return int(round(sum(workload_means(cfg))))


def simulate_cell(cfg: ExperimentConfig, cell: Cell, strategy: str, placement: Placement,
                  workload: pd.DataFrame, latency=None, slo_latency=None, overheads: bool = True,
                  speed=None):
    """Simulate one strategy of one cell on its workload, with the config's scheduler knobs,
    job overheads and SLO base (:func:`muxsim.sim.driver.simulate`).

    Args:
        latency: replaces the GPU's latency model.
        slo_latency: the latency model of the SLO bases (default: ``latency`` without
            overheads).
        overheads: add the config's job-overhead model to every job.
        speed: as :func:`muxsim.sim.driver.simulate`'s.
    """
    run_latency, base = latency_models(cfg, latency)
    return simulate(run_spec(cfg, cell, strategy, placement, workload, run_latency if overheads else base,
                             slo_latency if slo_latency is not None else base), speed=speed)


def run_spec(cfg: ExperimentConfig, cell: Cell, strategy: str, placement: Placement, workload: pd.DataFrame,
             latency, slo_latency=None) -> RunSpec:
    """The :class:`~muxsim.core.replay.RunSpec` of one strategy of one cell: the config's LLMs,
    GPU, scheduler knobs, drain limit and SLO base, the cell's rates, jobs on ``latency`` and
    SLO bases on ``slo_latency`` (None: ``latency``)."""
    return RunSpec(placement, strategy, workload, cfg.llm_names(), [get_model(m) for m in cfg.llm_models()],
                   cell.rates, get_gpu(cfg.cluster.gpu), latency, cfg.scheduler, seq_tokens(cfg),
                   cfg.workload.drain_limit_s, slo_latency=slo_latency, slo_base=cfg.slo.base)


def _run_cell(args) -> CellRun:
    """Process-pool entry: simulate ``args = (config, cell, strategy, placement, workload)``."""
    t0 = time.perf_counter()
    cfg, cell, strategy, placement, wl = args
    res = simulate_cell(cfg, cell, strategy, placement, wl)
    df = res.requests
    df.insert(0, "strategy", strategy)
    df.insert(0, "cell", cell.label)
    for k, v in cell.params.items():
        df[k] = v
    df["latency_source"] = df["model"].map(res.latency_sources)
    return CellRun(cell.label, strategy, df, placement, res.sim_time_s, res.n_jobs,
                   res.latency_sources, time.perf_counter() - t0)


def _map(ex, fn, tasks, tick, label):
    """``fn`` over ``tasks`` in ``ex`` (or here when None), results in task order."""
    if ex is None:
        out = []
        for t in tasks:
            out.append(fn(t))
            tick(label(t))
        return out
    futs = {ex.submit(fn, t): k for k, t in enumerate(tasks)}
    out = [None] * len(tasks)
    for f in as_completed(futs):
        k = futs[f]
        out[k] = f.result()
        tick(label(tasks[k]))
    return out


def plan_experiment(cfg: ExperimentConfig, ex=None, tick: Callable[[str], None] = lambda s: None,
                    cells: list[Cell] | None = None, simulated: bool = True) -> list[CellPlan]:
    """The experiment plan: every cell with its placements and its workload (see the module
    docstring). ``ex``: a process pool for the placement searches (None: in this process);
    ``cells``: plan only these cells of ``cfg.cells()`` (each keeps its index); ``simulated``:
    also run the simulation-guided searches the strategies need (False: workloads only).

    Raises:
        muxsim.core.placement.PlacementError, ValueError: infeasible placement or bad input.
    """
    plans = [CellPlan(k, c) for k, c in enumerate(cfg.cells()) if cells is None or c in cells]
    kinds = [k for k in placement_kinds(cfg) if k != "simulated"]
    where = [(p, kind) for p in plans for kind in kinds]
    tasks = [(cfg, p.cell, kind) for p, kind in where]
    placed = _map(ex, _place, tasks, tick, lambda t: f"placement {t[1].label} {t[2]}")
    for (p, kind), pl in zip(where, placed):
        p.placements[kind] = pl
    for p in plans:
        p.counts = request_counts(cfg, p.placements.get("muxserve"))
        p.workload = cell_workload(cfg, p.cell, p.index, p.counts)
    if simulated and "simulated" in placement_kinds(cfg):
        # the longest workloads first keeps the workers busy to the end
        order = sorted(plans, key=lambda p: -len(p.workload))
        found = _map(ex, _search, [(cfg, p.cell, p.workload) for p in order], tick,
                     lambda t: f"simulated search {t[1].label}")
        for p, pl in zip(order, found):
            p.placements["simulated"] = pl
    return plans


def run_experiment(cfg: ExperimentConfig, jobs: int = 1,
                   progress: Callable[[str], None] | None = None) -> tuple[list[CellPlan], list[CellRun]]:
    """Plan the experiment and simulate every cell under every strategy.

    Args:
        cfg: the experiment.
        jobs: worker processes (1 runs in this process).
        progress: called with a short label after each placement search and each simulation.

    Returns:
        (the plan, one :class:`CellRun` per (cell, strategy) in cell then config strategy order).

    Raises:
        muxsim.core.placement.PlacementError, ValueError: infeasible placement or bad input.
    """
    tick = progress or (lambda label: None)
    workers = min(jobs, os.cpu_count() or 1)
    ex = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        plans = plan_experiment(cfg, ex, tick)
        tasks = [(cfg, p.cell, s, p.placements[strategy_placement(cfg, s)], p.workload)
                 for p in plans for s in cfg.strategies]
        # longest cells first keeps the workers busy to the end
        order = sorted(range(len(tasks)), key=lambda k: -len(tasks[k][4]))
        done = _map(ex, _run_cell, [tasks[k] for k in order], tick, lambda t: f"{t[1].label} {t[2]}")
        runs = [None] * len(tasks)
        for k, r in zip(order, done):
            runs[k] = r
        return plans, runs
    finally:
        if ex is not None:
            ex.shutdown()
