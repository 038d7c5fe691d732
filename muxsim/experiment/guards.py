"""Size guards: what a run will hold, estimated from the config before anything is drawn, and
a one-line refusal when it exceeds the limits (``limits:`` in the config), instead of dying in
numpy hours later or asking for terabytes.

The estimate (:class:`SizeEstimate`) per cell: the arrivals drawn (each LLM's rate x
``duration_s``, drawn even when request counts then keep fewer), the requests kept (request
counts and per-LLM caps applied), and for the run the simulated requests
(kept requests x strategies), an upper bound on simulator events (one prefill and one decode
iteration per output token of every simulated request, batch 1), and the peak memory: bytes per
simulated request (:data:`BYTES_PER_REQUEST`) plus bytes per drawn arrival
(:data:`BYTES_PER_ARRIVAL`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from muxsim.config import ExperimentConfig

__all__ = ["BYTES_PER_ARRIVAL", "BYTES_PER_REQUEST", "SizeError", "SizeEstimate", "check_size", "estimate_size",
           "machine_memory_bytes"]

#: Peak memory per simulated request of a whole run (bytes): the request objects of a
#: simulation, its per-request table, and the concatenated tables the parent writes. Measured on
#: the paper protocol (issue 13's profile: 600-700 B; the upper figure).
BYTES_PER_REQUEST = 700

#: Transient memory per drawn arrival (bytes): its gap and its arrival time (two float64) and
#: the lengths drawn for it (two int64), before the request counts keep the first ones.
BYTES_PER_ARRIVAL = 32

GIB = 1024**3


class SizeError(ValueError):
    """A run larger than the limits allow, with a one-line message: the estimate, the limit and
    how to raise it."""


@dataclass(frozen=True)
class SizeEstimate:
    """What a run will hold (see the module docstring).

    Attributes:
        arrivals: arrivals drawn, over every cell.
        requests: requests kept, over every cell (each simulated once per strategy).
        simulated_requests: ``requests`` x strategies.
        events: upper bound on simulator jobs (one prefill plus one per output token of every
            simulated request).
        memory_bytes: estimated peak memory (bytes).
    """

    arrivals: float
    requests: float
    simulated_requests: float
    events: float
    memory_bytes: float


def machine_memory_bytes() -> float:
    """This machine's physical memory (bytes), or inf when the OS does not say."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return math.inf


def _cell_sizes(cfg: ExperimentConfig) -> tuple[float, float, float]:
    """(arrivals drawn, requests kept, mean output tokens) over every cell, without drawing."""
    w = cfg.workload
    clusters = len(cfg.cluster.clusters())  # a cluster sweep serves each workload once per cluster
    if w.file is not None:
        import pyarrow.parquet as pq

        n = float(pq.ParquetFile(w.file).metadata.num_rows) * clusters
        return n, n, 1024.0  # lengths unknown without reading them: a long-output bound
    if w.trace is not None:
        # trace cells are synthesized from a file already in memory: count them
        from muxsim.config import trace_workload

        n = sum(float(len(trace_workload(cfg, k))) for k in range(len(w.trace.alphas()))) * clusters
        return n, n, 1024.0
    from .workloads import lengths_sampler

    mean_output = float(lengths_sampler(cfg).mean_output)
    req = w.requests
    arrivals = kept = 0.0
    for cell in cfg.cells():
        drawn = [r * w.duration_s for r in cell.rates]
        keep = list(drawn)
        if req is not None and req.rule == "fixed":
            c = req.counts
            counts = [float(x) for x in c] if isinstance(c, list) else [float(c)] * len(drawn)
            keep = [min(k, n) for k, n in zip(keep, counts)]
        elif req is not None:  # estimate rule: factor x seconds x throughput <= factor x seconds x rate
            keep = [min(k, req.factor * req.seconds * r) for k, r in zip(keep, cell.rates)]
        if w.max_requests_per_llm is not None:
            keep = [min(k, w.max_requests_per_llm) for k in keep]
        arrivals += sum(drawn)
        kept += sum(keep)
    return arrivals, kept, mean_output


def estimate_size(cfg: ExperimentConfig) -> SizeEstimate:
    """The size of ``cfg``'s run (see the module docstring), from the config alone."""
    arrivals, kept, mean_output = _cell_sizes(cfg)
    simulated = kept * len(cfg.strategies)
    events = simulated * (1.0 + mean_output)
    memory = simulated * BYTES_PER_REQUEST + arrivals * BYTES_PER_ARRIVAL
    return SizeEstimate(arrivals, kept, simulated, events, memory)


def check_size(cfg: ExperimentConfig) -> SizeEstimate:
    """Estimate ``cfg``'s run and refuse it when it exceeds ``cfg.limits``.

    Raises:
        SizeError: more simulated requests than ``limits.max_requests``, more events than
            ``limits.max_events``, or more memory than ``limits.max_memory_gib`` (default: 80 %
            of this machine's memory); the message gives the estimate, the limit and the key
            that raises it.
    """
    est = estimate_size(cfg)
    lim = cfg.limits
    mem_limit = lim.max_memory_gib * GIB if lim.max_memory_gib is not None else 0.8 * machine_memory_bytes()
    if est.simulated_requests > lim.max_requests:
        raise SizeError(f"the run would simulate about {est.simulated_requests:,.0f} requests "
                        f"({est.requests:,.0f} per strategy x {len(cfg.strategies)}), above limits.max_requests "
                        f"= {lim.max_requests:,}; shorten workload.duration_s or lower the rates, or raise "
                        f"limits.max_requests")
    if est.events > lim.max_events:
        raise SizeError(f"the run could take up to {est.events:,.0f} simulator events, above limits.max_events "
                        f"= {lim.max_events:,}; shorten the workload or raise limits.max_events")
    if est.memory_bytes > mem_limit:
        which = (f"limits.max_memory_gib = {lim.max_memory_gib:g}" if lim.max_memory_gib is not None
                 else f"80 % of this machine's {machine_memory_bytes() / GIB:.1f} GiB")
        raise SizeError(f"the run would need about {est.memory_bytes / GIB:,.1f} GiB of memory "
                        f"({est.arrivals:,.0f} arrivals drawn, {est.simulated_requests:,.0f} requests simulated), "
                        f"above {which}; shorten workload.duration_s or lower the rates, or set "
                        f"limits.max_memory_gib")
    return est
