"""Experiment configuration: the YAML schema, validated by pydantic.

An experiment is a cluster, a list of LLMs, a workload (popularity law or explicit rates, arrival
process, lengths, duration), a list of strategies, SLO scales, scheduler knobs and optionally an
explicit placement. List-valued ``alpha``, ``max_rate`` and ``rate_scale`` make a sweep: one cell
per combination, each run under every strategy. ``workload.rate_sets`` instead lists explicit
per-LLM rate vectors (e.g. a trace at several time compressions): one cell per set.
``workload.trace`` replays a real request trace split among the LLMs (a
:class:`muxsim.workload.synth.SynthSpec`); a list-valued ``popularity.alpha`` there sweeps the
split, one cell per alpha.

Unknown keys are rejected everywhere (``extra="forbid"``), so a typo names its field.

Modules: :mod:`.sections` (the sections), :mod:`.experiment` (the whole config and its
cross-field checks), :mod:`.cells` (the sweep), :mod:`.traces` (trace-driven cells),
:mod:`.load` (reading a file), :mod:`.errors`.
"""

from muxsim.core.settings import SchedulerConfig

from .cells import Cell, replay_cell
from .errors import ConfigError
from .experiment import DEFAULT_STRATEGIES, STRATEGIES, ExperimentConfig
from .load import allowed_names, load_config
from .sections import (
    CalibrationGridConfig,
    ClusterConfig,
    LengthsConfig,
    LimitsConfig,
    LiveConfig,
    LLMGroup,
    MeshConfig,
    OverheadConfig,
    PlacementConfig,
    PopularityConfig,
    RateSet,
    RequestCountConfig,
    SLOConfig,
    TimelineConfig,
    TraceConfig,
    TracePopularity,
    WorkloadConfig,
)
from .traces import trace_cells, trace_workload

__all__ = [
    "DEFAULT_STRATEGIES",
    "STRATEGIES",
    "CalibrationGridConfig",
    "Cell",
    "ClusterConfig",
    "ConfigError",
    "ExperimentConfig",
    "LLMGroup",
    "LengthsConfig",
    "LiveConfig",
    "LimitsConfig",
    "MeshConfig",
    "OverheadConfig",
    "PlacementConfig",
    "PopularityConfig",
    "RateSet",
    "RequestCountConfig",
    "SLOConfig",
    "TimelineConfig",
    "SchedulerConfig",
    "TraceConfig",
    "TracePopularity",
    "WorkloadConfig",
    "allowed_names",
    "load_config",
    "replay_cell",
    "trace_cells",
    "trace_workload",
]
