"""Simulating one strategy of one cell: its run spec, the simulation, and the task a worker
process receives for it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd

from muxsim.catalog import get_gpu, get_model
from muxsim.config import Cell, ExperimentConfig
from muxsim.core.placement import Placement
from muxsim.core.replay import RunSpec
from muxsim.sim.driver import SimResult, simulate

from .placements import latency_models
from .workloads import seq_tokens

__all__ = ["CellRun", "CellTask", "run_cell", "run_spec", "simulate_cell"]


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


@dataclass(frozen=True)
class CellTask:
    """What a worker needs to simulate one strategy of one cell: the validated config (not
    validated again), the cell, the strategy, its placement and the cell's workload."""

    cfg: ExperimentConfig
    cell: Cell
    strategy: str
    placement: Placement
    workload: pd.DataFrame

    @property
    def label(self) -> str:
        """``"<cell label> <strategy>"``, for progress lines."""
        return f"{self.cell.label} {self.strategy}"


def simulate_cell(cfg: ExperimentConfig, cell: Cell, strategy: str, placement: Placement,
                  workload: pd.DataFrame, latency=None, slo_latency=None, overheads: bool = True,
                  speed=None) -> SimResult:
    """Simulate one strategy of one cell on its workload, with the config's scheduler knobs,
    job overheads and SLO base (:func:`muxsim.sim.driver.simulate`).

    Args:
        latency: replaces the GPU's latency model.
        slo_latency: the latency model of the SLO bases (default: ``latency`` without
            overheads).
        overheads: add the config's job-overhead model to every job.
        speed: as :func:`muxsim.sim.driver.simulate`'s.
    """
    cfg = cfg.for_cell(cell)
    run_latency, base = latency_models(cfg, latency)
    return simulate(run_spec(cfg, cell, strategy, placement, workload, run_latency if overheads else base,
                             slo_latency if slo_latency is not None else base), speed=speed)


def run_spec(cfg: ExperimentConfig, cell: Cell, strategy: str, placement: Placement, workload: pd.DataFrame,
             latency, slo_latency=None) -> RunSpec:
    """The :class:`~muxsim.core.replay.RunSpec` of one strategy of one cell: the config's LLMs,
    GPU, scheduler knobs, drain limit and SLO base, the cell's rates, jobs on ``latency`` and
    SLO bases on ``slo_latency`` (None: ``latency``). The cell's own cluster (a cluster
    sweep's) sets the GPU."""
    cfg = cfg.for_cell(cell)
    return RunSpec(placement, strategy, workload, cfg.llm_names(), [get_model(m) for m in cfg.llm_models()],
                   cell.rates, get_gpu(cfg.cluster.gpu), latency, cfg.scheduler, seq_tokens(cfg),
                   cfg.workload.drain_limit_s, slo_latency=slo_latency, slo_base=cfg.slo.base)


def run_cell(task: CellTask) -> CellRun:
    """Simulate ``task`` (a worker's entry point): the per-request table with the cell's label,
    strategy, sweep parameters and each request's latency source added."""
    t0 = time.perf_counter()
    cfg, cell, strategy = task.cfg, task.cell, task.strategy
    res = simulate_cell(cfg, cell, strategy, task.placement, task.workload)
    df = res.requests
    df.insert(0, "strategy", strategy)
    df.insert(0, "cell", cell.label)
    for k, v in cell.params.items():
        df[k] = v
    df["latency_source"] = df["model"].map(res.latency_sources)
    return CellRun(cell.label, strategy, df, task.placement, res.sim_time_s, res.n_jobs,
                   res.latency_sources, time.perf_counter() - t0)
