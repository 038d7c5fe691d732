"""Schemas of the Parquet files muxsim writes: column, Arrow type, unit and definition.

One YAML file per output under ``muxsim/data/schema/`` (shipped with the package):
``requests.yaml`` (requests.parquet), ``summary.yaml`` (summary.parquet; summary.csv holds the
same table), ``workload.yaml`` (workload_<k>.parquet), ``jobs.yaml`` (jobs.parquet, the job log)
and ``sweep_parameters.yaml`` (the sweep-parameter columns some tables carry). A new Parquet
output gets a new YAML file listed in :data:`SCHEMAS`; ``tests/test_output_schema.py`` then
checks it against what a small run writes, both ways (no undocumented column, no missing one).

Three kinds of columns vary with the config and are described by rule rather than by name:

- sweep parameters (``alpha``, ``rate_scale``, ``max_rate``, ``avg_rate``): a table whose schema
  says ``sweep_parameters: true`` carries exactly the parameters of the config's cells
  (:attr:`muxsim.config.Cell.params`); each must be documented in ``sweep_parameters.yaml``;
- the latency statistics of ``summary.yaml`` (``latency_statistics``): ``<stat>_<metric>_ms``
  for every listed metric and statistic;
- ``patterns`` such as ``slo_attainment@<scale>``, expanded over the config's SLO scales
  (``expand: slo_scales``: ``slo.scales`` and ``slo.goodput_scale``) or its goodput scale alone
  (``expand: goodput_scale``).

Arrow types are written as :class:`pyarrow.DataType` names (``string``, ``int64``, ``double``,
``bool``). ``large_string`` (what pandas >= 3 writes for text) is read as ``string``: both are
UTF-8 text, differing only in their offsets' width.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources

import pyarrow as pa
import yaml

__all__ = ["SCHEMAS", "Column", "TableSchema", "load_schema", "schema_for", "sweep_parameters",
           "arrow_type_name", "column_problems"]

#: Schema files (``muxsim/data/schema/<name>.yaml``), one per Parquet output.
SCHEMAS: tuple[str, ...] = ("requests", "summary", "workload", "jobs")

_TYPES = ("string", "int64", "double", "bool")


@dataclass(frozen=True)
class Column:
    """One documented column: ``name``, Arrow ``type`` (one of string, int64, double, bool),
    ``unit`` (None when dimensionless or not a quantity) and ``definition``."""

    name: str
    type: str
    unit: str | None
    definition: str


@dataclass(frozen=True)
class TableSchema:
    """The schema of one Parquet output (module docstring).

    Attributes:
        name: the schema file's stem (``summary``).
        file: the file it describes; ``<k>`` stands for a number (``workload_<k>.parquet``).
        description: what a row is.
        columns: the columns every such file has.
        sweep: whether it carries the sweep-parameter columns.
        statistics: ``summary.yaml``'s ``latency_statistics`` (metrics, stats, type), or None.
        patterns: the name patterns (``pattern``, ``expand``, ``type``, ``unit``, ``definition``).
    """

    name: str
    file: str
    description: str
    columns: tuple[Column, ...]
    sweep: bool
    statistics: dict | None
    patterns: tuple[dict, ...]

    def matches(self, filename: str) -> bool:
        """Whether ``filename`` (a base name) is a file this schema describes."""
        rx = re.escape(self.file).replace(re.escape("<k>"), r"\d+")
        return re.fullmatch(rx, filename) is not None

    def expected(self, scales: Sequence[float] = (), goodput_scale: float | None = None,
                 sweep: Iterable[str] = ()) -> dict[str, str]:
        """Every column a file of this schema has under a config: name -> Arrow type name.

        Args:
            scales, goodput_scale: the config's ``slo.scales`` and ``slo.goodput_scale`` (for
                the patterns).
            sweep: the sweep parameters of the config's cells (added when :attr:`sweep`).

        Raises:
            ValueError: a sweep parameter that ``sweep_parameters.yaml`` does not document; a
                pattern that needs ``goodput_scale`` when it is None.
        """
        out = {c.name: c.type for c in self.columns}
        if self.sweep:
            known = sweep_parameters()
            for p in sweep:
                if p not in known:
                    raise ValueError(f"sweep parameter {p!r} is not documented in sweep_parameters.yaml "
                                     f"(documented: {', '.join(known)})")
                out[p] = known[p].type
        if self.statistics is not None:
            for metric in self.statistics["metrics"]:
                for stat in self.statistics["stats"]:
                    out[f"{stat}_{metric}_ms"] = self.statistics["type"]
        for pat in self.patterns:
            if pat["expand"] == "slo_scales" or pat["expand"] == "goodput_scale":
                if goodput_scale is None:
                    raise ValueError(f"{self.name}: pattern {pat['pattern']!r} needs the goodput scale")
                values = sorted({float(s) for s in scales} | {float(goodput_scale)}) \
                    if pat["expand"] == "slo_scales" else [float(goodput_scale)]
            else:
                raise ValueError(f"{self.name}: unknown pattern expansion {pat['expand']!r}")
            for v in values:
                out[pat["pattern"].replace("<scale>", f"{v:g}")] = pat["type"]
        return out


def _read(name: str) -> dict:
    path = resources.files("muxsim") / "data" / "schema" / f"{name}.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _columns(entries: list[dict], where: str) -> tuple[Column, ...]:
    cols = []
    for e in entries:
        col = Column(str(e["name"]), str(e["type"]), e.get("unit"), str(e["definition"]))
        if col.type not in _TYPES:
            raise ValueError(f"{where}: column {col.name!r} has type {col.type!r}; allowed: {', '.join(_TYPES)}")
        cols.append(col)
    names = [c.name for c in cols]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{where}: columns listed twice: {dup}")
    return tuple(cols)


def sweep_parameters() -> dict[str, Column]:
    """The documented sweep-parameter columns (``sweep_parameters.yaml``), by name."""
    return {c.name: c for c in _columns(_read("sweep_parameters")["columns"], "sweep_parameters.yaml")}


def load_schema(name: str) -> TableSchema:
    """The schema ``muxsim/data/schema/<name>.yaml`` (``name`` one of :data:`SCHEMAS`).

    Raises:
        ValueError: ``name`` is not one of :data:`SCHEMAS`, or the file lists a column twice or
            with an unknown type.
    """
    if name not in SCHEMAS:
        raise ValueError(f"unknown output schema {name!r}; allowed: {', '.join(SCHEMAS)}")
    d = _read(name)
    return TableSchema(name, str(d["file"]), str(d["description"]), _columns(d["columns"], f"{name}.yaml"),
                       bool(d.get("sweep_parameters", False)), d.get("latency_statistics"),
                       tuple(d.get("patterns") or ()))


def schema_for(filename: str) -> TableSchema:
    """The schema describing the output file ``filename`` (a base name, e.g.
    ``workload_3.parquet``).

    Raises:
        KeyError: no schema describes it.
    """
    for name in SCHEMAS:
        s = load_schema(name)
        if s.matches(filename):
            return s
    raise KeyError(f"no output schema describes {filename!r} (schemas: {', '.join(SCHEMAS)})")


def arrow_type_name(t: pa.DataType) -> str:
    """A column's Arrow type as the schema files write it (``large_string`` -> ``string``)."""
    return "string" if pa.types.is_large_string(t) else str(t)


def column_problems(written: pa.Schema, expected: dict[str, str]) -> list[str]:
    """What differs between a written file's Arrow schema and the columns expected of it
    (:meth:`TableSchema.expected`): one line per undocumented column, missing column or type
    mismatch; empty when they agree."""
    got = {n: arrow_type_name(t) for n, t in zip(written.names, written.types)}
    out = [f"undocumented column {n!r} ({t})" for n, t in got.items() if n not in expected]
    out += [f"missing column {n!r} ({t})" for n, t in expected.items() if n not in got]
    out += [f"column {n!r} is {got[n]}, documented as {t}" for n, t in expected.items()
            if n in got and got[n] != t]
    return out
