"""Multi-LLM workloads synthesized from one real request trace.

A public trace (Azure, Mooncake, BurstGPT, ShareGPT, ...; loaded by
:mod:`muxsim.workload.formats`) is one stream of requests. MuxServe's evaluation serves many LLMs,
each with its own popularity (Duan et al., ICML 2024, §5.1: rate_i proportional to
(i + 1)^-alpha; §5.3: ChatLMSYS per-model rates, time-condensed). This package turns one stream
into such a workload while keeping the stream's real arrival pattern:

* :func:`split_among_llms` -- each arrival goes to one LLM drawn with probability proportional
  to a weight (random thinning): the aggregate stream, and so its burstiness, is unchanged and
  every LLM sees a thinned copy of the same bursts.
* :func:`drifting_split` -- the same with weights that change between time windows.
* :func:`cut_window`, :func:`condense`, :func:`rescale_to_rate` -- pick a slice of the trace and
  compress or stretch its time axis.
* :func:`burstiness_cv`, :func:`mean_rate` -- the statistics used to check the above.
* :class:`SynthSpec` / :func:`load_synth_spec` / :func:`synthesize` -- the same driven by a YAML
  file (``muxsim trace synth``).

Modules: :mod:`.transforms` (the operations), :mod:`.spec` (the YAML-driven synthesis).
Every function is pure: it returns a new frame and leaves its input untouched; randomness comes
only from the ``seed`` argument.
"""

from .spec import (
    DriftWindowSpec,
    PopularitySpec,
    SourceSpec,
    SynthSpec,
    SynthSpecError,
    WindowSpec,
    load_synth_spec,
    synthesize,
)
from .transforms import (
    burstiness_cv,
    condense,
    cut_window,
    drifting_split,
    load_source,
    mean_rate,
    power_law_weights,
    rates_file_weights,
    renumbered,
    rescale_to_rate,
    source_formats,
    split_among_llms,
)

__all__ = [
    "DriftWindowSpec", "PopularitySpec", "SourceSpec", "SynthSpec", "SynthSpecError",
    "WindowSpec", "burstiness_cv", "condense", "cut_window", "drifting_split", "load_source",
    "load_synth_spec", "mean_rate", "power_law_weights", "rates_file_weights", "renumbered",
    "rescale_to_rate", "source_formats", "split_among_llms", "synthesize",
]
