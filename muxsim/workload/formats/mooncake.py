"""``"mooncake"``: the Mooncake (Moonshot AI / Kimi) trace (JSONL).

One JSON object per line (blank lines ignored): ``timestamp`` (ms, number), ``input_length``,
``output_length`` (tokens), optional ``hash_ids`` (list of int: hashes of the prompt's prefix
blocks; requests sharing a leading run of ids share that prefix) -> ``prefix_ids``. Every
request gets the ``llm`` argument. Sample and figures: traces/README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .common import (
    TraceFormatError,
    check_timestamp,
    json_int,
    json_num,
    json_tokens,
    trace_frame,
)
from .sniff import json_keys_rule, json_record_rule

__all__ = ["KEYS", "SNIFF", "load_mooncake"]

#: Required keys of every record.
KEYS = ("timestamp", "input_length", "output_length")

SNIFF = (
    json_record_rule(lambda rec: "input_length" in rec or "output_length" in rec),
    json_keys_rule(("input_length", "output_length")),
)


def load_mooncake(p: Path, *, llm: str) -> pd.DataFrame:
    """Read a Mooncake JSONL trace (see the module docstring for its keys).

    Args:
        p: the file.
        llm: LLM name given to every request.

    Returns:
        The workload frame of :func:`muxsim.workload.load_trace` (``arrival_s`` in s, from the
        ms timestamps), plus ``prefix_ids`` (a list of int per row) when any record has
        ``hash_ids``.

    Raises:
        TraceFormatError: a line that is not a JSON object, a missing key, a bad timestamp
            (not finite, beyond ``MAX_TIMESTAMP_S``, or a trace spanning more than
            ``MAX_ARRIVAL_S``; :mod:`.common`), token count or ``hash_ids`` (naming the line),
            or no records.
    """
    ts: list[float] = []
    prompt: list[int] = []
    output: list[int] = []
    prefix: list[list[int]] = []
    lines: list[int] = []
    any_hash = False
    with open(p, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{p} line {lineno}"
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise TraceFormatError(f"{where}: malformed JSON ({e})") from None
            if not isinstance(rec, dict):
                raise TraceFormatError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            missing = [k for k in KEYS if k not in rec]
            if missing:
                raise TraceFormatError(
                    f"{where}: missing key(s) {missing}; expected keys: "
                    f"{list(KEYS)} (optional 'hash_ids')"
                )
            t = json_num(rec["timestamp"])
            if t is None:
                raise TraceFormatError(
                    f"{where}: 'timestamp' is not a finite number of ms ({rec['timestamp']!r})"
                )
            ts.append(check_timestamp(where, "timestamp", t / 1000.0, rec["timestamp"], "ms"))
            lines.append(lineno)
            prompt.append(json_tokens(where, "input_length", rec["input_length"]))
            output.append(json_tokens(where, "output_length", rec["output_length"]))
            h = rec.get("hash_ids", [])
            if "hash_ids" in rec:
                any_hash = True
            if not isinstance(h, list):
                raise TraceFormatError(f"{where}: 'hash_ids' is not a list ({h!r})")
            hh = [json_int(x) for x in h]
            if any(x is None for x in hh):
                bad = h[[x is None for x in hh].index(True)]
                raise TraceFormatError(f"{where}: 'hash_ids' holds a non-integer ({bad!r})")
            prefix.append(hh)  # type: ignore[arg-type]
    extra = {"prefix_ids": prefix} if any_hash else None
    return trace_frame(
        p, "mooncake", llm, np.asarray(ts, dtype=np.float64), np.asarray(prompt, dtype=np.int64),
        np.asarray(output, dtype=np.int64), extra, locate=lambda i: f"line {lines[i]}",
    )
