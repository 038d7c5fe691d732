"""What every driver does around the policy core, written once: the run spec, the workload as
:class:`~muxsim.core.llm.Request` objects, the stop time, the latency curves and the result table.

The simulator (:func:`muxsim.sim.driver.simulate`) and the live driver
(:func:`muxsim.live.driver.run_live`) differ only in where time comes from; both take a
:class:`RunSpec` and call these helpers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from muxsim.catalog import GPUSpec, ModelSpec
from muxsim.core.llm import LLMRuntime, Request
from muxsim.core.placement import Placement
from muxsim.core.records import DRAINED, STALLED, RequestLog, log_table, request_table
from muxsim.core.settings import SchedulerConfig
from muxsim.core.strategies import build_schedulers

__all__ = ["RunSpec", "WorkloadColumns", "attach_curves", "log_result_table", "mesh_index", "placement_curves",
           "result_table", "stop_time", "workload_columns", "workload_requests"]


@dataclass(frozen=True)
class RunSpec:
    """One strategy serving one workload: everything a driver needs.

    Attributes:
        placement: meshes and SM shares.
        strategy: a name of :data:`muxsim.core.strategies.STRATEGIES`.
        workload: table with ``request_id, llm, arrival_s, prompt_tokens, output_tokens``
            (:data:`muxsim.workload.WORKLOAD_COLUMNS`), one row per request.
        names, models, rates: per LLM, in config order (rates in req/s, for KV quotas).
        gpu: GPU kind.
        latency: latency model, ``latency.curve(model, n_gpus, gpu)``: the simulator runs jobs
            on it (job overheads, when modelled, are part of it:
            :class:`muxsim.perf.overhead.OverheadLatency`); the live driver predicts each job's
            duration with it.
        scheduler: scheduler knobs.
        seq_tokens: tokens per sequence ADBS quotas assume.
        drain_limit_s: stop this many seconds after the last arrival; None runs until every
            request finished.
        slo_latency: latency model of each request's SLO bases (without job overheads: an SLO
            is a fixed target, not a property of the system judged); None uses ``latency``.
        slo_base: which SLO base the ``slo_base_s`` column holds
            (:data:`muxsim.core.records.SLO_BASES`).
    """

    placement: Placement
    strategy: str
    workload: pd.DataFrame
    names: Sequence[str]
    models: Sequence[ModelSpec]
    rates: Sequence[float]
    gpu: GPUSpec
    latency: Any
    scheduler: SchedulerConfig
    seq_tokens: int
    drain_limit_s: float | None = None
    slo_latency: Any = None
    slo_base: str = "alone"

    def build(self):
        """The mesh schedulers and LLM runtimes of this run
        (:func:`muxsim.core.strategies.build_schedulers`).

        Raises:
            ValueError: as ``build_schedulers``.
        """
        return build_schedulers(self.placement, self.strategy, self.names, self.models, self.rates,
                                self.gpu, self.scheduler, self.seq_tokens)


@dataclass(frozen=True)
class WorkloadColumns:
    """A workload as arrays, one entry per row (request ``k`` is row ``k``).

    Attributes:
        llm: index into the run's LLM names, int64.
        arrival: arrival time (s), float64.
        prompt, output: prompt and output tokens, int64.
        order: the rows by arrival (stable: ties keep workload order), int64.
    """

    llm: np.ndarray
    arrival: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    order: np.ndarray

    def __len__(self) -> int:
        return len(self.llm)


def workload_columns(workload: pd.DataFrame, names: Sequence[str]) -> WorkloadColumns:
    """The workload's columns as :class:`WorkloadColumns` (``llm`` indexes ``names``).

    Raises:
        ValueError: the workload names an LLM not in ``names``.
    """
    index = {n: i for i, n in enumerate(names)}
    unknown = set(workload["llm"].unique()) - set(index)
    if unknown:
        raise ValueError(f"workload names LLMs not in the config: {sorted(unknown)}")
    llm_idx = workload["llm"].map(index).to_numpy(dtype=np.int64)
    arrivals = workload["arrival_s"].to_numpy(dtype=float)
    prompts = workload["prompt_tokens"].to_numpy(dtype=np.int64)
    outputs = workload["output_tokens"].to_numpy(dtype=np.int64)
    return WorkloadColumns(llm_idx, arrivals, prompts, outputs, np.argsort(arrivals, kind="stable"))


def workload_requests(workload: pd.DataFrame, names: Sequence[str]) -> tuple[list[Request], np.ndarray]:
    """The workload as requests (request ``k`` is row ``k``; its ``llm`` is the index into
    ``names``) and the row order by arrival (stable: ties keep workload order).

    Raises:
        ValueError: the workload names an LLM not in ``names``.
    """
    w = workload_columns(workload, names)
    reqs = [Request(k, li, a, p, o) for k, (li, a, p, o) in
            enumerate(zip(w.llm.tolist(), w.arrival.tolist(), w.prompt.tolist(), w.output.tolist()))]
    return reqs, w.order


def stop_time(reqs: Sequence[Request] | WorkloadColumns, drain_limit_s: float | None) -> float:
    """When a run stops (s): ``drain_limit_s`` after the last arrival, or never (inf)."""
    if drain_limit_s is None:
        return math.inf
    if isinstance(reqs, WorkloadColumns):
        last = float(reqs.arrival.max()) if len(reqs) else 0.0
    else:
        last = max((r.arrival for r in reqs), default=0.0)
    return last + drain_limit_s


def placement_curves(placement: Placement, names: Sequence[str], models: Sequence[ModelSpec], latency,
                     gpu: GPUSpec) -> dict[str, Any]:
    """Each placed LLM's latency curve (its model on its mesh's GPUs), by LLM name."""
    index = {n: i for i, n in enumerate(names)}
    return {llm: latency.curve(models[index[llm]], mesh.gpus, gpu)
            for mesh in placement.meshes for llm in mesh.llms}


def attach_curves(runtimes: Sequence[LLMRuntime], latency, gpu: GPUSpec) -> dict[str, str]:
    """Give every LLM runtime its latency curve (its model on its mesh's GPUs); returns each
    model's curve source (``"fitted"``, ``"fitted-scaled"`` or ``"roofline"``) by model name."""
    sources = {}
    for rt in runtimes:
        rt.curve = latency.curve(rt.model, rt.tp, gpu)
        sources[rt.model.name] = rt.curve.source
    return sources


def mesh_index(placement: Placement, names: Sequence[str]) -> np.ndarray:
    """Per LLM of ``names``, the index of its mesh in ``placement.meshes`` (-1: not placed),
    shape (len(names),), int64."""
    index = {n: i for i, n in enumerate(names)}
    out = np.full(len(names), -1, dtype=np.int64)
    for k, mesh in enumerate(placement.meshes):
        for llm in mesh.llms:
            if llm in index:
                out[index[llm]] = k
    return out


def result_table(spec: RunSpec, reqs: list[Request], reasons: list[str]) -> pd.DataFrame:
    """The per-request table of a finished run (:func:`muxsim.core.records.request_table`):
    unfinished requests without a reason were cut by the drain limit, or stalled when there
    was none."""
    return request_table(reqs, reasons, spec.names, spec.models,
                         spec.slo_latency if spec.slo_latency is not None else spec.latency, spec.gpu,
                         DRAINED if spec.drain_limit_s is not None else STALLED, spec.slo_base,
                         mesh_index(spec.placement, spec.names))


def log_result_table(spec: RunSpec, log: RequestLog, w: WorkloadColumns) -> pd.DataFrame:
    """:func:`result_table` of a run kept in a :class:`~muxsim.core.records.RequestLog` over
    the workload's columns ``w``."""
    return log_table(log, w.llm, w.arrival, w.prompt, w.output, spec.names, spec.models,
                     spec.slo_latency if spec.slo_latency is not None else spec.latency, spec.gpu,
                     DRAINED if spec.drain_limit_s is not None else STALLED, spec.slo_base,
                     mesh_index(spec.placement, spec.names))
