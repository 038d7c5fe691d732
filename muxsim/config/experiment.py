"""The whole experiment config: :class:`ExperimentConfig`, its sections and the cross-field
checks between them."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from muxsim.core.settings import SchedulerConfig
from muxsim.core.strategies import STRATEGIES as _REGISTRY
from muxsim.schema import Strict as _Strict

from .cells import Cell
from .sections import (
    ClusterConfig,
    LiveConfig,
    LLMGroup,
    OverheadConfig,
    PlacementConfig,
    SLOConfig,
    WorkloadConfig,
)

__all__ = ["DEFAULT_STRATEGIES", "STRATEGIES", "ExperimentConfig"]

#: Strategies a config may name (:data:`muxsim.core.strategies.STRATEGIES`).
STRATEGIES = tuple(_REGISTRY)

#: The strategies a config runs when it names none: MuxServe and the paper's two baselines.
DEFAULT_STRATEGIES = ("muxserve", "spatial", "temporal")


class ExperimentConfig(_Strict):
    """A whole experiment (see module docstring)."""

    name: str = "experiment"
    seed: int = 0
    cluster: ClusterConfig
    llms: list[LLMGroup] = Field(min_length=1)
    workload: WorkloadConfig
    strategies: list[str] = Field(default_factory=lambda: list(DEFAULT_STRATEGIES), min_length=1)
    slo: SLOConfig = SLOConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    overhead: OverheadConfig = OverheadConfig()
    placement: PlacementConfig = PlacementConfig()
    live: LiveConfig | None = None

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
                raise ValueError(f"workload.trace sets every LLM's requests; drop 'rate' from llms "
                                 f"group(s) {with_rate}")
            names = self.llm_names()
            n = len(names)
            if isinstance(trace.llms, int) and trace.llms != n:
                raise ValueError(f"workload.trace.llms is {trace.llms}; the config lists {n} LLMs "
                                 f"(llm-0..llm-{n - 1}); omit it to split among those")
            if isinstance(trace.llms, list) and sorted(trace.llms) != sorted(names):
                other = sorted(set(trace.llms) - set(names))
                what = f"names LLMs the config does not list: {other[:5]}" if other else \
                    f"lists {len(trace.llms)} LLMs"
                raise ValueError(f"workload.trace.llms {what}; the config lists {n} LLMs "
                                 f"(llm-0..llm-{n - 1}); omit it to split among those")
            fixed_n = trace.popularity.count() if trace.popularity is not None else None
            if fixed_n is not None and fixed_n != n:
                raise ValueError(f"workload.trace.popularity gives weights for {fixed_n} LLMs; the config "
                                 f"lists {n} (llm-0..llm-{n - 1})")
        elif sets is not None:
            with_rate = [i for i, f in enumerate(fixed) if f]
            if with_rate:
                raise ValueError(f"workload.rate_sets sets every LLM's rate; drop 'rate' from llms "
                                 f"group(s) {with_rate}")
            n = sum(g.count for g in self.llms)
            for k, rs in enumerate(sets):
                if len(rs.rates) != n:
                    raise ValueError(f"workload.rate_sets[{k}] {rs.label!r} has {len(rs.rates)} rates; "
                                     f"the config lists {n} LLMs (llm-0..llm-{n - 1}), one rate each")
        elif self.workload.popularity is None and self.workload.file is None and not all(fixed):
            raise ValueError(
                "workload.popularity is missing and some llms have no 'rate': give every LLM "
                "group a rate (req/s) or set workload.popularity {alpha, max_rate}"
            )
        req = self.workload.requests
        if req is not None and isinstance(req.counts, list):
            n = sum(g.count for g in self.llms)
            if len(req.counts) != n:
                raise ValueError(f"workload.requests.counts has {len(req.counts)} entries; the config "
                                 f"lists {n} LLMs (llm-0..llm-{n - 1}), one count each")
        if self.placement.meshes is not None:
            names = set(self.llm_names())
            seen: set[str] = set()
            for m in self.placement.meshes:
                for n in m.llms:
                    if n not in names:
                        raise ValueError(f"placement names unknown LLM {n!r}; known: {sorted(names)}")
                    if n in seen:
                        raise ValueError(f"placement puts LLM {n!r} on more than one mesh")
                    seen.add(n)
                if m.node >= self.cluster.nodes:
                    raise ValueError(f"placement mesh on node {m.node}, cluster has {self.cluster.nodes}")
            missing = names - seen
            if missing:
                raise ValueError(f"placement leaves LLMs unplaced: {sorted(missing)}")
        return self

    def llm_names(self) -> list[str]:
        """Names ``llm-0``, ``llm-1``, ... in popularity (listed) order."""
        return [f"llm-{i}" for i in range(sum(g.count for g in self.llms))]

    def llm_models(self) -> list[str]:
        """Catalog model of each LLM, in listed order."""
        return [g.model for g in self.llms for _ in range(g.count)]

    def cells(self) -> list[Cell]:
        """The sweep: one cell per (alpha, max_rate, rate_scale) combination, each with per-LLM
        rates; or one per rate set, labelled with its label, with param ``avg_rate`` (mean of
        its rates, req/s) for plotting; or one per ``workload.trace`` alpha (:func:`trace_cells`).

        Popularity cells always carry ``alpha`` and ``rate_scale`` as params (``max_rate`` when
        it is swept); their labels name the swept values only.

        Raises:
            ConfigError: a replayed file or trace that cannot be read or synthesized.
        """
        from .sweep import sweep_cells

        return sweep_cells(self)
