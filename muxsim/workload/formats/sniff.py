"""Telling a trace file's format from its first 64 KiB.

Each format module declares how it is recognised as :class:`SniffRule` values (its ``SNIFF``
tuple, listed in the registry of :mod:`muxsim.workload.formats`); :func:`sniff` runs the rules of
every format, so this module knows no format by name.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "SNIFF_BYTES",
    "SniffRule",
    "csv_header_rule",
    "json_keys_rule",
    "json_record_rule",
    "read_head",
    "sniff",
]

#: How much of a file :func:`read_head` reads.
SNIFF_BYTES = 65536

SniffKind = Literal["csv_header", "json_record", "json_text"]


@dataclass(frozen=True)
class SniffRule:
    """One way a format is recognised.

    Attributes:
        kind: what ``test`` is given.

            * ``"csv_header"``: the set of header names (stripped) of a file that is not JSON.
            * ``"json_record"``: the first non-blank line of a JSON file parsed as one object
              (a JSONL record, or a one-line document), when it parses to an object.
            * ``"json_text"``: the whole head of a JSON file (left-stripped), tried when no
              ``"json_record"`` rule matched (e.g. a pretty-printed list).
        test: returns True when the file is of this format.
        rank: among the rules of one kind, lower ranks are tried first; equal ranks go in
            registry order. Only needed where two formats' rules can both match.
    """

    kind: SniffKind
    test: Callable[[Any], bool]
    rank: int = 0


def csv_header_rule(test: Callable[[set[str]], bool], rank: int = 0) -> SniffRule:
    """A rule on a CSV file's set of header names."""
    return SniffRule("csv_header", test, rank)


def json_record_rule(test: Callable[[dict[str, Any]], bool], rank: int = 0) -> SniffRule:
    """A rule on a JSON file's first line parsed as an object."""
    return SniffRule("json_record", test, rank)


def json_keys_rule(keys: Sequence[str], rank: int = 0) -> SniffRule:
    """A rule matching JSON text in which any of ``keys`` appears as an object key
    (``"key":``)."""
    pattern = re.compile(rf'"({"|".join(re.escape(k) for k in keys)})"\s*:')
    return SniffRule("json_text", lambda text: pattern.search(text) is not None, rank)


def read_head(p: Path) -> str:
    """The first :data:`SNIFF_BYTES` of ``p`` as text (UTF-8, BOM dropped, bad bytes replaced)."""
    with open(p, "rb") as f:
        raw = f.read(SNIFF_BYTES)
    return raw.decode("utf-8-sig", errors="replace")


def _header_fields(head: str) -> list[str]:
    for line in head.splitlines():
        if line.strip():
            return [c.strip() for c in next(csv.reader([line]))]
    return []


def _first_match(rules: list[tuple[str, SniffRule]], kind: SniffKind, value: Any) -> str | None:
    # sorted() is stable, so rules of equal rank keep registry order.
    for name, rule in sorted((nr for nr in rules if nr[1].kind == kind), key=lambda nr: nr[1].rank):
        if rule.test(value):
            return name
    return None


def sniff(head: str, suffix: str, rules: Iterable[tuple[str, SniffRule]]) -> tuple[str | None, str]:
    """The format whose rule matches a file's head.

    A file is JSON if its suffix is ``.json``/``.jsonl`` or its text starts with ``[``/``{``;
    then the ``"json_record"`` rules are tried on its first line (if that is an object), then
    the ``"json_text"`` rules. Any other file is CSV and its header names go to the
    ``"csv_header"`` rules.

    Args:
        head: the file's first bytes as text (:func:`read_head`), not blank.
        suffix: the file's suffix, lower-cased.
        rules: ``(format name, rule)`` pairs in registry order.

    Returns:
        ``(format name or None, what was looked at)``; the latter completes an error message
        ("cannot tell the trace format from its extension and <what>").
    """
    rules = list(rules)
    if suffix in (".json", ".jsonl") or head.lstrip()[:1] in ("[", "{"):
        stripped = head.lstrip()
        first = next((ln for ln in stripped.splitlines() if ln.strip()), "")
        try:
            obj = json.loads(first)
        except ValueError:
            obj = None
        fmt = _first_match(rules, "json_record", obj) if isinstance(obj, dict) else None
        if fmt is None:
            fmt = _first_match(rules, "json_text", stripped)
        return fmt, "first JSON record"
    cols = _header_fields(head)
    return _first_match(rules, "csv_header", set(cols)), f"CSV header {cols}"
