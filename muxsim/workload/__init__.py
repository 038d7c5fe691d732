"""Workloads for muxsim: per-LLM arrival processes, popularity-skewed rates and request lengths.

Typical use (the paper's synthetic workload, docs/muxserve.md §8)::

    rates = popularity_rates(19, alpha=0.9, max_rate=40.0)
    df = generate_workload([f"llm-{i}" for i in range(19)], rates, 1000.0,
                           EmpiricalLengths.sharegpt(), seed=0)
"""

from .arrivals import ARRIVAL_PROCESSES, arrival_times
from .generate import WORKLOAD_COLUMNS, generate_workload, load_workload, save_workload
from .lengths import SHAREGPT_LENGTHS_PATH, EmpiricalLengths, FixedLengths, LengthSampler, ScaledLengths
from .popularity import popularity_rates

__all__ = [
    "ARRIVAL_PROCESSES",
    "EmpiricalLengths",
    "FixedLengths",
    "LengthSampler",
    "SHAREGPT_LENGTHS_PATH",
    "ScaledLengths",
    "WORKLOAD_COLUMNS",
    "arrival_times",
    "generate_workload",
    "load_workload",
    "popularity_rates",
    "save_workload",
]
