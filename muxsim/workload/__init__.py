"""Workloads for muxsim: per-LLM arrival processes, popularity-skewed rates and request lengths.

Typical use (the paper's synthetic workload, docs/muxserve.md §8)::

    rates = popularity_rates(19, alpha=0.9, max_rate=40.0)
    df = generate_workload([f"llm-{i}" for i in range(19)], rates, 1000.0,
                           EmpiricalLengths.sharegpt(), seed=0)
"""

from .arrivals import ARRIVAL_PROCESSES, arrival_times, assign_arrivals
from .formats import (
    TRACE_FORMATS,
    TraceFormatError,
    detect_format,
    load_muxserve_rates,
    load_trace,
)
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

__all__ = [
    "ARRIVAL_PROCESSES",
    "SHAREGPT_LENGTHS_PATH",
    "SHAREGPT_V3_LENGTHS_PATH",
    "TRACE_FORMATS",
    "WORKLOAD_COLUMNS",
    "EmpiricalLengths",
    "FixedLengths",
    "LengthSampler",
    "ScaledLengths",
    "TraceFormatError",
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
