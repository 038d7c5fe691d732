"""The whole experiment config: :class:`ExperimentConfig`, its sections and the cross-field
checks between them."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from muxsim.catalog import get_model
from muxsim.core.settings import SchedulerConfig
from muxsim.core.strategies import STRATEGIES as _REGISTRY
from muxsim.schema import FieldProblem
from muxsim.schema import Strict as _Strict

from .cells import Cell
from .errors import ConfigError
from .sections import (
    MAX_SEED,
    ClusterConfig,
    LimitsConfig,
    LiveConfig,
    LLMGroup,
    OverheadConfig,
    PlacementConfig,
    SLOConfig,
    TimelineConfig,
    WorkloadConfig,
)

__all__ = ["DEFAULT_STRATEGIES", "STRATEGIES", "ExperimentConfig"]

#: Strategies a config may name (:data:`muxsim.core.strategies.STRATEGIES`).
STRATEGIES = tuple(_REGISTRY)

#: The strategies a config runs when it names none: MuxServe and the paper's two baselines.
DEFAULT_STRATEGIES = ("muxserve", "spatial", "temporal")

#: Longest experiment name: it names the output folder (``results/<name>``, and
#: ``<name>-validate``), well inside every file system's 255-byte limit.
MAX_NAME = 100
#: An experiment name: a letter, digit or '_' first (never '.', so no hidden folder, no '.' or
#: '..'), then letters, digits and ``_ . - + = , @``: no path separator, space or control
#: character, so ``results/<name>`` is always one new folder inside ``results/``.
_NAME = re.compile(r"\w[\w.+=,@-]*")


class ExperimentConfig(_Strict):
    """A whole experiment (see module docstring).

    ``name`` names the output folder ``results/<name>``: 1 to 100 characters, letters, digits
    and ``_ . - + = , @``, starting with a letter, digit or ``_``. ``seed`` in [0, 2**32 - 1].
    """

    name: str = "experiment"
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    cluster: ClusterConfig
    llms: list[LLMGroup] = Field(min_length=1)
    workload: WorkloadConfig
    strategies: list[str] = Field(default_factory=lambda: list(DEFAULT_STRATEGIES), min_length=1)
    slo: SLOConfig = SLOConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    overhead: OverheadConfig = OverheadConfig()
    placement: PlacementConfig = PlacementConfig()
    live: LiveConfig | None = None
    timeline: TimelineConfig | None = None
    # excluded from dumps: the resolved config reproduces the results, which limits never change
    limits: LimitsConfig = Field(default_factory=LimitsConfig, exclude=True)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, v: str) -> str:
        if not (0 < len(v) <= MAX_NAME and _NAME.fullmatch(v)):
            raise ValueError(
                f"must be 1-{MAX_NAME} characters: letters, digits and _ . - + = , @, starting with a letter, "
                f"digit or _ (it names the output folder results/<name>), got {v[:MAX_NAME + 20]!r}"
                + (f" ({len(v)} characters)" if len(v) > MAX_NAME else ""))
        return v

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, v):
        for s in v:
            if s not in _REGISTRY:  # the registry itself, so a strategy added to it is accepted
                raise ValueError(f"unknown strategy {s!r}; allowed: {', '.join(_REGISTRY)}")
        if len(set(v)) != len(v):
            raise ValueError(f"strategies must be unique, got {v}")
        return v

    @model_validator(mode="after")
    def _rates_defined(self):
        fixed = [g.rate is not None for g in self.llms]
        sets = self.workload.rate_sets
        trace = self.workload.trace
        if trace is not None:
            with_rate = [i for i, f in enumerate(fixed) if f]
            if with_rate:
                raise FieldProblem(f"llms.{with_rate[0]}.rate",
                                   f"workload.trace sets every LLM's requests; drop 'rate' from llms group(s) {with_rate}")
            names = self.llm_names()
            n = len(names)
            if isinstance(trace.llms, int) and trace.llms != n:
                raise FieldProblem("workload.trace.llms",
                                   f"workload.trace.llms is {trace.llms}; the config lists {n} LLMs "
                                   f"(llm-0..llm-{n - 1}); omit it to split among those")
            if isinstance(trace.llms, list) and sorted(trace.llms) != sorted(names):
                other = sorted(set(trace.llms) - set(names))
                what = f"names LLMs the config does not list: {other[:5]}" if other else \
                    f"lists {len(trace.llms)} LLMs"
                raise FieldProblem("workload.trace.llms", f"workload.trace.llms {what}; the config lists {n} LLMs "
                                   f"(llm-0..llm-{n - 1}); omit it to split among those")
            fixed_n = trace.popularity.count() if trace.popularity is not None else None
            if fixed_n is not None and fixed_n != n:
                raise FieldProblem("workload.trace.popularity",
                                   f"workload.trace.popularity gives weights for {fixed_n} LLMs; the config "
                                   f"lists {n} (llm-0..llm-{n - 1})")
        elif sets is not None:
            with_rate = [i for i, f in enumerate(fixed) if f]
            if with_rate:
                raise FieldProblem(f"llms.{with_rate[0]}.rate",
                                   f"workload.rate_sets sets every LLM's rate; drop 'rate' from llms group(s) {with_rate}")
            n = sum(g.count for g in self.llms)
            for k, rs in enumerate(sets):
                if len(rs.rates) != n:
                    raise FieldProblem(f"workload.rate_sets.{k}.rates",
                                       f"workload.rate_sets[{k}] {rs.label!r} has {len(rs.rates)} rates; "
                                       f"the config lists {n} LLMs (llm-0..llm-{n - 1}), one rate each")
        elif self.workload.popularity is None and self.workload.file is None and not all(fixed):
            raise FieldProblem("workload.popularity",
                               "workload.popularity is missing and some llms have no 'rate': give every LLM "
                               "group a rate (req/s) or set workload.popularity {alpha, max_rate}")
        req = self.workload.requests
        if req is not None and isinstance(req.counts, list):
            n = sum(g.count for g in self.llms)
            if len(req.counts) != n:
                raise FieldProblem("workload.requests.counts",
                                   f"workload.requests.counts has {len(req.counts)} entries; the config "
                                   f"lists {n} LLMs (llm-0..llm-{n - 1}), one count each")
        if self.placement.meshes is not None:
            self._check_meshes()
        tl = self.timeline
        if tl is not None and tl.strategies is not None:
            other = [s for s in tl.strategies if s not in self.strategies]
            if other:
                raise FieldProblem("timeline.strategies", f"timeline.strategies names {other}, not run; "
                                   f"allowed: {', '.join(self.strategies)}")
        return self

    def check_timeline_cells(self, cells: list[Cell]) -> None:
        """Refuse a ``timeline.cells`` entry that names none of the sweep's ``cells``.

        Raises:
            ConfigError: one line naming the entry and the allowed labels and positions.
        """
        tl = self.timeline
        if tl is None or tl.cells is None:
            return
        labels = [c.label for c in cells]
        for c in tl.cells:
            if isinstance(c, dict):
                continue  # a parameter selector may select nothing
            if c not in labels and not (isinstance(c, int) and c < len(cells)):
                shown = ", ".join(repr(x) for x in labels[:6]) + (", ..." if len(labels) > 6 else "")
                raise ConfigError(f"timeline.cells: {c!r} is not a cell of the sweep; allowed: its labels "
                                  f"({shown}) or positions 0..{len(cells) - 1}")

    def timeline_window(self, cell: Cell, position: int, strategy: str) -> tuple[float, float] | None:
        """The job-log window (s) of ``strategy`` on the sweep's cell ``position`` (``cell``),
        or None when :attr:`timeline` does not name them."""
        tl = self.timeline
        if tl is None or (tl.strategies is not None and strategy not in tl.strategies):
            return None
        if tl.cells is not None and not any(
                (sel == cell.label or sel == position) if not isinstance(sel, dict)
                else all(k in cell.params and cell.params[k] == v for k, v in sel.items())
                for sel in tl.cells):
            return None
        return tl.window_s

    def _check_meshes(self) -> None:
        """What an explicit placement must satisfy that the config alone tells (memory fit is
        left to the placement's own check, which needs the latency model), on every cluster of
        a cluster sweep."""
        names = self.llm_names()
        model = dict(zip(names, self.llm_models()))
        seen: set[str] = set()
        for k, m in enumerate(self.placement.meshes):
            at = f"placement.meshes.{k}"
            for n in m.llms:
                if n not in model:
                    raise FieldProblem(f"{at}.llms", f"placement names unknown LLM {n!r}; known: "
                                       f"llm-0..llm-{len(names) - 1}")
                if n in seen:
                    raise FieldProblem(f"{at}.llms", f"placement puts LLM {n!r} on more than one mesh")
                seen.add(n)
                need = get_model(model[n]).min_gpus
                if need > m.gpus:
                    raise FieldProblem(f"{at}.gpus", f"{n} ({model[n]}) needs >= {need} GPUs, the mesh has {m.gpus}")
        for c in self.cluster.clusters():
            # in a cluster sweep, name the cluster the placement does not fit
            of = (f" of the swept cluster nodes={c.nodes}, gpus_per_node={c.gpus_per_node} (an explicit "
                  f"placement must fit every cluster of the sweep)") if self.cluster.swept else ""
            used = [0] * c.nodes
            gpn = c.gpus_per_node
            for k, m in enumerate(self.placement.meshes):
                at = f"placement.meshes.{k}"
                if m.node >= c.nodes:
                    raise FieldProblem(f"{at}.node", f"placement mesh on node {m.node}, cluster has "
                                       f"{c.nodes} (nodes 0..{c.nodes - 1}){of}")
                if m.gpus > gpn:
                    raise FieldProblem(f"{at}.gpus", f"a mesh has at most cluster.gpus_per_node = {gpn} GPUs, "
                                       f"got {m.gpus}{of}")
                used[m.node] += m.gpus
                if used[m.node] > gpn:
                    raise FieldProblem(f"{at}.gpus", f"node {m.node} is given {used[m.node]} GPUs by meshes "
                                       f"0..{k}, it has {gpn}{of}")
        missing = [n for n in names if n not in seen]
        if missing:
            raise FieldProblem("placement.meshes", f"placement leaves LLMs unplaced: {missing}")

    def for_cell(self, cell: Cell) -> ExperimentConfig:
        """The config one cell runs on: this one with the cell's own cluster (a cluster sweep's
        cell, :attr:`Cell.cluster`); this very config when the cell names no cluster or the
        config's cluster is already the cell's. Everything per cell (placements, latency
        models, simulation) reads its cluster from it.

        Raises:
            ValueError: a cell without a cluster of a config that sweeps its cluster.
        """
        if cell.cluster is None:
            if self.cluster.swept:
                raise ValueError(f"cell {cell.label!r} has no cluster, but the config sweeps cluster")
            return self
        nodes, gpn, gpu = cell.cluster
        c = self.cluster
        if not c.swept and (c.nodes, c.gpus_per_node, c.gpu) == (nodes, gpn, gpu):
            return self
        return self.model_copy(update={"cluster": ClusterConfig.model_construct(
            nodes=nodes, gpus_per_node=gpn, gpu=gpu, usd_per_gpu_hour=c.usd_per_gpu_hour)})

    def llm_names(self) -> list[str]:
        """Names ``llm-0``, ``llm-1``, ... in popularity (listed) order."""
        return [f"llm-{i}" for i in range(sum(g.count for g in self.llms))]

    def llm_models(self) -> list[str]:
        """Catalog model of each LLM, in listed order."""
        return [g.model for g in self.llms for _ in range(g.count)]

    def cells(self) -> list[Cell]:
        """The sweep: one cell per (alpha, max_rate, rate_scale) combination, each with per-LLM
        rates; or one per rate set, labelled with its label, with param ``avg_rate`` (mean of
        its rates, req/s) for plotting; or one per ``workload.trace`` alpha (:func:`trace_cells`);
        each of them once per cluster of a cluster sweep (:func:`muxsim.config.sweep.sweep_cells`).

        Popularity cells always carry ``alpha`` and ``rate_scale`` as params (``max_rate`` when
        it is swept; ``nodes``, ``gpus_per_node``, ``gpu``, ``n_gpus`` when the cluster is); their
        labels name the swept values only.

        Raises:
            ConfigError: a replayed file or trace that cannot be read or synthesized.
        """
        from .sweep import sweep_cells

        return sweep_cells(self)
