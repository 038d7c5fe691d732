"""The experiment plan, built once in the calling process: the cells, each cell's placements
(searched in worker processes, one per placement kind the strategies need) and each cell's
workload, drawn once from a seed keyed by the cell's parameters and served to every strategy of
the cell (as the paper served one workload file to all three systems). With the reference
benchmark's request counts (``workload.requests.rule: estimate``) a cell's workload depends on
its MuxServe placement's estimate, so placements come first.

A placement kind that cannot be placed on a cell (:class:`~muxsim.core.placement.PlacementError`,
e.g. spatial partitioning needing more GPUs than a small cluster of a cluster sweep has) is
recorded as infeasible for that cell with the error's one-line reason, and the rest of the plan
goes on (:attr:`CellPlan.infeasible`); the strategies on that kind are then not simulated there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from muxsim.config import Cell, ExperimentConfig
from muxsim.core.placement import Placement, PlacementError

from .placements import placement_for, placement_kinds, simulated_placement
from .tasks import map_tasks
from .workloads import cell_workload, request_counts

__all__ = ["CellPlan", "EmptyWorkloadError", "Infeasible", "PlacementTask", "plan_experiment"]


class EmptyWorkloadError(ValueError):
    """A cell whose drawn workload has no request (its rates x duration, or its request counts,
    keep none), with a one-line message naming the cell."""


@dataclass(frozen=True)
class CellPlan:
    """One cell of the experiment plan: the cell, its index in ``cfg.cells()``, its placements
    by placement kind (``"muxserve"``, ``"spatial"``, ``"simulated"``), its workload
    (drawn once, served to every strategy) and the per-LLM request counts it was drawn with
    (None: every arrival within ``duration_s``).

    ``infeasible``: placement kind -> the one-line reason it could not be placed on this cell
    (those kinds are absent from ``placements``). ``workload`` is None when it could not be
    drawn (request counts following a MuxServe estimate that has no placement; every kind is
    then infeasible)."""

    index: int
    cell: Cell
    placements: dict[str, Placement]
    workload: pd.DataFrame | None
    counts: list[int] | None = None
    infeasible: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Infeasible:
    """A placement search's answer when nothing feasible exists: the PlacementError's line."""

    reason: str


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
    """Place ``task``'s cell (a worker's entry point).

    Raises:
        muxsim.core.placement.PlacementError: nothing feasible.
    """
    if task.kind == "simulated":
        return simulated_placement(task.cfg, task.cell, task.workload, task.latency)
    return placement_for(task.cfg, task.cell, task.kind, task.latency)


def place_or_refuse(task: PlacementTask) -> Placement | Infeasible:
    """:func:`place`, with nothing feasible answered as :class:`Infeasible` (a worker's entry
    point: the answer crosses the process boundary as a value, not as a raised error)."""
    try:
        return place(task)
    except PlacementError as e:
        return Infeasible(str(e).splitlines()[0] if str(e) else "no feasible placement")


def plan_experiment(cfg: ExperimentConfig, ex=None, tick: Callable[[str], None] = lambda s: None,
                    cells: list[Cell] | None = None, simulated: bool = True, latency=None,
                    strict: bool = False) -> list[CellPlan]:
    """The experiment plan: every cell with its placements and its workload (see the module
    docstring). ``ex``: a process pool for the placement searches (None: in this process);
    ``cells``: plan only these cells of ``cfg.cells()`` (each keeps its index); ``simulated``:
    also run the simulation-guided searches the strategies need (False: workloads only);
    ``latency``: the latency model placements are searched on (None: the GPU's default; live
    validation passes its calibrated one); ``strict``: raise the first PlacementError instead
    of recording the kind as infeasible for its cell.

    Raises:
        muxsim.core.placement.PlacementError: ``strict`` and a kind cannot be placed on a cell.
        EmptyWorkloadError: a cell whose workload has no request.
    """
    wanted = None if cells is None else {c.ident for c in cells}
    chosen = [(k, c) for k, c in enumerate(cfg.cells()) if wanted is None or c.ident in wanted]
    placements: list[dict[str, Placement]] = [{} for _ in chosen]
    refused: list[dict[str, str]] = [{} for _ in chosen]

    def keep(i: int, kind: str, got: Placement | Infeasible) -> None:
        if isinstance(got, Infeasible):
            if strict:
                raise PlacementError(got.reason)
            refused[i][kind] = got.reason
        else:
            placements[i][kind] = got

    kinds = [k for k in placement_kinds(cfg) if k != "simulated"]
    where = [(i, kind) for i in range(len(chosen)) for kind in kinds]
    tasks = [PlacementTask(cfg.for_cell(chosen[i][1]), chosen[i][1], kind, latency=latency) for i, kind in where]
    for (i, kind), got in zip(where, map_tasks(ex, place_or_refuse, tasks, tick, lambda t: t.label)):
        keep(i, kind, got)
    req = cfg.workload.requests
    by_estimate = req is not None and req.rule == "estimate"
    workloads: list[pd.DataFrame | None] = []
    counts: list[list[int] | None] = []
    for i, (k, c) in enumerate(chosen):
        if "muxserve" in refused[i] and "simulated" in placement_kinds(cfg):
            refused[i].setdefault("simulated", refused[i]["muxserve"])  # it starts from MuxServe's layouts
        if by_estimate and "muxserve" in refused[i]:
            # the request counts follow MuxServe's estimate: without it there is no workload
            why = (f"workload.requests.rule 'estimate' follows MuxServe's placement, which is infeasible: "
                   f"{refused[i]['muxserve']}")
            refused[i].update({kind: why for kind in placement_kinds(cfg) if kind not in refused[i]})
            placements[i] = {}
            workloads.append(None)
            counts.append(None)
            continue
        n = request_counts(cfg, placements[i].get("muxserve"))
        wl = cell_workload(cfg, c, k, n)
        if len(wl) == 0:
            raise EmptyWorkloadError(f"cell {c.label}: its workload has no request (rates x workload.duration_s, "
                             f"or the request counts, keep none); lengthen the workload or raise the rates")
        workloads.append(wl)
        counts.append(n)
    if simulated and "simulated" in placement_kinds(cfg):
        todo = [i for i in range(len(chosen)) if "simulated" not in refused[i]]
        # the longest workloads first keeps the workers busy to the end
        order = sorted(todo, key=lambda i: -len(workloads[i]))
        tasks = [PlacementTask(cfg.for_cell(chosen[i][1]), chosen[i][1], "simulated", workloads[i], latency)
                 for i in order]
        for i, got in zip(order, map_tasks(ex, place_or_refuse, tasks, tick, lambda t: t.label)):
            keep(i, "simulated", got)
    return [CellPlan(k, c, p, wl, n, r)
            for (k, c), p, wl, n, r in zip(chosen, placements, workloads, counts, refused)]
