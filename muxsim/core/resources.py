"""Mesh resources: the head-wise KV block pool and SM units.

Both are plain counters so that schedulers can query and update them in O(1).
"""

from __future__ import annotations

import math

__all__ = ["KVBlockPool", "SMUnits", "units_for_share"]


class KVBlockPool:
    """One mesh's pool of head-wise KV blocks, shared by all LLMs placed on it.

    A block holds K and V of one attention head for 32 tokens on one GPU (16 KiB for head size
    128 at fp16; MuxServe reference). Counts are per GPU: every GPU of the mesh holds the same
    number of blocks for its share of the heads.

    Args:
        total_blocks: blocks in the pool (>= 0).
        n_llms: LLMs sharing the pool (per-LLM usage is tracked for quota adaptation).

    Raises:
        ValueError: negative ``total_blocks`` or ``n_llms`` < 1.
    """

    __slots__ = ("total", "free", "used_by", "freed")

    def __init__(self, total_blocks: int, n_llms: int = 1):
        if total_blocks < 0:
            raise ValueError(f"total_blocks must be >= 0, got {total_blocks}")
        if n_llms < 1:
            raise ValueError(f"n_llms must be >= 1, got {n_llms}")
        self.total = int(total_blocks)
        self.free = int(total_blocks)
        self.used_by = [0] * n_llms
        self.freed = 0  # blocks released so far: a scheduler waiting for memory watches it

    def can_allocate(self, n: int) -> bool:
        """Whether ``n`` blocks are free."""
        return n <= self.free

    def allocate(self, llm: int, n: int) -> bool:
        """Take ``n`` blocks for LLM index ``llm``; all or nothing.

        Returns:
            True when allocated, False (and nothing taken) when fewer than ``n`` are free.

        Raises:
            ValueError: ``n`` < 0.
        """
        if n < 0:
            raise ValueError(f"cannot allocate a negative number of blocks ({n})")
        if n > self.free:
            return False
        self.free -= n
        self.used_by[llm] += n
        return True

    def release(self, llm: int, n: int) -> None:
        """Return ``n`` blocks held by LLM index ``llm`` to the pool.

        Raises:
            ValueError: ``n`` < 0 or more than the LLM holds (a double free).
        """
        if n < 0 or n > self.used_by[llm]:
            raise ValueError(f"LLM {llm} releases {n} blocks but holds {self.used_by[llm]}")
        self.free += n
        self.used_by[llm] -= n
        self.freed += n

    @property
    def used(self) -> int:
        """Blocks currently allocated."""
        return self.total - self.free


def units_for_share(sm_pct: float, unit_pct: float = 10.0) -> int:
    """SM units a job at ``sm_pct`` percent holds: ceil(sm_pct / unit_pct) (MuxServe: 10 % units).

    Raises:
        ValueError: ``sm_pct`` outside (0, 100].
    """
    if not 0 < sm_pct <= 100:
        raise ValueError(f"SM share must be in (0, 100] percent, got {sm_pct}")
    return math.ceil(sm_pct / unit_pct - 1e-9)


class SMUnits:
    """SM units of one mesh: ``units`` units of 100/units % of every GPU, plus an overload allowance.

    MuxServe reference: 10 units and an allowance of 2, so concurrent jobs may sum to 120 %.

    Raises:
        ValueError: ``units`` < 1 or ``overload`` < 0.
    """

    __slots__ = ("units", "capacity", "in_use")

    def __init__(self, units: int = 10, overload: int = 2):
        if units < 1 or overload < 0:
            raise ValueError(f"need units >= 1 and overload >= 0, got {units}, {overload}")
        self.units = units
        self.capacity = units + overload
        self.in_use = 0

    def try_acquire(self, n: int) -> bool:
        """Hold ``n`` units if that keeps the total within capacity; returns whether it did."""
        if self.in_use + n > self.capacity:
            return False
        self.in_use += n
        return True

    def release(self, n: int) -> None:
        """Give back ``n`` units.

        Raises:
            ValueError: releasing more than are held.
        """
        if n > self.in_use:
            raise ValueError(f"releasing {n} SM units but only {self.in_use} are held")
        self.in_use -= n
