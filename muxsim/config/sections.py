"""The sections of an experiment config (cluster, llms, workload, slo, overhead, placement,
live), each a strict pydantic model; the scheduler section is
:class:`muxsim.core.settings.SchedulerConfig`.

Every number is finite (:class:`muxsim.schema.Strict`) and in the range its docstring states;
the upper bounds are far above any real experiment and exist so that a typo (``1e9`` for
``1e3``) is refused at load instead of ending in an out-of-memory error mid-run. Rates are
req/s, times seconds."""

from __future__ import annotations

import itertools
import math
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from muxsim.catalog import get_gpu, get_model
from muxsim.core.records import SLO_BASES
from muxsim.schema import FieldProblem
from muxsim.schema import Strict as _Strict
from muxsim.workload.synth import PopularitySpec, SynthSpec

from .errors import ConfigError

#: Largest rate (req/s) of one LLM, a ``max_rate`` or a rate set: a million requests a second
#: is beyond any cluster muxsim models.
MAX_RATE = 1e6
#: Longest duration (s) of a workload, a drain or a request-count window: about 115 days.
MAX_SECONDS = 1e7
#: Largest popularity exponent: beyond it every LLM but the first has a vanishing rate.
MAX_ALPHA = 10.0
#: Most LLMs of one group (``count``).
MAX_LLMS = 1024
#: Largest SLO scale.
MAX_SLO_SCALE = 1e6
#: Largest GPU-hour price (USD): list prices are a few dollars; 1000 catches a typo.
MAX_USD_PER_GPU_HOUR = 1000.0
#: Largest absolute SLO (ms): about 11.6 days.
MAX_SLO_MS = 1e9
#: Largest seed: the 32-bit range every generator muxsim seeds (numpy, torch) accepts as is.
MAX_SEED = 2**32 - 1

#: A number whose field validator checks finiteness itself, so that its message for ``inf`` /
#: ``nan`` states the field's whole range (the base's generic check does not know it).
_Num = Annotated[float, Field(allow_inf_nan=True)]


_Nodes = Annotated[int, Field(ge=1, le=1024)]
_GpusPerNode = Annotated[int, Field(ge=1, le=16)]


class ClusterConfig(_Strict):
    """Nodes x GPUs per node of one GPU kind (a catalog name, e.g. ``a100-80gb``): ``nodes`` in
    [1, 1024], ``gpus_per_node`` in [1, 16] (the analytic placement search switches to its
    large-scale method above a few nodes; ``muxsim.core.placement``).

    Each of ``nodes``, ``gpus_per_node`` and ``gpu`` may be a list: the experiment then sweeps
    the clusters of their product (in ``nodes``, ``gpus_per_node``, ``gpu`` order), one cell per
    cluster and workload cell (:meth:`clusters`); values of a list unique. A cell's own cluster
    is always scalar (:meth:`muxsim.config.ExperimentConfig.for_cell`).

    ``usd_per_gpu_hour`` (USD, in (0, 1000]) replaces the catalog's GPU-hour price in the cost
    columns of the summary (your negotiated, reserved or spot price); null: the catalog's
    on-demand list price (:data:`muxsim.catalog.GPUS`).
    """

    nodes: _Nodes | list[_Nodes]
    gpus_per_node: _GpusPerNode | list[_GpusPerNode]
    gpu: str | list[str] = "a100-80gb"
    usd_per_gpu_hour: float | None = Field(default=None, gt=0, le=MAX_USD_PER_GPU_HOUR)

    @field_validator("nodes", "gpus_per_node")
    @classmethod
    def _unique(cls, v, info):
        return _sweep_values(v, info.field_name, lambda x: None)

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, v):
        vals = [x.strip().lower() for x in (v if isinstance(v, list) else [v])]
        _sweep_values(vals, "gpu", get_gpu)
        return vals if isinstance(v, list) else vals[0]

    @property
    def swept(self) -> bool:
        """Whether any field is a list (a cluster sweep, even of one value)."""
        return any(isinstance(getattr(self, k), list) for k in ("nodes", "gpus_per_node", "gpu"))

    def swept_fields(self) -> list[str]:
        """The fields given as lists of more than one value (the ones cell labels name)."""
        return [k for k in ("nodes", "gpus_per_node", "gpu")
                if isinstance(getattr(self, k), list) and len(getattr(self, k)) > 1]

    def clusters(self) -> list[ClusterConfig]:
        """Every cluster of the sweep, each with scalar fields, in product order (``nodes``
        outermost); ``[self]`` when nothing is swept."""
        if not self.swept:
            return [self]

        def vals(k):
            v = getattr(self, k)
            return v if isinstance(v, list) else [v]

        return [ClusterConfig.model_construct(nodes=n, gpus_per_node=g, gpu=k)
                for n, g, k in itertools.product(vals("nodes"), vals("gpus_per_node"), vals("gpu"))]

    @property
    def n_gpus(self) -> int:
        """GPUs in the cluster.

        Raises:
            ValueError: a swept cluster (each of its :meth:`clusters` has its own count).
        """
        if self.swept:
            raise ValueError("cluster.n_gpus of a swept cluster: take it of one of cluster.clusters()")
        return self.nodes * self.gpus_per_node

    def price_per_gpu_hour(self) -> float | None:
        """USD per GPU-hour: ``usd_per_gpu_hour`` when given, else the catalog's on-demand list
        price of the GPU (:attr:`muxsim.catalog.GPUSpec.usd_per_gpu_hour`, with its source and
        date); None when neither is known (e.g. ``cpu-core``).

        Raises:
            ValueError: a swept GPU kind without ``usd_per_gpu_hour`` (each of its
                :meth:`clusters` has its own price).
        """
        if self.usd_per_gpu_hour is not None:
            return float(self.usd_per_gpu_hour)
        if isinstance(self.gpu, list):
            raise ValueError("cluster.price_per_gpu_hour of a swept GPU kind: take it of one of cluster.clusters()")
        return get_gpu(self.gpu).usd_per_gpu_hour


class LLMGroup(_Strict):
    """``count`` served LLMs of one architecture, listed in popularity order.

    ``rate`` (req/s, in (0, 1e6]) fixes the rate of every LLM of the group; otherwise the
    workload's popularity law sets it. ``count`` in [1, 1024].
    """

    model: str
    count: int = Field(default=1, ge=1, le=MAX_LLMS)
    rate: float | None = Field(default=None, gt=0, le=MAX_RATE)

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        get_model(v)
        return v.strip().lower()


def _sweep_values(v, name: str, check):
    """A swept field's value (one number or a list of them) once every value passed
    ``check`` (which raises ValueError), the list is not empty and its values are unique.

    Raises:
        ValueError: an empty list, a value ``check`` refuses, or a repeated value.
    """
    vals = v if isinstance(v, list) else [v]
    if not vals:
        raise ValueError(f"{name} list is empty")
    for x in vals:
        check(x)
    if len(set(vals)) != len(vals):
        raise ValueError(f"{name} values must be unique, got {vals}")
    return v


class PopularityConfig(_Strict):
    """Power law rate_i = rate_scale x max_rate x (i+1)^-alpha over the LLMs in listed order.

    ``alpha``, ``max_rate`` and ``rate_scale`` may be lists: the experiment sweeps their product
    (the paper: alpha in {0.7, 0.9, 1.3, 1.7, 2.1} x rate_scale in {0.5, 0.75, 1, 1.25},
    max_rate 40 req/s).

    Ranges: ``alpha`` in [0, 10], ``max_rate`` in (0, 1e6] req/s, ``rate_scale`` in (0, 1000];
    values of a list unique (alpha too: a repeated value would make two identical cells).
    """

    alpha: _Num | list[_Num]
    max_rate: _Num | list[_Num]
    rate_scale: _Num | list[_Num] = 1.0

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v):
        def check(a):
            if a < 0:
                raise ValueError(f"alpha must be >= 0, got {a}")
            if not a <= MAX_ALPHA:  # nan too
                raise ValueError(f"alpha must be in [0, {MAX_ALPHA:g}], got {a}")

        return _sweep_values(v, "alpha", check)

    @field_validator("max_rate", "rate_scale")
    @classmethod
    def _positive(cls, v, info):
        top = MAX_RATE if info.field_name == "max_rate" else 1000.0

        def check(r):
            if not (math.isfinite(r) and r > 0):
                raise ValueError(f"{info.field_name} must be > 0 and <= {top:g} (finite), got {r}")
            if r > top:
                raise ValueError(f"{info.field_name} must be in (0, {top:g}], got {r:g}")

        return _sweep_values(v, info.field_name, check)

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
    """One cell of a ``workload.rate_sets`` sweep: a label and one rate (req/s, in (0, 1e6]) per
    LLM, in the listed LLM order."""

    label: str = Field(min_length=1)
    rates: list[_Num] = Field(min_length=1)

    @field_validator("rates")
    @classmethod
    def _positive(cls, v):
        for r in v:
            if not (math.isfinite(r) and 0 < r <= MAX_RATE):
                raise ValueError(f"rates must be finite req/s > 0 and <= {MAX_RATE:g}, got {r}")
        return v


class LengthsConfig(_Strict):
    """Prompt/output lengths: a shipped empirical distribution or fixed.

    ``sharegpt_v3``: ShareGPT V3 first turns after the paper's filters, the sample the MuxServe
    paper drew from (LLaMA tokenizer; mean prompt 247.7, output 233.3 tokens;
    traces/README.md). ``sharegpt``: ShareGPT first turns of sarathi-serve's 8k file
    (Llama-2 tokenizer, outputs capped at 1024; mean 136.2 / 472.1). ``fixed``: every request
    ``prompt`` / ``output`` tokens.

    ShareGPT lengths may be resized, at least 4 tokens each: ``scale`` (in (0, 100]) multiplies
    prompt and output alike; ``mean_prompt`` and ``mean_output`` (tokens, both or neither) instead rescale
    prompt and output by separate factors chosen so the means match, e.g. a trace's
    (:meth:`muxsim.workload.ScaledLengths.matching_means`; the shape of each side is kept).
    """

    kind: Literal["sharegpt", "sharegpt_v3", "fixed"] = "sharegpt"
    prompt: int | None = Field(default=None, ge=1, le=32768)
    output: int | None = Field(default=None, ge=1, le=32768)
    scale: float = Field(default=1.0, gt=0, le=100)
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
    experiment then sweeps it, one cell per alpha (each in [0, 10], unique)."""

    alpha: _Num | list[_Num] | None = None

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v):
        if v is None:
            return v
        def check(a):
            if not (math.isfinite(a) and a >= 0):
                raise ValueError(f"alpha must be finite and >= 0, got {a}")
            if a > MAX_ALPHA:
                raise ValueError(f"alpha must be in [0, {MAX_ALPHA:g}], got {a}")

        return _sweep_values(v, "alpha", check)


class TraceConfig(SynthSpec):
    """``workload.trace``: a real request trace split among the experiment's LLMs, written as a
    ``muxsim trace synth`` spec (:class:`muxsim.workload.synth.SynthSpec`, same keys and steps:
    source, window, condense / target_rate, llms, popularity, seed, max_requests).

    Differences, all about fitting the spec into an experiment: ``llms`` may be omitted (it is
    then the experiment's ``llm-0 .. llm-{n-1}``; given, it must be n or a list of exactly those
    names, whose order is the popularity order); ``popularity.alpha`` may be a list (one sweep
    cell per alpha); ``seed`` may be omitted (the experiment's ``seed`` is used, so ``--seed``
    changes the split; a given one is in [0, 2**32 - 1]). Without ``popularity`` the LLMs get
    equal shares.
    """

    popularity: TracePopularity | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)

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

    Ranges: ``factor`` in (0, 1000], ``seconds`` in (0, 1e7], ``counts`` whole numbers in
    [0, 1e9], not all 0.
    """

    rule: Literal["estimate", "fixed"] = "estimate"
    factor: float = Field(default=1.1, gt=0, le=1000)
    seconds: float = Field(default=240.0, gt=0, le=MAX_SECONDS)
    counts: int | list[int] | None = None

    @model_validator(mode="after")
    def _rule_fields(self):
        if self.rule == "fixed":
            if self.counts is None:
                raise ValueError("requests.rule 'fixed' needs 'counts': requests per LLM (a number, "
                                 "or one per LLM)")
            vals = self.counts if isinstance(self.counts, list) else [self.counts]
            if not vals or any(not 0 <= c <= 10**9 for c in vals):
                raise FieldProblem("counts", f"requests.counts must be whole numbers in [0, 1e9], got {self.counts}")
            if not any(vals):  # an empty workload has nothing to simulate or report
                raise FieldProblem("counts", f"requests.counts gives every LLM 0 requests; give at least one "
                                   f"a count >= 1, got {self.counts}")
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

    Ranges: ``duration_s`` and ``drain_limit_s`` in (0, 1e7] s, ``cv`` in [0.001, 1000] (the
    arrival sampler's range; only with ``arrival: gamma``, Poisson has cv 1),
    ``max_requests_per_llm`` in [1, 1e9]. ``file`` must exist (checked when the config is
    loaded).
    """

    duration_s: float | None = Field(default=None, gt=0, le=MAX_SECONDS)
    file: str | None = Field(default=None, min_length=1)
    arrival: Literal["poisson", "gamma"] = "poisson"
    cv: float = Field(default=1.0, ge=0.001, le=1000)
    lengths: LengthsConfig = LengthsConfig()
    popularity: PopularityConfig | None = None
    rate_sets: list[RateSet] | None = Field(default=None, min_length=1)
    max_requests_per_llm: int | None = Field(default=None, ge=1, le=10**9)
    requests: RequestCountConfig | None = None
    drain_limit_s: float | None = Field(default=None, gt=0, le=MAX_SECONDS)
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
        elif self.file is None and self.arrival == "poisson" and self.cv != 1.0:
            # the arrival sampler refuses it, but only once the run has started
            raise FieldProblem("cv", f"cv={self.cv:g} only applies to arrival: gamma; poisson has cv 1")
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

    Absolute SLOs (vLLM ``benchmark_serving``'s ``--goodput``), any subset, each in (0, 1e9]
    ms: ``ttft_ms`` (time to first token), ``tpot_ms`` (time per output token after the first)
    and ``e2e_ms`` (end-to-end latency). A request meets them when it finished within every
    one given; the summary's ``request_goodput_rps`` and ``slo_attainment_abs`` count those
    requests (NaN when none is given). They sit beside the relative scales, which stay.

    Ranges: every scale and ``goodput_scale`` in (0, 1e6].
    """

    scales: list[_Num] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64, 100])
    goodput_scale: float = Field(default=8.0, gt=0, le=MAX_SLO_SCALE)
    base: Literal[SLO_BASES] = "alone"
    ttft_ms: float | None = Field(default=None, gt=0, le=MAX_SLO_MS)
    tpot_ms: float | None = Field(default=None, gt=0, le=MAX_SLO_MS)
    e2e_ms: float | None = Field(default=None, gt=0, le=MAX_SLO_MS)

    def absolute(self) -> dict[str, float]:
        """The absolute SLOs given (ms), by name (``ttft_ms``, ``tpot_ms``, ``e2e_ms``); empty
        when none is (:func:`muxsim.metrics.summarize`'s ``abs_slo``)."""
        return {k: float(v) for k in ("ttft_ms", "tpot_ms", "e2e_ms") if (v := getattr(self, k)) is not None}

    @field_validator("scales")
    @classmethod
    def _positive(cls, v):
        if not v or any(not 0 < s <= MAX_SLO_SCALE for s in v):  # nan fails too
            raise ValueError(f"scales must be a non-empty list of numbers in (0, {MAX_SLO_SCALE:g}], got {v}")
        return sorted(set(v))


class CalibrationGridConfig(_Strict):
    """Grid of a calibration sweep (batch sizes, prompt/context lengths in tokens) and its
    repeats; ``file`` reuses (and resumes) a calibration Parquet instead of a fresh one.

    Ranges: ``batches`` in [1, 4096], ``seqs`` in [1, 131072] tokens, ``warmup`` in [0, 1000],
    ``repeats`` in [1, 1000].
    """

    batches: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16], min_length=1)
    seqs: list[int] = Field(default_factory=lambda: [32, 64, 128, 256], min_length=1)
    warmup: int = Field(default=2, ge=0, le=1000)
    repeats: int = Field(default=5, ge=1, le=1000)
    file: str | None = Field(default=None, min_length=1)

    @field_validator("batches", "seqs")
    @classmethod
    def _positive(cls, v, info):
        top = 4096 if info.field_name == "batches" else 131072
        if any(not 1 <= x <= top for x in v):
            raise ValueError(f"must be whole numbers in [1, {top}], got {v}")
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

    Ranges: ``threads`` in [1, 1024], ``max_drift`` in (0, 10], ``retries`` in [0, 100],
    ``replay_window_s`` in [0.01, 86400] s (shorter windows would only split the live run into
    millions of empty ones); ``checkpoints`` keys are catalog models.
    """

    engine: Literal["transformers", "vllm"] = "transformers"
    device: str = "cpu"
    threads: int = Field(default=1, ge=1, le=1024)
    checkpoints: dict[str, str] | None = None
    calibration: CalibrationGridConfig = CalibrationGridConfig()
    pin_cores: bool = True
    speed_correction: bool = False
    max_drift: float = Field(default=0.15, gt=0, le=10)
    retries: int = Field(default=0, ge=0, le=100)
    replay_window_s: float = Field(default=2.0, ge=0.01, le=86_400)

    @field_validator("checkpoints")
    @classmethod
    def _checkpoint_models(cls, v):
        # a checkpoint is looked up by model name; a misspelt one would be ignored silently
        for k in v or {}:
            get_model(k)
        return v

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
    both (it must exist and be readable: checked when the config is loaded). Set both to 0 to
    simulate the profiled kernel time alone. Ranges: both in [0, 1000] ms.
    """

    dispatch_ms: float = Field(default=0.55, ge=0, le=1000)
    decode_per_seq_ms: _Num | dict[str, _Num] | None = None
    file: str | None = Field(default=None, min_length=1)

    @field_validator("decode_per_seq_ms")
    @classmethod
    def _per_seq(cls, v):
        vals = list(v.values()) if isinstance(v, dict) else [] if v is None else [v]
        if any(not (math.isfinite(x) and 0 <= x <= 1000) for x in vals):
            raise ValueError(f"must be finite and in [0, 1000] ms, got {v}")
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
    """An explicit mesh: its node (in [0, 1023], below ``cluster.nodes``), GPU count (1, 2, 4, 8
    or 16, at most ``cluster.gpus_per_node``), LLM names (each once) and, for some of them,
    their [prefill %, decode %] SM shares (whole percentages in [1, 100]); the LLMs ``sm`` names
    must be on this mesh."""

    node: int = Field(ge=0, le=1023)
    gpus: int = Field(ge=1, le=16)
    llms: list[str] = Field(min_length=1)
    sm: dict[str, tuple[int, int]] | None = None

    @field_validator("gpus")
    @classmethod
    def _power_of_two(cls, v):
        if v not in (1, 2, 4, 8, 16):
            raise ValueError(f"must be 1, 2, 4, 8 or 16 GPUs (a mesh is a power of two), got {v}")
        return v

    @model_validator(mode="after")
    def _shares_of_its_llms(self):
        dup = sorted({n for n in self.llms if self.llms.count(n) > 1})
        if dup:
            raise FieldProblem("llms", f"lists {dup[0]!r} more than once")
        for name, shares in (self.sm or {}).items():
            if name not in self.llms:
                # a share for an LLM of another mesh would be ignored silently
                raise FieldProblem(f"sm.{name}", f"{name!r} is not on this mesh; its llms: {list(self.llms)}")
            if not all(1 <= x <= 100 for x in shares):
                raise FieldProblem(f"sm.{name}", f"SM shares [prefill %, decode %] must be in [1, 100], "
                                   f"got {list(shares)}")
        return self


class TimelineConfig(_Strict):
    """The job log (``jobs.parquet``) and its Perfetto trace (``timeline.json``): every job that
    starts in ``window_s`` = [start, end) (simulated s, 0 <= start < end <= 1e7) of the cells
    ``cells`` selects under the strategies in ``strategies`` (null: every strategy of the run).

    ``cells``: null (every cell) or a list of selectors, each a cell label
    (``"alpha=0.9,scale=1"``), a position in the sweep from 0, or a mapping of sweep parameters
    to values (``{alpha: 0.9, rate_scale: 1}``: the cells with those values, whatever else is
    swept). A label or position that names no cell is refused; a mapping may select none (a
    reduced copy of a config keeps its timeline section).

    Decode iterations that start in the window are simulated one job each, which changes no
    result; a window of a few seconds keeps the log small (the main job's 10 s of one cell:
    about 19,000 jobs under four strategies)."""

    window_s: tuple[_Num, _Num]
    cells: list[int | str | dict[str, _Num]] | None = None
    strategies: list[str] | None = None

    @field_validator("window_s")
    @classmethod
    def _window(cls, v):
        a, b = v
        if not (math.isfinite(a) and math.isfinite(b) and 0 <= a < b <= MAX_SECONDS):
            raise ValueError(f"window_s must be [start, end] s with 0 <= start < end <= {MAX_SECONDS:g}, "
                             f"got [{a}, {b}]")
        return (float(a), float(b))

    @field_validator("cells")
    @classmethod
    def _cells(cls, v):
        if v is not None and (not v or any(isinstance(c, int) and c < 0 for c in v)):
            raise ValueError(f"cells must be a non-empty list of cell labels or positions >= 0, got {v}")
        return v


class LimitsConfig(_Strict):
    """Size guards (:mod:`muxsim.experiment.guards`): a run whose estimate, made from the config
    before anything is drawn, exceeds one of them is refused with one line. They guard the run
    and change no result, so the resolved config leaves them out.

    ``max_requests``: simulated requests over all cells and strategies (default 20 million,
    about 14 GiB at 700 B each); ``max_events``: an upper bound on simulator jobs (default 2e9);
    ``max_memory_gib``: estimated peak memory (null: 80 % of this machine's memory). Ranges:
    [1, 1e12], [1, 1e15], (0, 1e6] GiB.
    """

    max_requests: int = Field(default=20_000_000, ge=1, le=10**12)
    max_events: int = Field(default=2_000_000_000, ge=1, le=10**15)
    max_memory_gib: float | None = Field(default=None, gt=0, le=1e6)


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

    Ranges: ``candidates`` in [1, 1e6], ``budget_s`` in (0, 86400] s, ``seed`` in
    [0, 2**32 - 1], ``starts`` in [1, 50], ``prefix_s`` in (0, 1e7] s.
    """

    search: Literal["analytic", "simulated"] = "analytic"
    estimator: Literal["muxsim", "reference"] = "muxsim"
    objective: Literal["throughput", "goodput", "attainment"] = "throughput"
    candidates: int = Field(default=400, ge=1, le=1_000_000)
    budget_s: float = Field(default=55.0, gt=0, le=86_400)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    starts: int = Field(default=3, ge=1, le=50)
    prefix_s: float | None = Field(default=None, gt=0, le=MAX_SECONDS)
    meshes: list[MeshConfig] | None = Field(default=None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _list_is_meshes(cls, v):
        return {"meshes": v} if isinstance(v, list) else v
