"""``"lengths"``: token-length CSVs without arrival times (e.g. sarathi-serve's ShareGPT and
vidur's arXiv files).

Columns ``num_prefill_tokens`` and ``num_decode_tokens`` (tokens); others (``num_total_tokens``,
``pd_ratio``, ...) are ignored. The frame has no ``arrival_s``: give it one with
:func:`muxsim.workload.assign_arrivals`. Samples and figures: traces/README.md.

A module of its own rather than part of :mod:`.azure`, although vidur's Azure files use the
same two token columns: it is a different format (no times, an ``infer_sessions`` option, its
own detection rule), and ``lengths.py`` is taken by the length samplers of
:mod:`muxsim.workload.lengths`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .common import CsvTrace, TraceFormatError, expected_columns, trace_frame
from .sniff import csv_header_rule

__all__ = ["OUTPUT", "PROMPT", "SNIFF", "load_token_counts", "sessions_from_lengths"]

PROMPT = ("num_prefill_tokens",)
OUTPUT = ("num_decode_tokens",)

SNIFF = (csv_header_rule(lambda cols: bool(cols & {"num_prefill_tokens", "num_decode_tokens"})),)


def sessions_from_lengths(prompt: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Conversation index per row (int64, from 0) of a multi-turn token-length file.

    A row continues the previous row's conversation iff its prefill holds at least the previous
    row's total (prefill + decode) tokens, since a turn's prefill holds all earlier turns.

    Args:
        prompt, output: token counts per row, shape ``(n,)``.

    Returns:
        int64 array of shape ``(n,)``, non-decreasing, starting at 0.
    """
    new = np.ones(len(prompt), dtype=bool)
    new[1:] = prompt[1:] < (prompt[:-1] + output[:-1])
    return np.cumsum(new).astype(np.int64) - 1


def load_token_counts(p: Path, *, llm: str, infer_sessions: bool) -> pd.DataFrame:
    """Read a token-length CSV (see the module docstring for its columns).

    Args:
        p: the file.
        llm: LLM name given to every request.
        infer_sessions: add ``session_id`` (:func:`sessions_from_lengths`, computed before
            zero-token rows are dropped).

    Returns:
        The workload frame of :func:`muxsim.workload.load_trace`, without ``arrival_s``, in
        file order.

    Raises:
        TraceFormatError: a missing column, no rows, an empty cell or a bad token count.
    """
    t = CsvTrace(p)
    exp = expected_columns(PROMPT, OUTPUT)
    tp = t.column("lengths", "prompt tokens", PROMPT, exp)
    to = t.column("lengths", "output tokens", OUTPUT, exp)
    if len(t.df) == 0:
        raise TraceFormatError(f"{p}: no requests")
    prompt, output = t.ints(tp), t.ints(to)
    extra = {"session_id": sessions_from_lengths(prompt, output)} if infer_sessions else None
    return trace_frame(p, "lengths", llm, None, prompt, output, extra)
