"""Experiment configuration: the YAML schema, validated by pydantic.

An experiment is a cluster, a list of LLMs, a workload (popularity law or explicit rates, arrival
process, lengths, duration), a list of strategies, SLO scales, scheduler knobs and optionally an
explicit placement. List-valued ``alpha`` and ``max_rate`` make a sweep: one cell per combination,
each run under every strategy. ``workload.rate_sets`` instead lists explicit per-LLM rate vectors
(e.g. a trace at several time compressions): one cell per set. ``workload.trace`` replays a real
request trace split among the LLMs (a :class:`muxsim.workload.synth.SynthSpec`); a list-valued
``popularity.alpha`` there sweeps the split, one cell per alpha.

Unknown keys are rejected everywhere (``extra="forbid"``), so a typo names its field.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from muxsim.catalog import GPUS, MODELS, get_gpu, get_model
from muxsim.schema import format_validation_error, read_yaml
from muxsim.core.strategies import STRATEGIES as _REGISTRY
from muxsim.records import SLO_BASES
from muxsim.workload.synth import PopularitySpec, SynthSpec, synthesize

__all__ = [
    "ConfigError",
    "ClusterConfig",
    "LLMGroup",
    "PopularityConfig",
    "RateSet",
    "LengthsConfig",
    "TracePopularity",
    "TraceConfig",
    "WorkloadConfig",
    "SLOConfig",
    "SchedulerConfig",
    "MeshConfig",
    "PlacementConfig",
    "CalibrationGridConfig",
    "LiveConfig",
    "ExperimentConfig",
    "RequestCountConfig",
    "OverheadConfig",
    "Cell",
    "load_config",
    "trace_workload",
    "STRATEGIES",
]

#: Strategies a config may name (:data:`muxsim.core.strategies.STRATEGIES`).
STRATEGIES = tuple(_REGISTRY)

#: The strategies a config runs when it names none: MuxServe and the paper's two baselines.
DEFAULT_STRATEGIES = ("muxserve", "spatial", "temporal")


class ConfigError(ValueError):
    """A configuration problem, with a one-line message that names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterConfig(_Strict):
    """Nodes x GPUs per node of one GPU kind (a catalog name, e.g. ``a100-80gb``)."""

    nodes: int = Field(ge=1, le=64)
    gpus_per_node: int = Field(ge=1, le=16)
    gpu: str = "a100-80gb"

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, v: str) -> str:
        get_gpu(v)
        return v.strip().lower()

    @property
    def n_gpus(self) -> int:
        """GPUs in the cluster."""
        return self.nodes * self.gpus_per_node


class LLMGroup(_Strict):
    """``count`` served LLMs of one architecture, listed in popularity order.

    ``rate`` (req/s) fixes the rate of every LLM of the group; otherwise the workload's
    popularity law sets it.
    """

    model: str
    count: int = Field(default=1, ge=1)
    rate: float | None = Field(default=None, gt=0)

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        get_model(v)
        return v.strip().lower()


class PopularityConfig(_Strict):
    """Power law rate_i = rate_scale x max_rate x (i+1)^-alpha over the LLMs in listed order.

    ``alpha``, ``max_rate`` and ``rate_scale`` may be lists: the experiment sweeps their product
    (the paper: alpha in {0.7, 0.9, 1.3, 1.7, 2.1} x rate_scale in {0.5, 0.75, 1, 1.25},
    max_rate 40 req/s).
    """

    alpha: float | list[float]
    max_rate: float | list[float]
    rate_scale: float | list[float] = 1.0

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v):
        vals = v if isinstance(v, list) else [v]
        if not vals:
            raise ValueError("alpha list is empty")
        for a in vals:
            if a < 0:
                raise ValueError(f"alpha must be >= 0, got {a}")
        return v

    @field_validator("max_rate", "rate_scale")
    @classmethod
    def _positive(cls, v, info):
        vals = v if isinstance(v, list) else [v]
        if not vals:
            raise ValueError(f"{info.field_name} list is empty")
        for r in vals:
            if not (math.isfinite(r) and r > 0):
                raise ValueError(f"{info.field_name} must be > 0 and finite, got {r}")
        if len(set(vals)) != len(vals):
            raise ValueError(f"{info.field_name} values must be unique, got {vals}")
        return v

    def alphas(self) -> list[float]:
        """Alpha values of the sweep."""
        return list(self.alpha) if isinstance(self.alpha, list) else [self.alpha]

    def max_rates(self) -> list[float]:
        """max_rate values of the sweep (req/s)."""
        return list(self.max_rate) if isinstance(self.max_rate, list) else [self.max_rate]

    def rate_scales(self) -> list[float]:
        """rate_scale values of the sweep."""
        return list(self.rate_scale) if isinstance(self.rate_scale, list) else [self.rate_scale]


class RateSet(_Strict):
    """One cell of a ``workload.rate_sets`` sweep: a label and one rate (req/s) per LLM, in the
    listed LLM order."""

    label: str = Field(min_length=1)
    rates: list[float] = Field(min_length=1)

    @field_validator("rates")
    @classmethod
    def _positive(cls, v):
        for r in v:
            if not (r > 0 and r != float("inf")):
                raise ValueError(f"rates must be finite req/s > 0, got {r}")
        return v


class LengthsConfig(_Strict):
    """Prompt/output lengths: a shipped empirical distribution or fixed.

    ``sharegpt_v3``: ShareGPT V3 first turns after the paper's filters, the sample the MuxServe
    paper drew from (LLaMA tokenizer; mean prompt 247.7, output 233.3 tokens;
    traces/README.md). ``sharegpt``: ShareGPT first turns of sarathi-serve's 8k file
    (Llama-2 tokenizer, outputs capped at 1024; mean 136.2 / 472.1). ``fixed``: every request
    ``prompt`` / ``output`` tokens.

    ShareGPT lengths may be resized, at least 4 tokens each: ``scale`` multiplies prompt and
    output alike; ``mean_prompt`` and ``mean_output`` (tokens, both or neither) instead rescale
    prompt and output by separate factors chosen so the means match, e.g. a trace's
    (:meth:`muxsim.workload.ScaledLengths.matching_means`; the shape of each side is kept).
    """

    kind: Literal["sharegpt", "sharegpt_v3", "fixed"] = "sharegpt"
    prompt: int | None = Field(default=None, ge=1, le=32768)
    output: int | None = Field(default=None, ge=1, le=32768)
    scale: float = Field(default=1.0, gt=0)
    mean_prompt: float | None = Field(default=None, gt=4, le=32768)
    mean_output: float | None = Field(default=None, gt=4, le=32768)

    @model_validator(mode="after")
    def _fixed_needs_values(self):
        if self.kind == "fixed" and (self.prompt is None or self.output is None):
            raise ValueError("lengths.kind 'fixed' needs both 'prompt' and 'output' (tokens)")
        means = (self.mean_prompt is not None, self.mean_output is not None)
        if any(means):
            if not all(means):
                raise ValueError("lengths: give both 'mean_prompt' and 'mean_output' (tokens), or neither")
            if self.kind == "fixed":
                raise ValueError("lengths: 'mean_prompt'/'mean_output' rescale an empirical kind "
                                 "(sharegpt, sharegpt_v3); kind 'fixed' takes 'prompt' and 'output'")
            if self.scale != 1.0:
                raise ValueError("lengths: 'scale' and 'mean_prompt'/'mean_output' both resize "
                                 "the lengths; give one")
        return self


class TracePopularity(PopularitySpec):
    """:class:`muxsim.workload.synth.PopularitySpec` whose ``alpha`` may be a list: the
    experiment then sweeps it, one cell per alpha."""

    alpha: float | list[float] | None = None

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v):
        if v is None:
            return v
        vals = v if isinstance(v, list) else [v]
        if not vals:
            raise ValueError("alpha list is empty")
        for a in vals:
            if not (math.isfinite(a) and a >= 0):
                raise ValueError(f"alpha must be finite and >= 0, got {a}")
        if len(set(vals)) != len(vals):
            raise ValueError(f"alpha values must be unique, got {vals}")
        return v


class TraceConfig(SynthSpec):
    """``workload.trace``: a real request trace split among the experiment's LLMs, written as a
    ``muxsim trace synth`` spec (:class:`muxsim.workload.synth.SynthSpec`, same keys and steps:
    source, window, condense / target_rate, llms, popularity, seed, max_requests).

    Differences, all about fitting the spec into an experiment: ``llms`` may be omitted (it is
    then the experiment's ``llm-0 .. llm-{n-1}``; given, it must be n or a list of exactly those
    names, whose order is the popularity order); ``popularity.alpha`` may be a list (one sweep
    cell per alpha); ``seed`` may be omitted (the experiment's ``seed`` is used, so ``--seed``
    changes the split). Without ``popularity`` the LLMs get equal shares.
    """

    popularity: TracePopularity | None = None
    seed: int | None = Field(default=None, ge=0)

    @field_validator("popularity")
    @classmethod
    def _count_agrees(cls, v, info):  # replaces SynthSpec's: the count may come from the config
        llms = info.data.get("llms")
        n = llms if isinstance(llms, int) else (len(llms) if isinstance(llms, list) else None)
        fixed = v.count() if v is not None else None
        if fixed is not None and n is not None and fixed != n:
            raise ValueError(f"weights are for {fixed} LLMs but llms gives {n}")
        return v

    def alphas(self) -> list[float | None]:
        """Alpha of each sweep cell: the list, the single value, or [None] (no power law)."""
        a = self.popularity.alpha if self.popularity is not None else None
        return list(a) if isinstance(a, list) else [a]

    def cell_spec(self, names: list[str], cell_index: int, seed: int) -> SynthSpec:
        """The plain :class:`SynthSpec` of one cell: ``llms`` filled in from ``names`` (unless
        a list is given), alpha of the cell, ``seed`` when the trace gives none."""
        d = self.model_dump()
        d["llms"] = list(self.llms) if isinstance(self.llms, list) else list(names)
        d["seed"] = self.seed if self.seed is not None else seed
        if d["popularity"] is not None and d["popularity"]["alpha"] is not None:
            d["popularity"]["alpha"] = self.alphas()[cell_index]
        return SynthSpec.model_validate(d)


class RequestCountConfig(_Strict):
    """How many requests each LLM of a drawn workload gets: its Poisson (or Gamma) arrivals run
    from t = 0 until its count is drawn or ``duration_s`` ends.

    ``rule: estimate`` is the reference benchmark's (../shared/docs/muxserve.md §8): LLM i gets
    int(``factor`` x ``seconds`` x T_i) requests, T_i the MuxServe placement's estimated
    throughput of LLM i (req/s, capped at its rate); the paper's values are 1.1 and 240 s.
    ``rule: fixed`` gives every LLM ``counts`` requests (one number), or LLM i ``counts[i]``.
    """

    rule: Literal["estimate", "fixed"] = "estimate"
    factor: float = Field(default=1.1, gt=0, allow_inf_nan=False)
    seconds: float = Field(default=240.0, gt=0, allow_inf_nan=False)
    counts: int | list[int] | None = None

    @model_validator(mode="after")
    def _rule_fields(self):
        if self.rule == "fixed":
            if self.counts is None:
                raise ValueError("requests.rule 'fixed' needs 'counts': requests per LLM (a number, "
                                 "or one per LLM)")
            vals = self.counts if isinstance(self.counts, list) else [self.counts]
            if not vals or any(c < 0 for c in vals):
                raise ValueError(f"requests.counts must be whole numbers >= 0, got {self.counts}")
        elif self.counts is not None:
            raise ValueError("requests.counts applies to rule 'fixed'; rule 'estimate' derives the "
                             "counts from the placement's estimate (factor, seconds)")
        return self


class WorkloadConfig(_Strict):
    """Arrivals and lengths.

    Exactly one of ``popularity`` (power law), per-group ``rate`` in ``llms`` or ``rate_sets``
    (explicit per-LLM rate vectors, one sweep cell each, in listed order) sets the rates.
    ``arrival``: ``poisson`` or ``gamma`` (with coefficient of variation ``cv``).
    ``max_requests_per_llm`` caps each LLM's request count; ``requests`` sets each LLM's count
    (:class:`RequestCountConfig`: the reference benchmark's rule, or fixed counts) -- one
    workload per cell, drawn once and served to every strategy. ``drain_limit_s`` bounds simulated
    time after the last arrival; requests unfinished then are reported with that reason.
    ``file``: replay a saved workload (Parquet, :func:`muxsim.workload.save_workload` schema)
    instead of drawing one; per-LLM rates for placement and quotas are then its request counts
    over its span, and ``duration_s`` may be omitted.
    ``trace``: split a real request trace among the LLMs (:class:`TraceConfig`); arrivals and
    lengths are the trace's, so ``lengths``, ``arrival``, ``cv`` and ``max_requests_per_llm``
    are refused (use ``trace.max_requests``); per-LLM rates are request counts over the span;
    ``duration_s``, when given, keeps the arrivals before it (after condensing).
    """

    duration_s: float | None = Field(default=None, gt=0)
    file: str | None = None
    arrival: Literal["poisson", "gamma"] = "poisson"
    cv: float = Field(default=1.0, gt=0)
    lengths: LengthsConfig = LengthsConfig()
    popularity: PopularityConfig | None = None
    rate_sets: list[RateSet] | None = Field(default=None, min_length=1)
    max_requests_per_llm: int | None = Field(default=None, ge=1)
    requests: RequestCountConfig | None = None
    drain_limit_s: float | None = Field(default=None, gt=0)
    trace: TraceConfig | None = None

    @model_validator(mode="after")
    def _duration_or_file(self):
        if self.trace is not None:
            for k in ("popularity", "rate_sets", "file"):
                if getattr(self, k) is not None:
                    raise ValueError(f"give either 'trace' or {k!r}, not both (the trace sets every LLM's "
                                     "requests; its own popularity goes under trace.popularity)")
            if self.lengths != LengthsConfig():
                raise ValueError("'lengths' does not apply to a trace, which brings its own prompt and "
                                 "output lengths; drop it")
            if self.arrival != "poisson" or self.cv != 1.0:
                raise ValueError("'arrival'/'cv' do not apply to a trace, which brings its own arrival times "
                                 "(a length-only trace takes trace.source.rate/arrival/cv); drop them")
            if self.max_requests_per_llm is not None:
                raise ValueError("'max_requests_per_llm' does not apply to a trace; use trace.max_requests")
            if self.requests is not None:
                raise ValueError("'requests' does not apply to a trace, whose requests are its own; "
                                 "use trace.max_requests")
        elif self.duration_s is None and self.file is None:
            raise ValueError("duration_s is required (seconds > 0) unless a workload 'file' or 'trace' is replayed")
        if self.rate_sets is not None:
            if self.popularity is not None:
                raise ValueError("give either 'rate_sets' or 'popularity', not both")
            if self.file is not None:
                raise ValueError("give either 'rate_sets' or a replayed 'file', not both")
            labels = [r.label for r in self.rate_sets]
            dup = sorted({x for x in labels if labels.count(x) > 1})
            if dup:
                raise ValueError(f"rate_sets labels must be unique; repeated: {dup}")
        if self.file is not None and self.requests is not None:
            raise ValueError("'requests' does not apply to a replayed 'file', whose requests are its own")
        return self


class SLOConfig(_Strict):
    """SLO scales (a request meets its SLO at scale s when its latency <= s x its base), the
    goodput scale, and the base.

    ``base``: ``alone`` -- muxsim's: the request served alone on its model's smallest mesh (one
    prefill plus output x a batch-1 decode at 100 % SMs); ``reference`` -- the reference
    analysis': batch-1 latencies at 100 % SMs on 1 / 1 / 4 / 8 GPUs for 7B / 13B / 30B / 65B,
    decode averaged over context lengths 32..512 (../shared/docs/muxserve.md §9). Both bases are
    written per request; attainment columns use this one.
    """

    scales: list[float] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64, 100])
    goodput_scale: float = Field(default=8.0, gt=0)
    base: Literal[SLO_BASES] = "alone"

    @field_validator("scales")
    @classmethod
    def _positive(cls, v):
        if not v or any(s <= 0 for s in v):
            raise ValueError("scales must be a non-empty list of numbers > 0")
        return sorted(set(v))


class SchedulerConfig(_Strict):
    """Scheduler knobs; defaults are MuxServe's reference constants (../shared/docs/muxserve.md).

    Memory figures are GiB per GPU. ``sm_units`` units of 100 / sm_units % each, plus
    ``sm_overload_units``, bound the jobs a mesh runs at once. ``overlap_phases``: an LLM's
    prefill and decode jobs may overlap (False where one partition runs both, e.g. CPU).

    Baselines as the reference benchmark configured them (../shared/docs/muxserve.md §6):
    ``spatial_kv_fraction`` -- each spatial GPU's KV cache is this fraction of its memory
    (reference 0.5; never more than weights and reserves leave); ``null`` gives every spatial
    LLM all that is left, the fair comparison. ``temporal_sm_pct`` -- the [prefill %, decode %]
    whose SM units temporal jobs hold (reference 100 / 90: no MPS, one job at a time, each at
    the whole GPU's speed).
    """

    sm_units: int = Field(default=10, ge=1)
    sm_overload_units: int = Field(default=2, ge=0)
    max_prefill_tokens: int = Field(default=2048, ge=1)
    max_num_seqs: int = Field(default=256, ge=1)
    adapt_interval_s: float = Field(default=8.0, gt=0)
    adapt_window_jobs: int = Field(default=500, ge=1)
    activation_reserve_gib: float = Field(default=6.0, ge=0)
    context_reserve_gib: float = Field(default=0.8, ge=0)
    quota_seq_tokens: int | None = Field(default=None, ge=1)
    overlap_phases: bool = True
    spatial_kv_fraction: float | None = Field(default=0.5, gt=0, le=1)
    temporal_sm_pct: tuple[float, float] = (100.0, 90.0)

    @field_validator("temporal_sm_pct")
    @classmethod
    def _shares(cls, v):
        if not all(0 < x <= 100 for x in v):
            raise ValueError(f"SM shares must be in (0, 100] %, got {list(v)}")
        return v


class CalibrationGridConfig(_Strict):
    """Grid of a calibration sweep (batch sizes, prompt/context lengths in tokens) and its
    repeats; ``file`` reuses (and resumes) a calibration Parquet instead of a fresh one."""

    batches: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16], min_length=1)
    seqs: list[int] = Field(default_factory=lambda: [32, 64, 128, 256], min_length=1)
    warmup: int = Field(default=2, ge=0)
    repeats: int = Field(default=5, ge=1)
    file: str | None = None

    @field_validator("batches", "seqs")
    @classmethod
    def _positive(cls, v):
        if any(x < 1 for x in v):
            raise ValueError("must be positive integers")
        return sorted(set(v))


class LiveConfig(_Strict):
    """The live backend of ``muxsim validate``: engine, device and partition threads, optional
    local checkpoints per model, and the calibration grid.

    ``pin_cores`` pins each LLM's CPU worker to its own core(s) (round robin over the cores this
    process may use).

    Speed: reference jobs run right before and after every live run (:mod:`muxsim.live.speed`)
    and measure the machine's speed then, relative to the calibration. ``speed_correction``
    makes the compared simulation the one whose curves are scaled by that speed (both are
    reported either way; off by default: on this project's 2-core VM it did not reliably
    narrow the gap, see the README). A run during which that speed moved by more than
    ``max_drift`` (a fraction) is repeated up to ``retries`` more times (the decision reads
    only the reference jobs, never the run's outcome).

    ``replay_window_s``: window (s) of the diagnostic ``simulated-replayed`` run, which replays
    the speed the live run's own jobs met (:class:`muxsim.live.speed.SpeedTrace`).
    """

    engine: Literal["transformers", "vllm"] = "transformers"
    device: str = "cpu"
    threads: int = Field(default=1, ge=1)
    checkpoints: dict[str, str] | None = None
    calibration: CalibrationGridConfig = CalibrationGridConfig()
    pin_cores: bool = True
    speed_correction: bool = False
    max_drift: float = Field(default=0.15, gt=0)
    retries: int = Field(default=0, ge=0)
    replay_window_s: float = Field(default=2.0, gt=0)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "cpu" and not v.startswith("cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {v!r}")
        return v


class OverheadConfig(_Strict):
    """The job-overhead model (:mod:`muxsim.perf.overhead`), added to every simulated job and to
    the placement estimator: ``dispatch_ms`` per job (default 0.55 ms, the dispatch gap
    muxsim's CPU live runs measured) and ``decode_per_seq_ms`` per sequence per decode iteration
    (null: the reference's 0.1 / 0.08 / 0.07 ms for 7B / 13B / larger; a number for every
    model; or {model: ms}). ``file``: a ``muxsim calibrate overhead`` JSON whose figures replace
    both. Set both to 0 to simulate the profiled kernel time alone.
    """

    dispatch_ms: float = Field(default=0.55, ge=0, allow_inf_nan=False)
    decode_per_seq_ms: float | dict[str, float] | None = None
    file: str | None = None

    @field_validator("decode_per_seq_ms")
    @classmethod
    def _per_seq(cls, v):
        vals = list(v.values()) if isinstance(v, dict) else [] if v is None else [v]
        if any(not (math.isfinite(x) and x >= 0) for x in vals):
            raise ValueError(f"must be finite and >= 0 ms, got {v}")
        if isinstance(v, dict):
            for k in v:
                get_model(k)
        return v

    def model(self):
        """The :class:`muxsim.perf.overhead.JobOverhead` this section describes.

        Raises:
            ConfigError: an unreadable or malformed ``file``.
        """
        from muxsim.perf.overhead import JobOverhead, load_overhead

        if self.file is not None:
            try:
                return load_overhead(self.file)
            except (OSError, ValueError) as e:
                raise ConfigError(f"overhead.file: {e}") from None
        v = self.decode_per_seq_ms
        per_seq = None if v is None else ({k: x / 1e3 for k, x in v.items()} if isinstance(v, dict) else v / 1e3)
        given = self != OverheadConfig()
        return JobOverhead(self.dispatch_ms / 1e3, per_seq,
                           source="config" if given else JobOverhead().source)


class MeshConfig(_Strict):
    """An explicit mesh: its node, GPU count, LLM names and their [prefill %, decode %] shares."""

    node: int = Field(ge=0)
    gpus: int = Field(ge=1)
    llms: list[str] = Field(min_length=1)
    sm: dict[str, tuple[int, int]] | None = None


class PlacementConfig(_Strict):
    """How the MuxServe placement is made.

    ``search``: ``analytic`` -- MuxServe's enumeration + greedy search scored by the estimator
    (../shared/docs/muxserve.md §4); ``simulated`` -- muxsim's simulation-guided search: the
    analytic search's best layouts improved by local moves scored by simulating the cell's own
    workload (:mod:`muxsim.core.simsearch`); strategy ``muxserve+sim`` always uses it.
    ``estimator``: ``muxsim`` (default) or ``reference`` (the reference's latency choices and
    cycle formula; :class:`muxsim.core.placement.PlacementContext`). ``objective`` of the
    simulated search: ``throughput`` (sum of per-LLM throughputs), ``goodput`` (requests meeting
    the SLO at ``slo.goodput_scale`` per second) or ``attainment`` (SLO attainment there);
    ``candidates`` its budget per cell (candidate placements simulated; deterministic),
    ``budget_s`` a wall-time cap per cell (s; when it stops a search first, the run records it
    and the result may differ between machines), ``seed`` its random seed, ``starts`` the
    analytic layouts it starts from, ``prefix_s`` the seconds of the workload's arrivals each
    candidate is simulated on (null: all of it; with a prefix the result is checked on the
    whole workload and the start kept when it is not at least as good).
    ``meshes``: an explicit placement, which replaces the search (a plain list of meshes is
    read as ``meshes``).
    """

    search: Literal["analytic", "simulated"] = "analytic"
    estimator: Literal["muxsim", "reference"] = "muxsim"
    objective: Literal["throughput", "goodput", "attainment"] = "throughput"
    candidates: int = Field(default=400, ge=1, le=1_000_000)
    budget_s: float = Field(default=55.0, gt=0, le=86_400, allow_inf_nan=False)
    seed: int = Field(default=0, ge=0)
    starts: int = Field(default=3, ge=1, le=50)
    prefix_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    meshes: list[MeshConfig] | None = Field(default=None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _list_is_meshes(cls, v):
        return {"meshes": v} if isinstance(v, list) else v


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
            if s not in STRATEGIES:
                raise ValueError(f"unknown strategy {s!r}; allowed: {', '.join(STRATEGIES)}")
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

    def cells(self) -> list["Cell"]:
        """The sweep: one cell per (alpha, max_rate, rate_scale) combination, each with per-LLM
        rates; or one per rate set, labelled with its label, with param ``avg_rate`` (mean of
        its rates, req/s) for plotting; or one per ``workload.trace`` alpha (:func:`trace_cells`).

        Popularity cells always carry ``alpha`` and ``rate_scale`` as params (``max_rate`` when
        it is swept); their labels name the swept values only.

        Raises:
            ConfigError: a replayed file or trace that cannot be read or synthesized.
        """
        from muxsim.workload import popularity_rates

        n = sum(g.count for g in self.llms)
        if self.workload.file is not None:
            return [replay_cell(self.workload.file, self.llm_names())]
        if self.workload.trace is not None:
            return trace_cells(self)
        if self.workload.rate_sets is not None:
            return [Cell(label=rs.label, params={"avg_rate": sum(rs.rates) / len(rs.rates)},
                         rates=[float(r) for r in rs.rates], key=f"rate_set={rs.label}")
                    for rs in self.workload.rate_sets]
        fixed = [g.rate for g in self.llms for _ in range(g.count)]
        pop = self.workload.popularity
        if pop is None:
            return [Cell(label="fixed rates", params={}, rates=[float(r) for r in fixed], key="fixed rates")]
        alphas, max_rates, scales = pop.alphas(), pop.max_rates(), pop.rate_scales()
        cells = []
        for alpha, max_rate, scale in itertools.product(alphas, max_rates, scales):
            law = popularity_rates(n, alpha, max_rate * scale)
            rates = [float(r if r is not None else law[i]) for i, r in enumerate(fixed)]
            params = {"alpha": float(alpha), "rate_scale": float(scale)}
            label = []
            if len(alphas) > 1 or (len(max_rates) == 1 and len(scales) == 1):
                label.append(f"alpha={alpha:g}")
            if len(max_rates) > 1:
                params["max_rate"] = float(max_rate)
                label.append(f"max_rate={max_rate:g}")
            if len(scales) > 1:
                label.append(f"scale={scale:g}")
            key = f"alpha={float(alpha)!r},max_rate={float(max_rate)!r},rate_scale={float(scale)!r}"
            cells.append(Cell(label=",".join(label), params=params, rates=rates, key=key))
        return cells


class Cell(BaseModel):
    """One point of the sweep: a label, its sweep parameters, per-LLM rates (req/s) and its
    ``key``: the full parameter values it was made from (not its position in the sweep), which
    seeds its workload, so a cell run alone draws what it draws inside a sweep."""

    model_config = ConfigDict(frozen=True)

    label: str
    params: dict[str, float]
    rates: list[float]
    key: str = ""


def replay_cell(path: str, names: list[str]) -> Cell:
    """The single cell of a replayed workload file: per-LLM rates = requests / span (req/s).

    Raises:
        ConfigError: unreadable file, or LLMs in the file that the config does not list.
    """
    from muxsim.workload import load_workload

    try:
        wl = load_workload(path)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise ConfigError(f"workload.file: {e}") from None
    unknown = sorted(set(wl["llm"]) - set(names))
    if unknown:
        raise ConfigError(f"workload.file names LLMs the config does not list: {unknown[:5]}; listed: llm-0..llm-{len(names) - 1}")
    return Cell(label=f"replay={Path(path).stem}", params={}, rates=_rates_over_span(wl, names, None),
                key=f"replay={Path(path).stem}")


def _rates_over_span(wl, names: list[str], span: float | None) -> list[float]:
    """Per-LLM requests / span (req/s; span = the last arrival when None), at least 1e-3: an LLM
    with no request still needs a positive rate for placement and KV quotas."""
    if span is None:
        span = float(wl["arrival_s"].max()) if len(wl) else 0.0
    span = max(span, 1e-9)
    counts = wl["llm"].value_counts()
    return [max(float(counts.get(n, 0)) / span, 1e-3) for n in names]


@lru_cache(maxsize=16)
def _synthesized(spec_json: str, duration_s: float | None):
    from muxsim.workload.synth import _renumbered

    spec = SynthSpec.model_validate_json(spec_json)
    try:
        df = synthesize(spec)
    except (ValueError, OSError) as e:
        msg = (str(e).splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"workload.trace: {msg}") from None
    if duration_s is not None:
        df = _renumbered(df[df["arrival_s"] < duration_s])
        if len(df) == 0:
            raise ConfigError(f"workload.duration_s: {duration_s:g} s keeps no request of the trace")
    return df


def trace_workload(cfg: "ExperimentConfig", cell_index: int):
    """The synthesized workload of cell ``cell_index`` of a ``workload.trace`` experiment (a fresh
    copy; synthesis is cached per process, keyed on the cell's spec).

    Raises:
        ConfigError: missing or malformed trace (one line naming ``workload.trace``).
    """
    tr = cfg.workload.trace
    spec = tr.cell_spec(cfg.llm_names(), cell_index, cfg.seed)
    return _synthesized(spec.model_dump_json(), cfg.workload.duration_s).copy()


def trace_cells(cfg: "ExperimentConfig") -> list[Cell]:
    """Cells of a ``workload.trace`` experiment: one per alpha of ``trace.popularity.alpha``
    (label ``alpha=<a>``, param ``alpha``), or a single cell labelled ``trace=<file stem>``
    without a power law. Per-LLM rates are each LLM's requests over the span
    (``workload.duration_s``, else the last arrival), as for a replayed file."""
    tr = cfg.workload.trace
    names = cfg.llm_names()
    cells = []
    for k, alpha in enumerate(tr.alphas()):
        wl = trace_workload(cfg, k)
        rates = _rates_over_span(wl, names, cfg.workload.duration_s)
        if alpha is None:
            label = f"trace={Path(tr.source.path).stem}"
            cells.append(Cell(label=label, params={}, rates=rates, key=label))
        else:
            cells.append(Cell(label=f"alpha={alpha:g}", params={"alpha": float(alpha)}, rates=rates,
                              key=f"trace alpha={float(alpha)!r}"))
    return cells


def load_config(path: str | Path, overrides: dict | None = None) -> ExperimentConfig:
    """Read and validate an experiment YAML file.

    Args:
        path: YAML file.
        overrides: top-level keys replacing the file's (e.g. ``{"seed": 3}``).

    Raises:
        ConfigError: missing file, malformed YAML, or a schema violation; the one-line message
            names the file and the offending field.
    """
    p = Path(path)
    raw = read_yaml(p, ConfigError, "config file")
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of experiment keys at the top level")
    if overrides:
        raw = {**raw, **overrides}
    wl = raw.get("workload")
    if isinstance(wl, dict) and isinstance(wl.get("file"), str):
        f = Path(wl["file"])
        if not f.is_absolute() and not f.exists() and (p.parent / f).exists():
            raw = {**raw, "workload": {**wl, "file": str(p.parent / f)}}
    oh = raw.get("overhead")
    if isinstance(oh, dict) and isinstance(oh.get("file"), str):
        f = Path(oh["file"])
        if not f.is_absolute() and not f.exists() and (p.parent / f).exists():
            raw = {**raw, "overhead": {**oh, "file": str(p.parent / f)}}
    if isinstance(wl, dict) and isinstance(wl.get("trace"), dict):
        raw = {**raw, "workload": {**wl, "trace": _resolve_trace_paths(wl["trace"], p)}}
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{p}: {format_validation_error(e)}") from None
    except ValueError as e:  # catalog lookups raised outside pydantic's wrapping
        raise ConfigError(f"{p}: {e}") from None
    tr = cfg.workload.trace
    if tr is not None:
        for key, v in (("source.path", tr.source.path),
                       ("popularity.rates_file", tr.popularity.rates_file if tr.popularity else None)):
            if v is not None and not Path(v).expanduser().exists():
                raise ConfigError(f"{p}: workload.trace.{key}: file not found: {v} (a relative path is "
                                  f"looked up in the current folder, then beside the config)")
    return cfg


def _resolve_trace_paths(trace: dict, config_path: Path) -> dict:
    """``workload.trace`` with its relative file paths (``source.path``, ``source.tokenizer``,
    ``popularity.rates_file``) made to point beside the config when they are not found in the
    current folder but are there (as for ``workload.file``)."""

    def fix(v):
        if not isinstance(v, str):
            return v
        f = Path(v).expanduser()
        if not f.is_absolute() and not f.exists() and (config_path.parent / f).exists():
            return str(config_path.parent / f)
        return v

    out = dict(trace)
    for key, field in (("source", "path"), ("source", "tokenizer"), ("popularity", "rates_file")):
        sub = out.get(key)
        if isinstance(sub, dict) and field in sub:
            out[key] = {**sub, field: fix(sub[field])}
    return out


def allowed_names() -> str:
    """Catalog names, for error messages."""
    return f"models: {', '.join(MODELS)}; GPUs: {', '.join(GPUS)}"
