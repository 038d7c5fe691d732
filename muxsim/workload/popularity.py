"""Per-LLM request rates under the MuxServe paper's power-law popularity (docs/muxserve.md §8)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["popularity_rates"]


def popularity_rates(n_llms: int, alpha: float, max_rate: float) -> np.ndarray:
    """Request rates of ``n_llms`` LLMs listed in popularity order.

    ``rate_i = max_rate * (i + 1) ** -alpha`` for ``i = 0 .. n_llms - 1`` (MuxServe, Duan et al.
    ICML 2024, §5.1: rate_i proportional to (i+1)^-alpha, scaled so the most popular LLM gets
    ``max_rate``; the paper uses alpha in {0.7, 0.9, 1.3, 1.7, 2.1} and max_rate = 40 x scale).

    Args:
        n_llms: number of LLMs, >= 1.
        alpha: power-law exponent, >= 0 (0 gives equal rates).
        max_rate: rate of LLM 0, req/s, > 0.

    Returns:
        float64 array of shape ``(n_llms,)``, req/s, non-increasing, element 0 == ``max_rate``.

    Raises:
        ValueError: ``n_llms`` < 1, ``alpha`` < 0 or not finite, ``max_rate`` <= 0 or not finite.
    """
    if isinstance(n_llms, bool) or not isinstance(n_llms, (int, np.integer)) or n_llms < 1:
        raise ValueError(f"n_llms must be an integer >= 1, got {n_llms!r}")
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    if not (math.isfinite(max_rate) and max_rate > 0):
        raise ValueError(f"max_rate must be a finite rate > 0 req/s, got {max_rate!r}")
    ranks = np.arange(1, int(n_llms) + 1, dtype=np.float64)
    return float(max_rate) * ranks ** -float(alpha)
