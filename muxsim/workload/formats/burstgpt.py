"""``"burstgpt"``: the BurstGPT trace (CSV).

Columns ``Timestamp`` (s from the trace start), ``Model`` (-> ``llm``, e.g. ``ChatGPT``,
``GPT-4``), ``Request tokens``, ``Response tokens``; ``Total tokens`` and ``Log Type`` are
ignored. Failed requests have ``Response tokens`` = 0 and are dropped like every zero-token row.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .common import CsvTrace, TraceFormatError, expected_columns, trace_frame
from .sniff import csv_header_rule

__all__ = ["MODEL", "OUTPUT", "PROMPT", "SNIFF", "TIME", "load_burstgpt"]

TIME = ("Timestamp",)
MODEL = ("Model",)
PROMPT = ("Request tokens",)
OUTPUT = ("Response tokens",)

# Ranked before the Azure and token-length rules: BurstGPT's names are its own, so a header
# that also carries one of theirs is still BurstGPT.
SNIFF = (
    csv_header_rule(
        lambda cols: bool(cols & {"Request tokens", "Response tokens"})
        or {"Timestamp", "Model"} <= cols,
        rank=-1,
    ),
)


def load_burstgpt(p: Path) -> pd.DataFrame:
    """Read a BurstGPT CSV (see the module docstring for its columns).

    Args:
        p: the file.

    Returns:
        The workload frame of :func:`muxsim.workload.load_trace`; ``llm`` is the ``Model``
        column.

    Raises:
        TraceFormatError: a missing column, no rows, an empty cell, a bad time (not finite,
            beyond ``MAX_TIMESTAMP_S``, or a trace spanning more than ``MAX_ARRIVAL_S``) or
            token count (:mod:`.common`).
    """
    t = CsvTrace(p)
    exp = expected_columns(TIME, MODEL, PROMPT, OUTPUT)
    tt = t.column("burstgpt", "arrival", TIME, exp)
    tm = t.column("burstgpt", "model", MODEL, exp)
    tp = t.column("burstgpt", "prompt tokens", PROMPT, exp)
    to = t.column("burstgpt", "output tokens", OUTPUT, exp)
    if len(t.df) == 0:
        raise TraceFormatError(f"{p}: no requests")
    return trace_frame(p, "burstgpt", t.strings(tm), t.floats(tt), t.ints(tp), t.ints(to),
                       locate=lambda i: f"line {t.line_of(i)}")
