"""Real request traces read into muxsim's workload schema (one row per request).

One module per format family, each with a loader and the rules that recognise its files
(:mod:`.sniff`); :data:`FORMATS` below lists them. Full notes with units and sample sources
are in ``traces/README.md``.

* ``"azure"`` (:mod:`.azure`) -- Azure LLM inference trace 2023 CSV, either the
  vidur-processed columns ``arrived_at`` (s), ``num_prefill_tokens``, ``num_decode_tokens`` or
  Azure's original ``TIMESTAMP`` (datetime), ``ContextTokens``, ``GeneratedTokens`` (either
  naming for either part).
* ``"mooncake"`` (:mod:`.mooncake`) -- Mooncake (Kimi) JSONL: ``timestamp`` (ms),
  ``input_length``, ``output_length``, ``hash_ids`` (prefix-block hashes -> ``prefix_ids``).
* ``"lengths"`` (:mod:`.token_counts`) -- token-length CSV with ``num_prefill_tokens``,
  ``num_decode_tokens`` (no times).
* ``"burstgpt"`` (:mod:`.burstgpt`) -- BurstGPT CSV: ``Timestamp`` (s), ``Model``,
  ``Request tokens``, ``Response tokens``.
* ``"sharegpt"`` (:mod:`.sharegpt`) -- ShareGPT conversation JSON; token counts need a
  tokenizer (no times).
* ``"muxserve-workload"`` (:mod:`.muxserve`) -- a JSON list of request objects (our reading of
  MuxServe's workload generator output; see traces/README.md for the accepted keys).

plus :func:`load_muxserve_rates` (:mod:`.muxserve`) for MuxServe's per-LLM rate files
(``models.yaml`` of the ChatLMSYS benchmark). :func:`muxsim.workload.assign_arrivals` gives a
length-only trace arrival times so it becomes a complete workload.

Common rules of :func:`load_trace` (kept by :func:`.common.trace_frame`, which every loader
ends with):

* Rows are sorted by arrival time with a *stable* sort (rows with equal times keep file order),
  ``request_id`` is 0..N-1 in that order, and ``arrival_s`` is re-zeroed so the first kept
  request arrives at 0 s.
* Rows with 0 prompt or 0 output tokens (failed requests in real traces) are dropped; their
  count is ``df.attrs["dropped_rows"]`` (always set, 0 when none).
* Anything else that is not a valid request (negative or non-integer token counts, empty cells,
  malformed JSON, a missing column) raises :class:`TraceFormatError` naming the file and the
  line (CSV/JSONL, 1-based as in the file) or the record (JSON list, ``records[i]``, 0-based).
* Bounds (:mod:`.common`): a raw timestamp is finite and within +-``MAX_TIMESTAMP_S`` (1e12 s),
  a trace spans at most ``MAX_ARRIVAL_S`` (1e9 s, about 31.7 years), a token count is at most
  ``MAX_TOKENS`` (2**53); a file with no rows, or none left after dropping zero-token rows, is
  refused ("no requests").

Adding a format: a module with its loader and ``SNIFF`` rules, and one line in :data:`FORMATS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from . import azure, burstgpt, mooncake, muxserve, sharegpt, token_counts
from .common import TraceFormatError, check_file
from .muxserve import load_muxserve_rates
from .sniff import SniffRule, read_head, sniff

__all__ = [
    "FORMATS",
    "TRACE_FORMATS",
    "TraceFormat",
    "TraceFormatError",
    "detect_format",
    "load_muxserve_rates",
    "load_trace",
]


@dataclass(frozen=True)
class TraceFormat:
    """One entry of the registry.

    Attributes:
        load: ``load(path: Path, **options) -> DataFrame``, the workload frame of
            :func:`load_trace`; raises :class:`TraceFormatError` for an invalid file.
        options: the keyword arguments of :func:`load_trace` the loader takes (a subset of
            ``llm``, ``tokenizer``, ``sharegpt_turns``, ``infer_sessions``), passed by name.
        sniff: how :func:`detect_format` recognises the format (none: only by ``fmt=``).
    """

    load: Callable[..., pd.DataFrame]
    options: tuple[str, ...]
    sniff: tuple[SniffRule, ...] = ()


#: The trace formats, name -> entry, in the order of :data:`TRACE_FORMATS` (also the order in
#: which detection rules of equal rank are tried).
FORMATS: dict[str, TraceFormat] = {
    "azure": TraceFormat(azure.load_azure, ("llm",), azure.SNIFF),
    "mooncake": TraceFormat(mooncake.load_mooncake, ("llm",), mooncake.SNIFF),
    "lengths": TraceFormat(token_counts.load_token_counts, ("llm", "infer_sessions"),
                           token_counts.SNIFF),
    "burstgpt": TraceFormat(burstgpt.load_burstgpt, (), burstgpt.SNIFF),
    "sharegpt": TraceFormat(sharegpt.load_sharegpt, ("llm", "tokenizer", "sharegpt_turns"),
                            sharegpt.SNIFF),
    "muxserve-workload": TraceFormat(muxserve.load_muxserve_workload, ("llm",), muxserve.SNIFF),
}

#: Format names accepted by :func:`load_trace` (``fmt=``) and returned by :func:`detect_format`.
TRACE_FORMATS: tuple[str, ...] = tuple(FORMATS)


def detect_format(path: str | os.PathLike) -> str:
    """Guess a trace file's format from its extension and header / first record.

    Only the first 64 KiB are read. CSV files (any extension not starting like JSON) are told
    apart by header names: ``Request tokens`` / ``Response tokens`` or ``Timestamp`` + ``Model``
    -> ``"burstgpt"``; ``arrived_at``, ``TIMESTAMP``, ``ContextTokens`` or ``GeneratedTokens`` ->
    ``"azure"``; ``num_prefill_tokens`` / ``num_decode_tokens`` alone -> ``"lengths"``. JSON
    (``.json``/``.jsonl`` or text starting with ``[``/``{``): a first line holding an object
    with ``input_length``/``output_length`` -> ``"mooncake"``; a ``"conversations"`` key ->
    ``"sharegpt"``; ``"requests"`` or a MuxServe request key (``prompt_len``, ``arrival_time``,
    ...) -> ``"muxserve-workload"``. (The rules are each format module's ``SNIFF``.)

    Args:
        path: the trace file.

    Returns:
        One of :data:`TRACE_FORMATS`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        TraceFormatError: the file is empty ("no requests"), is a MuxServe ``models.yaml``
            (use :func:`load_muxserve_rates`), or matches no format; the message lists the
            allowed formats.
    """
    p = check_file(path)
    head = read_head(p)
    if not head.strip():
        raise TraceFormatError(f"{p}: no requests (the file is empty)")
    allowed = ", ".join(TRACE_FORMATS)
    suffix = p.suffix.lower()
    if suffix in (".yaml", ".yml"):
        raise TraceFormatError(
            f"{p}: a YAML file is not a request trace; MuxServe models.yaml rate files are read "
            f"by load_muxserve_rates(); trace formats are: {allowed}"
        )
    rules = [(name, rule) for name, f in FORMATS.items() for rule in f.sniff]
    fmt, what = sniff(head, suffix, rules)
    if fmt is None:
        raise TraceFormatError(
            f"{p}: cannot tell the trace format from its extension and {what}; "
            f"pass fmt= one of: {allowed}"
        )
    return fmt


def load_trace(
    path: str | os.PathLike,
    fmt: str | None = None,
    *,
    llm: str = "llm-0",
    tokenizer: Any = None,
    sharegpt_turns: str = "first",
    infer_sessions: bool = False,
) -> pd.DataFrame:
    """Read a request trace into the workload schema of :func:`muxsim.workload.generate_workload`.

    Rows are sorted by arrival time with a stable sort (ties and already-sorted files keep the
    file order), ``request_id`` is 0..N-1 in that order and ``arrival_s`` is shifted so the
    first kept request is at 0 s. Rows with 0 prompt or 0 output tokens (failed requests) are
    dropped and counted in ``df.attrs["dropped_rows"]``. Per format (see traces/README.md):

    * ``"azure"``: ``arrived_at`` (s) or ``TIMESTAMP`` (datetime such as
      ``2023-11-16 18:15:46.6805900``, or numbers taken as s); prompt ``num_prefill_tokens`` or
      ``ContextTokens``; output ``num_decode_tokens`` or ``GeneratedTokens``.
    * ``"mooncake"``: JSONL, ``timestamp`` (ms), ``input_length``, ``output_length``, optional
      ``hash_ids`` -> ``prefix_ids``; blank lines are ignored.
    * ``"lengths"``: ``num_prefill_tokens``, ``num_decode_tokens``; other columns ignored. No
      arrival times: the frame has no ``arrival_s`` (use :func:`~muxsim.workload.assign_arrivals`).
    * ``"burstgpt"``: ``Timestamp`` (s), ``Model`` (-> ``llm``), ``Request tokens``,
      ``Response tokens``; other columns (``Total tokens``, ``Log Type``) ignored.
    * ``"sharegpt"``: JSON list of ``{"id", "conversations": [{"from", "value"}, ...]}``. Each
      turn is tokenized once (transformers tokenizers without special tokens); with
      ``sharegpt_turns="first"`` a conversation gives one request, its first human turn
      directly answered by a gpt turn; with ``"all"`` it gives one request per such pair, whose
      prompt is every earlier turn plus this human turn (sum of their token counts).
      ``session_id`` is the conversation ``id``; conversations without a pair are skipped and
      counted in ``attrs["skipped_conversations"]``. No ``arrival_s`` column. Speakers:
      ``human``/``user``; ``gpt``/``chatgpt``/``assistant``/``bard``/``bing``/``model``;
      ``system`` turns are context only.
    * ``"muxserve-workload"``: JSON list of request objects, or ``{"requests": [...]}``; keys
      llm ``model``/``model_name``/``llm`` (optional, else the ``llm`` argument), arrival
      ``arrival_time``/``arrival_s``/``timestamp`` (s), prompt
      ``prompt_len``/``input_len``/``prompt_tokens``, output ``output_len``/``output_tokens``.

    Args:
        path: the trace file.
        fmt: one of :data:`TRACE_FORMATS`; ``None`` = :func:`detect_format`.
        llm: LLM name given to every request of formats without a model column.
        tokenizer: for ``"sharegpt"`` only: a callable ``str -> token ids`` (its result's
            ``len`` is the count; a mapping result uses its ``"input_ids"``), a
            ``transformers`` / ``tokenizers`` tokenizer object, or a name/path loaded with
            ``transformers.AutoTokenizer.from_pretrained(..., local_files_only=True)``.
        sharegpt_turns: ``"first"`` or ``"all"`` (``"sharegpt"`` only).
        infer_sessions: ``"lengths"`` only: add ``session_id`` (int64, 0..) grouping the rows
            of multi-turn token-length files such as ShareGPT's: a row starts a new
            conversation iff it is the first row or its prefill is smaller than the previous
            row's prefill + decode (a turn's prefill holds all earlier turns). Sessions are
            assigned before zero-token rows are dropped. Off by default because single-turn
            files (e.g. arXiv summarisation) have no sessions.

    Returns:
        DataFrame with a RangeIndex and columns, in order: ``request_id`` int64, ``llm`` str,
        ``arrival_s`` float64 s (not for ``"lengths"``/``"sharegpt"``), ``prompt_tokens`` int64
        >= 1, ``output_tokens`` int64 >= 1, then where the format has them ``session_id``
        (int64 for ``"lengths"``, str for ``"sharegpt"``) and ``prefix_ids`` (list of int per
        row, Mooncake ``hash_ids``). ``attrs``: ``source`` (path), ``format``,
        ``dropped_rows`` (int), and ``skipped_conversations`` for ``"sharegpt"``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        TraceFormatError: empty file or no rows ("no requests", also when every row has 0
            prompt or output tokens); a missing column / key (the message lists the expected
            ones and their accepted alternatives); an empty cell, a negative, non-integer or
            too large (> 2**53) token count, a non-numeric or non-finite time, a timestamp
            beyond +-1e12 s or more than 1e9 s after the first request (``MAX_TIMESTAMP_S``,
            ``MAX_ARRIVAL_S``), malformed CSV or JSON (the message names the line, or
            ``records[i]`` for a JSON list); ``"sharegpt"`` without a tokenizer; a format
            that cannot be detected.
        ValueError: unknown ``fmt`` or ``sharegpt_turns``; an empty ``llm``;
            ``infer_sessions`` with a format other than ``"lengths"``.
        ImportError / OSError: ``tokenizer`` is a name but transformers is missing or the
            tokenizer is not available offline.
    """
    p = check_file(path)
    if fmt is None:
        fmt = detect_format(p)
    if fmt not in TRACE_FORMATS:
        raise ValueError(f"fmt must be one of {TRACE_FORMATS}, got {fmt!r}")
    if sharegpt_turns not in sharegpt.TURNS:
        raise ValueError(f"sharegpt_turns must be 'first' or 'all', got {sharegpt_turns!r}")
    if not isinstance(llm, str) or not llm:
        raise ValueError(f"llm must be a non-empty string, got {llm!r}")
    entry = FORMATS[fmt]
    if infer_sessions and "infer_sessions" not in entry.options:
        which = " or ".join(f"fmt={n!r}" for n, f in FORMATS.items()
                            if "infer_sessions" in f.options)
        raise ValueError(f"infer_sessions applies to {which} only, not {fmt!r}")
    given = {"llm": llm, "tokenizer": tokenizer, "sharegpt_turns": sharegpt_turns,
             "infer_sessions": infer_sessions}
    return entry.load(p, **{name: given[name] for name in entry.options})
