"""Simulating one strategy of one cell: its run spec, the simulation, and the task a worker
process receives for it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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
    """One simulated (cell, strategy): its per-request table and run facts.

    Attributes:
        cell, strategy: the cell's label and the strategy.
        requests: the per-request table (None once a :class:`~muxsim.experiment.results.RequestStore`
            took it).
        placement: the placement it ran on.
        sim_time_s: simulated time at the end of the run (s).
        n_jobs: jobs the simulator ran.
        latency_sources: per model, the latency source (fitted, fitted-scaled, roofline).
        wall_s: wall time of the simulation in its worker (s).
        cpu_s: CPU time the worker process spent on it (s, :func:`time.process_time`): what
            "per CPU second" figures divide by; below ``wall_s`` when the worker waited for a
            core.
        itl: its inter-token latencies per LLM name (:class:`muxsim.core.itl.ITLHistogram`).
        jobs: its job log with ``cell`` and ``strategy`` columns first (None: no timeline
            asked for it).
    """

    cell: str
    strategy: str
    requests: pd.DataFrame
    placement: Placement
    sim_time_s: float
    n_jobs: int
    latency_sources: dict[str, str]
    wall_s: float
    cpu_s: float = 0.0
    itl: dict = field(default_factory=dict)
    jobs: pd.DataFrame | None = None


@dataclass(frozen=True)
class CellTask:
    """What a worker needs to simulate one strategy of one cell: the validated config (not
    validated again), the cell, the strategy, its placement, the cell's workload and the
    job-log window (s; None: no job log)."""

    cfg: ExperimentConfig
    cell: Cell
    strategy: str
    placement: Placement
    workload: pd.DataFrame
    timeline: tuple[float, float] | None = None

    @property
    def label(self) -> str:
        """``"<cell label> <strategy>"``, for progress lines."""
        return f"{self.cell.label} {self.strategy}"


def simulate_cell(cfg: ExperimentConfig, cell: Cell, strategy: str, placement: Placement,
                  workload: pd.DataFrame, latency=None, slo_latency=None, overheads: bool = True,
                  speed=None, timeline: tuple[float, float] | None = None) -> SimResult:
    """Simulate one strategy of one cell on its workload, with the config's scheduler knobs,
    job overheads and SLO base (:func:`muxsim.sim.driver.simulate`).

    Args:
        latency: replaces the GPU's latency model.
        slo_latency: the latency model of the SLO bases (default: ``latency`` without
            overheads).
        overheads: add the config's job-overhead model to every job.
        speed, timeline: as :func:`muxsim.sim.driver.simulate`'s.
    """
    cfg = cfg.for_cell(cell)
    run_latency, base = latency_models(cfg, latency)
    return simulate(run_spec(cfg, cell, strategy, placement, workload, run_latency if overheads else base,
                             slo_latency if slo_latency is not None else base), speed=speed,
                    timeline=timeline)


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
    t0, c0 = time.perf_counter(), time.process_time()
    cfg, cell, strategy = task.cfg, task.cell, task.strategy
    res = simulate_cell(cfg, cell, strategy, task.placement, task.workload, timeline=task.timeline)
    df = res.requests
    df.insert(0, "strategy", strategy)
    df.insert(0, "cell", cell.label)
    for k, v in cell.params.items():
        df[k] = v
    df["latency_source"] = df["model"].map(res.latency_sources)
    jobs = res.jobs
    if jobs is not None:
        jobs.insert(0, "strategy", strategy)
        jobs.insert(0, "cell", cell.label)
    return CellRun(cell.label, strategy, df, task.placement, res.sim_time_s, res.n_jobs,
                   res.latency_sources, time.perf_counter() - t0, time.process_time() - c0, res.itl, jobs)
