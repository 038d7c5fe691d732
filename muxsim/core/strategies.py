"""The serving strategies muxsim compares, in one table, and the mesh schedulers they build.

A strategy is a placement kind (how LLMs are put on meshes) plus a scheduler (how each mesh runs
its jobs). Config validation, the CLI, the runner and validation all read :data:`STRATEGIES`;
adding a strategy means adding one entry here.

Placement kinds: ``muxserve`` (MuxServe's popularity-aware search, or the config's explicit
placement), ``spatial`` (every LLM alone on its own GPUs) and ``simulated`` (muxsim's
simulation-guided search from MuxServe's best layouts, :mod:`muxsim.sim.search`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from muxsim.catalog import GPUSpec, ModelSpec
from muxsim.core.llm import LLMRuntime
from muxsim.core.memory import kv_blocks_per_gpu
from muxsim.core.placement import Placement
from muxsim.core.schedulers import (
    ADBSScheduler,
    FCFSScheduler,
    MeshScheduler,
    VLLMScheduler,
)

__all__ = ["Strategy", "STRATEGIES", "get_strategy", "build_schedulers"]


@dataclass(frozen=True)
class Strategy:
    """One serving strategy.

    Attributes:
        name: config name, e.g. ``"muxserve"``.
        placement: placement kind it runs on (``"muxserve"``, ``"spatial"`` or ``"simulated"``).
        make: ``make(llms, kv_blocks, cfg, seq_tokens) -> MeshScheduler`` for one mesh; ``cfg``
            holds the scheduler knobs (:class:`muxsim.config.SchedulerConfig`), ``seq_tokens``
            the tokens a sequence is assumed to hold for KV quotas.
        description: one line for help texts and the README.
        dedicated: one LLM per mesh with its own KV cache, sized by
            ``cfg.spatial_kv_fraction`` (the reference benchmark's spatial baseline).
        serial: a mesh runs one job at a time (validation then measures the machine's speed
            with one job at a time too, unless several meshes run at once).
    """

    name: str
    placement: str
    make: Callable[..., MeshScheduler]
    description: str
    dedicated: bool = False
    serial: bool = False


def _common(cfg) -> dict:
    return dict(sm_units=cfg.sm_units, sm_overload_units=cfg.sm_overload_units,
                max_prefill_tokens=cfg.max_prefill_tokens, max_num_seqs=cfg.max_num_seqs)


def _adbs(adaptive: bool):
    def make(llms, blocks, cfg, seq_tokens):
        return ADBSScheduler(llms, blocks, seq_tokens=seq_tokens, adaptive=adaptive,
                             adapt_interval_s=cfg.adapt_interval_s,
                             adapt_window_jobs=cfg.adapt_window_jobs,
                             overlap_phases=cfg.overlap_phases, **_common(cfg))
    return make


def _fcfs(llms, blocks, cfg, seq_tokens):
    pf, dec = cfg.temporal_sm_pct
    return FCFSScheduler(llms, blocks, prefill_pct=pf, decode_pct=dec, **_common(cfg))


def _vllm(llms, blocks, cfg, seq_tokens):
    return VLLMScheduler(llms, blocks, **_common(cfg))


#: Every strategy, by config name, in the order outputs list them.
STRATEGIES: dict[str, Strategy] = {s.name: s for s in [
    Strategy("muxserve", "muxserve", _adbs(True),
             "MuxServe: its placement, adaptive batch scheduling (ADBS) with prefill and decode "
             "jobs on their own SM shares"),
    Strategy("spatial", "spatial", _vllm,
             "spatial partitioning: every LLM alone on its own GPUs, vLLM-style continuous "
             "batching, KV cache = scheduler.spatial_kv_fraction of GPU memory", dedicated=True),
    Strategy("temporal", "muxserve", _fcfs,
             "temporal multiplexing: MuxServe's placement, the reference's fcfs approach, one job "
             "at a time at the whole GPU (no MPS)", serial=True),
    Strategy("roundrobin", "muxserve", _adbs(False),
             "MuxServe's placement and ADBS without quota adaptation (the reference's roundrobin)"),
    Strategy("muxserve+sim", "simulated", _adbs(True),
             "ADBS on muxsim's simulation-guided placement (MuxServe's best layouts improved by "
             "simulated local moves)"),
]}


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``.

    Raises:
        ValueError: unknown name; the message lists the allowed ones.
    """
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; allowed: {', '.join(STRATEGIES)}") from None


def build_schedulers(placement: Placement, strategy: str, names: Sequence[str],
                     models: Sequence[ModelSpec], rates: Sequence[float], gpu: GPUSpec,
                     cfg, seq_tokens: int) -> tuple[list[MeshScheduler], list[LLMRuntime]]:
    """Create the LLM runtimes and one scheduler per mesh of ``placement``.

    Args:
        strategy: a name of :data:`STRATEGIES`.
        names, models, rates: per LLM, in the run's order (rates in req/s, for KV quotas).
        cfg: scheduler knobs (:class:`muxsim.config.SchedulerConfig`).
        seq_tokens: tokens a sequence is assumed to hold for ADBS quotas.

    Returns:
        (schedulers, runtimes) with ``runtimes[i]`` for LLM ``names[i]`` and its ``mesh``
        attribute set to its scheduler's index.

    Raises:
        ValueError: unknown strategy, a mesh whose weights leave no KV memory, or LLMs the
            placement leaves out.
    """
    spec = get_strategy(strategy)
    index = {n: i for i, n in enumerate(names)}
    runtimes: list[LLMRuntime | None] = [None] * len(names)
    scheds: list[MeshScheduler] = []
    kv_fraction = cfg.spatial_kv_fraction if spec.dedicated else None
    for mi, mesh in enumerate(placement.meshes):
        llms = []
        for name in mesh.llms:
            i = index[name]
            pf, dec = mesh.sm[name]
            rt = LLMRuntime(i, name, models[i], mesh.gpus, pf, dec, rates[i])
            rt.mesh = mi
            runtimes[i] = rt
            llms.append(rt)
        blocks = kv_blocks_per_gpu([l.model for l in llms], mesh.gpus, gpu, cfg.activation_reserve_gib,
                                   cfg.context_reserve_gib, kv_fraction)
        if blocks <= 0:
            raise ValueError(f"mesh {mi} ({list(mesh.llms)}) has no memory left for KV cache")
        scheds.append(spec.make(llms, blocks, cfg, seq_tokens))
    missing = [names[i] for i, r in enumerate(runtimes) if r is None]
    if missing:
        raise ValueError(f"placement leaves LLMs unplaced: {missing}")
    return scheds, runtimes
