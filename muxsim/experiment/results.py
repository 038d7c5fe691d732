"""An experiment's results, gathered from its plan and runs: the request table, the summary
with MuxServe's throughput figures and each row's latency source, the ratios against MuxServe,
the run facts of ``run.json``, and writing them all as one output folder."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from muxsim import metrics, report
from muxsim._version import __version__
from muxsim.catalog import get_model
from muxsim.config import Cell, ExperimentConfig
from muxsim.core.placement import Placement
from muxsim.files import staged_folder
from muxsim.workload import save_workload

from .placements import placement_for, strategy_placement
from .plan import CellPlan, plan_experiment
from .simulation import CellRun, simulate_cell

__all__ = ["ExperimentResults", "PlacementCheck", "check_placement", "experiment_results", "experiment_summary", "placement_facts",
           "save_workloads"]


@dataclass(frozen=True)
class ExperimentResults:
    """Everything a run writes and prints.

    Attributes:
        cfg: the experiment.
        plans, runs: as :func:`muxsim.experiment.run_experiment` returned them.
        requests: every run's per-request table, concatenated in run order.
        summary: :func:`experiment_summary` plus a ``latency_source`` column.
        ratios: each strategy against MuxServe on total throughput, throughput and goodput
            (:func:`muxsim.metrics.ratios`), or None without MuxServe or another strategy.
        facts: the run facts ``run.json`` holds besides seed, version and files (all
            deterministic: no wall times).
        roofline, fitted_scaled: models whose latency came from the roofline model (not
            calibrated) or from a fitted curve scaled to an unprofiled mesh size.
    """

    cfg: ExperimentConfig
    plans: list[CellPlan]
    runs: list[CellRun]
    requests: pd.DataFrame
    summary: pd.DataFrame
    ratios: pd.DataFrame | None
    facts: dict
    roofline: list[str]
    fitted_scaled: list[str]

    @property
    def n_requests(self) -> int:
        """Simulated requests, over every cell and strategy."""
        return len(self.requests)

    @property
    def sim_time_s(self) -> float:
        """Simulated time, summed over every run (s)."""
        return sum(r.sim_time_s for r in self.runs)

    @property
    def worker_s(self) -> float:
        """Wall time the simulations took in their workers, summed (s)."""
        return sum(r.wall_s for r in self.runs)

    def write(self, out_dir: str | Path) -> Path:
        """Write every output (:func:`muxsim.report.write_outputs`, plus each cell's workload as
        ``workload_<cell index>.parquet``) into a staging folder beside ``out_dir`` and rename it
        into place (:func:`muxsim.files.staged_folder`).

        Raises:
            NotADirectoryError: ``out_dir`` exists and is not a folder.
        """
        out_dir = Path(out_dir)
        with staged_folder(out_dir) as staging:
            report.write_outputs(self.requests, self.summary, self.ratios, staging,
                                 self.cfg.model_dump(mode="json"), self.cfg.seed, __version__, extra=self.facts)
            save_workloads(self.plans, staging)
        return out_dir


def experiment_results(cfg: ExperimentConfig, plans: list[CellPlan], runs: list[CellRun]) -> ExperimentResults:
    """Gather an experiment's results (see :class:`ExperimentResults`)."""
    requests = pd.concat([r.requests for r in runs], ignore_index=True)
    summary = experiment_summary(cfg, plans, runs, requests)
    summary["latency_source"] = _latency_source_column(summary, requests)
    ratios = None
    if "muxserve" in cfg.strategies and len(cfg.strategies) > 1:
        ratios = pd.concat([metrics.ratios(summary, reference="muxserve", on=m)
                            for m in ("total_throughput_rps", "throughput_rps", "goodput_rps")],
                           ignore_index=True)
    roofline = sorted({m for r in runs for m, s in r.latency_sources.items() if s == "roofline"})
    scaled = sorted({m for r in runs for m, s in r.latency_sources.items() if s == "fitted-scaled"})
    models = [get_model(m) for m in dict.fromkeys(cfg.llm_models())]
    facts = {
        "latency_model": {m: s for r in runs for m, s in r.latency_sources.items()},
        "roofline_models": roofline,
        "fitted_scaled_models": scaled,
        "job_overhead": cfg.overhead.model().as_dict(models),
        "slo_base": cfg.slo.base,
        "placements": {f"{r.cell} | {r.strategy}": placement_facts(r.placement) for r in runs},
        "request_counts": {p.cell.label: dict(zip(cfg.llm_names(), p.counts))
                           for p in plans if p.counts is not None},
        "workloads": {p.cell.label: f"workload_{p.index}.parquet" for p in plans},
    }
    return ExperimentResults(cfg, plans, runs, requests, summary, ratios, facts, roofline, scaled)


def experiment_summary(cfg: ExperimentConfig, plans: list[CellPlan], runs: list[CellRun],
                       requests: pd.DataFrame) -> pd.DataFrame:
    """The run's summary: :func:`muxsim.metrics.summarize` per cell and strategy, with each LLM's
    rate, its placement's estimate and MuxServe's throughput figures
    (:func:`muxsim.metrics.add_serving_columns`)."""
    summary = metrics.summarize(requests, cfg.slo.scales, cfg.slo.goodput_scale, group_cols=("cell", "strategy"))
    rates = {p.cell.label: dict(zip(cfg.llm_names(), p.cell.rates)) for p in plans}
    facts = pd.DataFrame([(r.cell, r.strategy, n, rates[r.cell][n], r.placement.est_throughput.get(n, float("nan")))
                          for r in runs for n in cfg.llm_names()],
                         columns=["cell", "strategy", "llm", "rate_rps", "estimated_throughput_rps"])
    return metrics.add_serving_columns(summary, facts, len(cfg.llm_names()), cfg.slo.base)


def placement_facts(p: Placement) -> dict:
    """A placement for run.json: its meshes, how it was made and its per-LLM estimate (req/s)."""
    out = {"method": p.method, "meshes": p.to_dict(),
           "estimated_throughput_rps": {k: round(float(v), 6) for k, v in p.est_throughput.items()}}
    if p.method in ("analytic", "simulated"):
        out.update(score=round(float(p.score), 6), layouts_searched=p.layouts_searched,
                   candidates_simulated=int(p.search.get("candidates_simulated", 0)))
    if p.search:
        # wall time varies between runs; everything else in run.json is deterministic
        out["search"] = {k: v for k, v in p.search.items() if k != "wall_s"}
    return out


def _latency_source_column(summary: pd.DataFrame, requests: pd.DataFrame) -> list[str]:
    """Per summary row, the latency model behind it: fitted, fitted-scaled or roofline (joined
    with '+' on overall rows that mix them)."""
    keys = ["cell", "strategy", "llm"]
    per_llm = requests.groupby(keys, sort=False)["latency_source"].first()
    per_group = requests.groupby(["cell", "strategy"], sort=False)["latency_source"].agg(
        lambda s: "+".join(sorted(set(s))))
    return [per_group[(c, s)] if llm == "all" else per_llm[(c, s, llm)]
            for c, s, llm in zip(summary["cell"], summary["strategy"], summary["llm"])]


def save_workloads(plans: list[CellPlan], folder: Path) -> list[Path]:
    """Write each planned cell's workload as ``workload_<cell index>.parquet`` (replay it with
    ``workload.file``)."""
    return [save_workload(p.workload, Path(folder) / f"workload_{p.index}.parquet") for p in plans]


@dataclass(frozen=True)
class PlacementCheck:
    """One cell's placement for a strategy (``muxsim place``) and, when simulated, what it
    served.

    Attributes:
        placement: the placement.
        served: per LLM name and ``"all"``, the :func:`muxsim.metrics.summarize` row of the
            simulation (column -> value); empty when not simulated.
        seconds: wall time of the search (and simulation), s.
    """

    placement: Placement
    served: dict
    seconds: float


def check_placement(cfg: ExperimentConfig, cell: Cell, strategy: str, simulate: bool = False) -> PlacementCheck:
    """Place ``cell`` for ``strategy`` and, with ``simulate``, simulate it on the cell's
    workload (the simulation-guided search always needs the workload, so it is drawn then).

    Raises:
        muxsim.core.placement.PlacementError, ValueError: infeasible placement or bad input.
    """
    t0 = time.perf_counter()
    kind = strategy_placement(cfg, strategy)
    served: dict = {}
    if simulate or kind == "simulated":
        (plan,) = plan_experiment(cfg.model_copy(update={"strategies": [strategy]}), cells=[cell])
        p = plan.placements[kind]
        if simulate:
            res = simulate_cell(cfg, cell, strategy, p, plan.workload)
            summ = metrics.summarize(res.requests.assign(cell=cell.label, strategy=strategy), cfg.slo.scales,
                                     cfg.slo.goodput_scale)
            served = summ.set_index("llm").to_dict("index")
    else:
        p = placement_for(cfg, cell, kind)
    return PlacementCheck(p, served, time.perf_counter() - t0)
