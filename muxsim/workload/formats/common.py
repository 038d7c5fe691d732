"""Parsing shared by the trace formats: the error type, CSV and JSON readers, and the one
function that turns parsed columns into a workload frame.

Every format module reads its file with these helpers, so the rules of
:func:`muxsim.workload.load_trace` (stable arrival sort, re-zeroed times, zero-token rows
dropped and counted, one-line errors naming the file and line or record) hold for all of them.

Bounds every format keeps: a raw timestamp is finite with ``|t| <=`` :data:`MAX_TIMESTAMP_S`
(1e12 s, about 31,700 years; Unix time is about 1.7e9 s), a trace spans at most
:data:`MAX_ARRIVAL_S` (1e9 s, about 31.7 years: every re-zeroed ``arrival_s`` lies in
``[0, 1e9]`` s), and a token count is an integer in ``[0, MAX_TOKENS]`` (2**53; rows with 0 are
dropped, so a kept request has ``[1, MAX_TOKENS]``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..arrivals import MAX_ARRIVAL_S

__all__ = [
    "MAX_ARRIVAL_S",
    "MAX_TIMESTAMP_S",
    "MAX_TOKENS",
    "CsvTrace",
    "TraceFormatError",
    "check_file",
    "check_timestamp",
    "expected_columns",
    "first_key",
    "json_int",
    "json_num",
    "json_tokens",
    "read_json_document",
    "trace_frame",
]

#: Largest accepted token count: integers above 2**53 are not exact in float64.
MAX_TOKENS = 2**53

#: Largest accepted magnitude of a raw timestamp, s (before re-zeroing): 1e12 s keeps the
#: re-zeroed times exact to about 0.1 ms in float64 and still holds Unix times (~1.7e9 s).
MAX_TIMESTAMP_S = 1e12


class TraceFormatError(ValueError):
    """A trace file is not valid for its format.

    The message is one line naming the file, where the problem is (``line N``, 1-based as in
    the file, for CSV and JSONL; ``records[i]``, the 0-based list index, for a JSON list) and
    what is wrong, e.g. ``trace.csv line 7: column 'num_decode_tokens' is not an integer ('abc')``.
    """


def check_file(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`~pathlib.Path`.

    Raises:
        FileNotFoundError: ``path`` is not an existing file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"trace file not found: {p}")
    return p


def _timestamp_range(unit: str = "s") -> str:
    scale = 1000.0 if unit == "ms" else 1.0
    return f"timestamps must be finite and within +-{MAX_TIMESTAMP_S * scale:g} {unit} (MAX_TIMESTAMP_S)"


def check_timestamp(where: str, key: str, t_s: float, raw: Any, unit: str = "s") -> float:
    """``t_s`` (the value of ``key`` in s; ``raw`` as the file holds it, in ``unit``) if its
    magnitude is at most :data:`MAX_TIMESTAMP_S`.

    Raises:
        TraceFormatError: ``"<where>: '<key>' is out of range (<raw>); timestamps must be ..."``.
    """
    if not abs(t_s) <= MAX_TIMESTAMP_S:
        raise TraceFormatError(f"{where}: {key!r} is out of range ({raw!r}); {_timestamp_range(unit)}")
    return t_s


# --------------------------------------------------------------------------------------------
# CSV


class CsvTrace:
    """A CSV trace read as strings, with typed column accessors whose errors name the file line.

    Attributes:
        path: the file.
        df: every cell as a ``str`` (header names stripped; no NA conversion), RangeIndex.

    Raises (constructor):
        TraceFormatError: empty file ("no requests"), a row with more or fewer fields than the
            header (naming its line), other malformed CSV, or text that is not UTF-8.
    """

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
        """The first of ``names`` that is a column.

        Args:
            fmt: format name, for the message.
            role: what the column holds (e.g. ``"prompt tokens"``), for the message.
            names: accepted column names, in order of preference.
            expected: every expected column of the format (:func:`expected_columns`).

        Raises:
            TraceFormatError: none of ``names`` is a column; lists ``expected`` and the found
                columns.
        """
        for n in names:
            if n in self.df.columns:
                return n
        alt = " or ".join(repr(n) for n in names)
        raise TraceFormatError(
            f"{self.path}: missing column {alt} ({role}) for format {fmt!r}; "
            f"expected columns: {expected}; found: {list(self.df.columns)}"
        )

    def fail(self, i: int, msg: str) -> TraceFormatError:
        """The error (to raise) for data row ``i``: ``"<file> line <N>: <msg>"``."""
        return TraceFormatError(f"{self.path} line {self.line_of(i)}: {msg}")

    def _nonempty(self, col: str) -> pd.Series:
        s = self.df[col].str.strip()
        empty = (s == "").to_numpy()
        if empty.any():
            raise self.fail(int(np.argmax(empty)), f"column {col!r} is empty")
        return s

    def ints(self, col: str) -> np.ndarray:
        """Column as int64 token counts >= 0 (integral floats such as ``12.0`` accepted).

        Raises:
            TraceFormatError: an empty cell, or a value that is not an integer, is negative or
                is above :data:`MAX_TOKENS` (the first such row's line).
        """
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
        big = num > MAX_TOKENS
        if big.any():
            i = int(np.argmax(big))
            raise self.fail(i, f"column {col!r} is too large ({s.iloc[i]!r}); token counts must "
                               f"be at most {MAX_TOKENS} (MAX_TOKENS, 2**53)")
        return num.astype(np.int64)

    def _in_range(self, col: str, s: pd.Series, num: np.ndarray) -> np.ndarray:
        big = np.abs(num) > MAX_TIMESTAMP_S
        if big.any():
            i = int(np.argmax(big))
            raise self.fail(i, f"column {col!r} is out of range ({s.iloc[i]!r}); {_timestamp_range()}")
        return num

    def floats(self, col: str) -> np.ndarray:
        """Column as finite float64 numbers (seconds), each within +-:data:`MAX_TIMESTAMP_S`.

        Raises:
            TraceFormatError: an empty cell, a value that is not a finite number or one beyond
                :data:`MAX_TIMESTAMP_S`.
        """
        s = self._nonempty(col)
        num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(num)
        if bad.any():
            i = int(np.argmax(bad))
            raise self.fail(i, f"column {col!r} is not a finite number of seconds ({s.iloc[i]!r})")
        return self._in_range(col, s, num)

    def times(self, col: str) -> np.ndarray:
        """Column as float64 seconds: if every cell is a number, the numbers (s, each within
        +-:data:`MAX_TIMESTAMP_S`); otherwise ISO-8601 datetimes, as seconds since the earliest
        (time zones converted to UTC).

        Raises:
            TraceFormatError: an empty cell, a cell that is neither a number nor a datetime, or
                a number beyond :data:`MAX_TIMESTAMP_S`.
        """
        s = self._nonempty(col)
        num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isfinite(num).all():
            return self._in_range(col, s, num)
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
        """Column as an object array of stripped strings.

        Raises:
            TraceFormatError: an empty cell.
        """
        return self._nonempty(col).to_numpy(dtype=object)


def expected_columns(*groups: Sequence[str]) -> str:
    """Error-message text for a format's columns: one group per role, alternatives joined by
    ``or``, e.g. ``'arrived_at' or 'TIMESTAMP', 'num_prefill_tokens' or 'ContextTokens'``."""
    return ", ".join(" or ".join(repr(n) for n in g) for g in groups)


# --------------------------------------------------------------------------------------------
# JSON


def json_int(v: Any) -> int | None:
    """``v`` as an int if it is a JSON integer (or an integral float), else None (booleans too)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        return int(v)
    return None


def json_num(v: Any) -> float | None:
    """``v`` as a float if it is a finite JSON number, else None (booleans too)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def json_tokens(where: str, key: str, v: Any) -> int:
    """``v`` (the value of ``key``) as a token count in ``[0, MAX_TOKENS]``.

    Raises:
        TraceFormatError: ``"<where>: '<key>' is not an integer / is negative / is too large"``.
    """
    n = json_int(v)
    if n is None:
        raise TraceFormatError(f"{where}: {key!r} is not an integer ({v!r})")
    if n < 0:
        raise TraceFormatError(f"{where}: {key!r} is negative ({v!r})")
    if n > MAX_TOKENS:
        raise TraceFormatError(f"{where}: {key!r} is too large ({v!r}); token counts must be at "
                               f"most {MAX_TOKENS} (MAX_TOKENS, 2**53)")
    return n


def read_json_document(p: Path) -> Any:
    """The whole file parsed as one JSON document (UTF-8, optional BOM).

    Raises:
        TraceFormatError: an empty file ("no requests"), or malformed JSON (naming its line and
            column).
    """
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


def first_key(rec: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    """The first of ``keys`` present in ``rec``, or None."""
    for k in keys:
        if k in rec:
            return k
    return None


# --------------------------------------------------------------------------------------------
# Assembling the result


def trace_frame(
    p: Path,
    fmt: str,
    llm: np.ndarray | str,
    arrival: np.ndarray | None,
    prompt: np.ndarray,
    output: np.ndarray,
    extra: dict[str, Any] | None = None,
    attrs: dict[str, Any] | None = None,
    locate: Callable[[int], str] | None = None,
) -> pd.DataFrame:
    """The workload frame of one parsed trace (the common rules of ``load_trace``).

    Args:
        p: the file (``attrs["source"]``, and messages).
        fmt: the format name (``attrs["format"]``).
        llm: one name for every row, or an array of ``N`` names.
        arrival: ``N`` arrival times in s, or None for a length-only format (no ``arrival_s``).
        prompt, output: ``N`` token counts each.
        extra: more columns, ``name -> N values`` (an array, or a list of one Python object per
            row such as Mooncake's lists of hash ids), placed after ``output_tokens``.
        attrs: more ``attrs`` entries.
        locate: where row ``i`` (0-based, file order) is in the file, for messages (e.g.
            ``"line 7"`` or ``"records[6]"``).

    Returns:
        Rows with 0 prompt or 0 output tokens dropped (counted in ``attrs["dropped_rows"]``),
        the rest stably sorted by arrival, ``request_id`` 0..n-1 and ``arrival_s`` re-zeroed so
        the first is 0 s; columns ``request_id``, ``llm``, [``arrival_s``], ``prompt_tokens``,
        ``output_tokens``, then ``extra`` (an object ``session_id`` becomes str).

    Raises:
        TraceFormatError: no rows, none left after dropping zero-token rows, or arrivals that
            span more than :data:`MAX_ARRIVAL_S` (names the first row beyond it).
    """
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
        rel = t - t[0]
        late = rel > MAX_ARRIVAL_S
        if late.any():
            k = int(np.argmax(late))
            loc = f" {locate(int(idx[k]))}" if locate is not None else ""
            raise TraceFormatError(
                f"{p}{loc}: arrival {rel[k]:.6g} s after the first request; a trace may span at "
                f"most {MAX_ARRIVAL_S:g} s (MAX_ARRIVAL_S, about 31.7 years)"
            )
        cols["arrival_s"] = rel
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
