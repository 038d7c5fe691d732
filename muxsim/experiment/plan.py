"""The experiment plan, built once in the calling process: the cells, each cell's placements
(searched in worker processes, one per placement kind the strategies need) and each cell's
workload, drawn once from a seed keyed by the cell's parameters and served to every strategy of
the cell (as the paper served one workload file to all three systems). With the reference
benchmark's request counts (``workload.requests.rule: estimate``) a cell's workload depends on
its MuxServe placement's estimate, so placements come first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from muxsim.config import Cell, ExperimentConfig
from muxsim.core.placement import Placement

from .placements import placement_for, placement_kinds, simulated_placement
from .tasks import map_tasks
from .workloads import cell_workload, request_counts

__all__ = ["CellPlan", "PlacementTask", "plan_experiment"]


@dataclass(frozen=True)
class CellPlan:
    """One cell of the experiment plan: the cell, its index in ``cfg.cells()``, its placements
    by placement kind (``"muxserve"``, ``"spatial"``, ``"simulated"``), its workload
    (drawn once, served to every strategy) and the per-LLM request counts it was drawn with
    (None: every arrival within ``duration_s``)."""

    index: int
    cell: Cell
    placements: dict[str, Placement]
    workload: pd.DataFrame
    counts: list[int] | None = None


@dataclass(frozen=True)
class PlacementTask:
    """What a worker needs to place one cell: the validated config, the cell, the placement
    kind, for the simulation-guided search (kind ``"simulated"``) the cell's workload, and a
    latency model replacing the GPU's default (None: the default)."""

    cfg: ExperimentConfig
    cell: Cell
    kind: str
    workload: pd.DataFrame | None = None
    latency: object = None

    @property
    def label(self) -> str:
        """A progress line."""
        return (f"simulated search {self.cell.label}" if self.kind == "simulated"
                else f"placement {self.cell.label} {self.kind}")


def place(task: PlacementTask) -> Placement:
    """Place ``task``'s cell (a worker's entry point)."""
    if task.kind == "simulated":
        return simulated_placement(task.cfg, task.cell, task.workload, task.latency)
    return placement_for(task.cfg, task.cell, task.kind, task.latency)


def plan_experiment(cfg: ExperimentConfig, ex=None, tick: Callable[[str], None] = lambda s: None,
                    cells: list[Cell] | None = None, simulated: bool = True, latency=None) -> list[CellPlan]:
    """The experiment plan: every cell with its placements and its workload (see the module
    docstring). ``ex``: a process pool for the placement searches (None: in this process);
    ``cells``: plan only these cells of ``cfg.cells()`` (each keeps its index); ``simulated``:
    also run the simulation-guided searches the strategies need (False: workloads only);
    ``latency``: the latency model placements are searched on (None: the GPU's default; live
    validation passes its calibrated one).

    Raises:
        muxsim.core.placement.PlacementError, ValueError: infeasible placement or bad input.
    """
    wanted = None if cells is None else {c.key for c in cells}
    chosen = [(k, c) for k, c in enumerate(cfg.cells()) if wanted is None or c.key in wanted]
    placements: list[dict[str, Placement]] = [{} for _ in chosen]
    kinds = [k for k in placement_kinds(cfg) if k != "simulated"]
    where = [(i, kind) for i in range(len(chosen)) for kind in kinds]
    tasks = [PlacementTask(cfg, chosen[i][1], kind, latency=latency) for i, kind in where]
    for (i, kind), pl in zip(where, map_tasks(ex, place, tasks, tick, lambda t: t.label)):
        placements[i][kind] = pl
    counts = [request_counts(cfg, p.get("muxserve")) for p in placements]
    workloads = [cell_workload(cfg, c, k, n) for (k, c), n in zip(chosen, counts)]
    for (k, c), wl in zip(chosen, workloads):
        if len(wl) == 0:
            raise ValueError(f"cell {c.label}: its workload has no request (rates x workload.duration_s, "
                             f"or the request counts, keep none); lengthen the workload or raise the rates")
    if simulated and "simulated" in placement_kinds(cfg):
        # the longest workloads first keeps the workers busy to the end
        order = sorted(range(len(chosen)), key=lambda i: -len(workloads[i]))
        tasks = [PlacementTask(cfg, chosen[i][1], "simulated", workloads[i], latency) for i in order]
        for i, pl in zip(order, map_tasks(ex, place, tasks, tick, lambda t: t.label)):
            placements[i]["simulated"] = pl
    return [CellPlan(k, c, p, wl, n)
            for (k, c), p, wl, n in zip(chosen, placements, workloads, counts)]
