"""``"azure"``: the Azure LLM inference trace 2023 (CSV).

Columns, either naming for each part (the first listed wins if both are present; other columns
are ignored): arrival ``arrived_at`` (s, float; vidur-processed) or ``TIMESTAMP`` (Azure's
original datetime string such as ``2023-11-16 18:15:46.6805900``, ISO-8601; plain numbers in
that column are taken as s); prompt ``num_prefill_tokens`` or ``ContextTokens``; output
``num_decode_tokens`` or ``GeneratedTokens``. Every request gets the ``llm`` argument. Samples
and figures: traces/README.md.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .common import CsvTrace, TraceFormatError, expected_columns, trace_frame
from .sniff import csv_header_rule

__all__ = ["ARRIVAL", "OUTPUT", "PROMPT", "SNIFF", "load_azure"]

# Accepted column names per role, in order of preference.
ARRIVAL = ("arrived_at", "TIMESTAMP")
PROMPT = ("num_prefill_tokens", "ContextTokens")
OUTPUT = ("num_decode_tokens", "GeneratedTokens")

# num_prefill_tokens / num_decode_tokens alone are the length-only "lengths" format, so an
# Azure header is told by its other names.
_MARKERS = frozenset({"arrived_at", "TIMESTAMP", "ContextTokens", "GeneratedTokens"})
SNIFF = (csv_header_rule(lambda cols: bool(cols & _MARKERS)),)


def load_azure(p: Path, *, llm: str) -> pd.DataFrame:
    """Read an Azure trace CSV (see the module docstring for its columns).

    Args:
        p: the file.
        llm: LLM name given to every request.

    Returns:
        The workload frame of :func:`muxsim.workload.load_trace` (``arrival_s`` in s).

    Raises:
        TraceFormatError: a missing column, no rows, an empty cell, a bad time (not finite,
            beyond ``MAX_TIMESTAMP_S``, or a trace spanning more than ``MAX_ARRIVAL_S``) or
            token count (:mod:`.common`).
    """
    t = CsvTrace(p)
    exp = expected_columns(ARRIVAL, PROMPT, OUTPUT)
    ta = t.column("azure", "arrival", ARRIVAL, exp)
    tp = t.column("azure", "prompt tokens", PROMPT, exp)
    to = t.column("azure", "output tokens", OUTPUT, exp)
    if len(t.df) == 0:
        raise TraceFormatError(f"{p}: no requests")
    arrival = t.floats(ta) if ta == "arrived_at" else t.times(ta)
    return trace_frame(p, "azure", llm, arrival, t.ints(tp), t.ints(to),
                       locate=lambda i: f"line {t.line_of(i)}")
