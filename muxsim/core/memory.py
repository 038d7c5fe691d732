"""GPU memory accounting of a mesh (MuxServe reference model, ../shared/docs/muxserve.md §3).

Per GPU of a mesh of ``tp`` GPUs: the weights of every placed LLM, sharded over the mesh
(stored once per mesh), an activation reserve per LLM and a context reserve per process (two
processes per LLM: prefill and decode); the rest holds head-wise KV blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

from muxsim.catalog import GIB, GPUSpec, ModelSpec

__all__ = ["reserved_bytes_per_gpu", "kv_blocks_per_gpu"]


def reserved_bytes_per_gpu(models: Sequence[ModelSpec], tp: int, activation_reserve_gib: float = 6.0,
                           context_reserve_gib: float = 0.8) -> int:
    """Bytes per GPU taken by weights and reserves of ``models`` on a mesh of ``tp`` GPUs.

    Defaults: 6 GiB activation reserve per LLM and 0.8 GiB per process, two processes per LLM
    (MuxServe reference).

    Raises:
        ValueError: ``tp`` < 1.
    """
    if tp < 1:
        raise ValueError(f"mesh size must be >= 1 GPU, got {tp}")
    per_llm = int((activation_reserve_gib + 2 * context_reserve_gib) * GIB)
    return sum(-(-m.weight_bytes // tp) + per_llm for m in models)


def kv_blocks_per_gpu(models: Sequence[ModelSpec], tp: int, gpu: GPUSpec, activation_reserve_gib: float = 6.0,
                      context_reserve_gib: float = 0.8, kv_fraction: float | None = None) -> int:
    """Head-wise KV blocks per GPU for ``models`` on a mesh of ``tp`` GPUs of kind ``gpu``.

    By default the KV cache is what weights and reserves leave of the GPU's memory (MuxServe's
    unified pool). With ``kv_fraction`` it is that fraction of the GPU's memory instead, never
    more than what is left: the reference benchmark's spatial baseline sized every GPU's KV
    cache as 0.5 of its memory (``gpu_memory_utilization: 0.5``, ../shared/docs/muxserve.md §6).

    Returns a negative number when weights and reserves alone exceed the GPU's memory.
    Block size: K and V of one head for 32 tokens (16 KiB at head size 128, fp16); with mixed
    head sizes the largest block is used.

    Raises:
        ValueError: empty ``models``, ``tp`` < 1 or ``kv_fraction`` outside (0, 1].
    """
    if not models:
        raise ValueError("no models on the mesh")
    free = gpu.memory_bytes - reserved_bytes_per_gpu(models, tp, activation_reserve_gib, context_reserve_gib)
    if kv_fraction is not None:
        if not 0 < kv_fraction <= 1:
            raise ValueError(f"kv_fraction must be in (0, 1], got {kv_fraction}")
        free = min(free, int(kv_fraction * gpu.memory_bytes))
    block = max(m.kv_block_bytes() for m in models)
    return free // block
