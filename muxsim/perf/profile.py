"""Loader for the MuxServe latency-profile format.

The format (hao-ai-lab/MuxServe, ``examples/placement/llama.json``; our copy is
``../shared/data/profiles/muxserve_llama_a100_80g.json``, measured on A100-80GB) nests
``model -> #GPUs -> SM % -> batch -> seq -> {"prefill": ms, "decoding": ms}``; every key is a
string of an integer except the model name, and ``-1`` means "not measured".

Prefill latency is for one job over ``batch`` prompts of ``seq`` tokens each (``batch x seq``
prompt tokens); decoding latency is one iteration for ``batch`` requests whose KV caches hold
``batch x seq`` tokens in all (../shared/docs/muxserve.md §7).

What :func:`load_profile` refuses, with one line naming the file and the key path: a model not
in :data:`muxsim.catalog.MODELS` (by profile name or catalog name; the message lists them), an
integer key that is not in ``[1, MAX_KEY]`` (2**53), an SM share above 100, a latency that is
not -1 nor within ``[MIN_LATENCY_MS, MAX_LATENCY_MS]`` = ``[1e-3, 1e9]`` ms (a microsecond to
about 11.6 days: beyond either, the file is not in ms or is corrupt), and a profile with no
measured point.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from muxsim.catalog import MODELS

__all__ = ["MAX_KEY", "MAX_LATENCY_MS", "MIN_LATENCY_MS", "PROFILE_COLUMNS", "load_profile",
           "parse_profile", "profile_model_names"]

#: Columns of the frame returned by :func:`load_profile`, in order.
PROFILE_COLUMNS = ["model", "n_gpus", "sm_pct", "batch", "seq", "prefill_ms", "decode_ms"]

#: Leaf keys of the format, mapped to our column names.
_LEAF_KEYS = {"prefill": "prefill_ms", "decoding": "decode_ms"}

#: Largest integer key (#GPUs, batch, seq): integers above 2**53 are not exact in float64.
MAX_KEY = 2**53

#: Accepted latencies, ms: a microsecond to about 11.6 days.
MIN_LATENCY_MS = 1e-3
MAX_LATENCY_MS = 1e9


def profile_model_names() -> list[str]:
    """Model names a profile or calibration may hold: every catalog model's profile name and
    catalog name (lower case), sorted."""
    return sorted({m.name for m in MODELS.values()}
                  | {m.profile_name for m in MODELS.values() if m.profile_name})


def _int_key(key: object, what: str, where: str) -> int:
    try:
        value = int(str(key))
    except ValueError:
        raise ValueError(f"{where}: {what} key {key!r} is not an integer") from None
    if value <= 0:
        raise ValueError(f"{where}: {what} key {key!r} must be positive")
    if value > MAX_KEY:
        raise ValueError(f"{where}: {what} key {key!r} is too large (at most 2**53)")
    return value


def _mapping(node: object, what: str, where: str) -> dict:
    if not isinstance(node, dict):
        # ValueError, not TypeError: a malformed file is reported as one ValueError (docstrings).
        raise ValueError(  # noqa: TRY004
            f"{where}: expected an object of {what} keys, got {type(node).__name__} "
            "(format: model -> #GPUs -> SM% -> batch -> seq -> {prefill, decoding})"
        )
    return node


def _latency(value: object, where: str) -> float:
    # bool is an int subclass; a true/false here is a malformed file, not a latency.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: latency {value!r} is not a number")  # noqa: TRY004
    if value == -1:
        return math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: latency {value!r} must be positive ms or -1 (not measured)")
    if not MIN_LATENCY_MS <= value <= MAX_LATENCY_MS:
        raise ValueError(f"{where}: latency {value!r} ms is out of range; latencies must be -1 "
                         f"(not measured) or in [{MIN_LATENCY_MS:g}, {MAX_LATENCY_MS:g}] ms")
    return float(value)


def parse_profile(data: object, origin: str = "<profile>") -> pd.DataFrame:
    """Flatten an already-decoded MuxServe profile object into a frame.

    Args:
        data: the decoded JSON object (see module docstring for the nesting).
        origin: name used in error messages (usually the file path).

    Returns:
        DataFrame with one row per (model, n_gpus, sm_pct, batch, seq) and columns
        :data:`PROFILE_COLUMNS`: ``model`` (str), ``n_gpus``/``sm_pct`` (%)/``batch``/``seq``
        (tokens per sequence) as int64, ``prefill_ms``/``decode_ms`` as float64 in
        milliseconds, NaN where the profile says -1. Sorted by the key columns.

    Raises:
        ValueError: one-line message naming the offending key path when the nesting, a key
            (a model not in the catalog: the message lists the allowed names), or a value is
            malformed (see the module docstring), or when no point is present or measured.
    """
    rows: list[tuple] = []
    allowed = profile_model_names()
    for model, by_gpus in _mapping(data, "model", origin).items():
        w_m = f"{origin}[{model!r}]"
        if str(model).strip().lower() not in allowed:
            raise ValueError(f"{w_m}: model {model!r} is not in the catalog; allowed: "
                             f"{', '.join(allowed)}")
        for g_key, by_sm in _mapping(by_gpus, "#GPUs", w_m).items():
            w_g = f"{w_m}[{g_key!r}]"
            n_gpus = _int_key(g_key, "#GPUs", w_m)
            for s_key, by_batch in _mapping(by_sm, "SM%", w_g).items():
                w_s = f"{w_g}[{s_key!r}]"
                sm = _int_key(s_key, "SM%", w_g)
                if sm > 100:
                    raise ValueError(f"{w_g}: SM% key {s_key!r} exceeds 100")
                for b_key, by_seq in _mapping(by_batch, "batch", w_s).items():
                    w_b = f"{w_s}[{b_key!r}]"
                    batch = _int_key(b_key, "batch", w_s)
                    for q_key, leaf in _mapping(by_seq, "seq", w_b).items():
                        w_q = f"{w_b}[{q_key!r}]"
                        seq = _int_key(q_key, "seq", w_b)
                        leaf = _mapping(leaf, "prefill/decoding", w_q)
                        missing = [k for k in _LEAF_KEYS if k not in leaf]
                        if missing:
                            raise ValueError(f"{w_q}: missing key(s) {', '.join(missing)}")
                        rows.append(
                            (
                                str(model),
                                n_gpus,
                                sm,
                                batch,
                                seq,
                                _latency(leaf["prefill"], f"{w_q}['prefill']"),
                                _latency(leaf["decoding"], f"{w_q}['decoding']"),
                            )
                        )
    if not rows:
        raise ValueError(f"{origin}: profile holds no measurement points")
    if all(math.isnan(r[5]) and math.isnan(r[6]) for r in rows):
        raise ValueError(f"{origin}: profile holds no measured point (every latency is -1, "
                         f"not measured)")
    df = pd.DataFrame(rows, columns=PROFILE_COLUMNS)
    df = df.astype(
        {"n_gpus": "int64", "sm_pct": "int64", "batch": "int64", "seq": "int64",
         "prefill_ms": "float64", "decode_ms": "float64"}
    )
    return df.sort_values(PROFILE_COLUMNS[:5], ignore_index=True)


def load_profile(path: str | Path) -> pd.DataFrame:
    """Read a MuxServe latency profile JSON file into a flat frame.

    Args:
        path: file in the MuxServe profile format, e.g.
            ``../shared/data/profiles/muxserve_llama_a100_80g.json``.

    Returns:
        See :func:`parse_profile` (latencies in ms, NaN = not measured).

    Raises:
        ValueError: the file is missing or unreadable, is not valid JSON, is not in the
            expected nesting, or breaks a rule of the module docstring (a model not in the
            catalog, a key or latency out of range, no measured point); the one-line message
            names the path and key.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"profile file not found: {p}") from None
    except OSError as exc:
        raise ValueError(f"cannot read profile file {p}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{p}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    return parse_profile(data, origin=str(p))
