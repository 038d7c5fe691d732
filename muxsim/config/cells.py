"""A cell of the sweep: its label, parameters, per-LLM rates and the key that seeds its
workload; the single cell of a replayed workload file."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from .errors import ConfigError

__all__ = ["Cell", "rates_over_span", "replay_cell"]


class Cell(BaseModel):
    """One point of the sweep: a label, its sweep parameters, per-LLM rates (req/s) and its
    ``key``: the full workload parameter values it was made from (not its position in the
    sweep), which seeds its workload, so a cell run alone draws what it draws inside a sweep.

    ``cluster``: the cell's (nodes, gpus_per_node, gpu) in a cluster sweep (None: the config's
    own, scalar cluster). It is not part of ``key``: the cells of one workload on several
    clusters serve the same requests, as a run on each cluster alone would draw them. Swept
    cells carry ``nodes``, ``gpus_per_node``, ``gpu`` and ``n_gpus`` as params.
    """

    model_config = ConfigDict(frozen=True)

    label: str
    params: dict[str, int | float | str]
    rates: list[float]
    key: str = ""
    cluster: tuple[int, int, str] | None = None

    @property
    def ident(self) -> tuple[str, tuple[int, int, str] | None]:
        """What tells the cells of one sweep apart: (``key``, ``cluster``)."""
        return self.key, self.cluster


def replay_cell(path: str, names: list[str]) -> Cell:
    """The single cell of a replayed workload file: per-LLM rates = requests / span (req/s).

    Raises:
        ConfigError: unreadable file, or LLMs in the file that the config does not list.
    """
    from muxsim.workload import load_workload

    try:
        wl = load_workload(path, allow_empty=False)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise ConfigError(f"workload.file: {e}") from None
    unknown = sorted(set(wl["llm"]) - set(names))
    if unknown:
        raise ConfigError(f"workload.file names LLMs the config does not list: {unknown[:5]}; listed: llm-0..llm-{len(names) - 1}")
    return Cell(label=f"replay={Path(path).stem}", params={}, rates=rates_over_span(wl, names, None),
                key=f"replay={Path(path).stem}")


def rates_over_span(wl, names: list[str], span: float | None) -> list[float]:
    """Per-LLM requests / span (req/s; span = the last arrival when None), at least 1e-3: an LLM
    with no request still needs a positive rate for placement and KV quotas."""
    if span is None:
        span = float(wl["arrival_s"].max()) if len(wl) else 0.0
    span = max(span, 1e-9)
    counts = wl["llm"].value_counts()
    return [max(float(counts.get(n, 0)) / span, 1e-3) for n in names]
