"""``"sharegpt"``: ShareGPT conversation JSON (no arrival times; token counts need a tokenizer).

A JSON list of ``{"id": str, "conversations": [{"from": ..., "value": str}, ...]}``. Speakers:
``human``/``user`` (:data:`HUMAN`); ``gpt``/``chatgpt``/``assistant``/``bard``/``bing``/``model``
(:data:`ASSISTANT`); ``system`` turns (:data:`CONTEXT`) are context only; anything else is an
error naming ``records[i].conversations[j]``. Each turn is tokenized once. Details:
traces/README.md.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .common import TraceFormatError, read_json_document, trace_frame
from .sniff import json_keys_rule, json_record_rule

__all__ = ["ASSISTANT", "CONTEXT", "HUMAN", "SNIFF", "TURNS", "load_sharegpt", "token_counter"]

# Speaker names (lower-cased) per role.
HUMAN = frozenset({"human", "user"})
ASSISTANT = frozenset({"gpt", "chatgpt", "assistant", "bard", "bing", "model"})
CONTEXT = frozenset({"system"})

#: Accepted values of ``sharegpt_turns``.
TURNS = ("first", "all")

# The text rule is tried before the other formats' key rules: "conversations" is a ShareGPT
# key only, while their keys ("timestamp", "input_length", ...) may also sit in a ShareGPT
# record's extra fields.
SNIFF = (
    json_record_rule(lambda rec: "conversations" in rec),
    json_keys_rule(("conversations",), rank=-1),
)


def token_counter(tokenizer: Any, p: Path) -> Callable[[list[str]], list[int]]:
    """Turn the ``tokenizer`` argument of :func:`muxsim.workload.load_trace` into a function:
    texts -> token counts (one per text).

    Args:
        tokenizer: a callable ``str -> token ids`` (its result's ``len`` is the count; a mapping
            result uses its ``"input_ids"``), a ``transformers`` / ``tokenizers`` tokenizer
            object (called without special tokens, in batches of 2048), or a name/path loaded
            with ``transformers.AutoTokenizer.from_pretrained(..., local_files_only=True)``.
        p: the trace file, for the message when ``tokenizer`` is None.

    Raises:
        TraceFormatError: ``tokenizer`` is None.
        ImportError: a name/path without transformers installed.
        OSError: the named tokenizer is not available offline.
        TypeError: anything else that is not callable.
    """
    if tokenizer is None:
        raise TraceFormatError(
            f"{p}: ShareGPT conversation JSON needs a tokenizer to count tokens; pass "
            f"tokenizer= (a callable str -> token ids, or a transformers tokenizer name/path "
            f"available offline)"
        )
    if isinstance(tokenizer, (str, os.PathLike)):
        try:
            from transformers import AutoTokenizer
        except ImportError as e:
            raise ImportError(
                f"tokenizer={str(tokenizer)!r} is a name/path, which needs the transformers "
                f"package (pip install 'muxsim[live]'); or pass a callable str -> token ids"
            ) from e
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
        except (OSError, ValueError) as e:
            raise OSError(
                f"cannot load tokenizer {str(tokenizer)!r} offline (local_files_only=True): "
                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from e
    # Looked up, not imported: a caller who passes a transformers tokenizer has imported it.
    tf = sys.modules.get("transformers")
    if tf is not None and isinstance(tokenizer, tf.PreTrainedTokenizerBase):
        tok = tokenizer

        def count_hf(texts: list[str]) -> list[int]:
            out: list[int] = []
            for s in range(0, len(texts), 2048):
                ids = tok(texts[s : s + 2048], add_special_tokens=False)["input_ids"]
                out.extend(len(x) for x in ids)
            return out

        return count_hf
    if hasattr(tokenizer, "encode_batch") and hasattr(tokenizer, "get_vocab"):
        raw = tokenizer  # a tokenizers.Tokenizer

        def count_raw(texts: list[str]) -> list[int]:
            out: list[int] = []
            for s in range(0, len(texts), 2048):
                enc = raw.encode_batch(texts[s : s + 2048], add_special_tokens=False)
                out.extend(len(e.ids) for e in enc)
            return out

        return count_raw
    if not callable(tokenizer):
        raise TypeError(
            f"tokenizer must be a callable str -> token ids, a transformers tokenizer or a "
            f"name/path, got {type(tokenizer).__name__}"
        )
    fn = tokenizer

    def count_fn(texts: list[str]) -> list[int]:
        out: list[int] = []
        for text in texts:
            r = fn(text)
            if isinstance(r, Mapping):
                r = r["input_ids"]
            out.append(len(r))
        return out

    return count_fn


def load_sharegpt(p: Path, *, llm: str, tokenizer: Any, sharegpt_turns: str) -> pd.DataFrame:
    """Read a ShareGPT conversation JSON (see the module docstring for its layout).

    Args:
        p: the file.
        llm: LLM name given to every request.
        tokenizer: see :func:`token_counter`.
        sharegpt_turns: ``"first"``: one request per conversation, its first human turn
            directly answered by a gpt turn; ``"all"``: one request per such pair, whose prompt
            is every earlier turn plus this human turn (sum of their token counts).

    Returns:
        The workload frame of :func:`muxsim.workload.load_trace` without ``arrival_s``, in file
        order, with ``session_id`` (str: the conversation ``id``, else its record index);
        ``attrs["skipped_conversations"]`` counts conversations without a human -> gpt pair.

    Raises:
        TraceFormatError: malformed JSON, not a list, a bad record or turn (named
            ``records[i]`` / ``records[i].conversations[j]``), no pair in any conversation
            (these are checked before the tokenizer is loaded), no tokenizer, or no request
            left after dropping those with 0 prompt or 0 output tokens.
        ImportError / OSError / TypeError: see :func:`token_counter`.
    """
    doc = read_json_document(p)
    if not isinstance(doc, list):
        raise TraceFormatError(
            f"{p}: expected a JSON list of conversations "
            f'[{{"id", "conversations": [{{"from", "value"}}, ...]}}, ...], '
            f"got {type(doc).__name__}"
        )
    texts: list[str] = []
    # Per request: conversation id, first text index of its prompt, index of the human turn.
    req_conv: list[str] = []
    req_first: list[int] = []
    req_human: list[int] = []
    skipped = 0
    for i, rec in enumerate(doc):
        where = f"{p} records[{i}]"
        if not isinstance(rec, dict):
            raise TraceFormatError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        conv = rec.get("conversations")
        if not isinstance(conv, list):
            raise TraceFormatError(
                f"{where}: missing 'conversations' list; expected keys: 'id', 'conversations'"
            )
        cid = str(rec.get("id", i))
        roles: list[str] = []
        for j, turn in enumerate(conv):
            if not (isinstance(turn, dict) and "from" in turn and "value" in turn):
                raise TraceFormatError(
                    f"{where}.conversations[{j}]: expected an object with 'from' and 'value'"
                )
            who, val = turn["from"], turn["value"]
            if not isinstance(val, str):
                raise TraceFormatError(f"{where}.conversations[{j}]: 'value' is not a string")
            w = str(who).lower()
            if w in HUMAN:
                roles.append("h")
            elif w in ASSISTANT:
                roles.append("g")
            elif w in CONTEXT:
                roles.append("s")
            else:
                raise TraceFormatError(
                    f"{where}.conversations[{j}]: unknown speaker {who!r}; expected one of "
                    f"{sorted(HUMAN | ASSISTANT | CONTEXT)}"
                )
        pairs = [j for j in range(len(roles) - 1) if roles[j] == "h" and roles[j + 1] == "g"]
        if not pairs:
            skipped += 1
            continue
        if sharegpt_turns == "first":
            j = pairs[0]
            base = len(texts)
            texts.extend([conv[j]["value"], conv[j + 1]["value"]])
            req_conv.append(cid)
            req_first.append(base)
            req_human.append(base)
        else:
            base = len(texts)
            last = pairs[-1] + 1
            texts.extend(t["value"] for t in conv[: last + 1])
            for j in pairs:
                req_conv.append(cid)
                req_first.append(base)
                req_human.append(base + j)
    if not req_conv:
        raise TraceFormatError(
            f"{p}: no requests (no human -> gpt turn pair in {len(doc)} conversations)"
        )
    # The tokenizer is loaded only now: a malformed or empty file is refused without waiting
    # for it (a transformers tokenizer takes seconds to load).
    count = token_counter(tokenizer, p)
    counts = np.asarray(count(texts), dtype=np.int64)
    csum = np.concatenate([[0], np.cumsum(counts)])
    first = np.asarray(req_first, dtype=np.int64)
    human = np.asarray(req_human, dtype=np.int64)
    prompt = csum[human + 1] - csum[first]
    output = counts[human + 1]
    extra = {"session_id": np.asarray(req_conv, dtype=object)}
    return trace_frame(p, "sharegpt", llm, None, prompt, output, extra,
                       attrs={"skipped_conversations": skipped})
