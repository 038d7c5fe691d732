"""Workloads for muxsim: per-LLM arrival processes, popularity-skewed rates and request lengths.

Typical use (the paper's synthetic workload, docs/muxserve.md §8)::

    rates = popularity_rates(19, alpha=0.9, max_rate=40.0)
    df = generate_workload([f"llm-{i}" for i in range(19)], rates, 1000.0,
                           EmpiricalLengths.sharegpt(), seed=0)
"""

from .arrivals import ARRIVAL_PROCESSES, arrival_times
from .generate import WORKLOAD_COLUMNS, generate_workload, load_workload, save_workload
from .lengths import (
    SHAREGPT_LENGTHS_PATH,
    SHAREGPT_V3_LENGTHS_PATH,
    EmpiricalLengths,
    FixedLengths,
    LengthSampler,
    ScaledLengths,
)
from .popularity import popularity_rates
from .traces import (
    TRACE_FORMATS,
    TraceFormatError,
    assign_arrivals,
    detect_format,
    load_muxserve_rates,
    load_trace,
)

__all__ = [
    "ARRIVAL_PROCESSES",
    "EmpiricalLengths",
    "FixedLengths",
    "LengthSampler",
    "SHAREGPT_LENGTHS_PATH",
    "SHAREGPT_V3_LENGTHS_PATH",
    "ScaledLengths",
    "TRACE_FORMATS",
    "TraceFormatError",
    "WORKLOAD_COLUMNS",
    "arrival_times",
    "assign_arrivals",
    "detect_format",
    "generate_workload",
    "load_muxserve_rates",
    "load_trace",
    "load_workload",
    "popularity_rates",
    "save_workload",
]
