"""Trace-driven experiments (``workload.trace``): each cell's workload synthesized from a real
trace (:func:`muxsim.workload.synth.synthesize`), and the cells themselves."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from muxsim.workload.synth import SynthSpec, synthesize

from .cells import Cell, rates_over_span
from .errors import ConfigError

__all__ = ["trace_cells", "trace_workload"]


@lru_cache(maxsize=16)
def _synthesized(spec_json: str, duration_s: float | None):
    from muxsim.workload.synth import renumbered

    spec = SynthSpec.model_validate_json(spec_json)
    try:
        df = synthesize(spec)
    except (ValueError, OSError) as e:
        msg = (str(e).splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"workload.trace: {msg}") from None
    if duration_s is not None:
        df = renumbered(df[df["arrival_s"] < duration_s])
        if len(df) == 0:
            raise ConfigError(f"workload.duration_s: {duration_s:g} s keeps no request of the trace")
    return df


def trace_workload(cfg, cell_index: int):
    """The synthesized workload of cell ``cell_index`` of a ``workload.trace`` experiment (a fresh
    copy; synthesis is cached per process, keyed on the cell's spec).

    Raises:
        ConfigError: missing or malformed trace (one line naming ``workload.trace``).
    """
    tr = cfg.workload.trace
    spec = tr.cell_spec(cfg.llm_names(), cell_index, cfg.seed)
    return _synthesized(spec.model_dump_json(), cfg.workload.duration_s).copy()


def trace_cells(cfg) -> list[Cell]:
    """Cells of a ``workload.trace`` experiment: one per alpha of ``trace.popularity.alpha``
    (label ``alpha=<a>``, param ``alpha``), or a single cell labelled ``trace=<file stem>``
    without a power law. Per-LLM rates are each LLM's requests over the span
    (``workload.duration_s``, else the last arrival), as for a replayed file."""
    tr = cfg.workload.trace
    names = cfg.llm_names()
    cells = []
    for k, alpha in enumerate(tr.alphas()):
        wl = trace_workload(cfg, k)
        rates = rates_over_span(wl, names, cfg.workload.duration_s)
        if alpha is None:
            label = f"trace={Path(tr.source.path).stem}"
            cells.append(Cell(label=label, params={}, rates=rates, key=label))
        else:
            cells.append(Cell(label=f"alpha={alpha:g}", params={"alpha": float(alpha)}, rates=rates,
                              key=f"trace alpha={float(alpha)!r}"))
    return cells
