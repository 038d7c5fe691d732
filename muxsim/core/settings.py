"""Scheduler settings: the knobs every scheduler of the policy core reads (a section of the
experiment config, ``scheduler:``), here so that both drivers and the policy core can take them
without importing the experiment layer."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from muxsim.schema import Strict as _Strict

__all__ = ["SchedulerConfig"]

#: An SM share whose validator checks finiteness itself, so ``inf``/``nan`` get the range too.
_Share = Annotated[float, Field(allow_inf_nan=True)]


class SchedulerConfig(_Strict):
    """Scheduler knobs; defaults are MuxServe's reference constants (../shared/docs/muxserve.md).

    Memory figures are GiB per GPU. ``sm_units`` units of 100 / sm_units % each, plus
    ``sm_overload_units``, bound the jobs a mesh runs at once. ``overlap_phases``: an LLM's
    prefill and decode jobs may overlap (False where one partition runs both, e.g. CPU).

    Baselines as the reference benchmark configured them (../shared/docs/muxserve.md §6):
    ``spatial_kv_fraction`` -- each spatial GPU's KV cache is this fraction of its memory
    (reference 0.5; never more than weights and reserves leave); ``null`` gives every spatial
    LLM all that is left, the fair comparison. ``temporal_sm_pct`` -- the [prefill %, decode %]
    whose SM units temporal jobs hold (reference 100 / 90: no MPS, one job at a time, each at
    the whole GPU's speed).

    Ranges (every number finite; the upper bounds only catch typos): ``sm_units`` in [1, 100]
    (a unit is a whole percentage at least), ``sm_overload_units`` in [0, 100],
    ``max_prefill_tokens`` and ``quota_seq_tokens`` in [1, 1048576] tokens, ``max_num_seqs`` in
    [1, 65536], ``adapt_interval_s`` in (0, 86400] s, ``adapt_window_jobs`` in [1, 1e7], the
    reserves in [0, 1024] GiB, ``spatial_kv_fraction`` in (0, 1], ``temporal_sm_pct`` in
    (0, 100] %.
    """

    sm_units: int = Field(default=10, ge=1, le=100)
    sm_overload_units: int = Field(default=2, ge=0, le=100)
    max_prefill_tokens: int = Field(default=2048, ge=1, le=1_048_576)
    max_num_seqs: int = Field(default=256, ge=1, le=65_536)
    adapt_interval_s: float = Field(default=8.0, gt=0, le=86_400)
    adapt_window_jobs: int = Field(default=500, ge=1, le=10_000_000)
    activation_reserve_gib: float = Field(default=6.0, ge=0, le=1024)
    context_reserve_gib: float = Field(default=0.8, ge=0, le=1024)
    quota_seq_tokens: int | None = Field(default=None, ge=1, le=1_048_576)
    overlap_phases: bool = True
    spatial_kv_fraction: float | None = Field(default=0.5, gt=0, le=1)
    temporal_sm_pct: tuple[_Share, _Share] = (100.0, 90.0)

    @field_validator("temporal_sm_pct")
    @classmethod
    def _shares(cls, v):
        if not all(0 < x <= 100 for x in v):
            raise ValueError(f"SM shares must be in (0, 100] %, got {list(v)}")
        return v
