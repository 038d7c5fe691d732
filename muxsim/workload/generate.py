"""Build, save and load multi-LLM request workloads (one row per request).

A workload read or saved here holds arrival times in ``[0, MAX_ARRIVAL_S]`` = ``[0, 1e9]`` s
(:data:`muxsim.workload.arrivals.MAX_ARRIVAL_S`, about 31.7 years) and token counts in
``[1, MAX_TOKENS]`` = ``[1, 2**53]`` (:data:`muxsim.workload.formats.common.MAX_TOKENS`);
anything else is refused with one line naming the file (or frame) and the column. A replay
(``muxsim trace``, ``workload.file``) reads a file with ``load_workload(path,
allow_empty=False)``, which also refuses a file with no rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from muxsim.files import atomic_file

from .arrivals import MAX_ARRIVAL_S, arrival_times
from .formats.common import MAX_TOKENS
from .lengths import LengthSampler

__all__ = [
    "WORKLOAD_COLUMNS",
    "checked_workload",
    "generate_workload",
    "load_workload",
    "save_workload",
]

#: Column -> kind of the workload table: "int" is stored as int64, "float" as float64,
#: "str" as a string column.
WORKLOAD_COLUMNS: dict[str, str] = {
    "request_id": "int",
    "llm": "str",
    "arrival_s": "float",
    "prompt_tokens": "int",
    "output_tokens": "int",
}


def generate_workload(
    llms: Sequence[str],
    rates: Sequence[float],
    duration_s: float,
    lengths: LengthSampler,
    seed: int,
    process: str = "poisson",
    cv: float = 1.0,
    max_requests_per_llm: int | Sequence[int] | None = None,
) -> pd.DataFrame:
    """Draw requests for several LLMs, each with its own arrival process, over one window.

    Seeding: ``numpy.random.SeedSequence(seed).spawn(len(llms))`` gives LLM ``i`` its own
    stream, and that stream is split again into one for arrivals and one for lengths. So the
    same arguments give an identical frame; appending an LLM leaves the other LLMs' requests
    unchanged; and swapping the length sampler does not move any arrival time.

    Args:
        llms: LLM names, unique, non-empty strings; at least one.
        rates: mean request rate of each LLM, req/s, finite and > 0 (same length as ``llms``;
            see :func:`muxsim.workload.popularity_rates`).
        duration_s: window length, s, > 0; every arrival lies in ``[0, duration_s)``.
        lengths: sampler of (prompt, output) tokens, e.g. ``EmpiricalLengths.sharegpt()``.
        seed: non-negative integer seed.
        process: ``"poisson"`` or ``"gamma"`` (see :func:`muxsim.workload.arrival_times`).
        cv: coefficient of variation of inter-arrival gaps for ``"gamma"``.
        max_requests_per_llm: if given, keep only each LLM's first this many arrivals: one
            number (>= 1) for every LLM, or one count (>= 0) per LLM in ``llms`` order (the
            reference benchmark's per-LLM request counts; an LLM with 0 gets no request).

    Returns:
        DataFrame with one row per request, sorted by ``arrival_s`` (stable: simultaneous
        arrivals keep the order of ``llms``) and a fresh RangeIndex; columns

        * ``request_id`` int64 -- 0 .. N-1 in arrival order
        * ``llm`` str -- name from ``llms``
        * ``arrival_s`` float64 -- arrival time, s
        * ``prompt_tokens`` int64 -- prompt (prefill) length, tokens
        * ``output_tokens`` int64 -- output (decode) length, tokens

    Raises:
        ValueError: mismatched or empty ``llms``/``rates``; duplicate or non-string names; a
            rate <= 0 or not finite (0 is refused: drop the LLM instead); bad ``seed``,
            ``max_requests_per_llm``, ``duration_s``, ``process`` or ``cv``.
    """
    llms = list(llms)
    rates = [float(r) for r in rates]
    if not llms:
        raise ValueError("llms must name at least one LLM")
    if len(llms) != len(rates):
        raise ValueError(
            f"llms and rates must have the same length, got {len(llms)} and {len(rates)}"
        )
    if not all(isinstance(m, str) and m for m in llms):
        raise ValueError(f"llms must be non-empty strings, got {llms!r}")
    if len(set(llms)) != len(llms):
        dup = sorted({m for m in llms if llms.count(m) > 1})
        raise ValueError(f"llms must be unique, duplicated: {dup}")
    for m, r in zip(llms, rates):
        if not (math.isfinite(r) and r > 0):
            raise ValueError(f"rate of {m!r} must be a finite rate > 0 req/s, got {r!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    caps = _caps(max_requests_per_llm, len(llms))

    names: list[np.ndarray] = []
    arrivals: list[np.ndarray] = []
    prompts: list[np.ndarray] = []
    outputs: list[np.ndarray] = []
    for name, rate, cap, child in zip(llms, rates, caps, np.random.SeedSequence(int(seed)).spawn(len(llms))):
        arr_ss, len_ss = child.spawn(2)
        t = arrival_times(np.random.default_rng(arr_ss), rate, duration_s, process, cv)
        if cap is not None:
            t = t[:cap]
        p, o = lengths.sample(np.random.default_rng(len_ss), len(t))
        if np.shape(p) != t.shape or np.shape(o) != t.shape:
            raise ValueError(f"{lengths!r}.sample returned shapes {np.shape(p)}, {np.shape(o)}; "
                             f"expected {t.shape}")
        names.append(np.full(len(t), name, dtype=object))
        arrivals.append(t)
        prompts.append(np.asarray(p, dtype=np.int64))
        outputs.append(np.asarray(o, dtype=np.int64))

    arrival = np.concatenate(arrivals).astype(np.float64, copy=False)
    # Stable sort over the LLM-ordered concatenation is what breaks ties by llms order.
    order = np.argsort(arrival, kind="stable")
    df = pd.DataFrame(
        {
            "request_id": np.arange(len(order), dtype=np.int64),
            "llm": pd.Series(np.concatenate(names)[order], dtype=str),
            "arrival_s": arrival[order],
            "prompt_tokens": np.concatenate(prompts)[order],
            "output_tokens": np.concatenate(outputs)[order],
        }
    )
    return df


def _is_int(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, np.integer))


def _caps(max_requests, n: int) -> list[int | None]:
    """Per-LLM caps of :func:`generate_workload`'s ``max_requests_per_llm``."""
    if max_requests is None:
        return [None] * n
    if _is_int(max_requests):
        if max_requests < 1:
            raise ValueError(f"max_requests_per_llm must be None or an integer >= 1, got {max_requests!r}")
        return [int(max_requests)] * n
    caps = list(max_requests) if isinstance(max_requests, (list, tuple, np.ndarray)) else None
    if caps is None or len(caps) != n or not all(_is_int(c) and c >= 0 for c in caps):
        raise ValueError(f"max_requests_per_llm must be None, an integer >= 1 or {n} integers >= 0 "
                         f"(one per LLM), got {max_requests!r}")
    return [int(c) for c in caps]


def checked_workload(df: pd.DataFrame, what: str) -> pd.DataFrame:
    """Check the workload schema, widen lossless dtypes, return the frame with a RangeIndex.

    Args:
        df: a frame with at least the :data:`WORKLOAD_COLUMNS`; not modified.
        what: names the frame in error messages (e.g. a file path).

    Returns:
        A copy with a RangeIndex, ``request_id`` / token columns int64, ``arrival_s`` float64,
        ``llm`` str; other columns kept.

    Raises:
        ValueError: a missing column, a column of the wrong kind or with missing values (or
            ``llm`` with empty names), an integer beyond int64, duplicate ``request_id``
            values, ``arrival_s`` not finite, in ``[0, MAX_ARRIVAL_S]`` s and ascending, or a
            token count outside ``[1, MAX_TOKENS]``.
    """
    missing = [c for c in WORKLOAD_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; required {list(WORKLOAD_COLUMNS)}")
    out = df.reset_index(drop=True).copy()
    for col, kind in WORKLOAD_COLUMNS.items():
        s = out[col]
        if kind == "int":
            if not pd.api.types.is_integer_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
                raise ValueError(f"{what}: column {col!r} must be integer (int64), got {s.dtype}")
            # A nullable Int64 column can hold <NA>, which no int64 holds.
            if s.isna().any():
                raise ValueError(f"{what}: column {col!r} has missing values")
            # uint64 above the int64 range would wrap around to negative numbers in astype.
            if len(s) and int(s.max()) > np.iinfo(np.int64).max:
                raise ValueError(f"{what}: column {col!r} holds {int(s.max())}, beyond int64")
            out[col] = s.astype(np.int64)
        elif kind == "float":
            if not (pd.api.types.is_float_dtype(s.dtype) or pd.api.types.is_integer_dtype(s.dtype)):
                raise ValueError(f"{what}: column {col!r} must be float64 seconds, got {s.dtype}")
            out[col] = s.astype(np.float64)
        else:
            if isinstance(s.dtype, pd.StringDtype):
                ok = not s.isna().any()
            else:
                ok = s.dtype == object and all(isinstance(v, str) for v in s)
            if not ok:
                raise ValueError(
                    f"{what}: column {col!r} must hold strings with no missing values, "
                    f"got dtype {s.dtype}"
                )
            if (s.astype(str).str.strip() == "").any():
                raise ValueError(f"{what}: column {col!r} holds an empty LLM name")
            # Same dtype as generate_workload gives (object on pandas 2, str on pandas 3).
            out[col] = s.astype(str)
    if out["request_id"].duplicated().any():
        raise ValueError(f"{what}: column 'request_id' has duplicate ids")
    t = out["arrival_s"].to_numpy()
    if not np.all(np.isfinite(t)) or (len(t) and t.min() < 0):
        raise ValueError(f"{what}: column 'arrival_s' must be finite and >= 0 s")
    if len(t) and t.max() > MAX_ARRIVAL_S:
        i = int(np.argmax(t > MAX_ARRIVAL_S))
        raise ValueError(f"{what}: column 'arrival_s' holds {t[i]:g} s (row {i}); arrival times "
                         f"must lie in [0, {MAX_ARRIVAL_S:g}] s (MAX_ARRIVAL_S, about 31.7 years)")
    if np.any(np.diff(t) < 0):
        raise ValueError(f"{what}: column 'arrival_s' must be sorted ascending")
    for col in ("prompt_tokens", "output_tokens"):
        if len(out) and out[col].min() < 1:
            raise ValueError(f"{what}: column {col!r} must be >= 1 token")
        if len(out) and out[col].max() > MAX_TOKENS:
            raise ValueError(f"{what}: column {col!r} holds {int(out[col].max())} tokens; token "
                             f"counts must lie in [1, {MAX_TOKENS}] (MAX_TOKENS, 2**53)")
    return out


def save_workload(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a workload to Parquet atomically, so a reader never sees a half-written file.

    Schema (Parquet/Arrow types): ``request_id`` int64, ``llm`` string (UTF-8),
    ``arrival_s`` double (s), ``prompt_tokens`` int64 (tokens), ``output_tokens`` int64
    (tokens); no index column. Columns beyond these are written unchanged. The frame is
    first written to a temporary file in the target directory and then moved into place
    with ``os.replace``.

    Args:
        df: a workload as returned by :func:`generate_workload`.
        path: destination file (conventionally ``*.parquet``); its directory must exist.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``df`` does not match the schema (names the column), has duplicate
            request ids, arrivals not finite, outside ``[0, MAX_ARRIVAL_S]`` s or unsorted, or
            lengths outside ``[1, MAX_TOKENS]`` tokens (see :func:`checked_workload`).
    """
    path = Path(path)
    out = checked_workload(df, "workload to save")
    table = pa.Table.from_pandas(out, preserve_index=False)
    # pandas >= 3 writes large_string; pin plain string so the file schema does not depend on
    # the pandas version that wrote it.
    i = table.schema.get_field_index("llm")
    table = table.set_column(i, pa.field("llm", pa.string()), table.column(i).cast(pa.string()))
    # a saved workload is meant to be shared and replayed: readable by all, whatever the umask
    with atomic_file(path, mode=0o644) as tmp:
        pq.write_table(table, tmp)
    return path


def load_workload(path: str | Path, *, allow_empty: bool = True) -> pd.DataFrame:
    """Read a workload written by :func:`save_workload` (or any Parquet file with its schema).

    Integer columns of a narrower width and an integer ``arrival_s`` are widened to int64 /
    float64; anything else that does not match the schema is refused.

    Args:
        path: Parquet file.
        allow_empty: whether a file with no rows is returned (as an empty frame, the round
            trip of :func:`save_workload`); False refuses it, as a replay must: an empty
            workload has no rates to place and nothing to serve.

    Returns:
        DataFrame with the columns of :func:`generate_workload` (plus any extra columns in
        the file) and a RangeIndex.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a readable Parquet file; no rows ("no requests") with
            ``allow_empty=False``; a required column is missing, has the wrong type or missing
            values (names it); request ids repeat; arrivals are not finite, outside
            ``[0, MAX_ARRIVAL_S]`` s or unsorted; or a length is outside ``[1, MAX_TOKENS]``
            tokens (see :func:`checked_workload`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"workload file not found: {path}")
    try:
        df = pd.read_parquet(path, engine="pyarrow")
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: not a readable Parquet workload ({first})") from None
    out = checked_workload(df, str(path))
    # An empty workload replays nothing: every rate derived from it would be 0 / 0.
    if out.empty and not allow_empty:
        raise ValueError(f"{path}: no requests (the workload has no rows)")
    return out
