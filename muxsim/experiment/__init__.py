"""The experiment layer: an experiment config turned into a plan (cells, workloads,
placements, built once), simulated under every strategy in worker processes, gathered into
results and written as one output folder; and validation of the simulator against a live
engine on the same plan.

Modules: :mod:`.workloads` (each cell's workload), :mod:`.placements` (each cell's placements),
:mod:`.plan` (the plan), :mod:`.simulation` (one strategy of one cell), :mod:`.tasks` (worker
processes), :mod:`.run` (the whole experiment), :mod:`.results` (gathering and writing),
:mod:`.sizing` (``muxsim size``: searches over rates and clusters), :mod:`.validation`
(simulated vs live).
"""

from .placements import (
    latency_models,
    placement_context,
    placement_for,
    placement_kinds,
    preflight,
    simulated_placement,
    strategy_placement,
)
from .plan import CellPlan, PlacementTask, plan_experiment
from .results import (
    ExperimentResults,
    PlacementCheck,
    check_placement,
    experiment_results,
    experiment_summary,
    placement_facts,
    save_workloads,
)
from .run import infeasible_runs, run_experiment
from .simulation import CellRun, CellTask, run_cell, run_spec, simulate_cell
from .workloads import (
    cell_seed,
    cell_workload,
    lengths_sampler,
    request_counts,
    seq_tokens,
    workload_context,
    workload_means,
)

__all__ = [
    "CellPlan", "CellRun", "CellTask", "ExperimentResults", "PlacementCheck", "PlacementTask",
    "cell_seed", "cell_workload", "check_placement", "infeasible_runs", "experiment_results", "experiment_summary",
    "latency_models", "lengths_sampler", "placement_context", "placement_facts",
    "placement_for", "placement_kinds", "plan_experiment", "preflight", "request_counts",
    "run_cell", "run_experiment", "run_spec", "save_workloads", "seq_tokens", "simulate_cell",
    "simulated_placement", "strategy_placement", "workload_context", "workload_means",
]
