"""MuxServe's files: ``"muxserve-workload"`` request lists (JSON) and per-LLM rate files
(``models.yaml``, read by :func:`load_muxserve_rates`, not a trace format).

``"muxserve-workload"`` is our reading of MuxServe's workload generator output (we have no
sample): a JSON list of request objects, or ``{"requests": [...]}``, each with the LLM
(optional; else the ``llm`` argument) under :data:`LLM`, the arrival (s) under :data:`ARRIVAL`,
the prompt and output token counts under :data:`PROMPT` and :data:`OUTPUT` (first present key
wins). Details and the rate files' figures: traces/README.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .common import (
    TraceFormatError,
    check_file,
    check_timestamp,
    expected_columns,
    first_key,
    json_int,
    json_num,
    json_tokens,
    read_json_document,
    trace_frame,
)
from .sniff import json_keys_rule, json_record_rule

__all__ = [
    "ARRIVAL",
    "LLM",
    "OUTPUT",
    "PROMPT",
    "SNIFF",
    "load_muxserve_rates",
    "load_muxserve_workload",
]

# Accepted keys per role, in order of preference.
LLM = ("model", "model_name", "llm")
ARRIVAL = ("arrival_time", "arrival_s", "timestamp")
PROMPT = ("prompt_len", "input_len", "prompt_tokens")
OUTPUT = ("output_len", "output_tokens")

_REQUEST_KEYS = frozenset(ARRIVAL + PROMPT + OUTPUT)
SNIFF = (
    json_record_rule(lambda rec: "requests" in rec or bool(_REQUEST_KEYS & set(rec))),
    json_keys_rule(("requests", *ARRIVAL, *PROMPT, *OUTPUT)),
)


def load_muxserve_workload(p: Path, *, llm: str) -> pd.DataFrame:
    """Read a MuxServe workload JSON (see the module docstring for its keys).

    Args:
        p: the file.
        llm: LLM name of the requests without an LLM key.

    Returns:
        The workload frame of :func:`muxsim.workload.load_trace` (``arrival_s`` in s).

    Raises:
        TraceFormatError: malformed JSON, not a list (or ``{"requests": [...]}``), or a record
            (named ``records[i]``) that is not an object, lacks a key or has a bad value (a
            time not finite, beyond ``MAX_TIMESTAMP_S`` or more than ``MAX_ARRIVAL_S`` after
            the first request; :mod:`.common`).
    """
    doc = read_json_document(p)
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
    exp = expected_columns(ARRIVAL, PROMPT, OUTPUT) + f" (optional {expected_columns(LLM)})"
    names: list[str] = []
    ts: list[float] = []
    prompt: list[int] = []
    output: list[int] = []
    for i, rec in enumerate(doc):
        where = f"{p} records[{i}]"
        if not isinstance(rec, dict):
            raise TraceFormatError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        ka, kp, ko = first_key(rec, ARRIVAL), first_key(rec, PROMPT), first_key(rec, OUTPUT)
        missing = [
            " or ".join(map(repr, g))
            for k, g in ((ka, ARRIVAL), (kp, PROMPT), (ko, OUTPUT))
            if k is None
        ]
        if missing or ka is None or kp is None or ko is None:
            raise TraceFormatError(
                f"{where}: missing key {', '.join(missing)}; expected keys: {exp}"
            )
        km = first_key(rec, LLM)
        if km is None:
            names.append(llm)
        else:
            v = rec[km]
            if not isinstance(v, str) or not v.strip():
                raise TraceFormatError(f"{where}: {km!r} is not a non-empty string ({v!r})")
            names.append(v)
        t = json_num(rec[ka])
        if t is None:
            raise TraceFormatError(
                f"{where}: {ka!r} is not a finite number of seconds ({rec[ka]!r})"
            )
        ts.append(check_timestamp(where, ka, t, rec[ka]))
        prompt.append(json_tokens(where, kp, rec[kp]))
        output.append(json_tokens(where, ko, rec[ko]))
    return trace_frame(
        p, "muxserve-workload", np.asarray(names, dtype=object), np.asarray(ts, dtype=np.float64),
        np.asarray(prompt, dtype=np.int64), np.asarray(output, dtype=np.int64),
        locate=lambda i: f"records[{i}]",
    )


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

    from ...catalog import MODELS

    p = check_file(path)
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
        rate = json_num(m["rate"])
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
            v = json_num(doc[key])
            if v is None:
                raise TraceFormatError(f"{p}: {key!r} is not a finite number ({doc[key]!r})")
            df.attrs[key] = v
    cluster = doc.get("cluster")
    if isinstance(cluster, dict):
        for key, attr in (("nnodes", "nodes"), ("ngpus_per_node", "gpus_per_node")):
            if key in cluster:
                v = json_int(cluster[key])
                if v is None or v < 1:
                    raise TraceFormatError(
                        f"{p}: cluster.{key} is not an integer >= 1 ({cluster[key]!r})"
                    )
                df.attrs[attr] = v
    return df
