"""Load real request traces into muxsim's workload schema (one row per request).

Supported formats (:data:`TRACE_FORMATS`; full notes with units and sample sources in
``traces/README.md``):

* ``"azure"`` -- Azure LLM inference trace 2023 CSV, either the vidur-processed columns
  ``arrived_at`` (s), ``num_prefill_tokens``, ``num_decode_tokens`` or Azure's original
  ``TIMESTAMP`` (datetime), ``ContextTokens``, ``GeneratedTokens`` (either naming for either part).
* ``"mooncake"`` -- Mooncake (Kimi) JSONL: ``timestamp`` (ms), ``input_length``,
  ``output_length``, ``hash_ids`` (prefix-block hashes -> ``prefix_ids``).
* ``"lengths"`` -- token-length CSV with ``num_prefill_tokens``, ``num_decode_tokens`` (no times).
* ``"burstgpt"`` -- BurstGPT CSV: ``Timestamp`` (s), ``Model``, ``Request tokens``,
  ``Response tokens``.
* ``"sharegpt"`` -- ShareGPT conversation JSON; token counts need a tokenizer (no times).
* ``"muxserve-workload"`` -- a JSON list of request objects (our reading of MuxServe's workload
  generator output; see traces/README.md for the accepted keys).

plus :func:`load_muxserve_rates` for MuxServe's per-LLM rate files (``models.yaml`` of the
ChatLMSYS benchmark) and :func:`assign_arrivals`, which gives a length-only trace Poisson or
Gamma arrival times so it becomes a complete workload.

Common rules of :func:`load_trace`:

* Rows are sorted by arrival time with a *stable* sort (rows with equal times keep file order),
  ``request_id`` is 0..N-1 in that order, and ``arrival_s`` is re-zeroed so the first kept
  request arrives at 0 s.
* Rows with 0 prompt or 0 output tokens (failed requests in real traces) are dropped; their
  count is ``df.attrs["dropped_rows"]`` (always set, 0 when none).
* Anything else that is not a valid request (negative or non-integer token counts, empty cells,
  malformed JSON, a missing column) raises :class:`TraceFormatError` naming the file and the
  line (CSV/JSONL, 1-based as in the file) or the record (JSON list, ``records[i]``, 0-based).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .arrivals import arrival_times

__all__ = [
    "TRACE_FORMATS",
    "TraceFormatError",
    "assign_arrivals",
    "detect_format",
    "load_muxserve_rates",
    "load_trace",
]

#: Format names accepted by :func:`load_trace` (``fmt=``) and returned by :func:`detect_format`.
TRACE_FORMATS: tuple[str, ...] = (
    "azure",
    "mooncake",
    "lengths",
    "burstgpt",
    "sharegpt",
    "muxserve-workload",
)


class TraceFormatError(ValueError):
    """A trace file is not valid for its format.

    The message is one line naming the file, where the problem is (``line N``, 1-based as in
    the file, for CSV and JSONL; ``records[i]``, the 0-based list index, for a JSON list) and
    what is wrong, e.g. ``trace.csv line 7: column 'num_decode_tokens' is not an integer ('abc')``.
    """


# --------------------------------------------------------------------------------------------
# Column names of each CSV format. Each entry is (role, accepted names in order of preference).

_AZURE_ARRIVAL = ("arrived_at", "TIMESTAMP")
_AZURE_PROMPT = ("num_prefill_tokens", "ContextTokens")
_AZURE_OUTPUT = ("num_decode_tokens", "GeneratedTokens")
_LENGTHS_PROMPT = ("num_prefill_tokens",)
_LENGTHS_OUTPUT = ("num_decode_tokens",)
_BURST_TIME = ("Timestamp",)
_BURST_MODEL = ("Model",)
_BURST_PROMPT = ("Request tokens",)
_BURST_OUTPUT = ("Response tokens",)

_MOONCAKE_KEYS = ("timestamp", "input_length", "output_length")

# MuxServe workload JSON: role -> accepted keys, in order of preference.
_MUX_LLM = ("model", "model_name", "llm")
_MUX_ARRIVAL = ("arrival_time", "arrival_s", "timestamp")
_MUX_PROMPT = ("prompt_len", "input_len", "prompt_tokens")
_MUX_OUTPUT = ("output_len", "output_tokens")

# ShareGPT speaker names.
_HUMAN = frozenset({"human", "user"})
_ASSISTANT = frozenset({"gpt", "chatgpt", "assistant", "bard", "bing", "model"})
_CONTEXT = frozenset({"system"})

_SNIFF_BYTES = 65536
# Largest accepted token count: integers above 2**53 are not exact in float64.
_MAX_TOKENS = 2**53


def _check_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"trace file not found: {p}")
    return p


# --------------------------------------------------------------------------------------------
# Format detection


def _head(p: Path) -> str:
    with open(p, "rb") as f:
        raw = f.read(_SNIFF_BYTES)
    return raw.decode("utf-8-sig", errors="replace")


def _header_fields(head: str) -> list[str]:
    for line in head.splitlines():
        if line.strip():
            return [c.strip() for c in next(csv.reader([line]))]
    return []


def _csv_format_from_header(cols: Sequence[str]) -> str | None:
    cs = set(cols)
    if cs & {"Request tokens", "Response tokens"} or {"Timestamp", "Model"} <= cs:
        return "burstgpt"
    if cs & {"arrived_at", "TIMESTAMP", "ContextTokens", "GeneratedTokens"}:
        return "azure"
    if cs & {"num_prefill_tokens", "num_decode_tokens"}:
        return "lengths"
    return None


def _json_format_from_head(head: str) -> str | None:
    stripped = head.lstrip()
    first = next((ln for ln in stripped.splitlines() if ln.strip()), "")
    # A complete JSON object on the first line: JSONL (Mooncake) or a one-line document.
    try:
        obj = json.loads(first)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        if set(_MOONCAKE_KEYS) & set(obj) and ("input_length" in obj or "output_length" in obj):
            return "mooncake"
        if "conversations" in obj:
            return "sharegpt"
        if "requests" in obj or set(obj) & set(_MUX_PROMPT + _MUX_OUTPUT + _MUX_ARRIVAL):
            return "muxserve-workload"
    if re.search(r'"conversations"\s*:', stripped):
        return "sharegpt"
    if re.search(r'"(input_length|output_length)"\s*:', stripped):
        return "mooncake"
    keys = "|".join(re.escape(k) for k in ("requests",) + _MUX_ARRIVAL + _MUX_PROMPT + _MUX_OUTPUT)
    if re.search(rf'"({keys})"\s*:', stripped):
        return "muxserve-workload"
    return None


def detect_format(path: str | os.PathLike) -> str:
    """Guess a trace file's format from its extension and header / first record.

    Only the first 64 KiB are read. CSV files (any extension not starting like JSON) are told
    apart by header names: ``Request tokens`` / ``Response tokens`` or ``Timestamp`` + ``Model``
    -> ``"burstgpt"``; ``arrived_at``, ``TIMESTAMP``, ``ContextTokens`` or ``GeneratedTokens`` ->
    ``"azure"``; ``num_prefill_tokens`` / ``num_decode_tokens`` alone -> ``"lengths"``. JSON
    (``.json``/``.jsonl`` or text starting with ``[``/``{``): a first line holding an object
    with ``input_length``/``output_length`` -> ``"mooncake"``; a ``"conversations"`` key ->
    ``"sharegpt"``; ``"requests"`` or a MuxServe request key (``prompt_len``, ``arrival_time``,
    ...) -> ``"muxserve-workload"``.

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
    p = _check_file(path)
    head = _head(p)
    if not head.strip():
        raise TraceFormatError(f"{p}: no requests (the file is empty)")
    allowed = ", ".join(TRACE_FORMATS)
    suffix = p.suffix.lower()
    if suffix in (".yaml", ".yml"):
        raise TraceFormatError(
            f"{p}: a YAML file is not a request trace; MuxServe models.yaml rate files are read "
            f"by load_muxserve_rates(); trace formats are: {allowed}"
        )
    if suffix in (".json", ".jsonl") or head.lstrip()[:1] in ("[", "{"):
        fmt = _json_format_from_head(head)
        what = "first JSON record"
    else:
        cols = _header_fields(head)
        fmt = _csv_format_from_header(cols)
        what = f"CSV header {cols}"
    if fmt is None:
        raise TraceFormatError(
            f"{p}: cannot tell the trace format from its extension and {what}; "
            f"pass fmt= one of: {allowed}"
        )
    return fmt


# --------------------------------------------------------------------------------------------
# CSV helpers


class _CSV:
    """A CSV trace read as strings, with a way to turn a data-row index into a file line."""

    def __init__(self, p: Path) -> None:
        self.path = p
        try:
            df = pd.read_csv(
                p,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                skipinitialspace=True,
                encoding="utf-8-sig",
            )
        except pd.errors.EmptyDataError:
            raise TraceFormatError(f"{p}: no requests (the file is empty)") from None
        except pd.errors.ParserError as e:
            msg = str(e).strip().splitlines()[-1]
            m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", msg)
            if m:
                raise TraceFormatError(
                    f"{p} line {m.group(2)}: expected {m.group(1)} fields as in the header, "
                    f"saw {m.group(3)}"
                ) from None
            raise TraceFormatError(f"{p}: malformed CSV ({msg})") from None
        except UnicodeDecodeError as e:
            raise TraceFormatError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        df.columns = [str(c).strip() for c in df.columns]
        self.df = df
        if not isinstance(df.index, pd.RangeIndex):
            # pandas takes the first column as the index when the first data row has one field
            # more than the header.
            n = len(df.columns)
            raise TraceFormatError(
                f"{p} line {self.line_of(0)}: expected {n} fields as in the header, saw {n + 1}"
            )

    def line_of(self, i: int) -> int:
        """File line (1-based) where data row ``i`` (0-based, as pandas numbers them) starts.

        Re-scans the file with :mod:`csv`, skipping blank lines as pandas does, so quoted
        fields spanning lines and blank lines are both counted right. Only used for errors.
        """
        with open(self.path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            prev_end = 0
            seen_header = False
            k = -1
            for rec in reader:
                start = prev_end + 1
                prev_end = reader.line_num
                if not rec or (len(rec) == 1 and not rec[0].strip()):
                    continue
                if not seen_header:
                    seen_header = True
                    continue
                k += 1
                if k == i:
                    return start
        return -1  # pragma: no cover - i out of range

    def column(self, fmt: str, role: str, names: Sequence[str], expected: str) -> str:
        for n in names:
            if n in self.df.columns:
                return n
        alt = " or ".join(repr(n) for n in names)
        raise TraceFormatError(
            f"{self.path}: missing column {alt} ({role}) for format {fmt!r}; "
            f"expected columns: {expected}; found: {list(self.df.columns)}"
        )

    def fail(self, i: int, msg: str) -> TraceFormatError:
        return TraceFormatError(f"{self.path} line {self.line_of(i)}: {msg}")

    def _nonempty(self, col: str) -> pd.Series:
        s = self.df[col].str.strip()
        empty = (s == "").to_numpy()
        if empty.any():
            raise self.fail(int(np.argmax(empty)), f"column {col!r} is empty")
        return s

    def ints(self, col: str) -> np.ndarray:
        """Column as int64 token counts >= 0 (integral floats such as ``12.0`` accepted)."""
        s = self._nonempty(col)
        num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(num) | (num != np.floor(num))
        if bad.any():
            i = int(np.argmax(bad))
            raise self.fail(i, f"column {col!r} is not an integer ({s.iloc[i]!r})")
        neg = num < 0
        if neg.any():
            i = int(np.argmax(neg))
            raise self.fail(i, f"column {col!r} is negative ({s.iloc[i]!r})")
        big = num > _MAX_TOKENS
        if big.any():
            i = int(np.argmax(big))
            raise self.fail(i, f"column {col!r} is too large ({s.iloc[i]!r})")
        return num.astype(np.int64)

    def floats(self, col: str) -> np.ndarray:
        """Column as finite float64 numbers."""
        s = self._nonempty(col)
        num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(num)
        if bad.any():
            i = int(np.argmax(bad))
            raise self.fail(i, f"column {col!r} is not a finite number of seconds ({s.iloc[i]!r})")
        return num

    def times(self, col: str) -> np.ndarray:
        """Column as seconds: numbers are taken as seconds, otherwise parsed as datetimes."""
        s = self._nonempty(col)
        num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isfinite(num).all():
            return num
        try:
            ts = pd.to_datetime(s, format="ISO8601", errors="coerce")
        except (ValueError, TypeError) as e:
            raise TraceFormatError(
                f"{self.path}: column {col!r}: cannot parse datetimes ({e})"
            ) from None
        bad = ts.isna().to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise self.fail(
                i, f"column {col!r} is neither seconds nor a datetime ({s.iloc[i]!r})"
            )
        if getattr(ts.dtype, "tz", None) is not None:
            ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
        return (ts - ts.min()).dt.total_seconds().to_numpy(dtype=np.float64)

    def strings(self, col: str) -> np.ndarray:
        return self._nonempty(col).to_numpy(dtype=object)


def _expected(*groups: Sequence[str]) -> str:
    return ", ".join(" or ".join(repr(n) for n in g) for g in groups)


# --------------------------------------------------------------------------------------------
# Assembling the result


def _finish(
    p: Path,
    fmt: str,
    llm: np.ndarray | str,
    arrival: np.ndarray | None,
    prompt: np.ndarray,
    output: np.ndarray,
    extra: dict[str, Any] | None = None,
    attrs: dict[str, Any] | None = None,
) -> pd.DataFrame:
    n = len(prompt)
    if n == 0:
        raise TraceFormatError(f"{p}: no requests")
    keep = (prompt > 0) & (output > 0)
    dropped = int(n - keep.sum())
    if not keep.any():
        raise TraceFormatError(
            f"{p}: no requests left after dropping {dropped} row(s) with 0 prompt or "
            f"0 output tokens"
        )
    idx = np.flatnonzero(keep)
    if arrival is not None:
        idx = idx[np.argsort(arrival[idx], kind="stable")]
    cols: dict[str, Any] = {"request_id": np.arange(len(idx), dtype=np.int64)}
    if isinstance(llm, str):
        cols["llm"] = pd.Series([llm] * len(idx), dtype=str)
    else:
        cols["llm"] = pd.Series(np.asarray(llm, dtype=object)[idx], dtype=str)
    if arrival is not None:
        t = np.asarray(arrival, dtype=np.float64)[idx]
        cols["arrival_s"] = t - t[0]
    cols["prompt_tokens"] = np.asarray(prompt, dtype=np.int64)[idx]
    cols["output_tokens"] = np.asarray(output, dtype=np.int64)[idx]
    for name, values in (extra or {}).items():
        if isinstance(values, list):  # one Python object (e.g. a list) per row
            arr = np.empty(n, dtype=object)
            for k, v in enumerate(values):
                arr[k] = v
        else:
            arr = np.asarray(values)
        cols[name] = arr[idx]
    df = pd.DataFrame(cols)
    if "session_id" in df.columns and df["session_id"].dtype == object:
        df["session_id"] = df["session_id"].astype(str)
    df.attrs.update({"source": str(p), "format": fmt, "dropped_rows": dropped})
    df.attrs.update(attrs or {})
    return df


# --------------------------------------------------------------------------------------------
# Per-format loaders


def _load_azure(p: Path, llm: str) -> pd.DataFrame:
    t = _CSV(p)
    exp = _expected(_AZURE_ARRIVAL, _AZURE_PROMPT, _AZURE_OUTPUT)
    ta = t.column("azure", "arrival", _AZURE_ARRIVAL, exp)
    tp = t.column("azure", "prompt tokens", _AZURE_PROMPT, exp)
    to = t.column("azure", "output tokens", _AZURE_OUTPUT, exp)
    if len(t.df) == 0:
        raise TraceFormatError(f"{p}: no requests")
    arrival = t.floats(ta) if ta == "arrived_at" else t.times(ta)
    return _finish(p, "azure", llm, arrival, t.ints(tp), t.ints(to))


def _sessions_from_lengths(prompt: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Conversation index per row: a row continues the previous row's conversation iff its
    prefill holds at least the previous row's total (prefill + decode) tokens."""
    new = np.ones(len(prompt), dtype=bool)
    new[1:] = prompt[1:] < (prompt[:-1] + output[:-1])
    return np.cumsum(new).astype(np.int64) - 1


def _load_lengths(p: Path, llm: str, infer_sessions: bool) -> pd.DataFrame:
    t = _CSV(p)
    exp = _expected(_LENGTHS_PROMPT, _LENGTHS_OUTPUT)
    tp = t.column("lengths", "prompt tokens", _LENGTHS_PROMPT, exp)
    to = t.column("lengths", "output tokens", _LENGTHS_OUTPUT, exp)
    if len(t.df) == 0:
        raise TraceFormatError(f"{p}: no requests")
    prompt, output = t.ints(tp), t.ints(to)
    extra = {"session_id": _sessions_from_lengths(prompt, output)} if infer_sessions else None
    return _finish(p, "lengths", llm, None, prompt, output, extra)


def _load_burstgpt(p: Path) -> pd.DataFrame:
    t = _CSV(p)
    exp = _expected(_BURST_TIME, _BURST_MODEL, _BURST_PROMPT, _BURST_OUTPUT)
    tt = t.column("burstgpt", "arrival", _BURST_TIME, exp)
    tm = t.column("burstgpt", "model", _BURST_MODEL, exp)
    tp = t.column("burstgpt", "prompt tokens", _BURST_PROMPT, exp)
    to = t.column("burstgpt", "output tokens", _BURST_OUTPUT, exp)
    if len(t.df) == 0:
        raise TraceFormatError(f"{p}: no requests")
    return _finish(p, "burstgpt", t.strings(tm), t.floats(tt), t.ints(tp), t.ints(to))


def _json_int(v: Any) -> int | None:
    """``v`` as an int if it is a JSON integer (or an integral float), else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        return int(v)
    return None


def _json_num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _tokens(where: str, key: str, v: Any) -> int:
    n = _json_int(v)
    if n is None:
        raise TraceFormatError(f"{where}: {key!r} is not an integer ({v!r})")
    if n < 0:
        raise TraceFormatError(f"{where}: {key!r} is negative ({v!r})")
    if n > _MAX_TOKENS:
        raise TraceFormatError(f"{where}: {key!r} is too large ({v!r})")
    return n


def _load_mooncake(p: Path, llm: str) -> pd.DataFrame:
    ts: list[float] = []
    prompt: list[int] = []
    output: list[int] = []
    prefix: list[list[int]] = []
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
            missing = [k for k in _MOONCAKE_KEYS if k not in rec]
            if missing:
                raise TraceFormatError(
                    f"{where}: missing key(s) {missing}; expected keys: "
                    f"{list(_MOONCAKE_KEYS)} (optional 'hash_ids')"
                )
            t = _json_num(rec["timestamp"])
            if t is None:
                raise TraceFormatError(
                    f"{where}: 'timestamp' is not a finite number of ms ({rec['timestamp']!r})"
                )
            ts.append(t / 1000.0)
            prompt.append(_tokens(where, "input_length", rec["input_length"]))
            output.append(_tokens(where, "output_length", rec["output_length"]))
            h = rec.get("hash_ids", [])
            if "hash_ids" in rec:
                any_hash = True
            if not isinstance(h, list):
                raise TraceFormatError(f"{where}: 'hash_ids' is not a list ({h!r})")
            hh = [_json_int(x) for x in h]
            if any(x is None for x in hh):
                bad = h[[x is None for x in hh].index(True)]
                raise TraceFormatError(f"{where}: 'hash_ids' holds a non-integer ({bad!r})")
            prefix.append(hh)  # type: ignore[arg-type]
    extra = {"prefix_ids": prefix} if any_hash else None
    return _finish(
        p, "mooncake", llm, np.asarray(ts, dtype=np.float64), np.asarray(prompt, dtype=np.int64),
        np.asarray(output, dtype=np.int64), extra,
    )


def _load_json_document(p: Path) -> Any:
    text = p.read_text(encoding="utf-8-sig")
    if not text.strip():
        raise TraceFormatError(f"{p}: no requests (the file is empty)")
    try:
        return json.loads(text)
    except ValueError as e:
        if isinstance(e, json.JSONDecodeError):
            raise TraceFormatError(
                f"{p} line {e.lineno} column {e.colno}: malformed JSON ({e.msg})"
            ) from None
        raise TraceFormatError(f"{p}: malformed JSON ({e})") from None


def _pick(rec: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    for k in keys:
        if k in rec:
            return k
    return None


def _load_muxserve_workload(p: Path, llm: str) -> pd.DataFrame:
    doc = _load_json_document(p)
    if isinstance(doc, dict):
        if "requests" not in doc:
            raise TraceFormatError(
                f"{p}: expected a JSON list of request objects or an object with a 'requests' "
                f"list; found keys {sorted(doc)[:10]}"
            )
        doc = doc["requests"]
    if not isinstance(doc, list):
        raise TraceFormatError(
            f"{p}: expected a JSON list of request objects, got {type(doc).__name__}"
        )
    exp = _expected(_MUX_ARRIVAL, _MUX_PROMPT, _MUX_OUTPUT) + f" (optional {_expected(_MUX_LLM)})"
    names: list[str] = []
    ts: list[float] = []
    prompt: list[int] = []
    output: list[int] = []
    for i, rec in enumerate(doc):
        where = f"{p} records[{i}]"
        if not isinstance(rec, dict):
            raise TraceFormatError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        ka, kp, ko = _pick(rec, _MUX_ARRIVAL), _pick(rec, _MUX_PROMPT), _pick(rec, _MUX_OUTPUT)
        missing = [
            " or ".join(map(repr, g))
            for k, g in ((ka, _MUX_ARRIVAL), (kp, _MUX_PROMPT), (ko, _MUX_OUTPUT))
            if k is None
        ]
        if missing or ka is None or kp is None or ko is None:
            raise TraceFormatError(
                f"{where}: missing key {', '.join(missing)}; expected keys: {exp}"
            )
        km = _pick(rec, _MUX_LLM)
        if km is None:
            names.append(llm)
        else:
            v = rec[km]
            if not isinstance(v, str) or not v.strip():
                raise TraceFormatError(f"{where}: {km!r} is not a non-empty string ({v!r})")
            names.append(v)
        t = _json_num(rec[ka])
        if t is None:
            raise TraceFormatError(
                f"{where}: {ka!r} is not a finite number of seconds ({rec[ka]!r})"
            )
        ts.append(t)
        prompt.append(_tokens(where, kp, rec[kp]))
        output.append(_tokens(where, ko, rec[ko]))
    return _finish(
        p, "muxserve-workload", np.asarray(names, dtype=object), np.asarray(ts, dtype=np.float64),
        np.asarray(prompt, dtype=np.int64), np.asarray(output, dtype=np.int64),
    )


def _token_counter(tokenizer: Any, p: Path) -> Callable[[list[str]], list[int]]:
    """Turn the ``tokenizer`` argument into a function: texts -> token counts."""
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


def _load_sharegpt(p: Path, llm: str, tokenizer: Any, turns: str) -> pd.DataFrame:
    count = _token_counter(tokenizer, p)
    doc = _load_json_document(p)
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
            if w in _HUMAN:
                roles.append("h")
            elif w in _ASSISTANT:
                roles.append("g")
            elif w in _CONTEXT:
                roles.append("s")
            else:
                raise TraceFormatError(
                    f"{where}.conversations[{j}]: unknown speaker {who!r}; expected one of "
                    f"{sorted(_HUMAN | _ASSISTANT | _CONTEXT)}"
                )
        pairs = [j for j in range(len(roles) - 1) if roles[j] == "h" and roles[j + 1] == "g"]
        if not pairs:
            skipped += 1
            continue
        if turns == "first":
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
    counts = np.asarray(count(texts), dtype=np.int64)
    csum = np.concatenate([[0], np.cumsum(counts)])
    first = np.asarray(req_first, dtype=np.int64)
    human = np.asarray(req_human, dtype=np.int64)
    prompt = csum[human + 1] - csum[first]
    output = counts[human + 1]
    extra = {"session_id": np.asarray(req_conv, dtype=object)}
    return _finish(p, "sharegpt", llm, None, prompt, output, extra,
                   attrs={"skipped_conversations": skipped})


# --------------------------------------------------------------------------------------------
# Public API


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
      arrival times: the frame has no ``arrival_s`` (use :func:`assign_arrivals`).
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
        TraceFormatError: empty file or no rows ("no requests"); a missing column / key (the
            message lists the expected ones and their accepted alternatives); an empty cell,
            a negative or non-integer token count, a non-numeric time, malformed CSV or JSON
            (the message names the line, or ``records[i]`` for a JSON list); ``"sharegpt"``
            without a tokenizer; a format that cannot be detected.
        ValueError: unknown ``fmt`` or ``sharegpt_turns``.
        ImportError / OSError: ``tokenizer`` is a name but transformers is missing or the
            tokenizer is not available offline.
    """
    p = _check_file(path)
    if fmt is None:
        fmt = detect_format(p)
    if fmt not in TRACE_FORMATS:
        raise ValueError(f"fmt must be one of {TRACE_FORMATS}, got {fmt!r}")
    if sharegpt_turns not in ("first", "all"):
        raise ValueError(f"sharegpt_turns must be 'first' or 'all', got {sharegpt_turns!r}")
    if not isinstance(llm, str) or not llm:
        raise ValueError(f"llm must be a non-empty string, got {llm!r}")
    if infer_sessions and fmt != "lengths":
        raise ValueError(f"infer_sessions applies to fmt='lengths' only, not {fmt!r}")
    if fmt == "azure":
        df = _load_azure(p, llm)
    elif fmt == "mooncake":
        df = _load_mooncake(p, llm)
    elif fmt == "lengths":
        df = _load_lengths(p, llm, infer_sessions)
    elif fmt == "burstgpt":
        df = _load_burstgpt(p)
    elif fmt == "sharegpt":
        df = _load_sharegpt(p, llm, tokenizer, sharegpt_turns)
    else:
        df = _load_muxserve_workload(p, llm)
    return df


def assign_arrivals(
    df: pd.DataFrame,
    rate: float,
    seed: int,
    process: str = "poisson",
    cv: float = 1.0,
) -> pd.DataFrame:
    """Give each request of a trace an arrival time so it becomes a complete workload.

    One renewal process of mean rate ``rate`` for the whole frame (not one per LLM), drawn with
    :func:`muxsim.workload.arrival_times` from ``numpy.random.default_rng(seed)``: rows keep
    their order and request ``k`` gets the ``k``-th arrival, so ``request_id`` order stays the
    arrival order. As in :func:`~muxsim.workload.generate_workload`, the first arrival is one
    gap after 0 s (not re-zeroed). The window is grown until it holds ``len(df)`` arrivals;
    the result is a deterministic function of (``len(df)``, ``rate``, ``seed``, ``process``,
    ``cv``).

    Args:
        df: frame with ``request_id``, ``llm``, ``prompt_tokens``, ``output_tokens`` (e.g. from
            :func:`load_trace` with a length-only format); an existing ``arrival_s`` is
            replaced. Not modified.
        rate: mean arrival rate, req/s, finite and > 0.
        seed: integer >= 0.
        process: ``"poisson"`` or ``"gamma"``.
        cv: coefficient of variation of the gaps (``"gamma"`` only; 1 for ``"poisson"``).

    Returns:
        A copy of ``df`` with float64 ``arrival_s`` (s, ascending) placed after ``llm`` and the
        same ``attrs``.

    Raises:
        ValueError: missing workload columns, an empty frame, bad ``seed``, ``rate``,
            ``process`` or ``cv`` (see :func:`~muxsim.workload.arrival_times`).
    """
    need = ["request_id", "llm", "prompt_tokens", "output_tokens"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"assign_arrivals: missing column(s) {missing}; required {need}")
    n = len(df)
    if n == 0:
        raise ValueError("assign_arrivals: the frame has no requests")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise ValueError(f"rate must be a finite rate > 0 req/s, got {rate!r}")
    rate = float(rate)
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a finite rate > 0 req/s, got {rate!r}")
    sd = max(float(cv), 1.0) if math.isfinite(float(cv)) else 1.0
    duration = (n + 6.0 * sd * math.sqrt(n) + 16.0) / rate
    while True:
        t = arrival_times(np.random.default_rng(int(seed)), rate, duration, process, float(cv))
        if len(t) >= n:
            break
        duration *= 2.0
    out = df.copy()
    if "arrival_s" in out.columns:
        out = out.drop(columns="arrival_s")
    out.insert(list(out.columns).index("llm") + 1, "arrival_s", t[:n].astype(np.float64))
    out.attrs = dict(df.attrs)
    return out


def load_muxserve_rates(path: str | os.PathLike) -> pd.DataFrame:
    """Read a MuxServe per-LLM rate file (``models.yaml``, e.g. the ChatLMSYS benchmark's
    ``requests_over_time_*.yaml``) into one row per LLM.

    Expected YAML: ``models: [{name, model, rate}, ...]`` with optional top-level
    ``avg_prompt_len``, ``avg_output_len`` (tokens) and ``cluster: {nnodes, ngpus_per_node}``.

    Args:
        path: the YAML file.

    Returns:
        DataFrame (RangeIndex, file order) with columns ``llm`` str (the entry's ``name``),
        ``model`` str (catalog name: last part of the entry's ``model`` path, lower-cased, e.g.
        ``/ckpt/huggyllama/llama-13b`` -> ``llama-13b``; it must be in
        :data:`muxsim.catalog.MODELS`) and ``rate`` float64 (req/s, finite, >= 0). ``attrs``:
        ``source``, and where present ``avg_prompt_len``, ``avg_output_len`` (float tokens),
        ``nodes``, ``gpus_per_node`` (int).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        TraceFormatError: not YAML, no ``models`` list, or a bad entry (the message names it,
            ``models[i]``): missing key, duplicate name, unknown model, bad rate.
    """
    import yaml

    from ..catalog import MODELS

    p = _check_file(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as e:
        raise TraceFormatError(f"{p}: malformed YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), list) or not doc["models"]:
        raise TraceFormatError(
            f"{p}: expected a mapping with a non-empty 'models' list of {{name, model, rate}}"
        )
    names: list[str] = []
    models: list[str] = []
    rates: list[float] = []
    for i, m in enumerate(doc["models"]):
        where = f"{p} models[{i}]"
        if not isinstance(m, dict):
            raise TraceFormatError(f"{where}: expected a mapping with name, model, rate")
        missing = [k for k in ("name", "model", "rate") if k not in m]
        if missing:
            raise TraceFormatError(f"{where}: missing key(s) {missing}; expected name, model, rate")
        name = m["name"]
        if not isinstance(name, str) or not name:
            raise TraceFormatError(f"{where}: 'name' is not a non-empty string ({name!r})")
        if name in names:
            raise TraceFormatError(f"{where}: duplicate name {name!r}")
        where = f"{where} ({name!r})"
        src = str(m["model"]).rstrip("/")
        model = src.split("/")[-1].strip().lower()
        if model not in MODELS:
            raise TraceFormatError(
                f"{where}: model {model!r} (from {m['model']!r}) is not in muxsim.catalog.MODELS; "
                f"known: {', '.join(MODELS)}"
            )
        rate = _json_num(m["rate"])
        if rate is None or rate < 0:
            raise TraceFormatError(
                f"{where}: 'rate' is not a finite rate >= 0 req/s ({m['rate']!r})"
            )
        names.append(name)
        models.append(model)
        rates.append(rate)
    df = pd.DataFrame(
        {
            "llm": pd.Series(names, dtype=str),
            "model": pd.Series(models, dtype=str),
            "rate": np.asarray(rates, dtype=np.float64),
        }
    )
    df.attrs["source"] = str(p)
    for key in ("avg_prompt_len", "avg_output_len"):
        if key in doc:
            v = _json_num(doc[key])
            if v is None:
                raise TraceFormatError(f"{p}: {key!r} is not a finite number ({doc[key]!r})")
            df.attrs[key] = v
    cluster = doc.get("cluster")
    if isinstance(cluster, dict):
        for key, attr in (("nnodes", "nodes"), ("ngpus_per_node", "gpus_per_node")):
            if key in cluster:
                v = _json_int(cluster[key])
                if v is None or v < 1:
                    raise TraceFormatError(
                        f"{p}: cluster.{key} is not an integer >= 1 ({cluster[key]!r})"
                    )
                df.attrs[attr] = v
    return df
