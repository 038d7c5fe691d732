"""Run an experiment: plan it once (:mod:`.plan`), then simulate every cell under every strategy
in worker processes (a local pool or Ray). Results are gathered in cell and strategy order, so
the output does not depend on ``jobs`` nor on the executor. A strategy whose placement is
infeasible on a cell is not simulated there (:func:`infeasible_runs` lists them); only when no
strategy can be placed on any cell does the run fail."""

from __future__ import annotations

from collections.abc import Callable

from muxsim.config import ExperimentConfig
from muxsim.core.placement import PlacementError

from .placements import strategy_placement
from .plan import CellPlan, plan_experiment
from .simulation import CellRun, CellTask, run_cell
from .tasks import map_tasks, worker_pool

__all__ = ["infeasible_runs", "run_experiment"]


def infeasible_runs(cfg: ExperimentConfig, plans: list[CellPlan]) -> list[tuple[CellPlan, str, str]]:
    """The (cell plan, strategy, one-line reason) of every strategy whose placement kind is
    infeasible on its cell, in cell then config strategy order."""
    return [(p, s, p.infeasible[strategy_placement(cfg, s)]) for p in plans for s in cfg.strategies
            if strategy_placement(cfg, s) in p.infeasible]


def run_experiment(cfg: ExperimentConfig, jobs: int = 1,
                   progress: Callable[[str], None] | None = None, executor: str = "process",
                   address: str | None = None,
                   on_run: Callable[[int, CellRun], CellRun] | None = None) -> tuple[list[CellPlan], list[CellRun]]:
    """Plan the experiment and simulate every cell under every strategy.

    Args:
        cfg: the experiment.
        jobs: worker processes (executor ``"process"``: 1 runs in this process; ``"ray"``: the
            CPUs of the local Ray instance, unused with ``address``).
        progress: called with a short label after each placement search and each simulation.
        executor: ``"process"`` (a local process pool) or ``"ray"`` (Ray remote tasks; the
            optional extra ``muxsim[ray]``); see :func:`~muxsim.experiment.tasks.worker_pool`.
        address: executor ``"ray"``: an existing cluster's address (None: a local instance
            started for the run and shut down after it).
        on_run: called as ``on_run(k, run)`` in this process as each run arrives (in completion
            order; ``k`` its index in the returned list); what it returns is kept in place of
            the run. :meth:`muxsim.experiment.results.RequestStore.add` writes the run's request
            table away and returns the run without it, so that this process holds one run's
            table at a time rather than every run's (None: keep every run as it came).

    Returns:
        (the plan, one :class:`CellRun` per feasible (cell, strategy) in cell then config
        strategy order, as ``on_run`` returned them; :func:`infeasible_runs` of the plan lists
        the others).

    Raises:
        muxsim.core.placement.PlacementError: no strategy can be placed on any cell (the first
            reason; with several cells, naming the cell and strategy).
        ValueError: bad input.
        muxsim.config.ConfigError: ``timeline.cells`` names no cell of the sweep.
        Whatever ``on_run`` raises (the remaining tasks are then stopped).
        ModuleNotFoundError: executor ``"ray"`` without ray installed.
        muxsim.experiment.ray_executor.ExecutorError: Ray failed to start or to connect.
        Any exception (KeyboardInterrupt included) propagates after the workers are stopped.
    """
    tick = progress or (lambda label: None)
    if cfg.timeline is not None:
        cfg.check_timeline_cells(cfg.cells())
    # worker_pool stops the workers at once (running tasks abandoned) when this block raises,
    # Ctrl-C and SIGTERM included, and its workers die with this process in any case.
    with worker_pool(jobs, executor, address) as ex:
        plans = plan_experiment(cfg, ex, tick)
        tasks = [CellTask(cfg.for_cell(p.cell), p.cell, s, p.placements[strategy_placement(cfg, s)], p.workload,
                          cfg.timeline_window(p.cell, p.index, s))
                 for p in plans for s in cfg.strategies if strategy_placement(cfg, s) in p.placements]
        if not tasks:
            refused = infeasible_runs(cfg, plans)
            p, s, why = refused[0]
            raise PlacementError(why if len(plans) == 1 else
                                 f"no strategy can be placed on any cell; {p.cell.label} {s}: {why}")
        # longest cells first keeps the workers busy to the end
        order = sorted(range(len(tasks)), key=lambda k: -len(tasks[k].workload))
        # map_tasks numbers tasks by their place in `order`; on_run gets the run's own index
        keep = None if on_run is None else (lambda j, r: on_run(order[j], r))
        done = map_tasks(ex, run_cell, [tasks[k] for k in order], tick, lambda t: t.label, keep)
    runs = [None] * len(tasks)
    for k, r in zip(order, done):
        runs[k] = r
    return plans, runs
