"""The bad-input corpus of DATA files (issue 12, items 5 and 6).

Every case builds one small bad file in the test folder -- a workload Parquet, a trace of each
format of ``muxsim.workload.formats`` (azure, lengths, burstgpt, mooncake, muxserve workload
and rates, sharegpt, parquet), a synthesis spec, a MuxServe profile, a calibration Parquet
table or a live run's job table -- runs the command that reads it in-process, and asserts
(:func:`_badinput.check_bad_input`) exactly one ``error:`` line naming the problem, exit code
2, no traceback, nothing written or changed under the test folder, in under 10 s. No data row
comes from ../shared/data: every file is synthesized here. ``test_valid_baselines`` checks
that the good file each family starts from is accepted, so that a case fails for its own
reason.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _badinput import check_bad_input, invoke

ROOT = Path(__file__).resolve().parents[1]
GPU = "a100-80gb"


# --------------------------------------------------------------------------------------------
# File builders (each writes into the test folder and returns the path)


def text(tmp: Path, name: str, content: str) -> Path:
    p = tmp / name
    p.write_text(content)
    return p


def csv(tmp: Path, name: str, header: str, *rows: str) -> Path:
    return text(tmp, name, "\n".join([header, *rows]) + "\n")


def jsonl(tmp: Path, name: str, *records) -> Path:
    return text(tmp, name, "".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                                   for r in records))


def jsondoc(tmp: Path, name: str, doc) -> Path:
    return text(tmp, name, doc if isinstance(doc, str) else json.dumps(doc))


def workload(tmp: Path, name: str = "w.parquet", n: int = 4, **cols) -> Path:
    """A valid workload Parquet of ``n`` requests of llm-0/llm-1, with ``cols`` replaced."""
    df = pd.DataFrame({
        "request_id": np.arange(n, dtype=np.int64),
        "llm": pd.Series([f"llm-{i % 2}" for i in range(n)], dtype="str"),
        "arrival_s": np.arange(n, dtype=np.float64),
        "prompt_tokens": np.full(n, 16, dtype=np.int64),
        "output_tokens": np.full(n, 8, dtype=np.int64),
    })
    for k, v in cols.items():
        df[k] = v
    p = tmp / name
    df.to_parquet(p, index=False)
    return p


def empty_workload(tmp: Path, name: str = "empty.parquet") -> Path:
    return workload(tmp, name, n=0)


def config(tmp: Path, wl: Path) -> Path:
    """experiments/zipf_alpha.yaml reduced, replaying ``wl`` (its 19 LLMs are llm-0..llm-18)."""
    cfg = yaml.safe_load((ROOT / "experiments" / "zipf_alpha.yaml").read_text())
    cfg["workload"] = {"file": str(wl)}
    cfg["strategies"] = ["muxserve"]
    p = tmp / "replay.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


AZURE = "arrived_at,num_prefill_tokens,num_decode_tokens"
AZURE_RAW = "TIMESTAMP,ContextTokens,GeneratedTokens"
LENGTHS = "num_prefill_tokens,num_decode_tokens"
BURST = "Timestamp,Model,Request tokens,Response tokens"


def mooncake(t, i=16, o=8, **more) -> dict:
    return {"timestamp": t, "input_length": i, "output_length": o, **more}


def muxreq(t, p=16, o=8) -> dict:
    return {"arrival_time": t, "prompt_len": p, "output_len": o}


def conv(*turns) -> dict:
    return {"id": "c", "conversations": [{"from": w, "value": v} for w, v in turns]}


def azure_ok(tmp: Path) -> Path:
    return csv(tmp, "az.csv", AZURE, "0.0,16,8", "1.5,32,4", "3.0,8,8")


def lengths_ok(tmp: Path) -> Path:
    return csv(tmp, "len.csv", LENGTHS, "16,8", "32,4")


def spec(tmp: Path, body: dict, name: str = "spec.yaml") -> Path:
    return text(tmp, name, yaml.safe_dump(body))


def rates(tmp: Path, models, name: str = "models.yaml") -> Path:
    return text(tmp, name, yaml.safe_dump({"models": models}))


def profile(model="llama-7b", gpus="1", sms=("100",), batches=(1, 2, 4, 8, 16),
            seqs=(32, 64, 128, 256), lat=None) -> dict:
    """A MuxServe-format profile (model -> #GPUs -> SM% -> batch -> seq -> latencies, ms)."""
    lat = lat or (lambda b, s: (5 + 0.1 * b * s, 3 + 0.2 * b + 0.002 * b * s))
    return {model: {gpus: {sm: {str(b): {str(s): dict(zip(("prefill", "decoding"), lat(b, s)))
                                         for s in seqs} for b in batches} for sm in sms}}}


def table(model="llama-tiny-s", device="cpu", batches=(1, 2, 4, 8, 16), seqs=(32, 64, 128, 256),
          **cols) -> pd.DataFrame:
    """A ``muxsim calibrate run`` table (schema of muxsim.perf.table), with ``cols`` replaced."""
    rows = []
    for b in batches:
        for s in seqs:
            for phase, v in (("decode", 3 + 0.2 * b + 0.002 * b * s), ("prefill", 5 + 0.1 * b * s)):
                rows.append({"engine": "transformers", "device": device, "threads": 1,
                             "model": model, "n_gpus": 1, "sm_pct": 100.0, "batch": b, "seq": s,
                             "phase": phase, "n": 5, "median_ms": v, "p10_ms": 0.9 * v,
                             "p90_ms": 1.1 * v, "min_ms": 0.8 * v, "max_ms": 1.2 * v,
                             "muxsim_version": "0.1"})
    df = pd.DataFrame(rows)
    for k, v in cols.items():
        df[k] = v
    return df


def jobs(n: int = 40, **cols) -> pd.DataFrame:
    """A live run's job table (``muxsim validate``'s jobs.parquet), with ``cols`` replaced."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "llm": ["llm-0"] * n, "model": ["llama-tiny-s"] * n, "kind": ["decode", "prefill"] * (n // 2),
        "n_seqs": rng.integers(1, 8, n), "submitted_s": np.arange(n) * 0.01,
        "ended_s": np.arange(n) * 0.01 + 0.009, "measured_s": 0.009 + rng.random(n) * 1e-4,
        "predicted_s": np.full(n, 0.009),
    })
    for k, v in cols.items():
        df[k] = v
    return df


def parquet(tmp: Path, name: str, df: pd.DataFrame) -> Path:
    p = tmp / name
    df.to_parquet(p, index=False)
    return p


def with_row(df: pd.DataFrame, col: str, value, row: int = 0) -> pd.DataFrame:
    df = df.copy()
    df[col] = df[col].astype(object if isinstance(value, str) else df[col].dtype)
    df.loc[row, col] = value
    return df


# --------------------------------------------------------------------------------------------
# Commands


def inspect(path: Path, *more) -> list:
    return ["trace", "inspect", path, *more]


def convert(path: Path, *more) -> list:
    return ["trace", "convert", path, "--out", path.parent / "out.parquet", *more]


def synth(path: Path) -> list:
    return ["trace", "synth", path, "--out", path.parent / "out.parquet"]


def fit(path: Path, *more) -> list:
    return ["calibrate", "fit", path, "--out", path.parent / "fitted.json", *more]


def fit_json(tmp: Path, doc, gpu: str = GPU) -> list:
    return fit(jsondoc(tmp, "profile.json", doc), "--gpu", gpu)


def fit_table(tmp: Path, df: pd.DataFrame, *more) -> list:
    return fit(parquet(tmp, "calibration.parquet", df), *more)


def overhead(tmp: Path, df: pd.DataFrame) -> list:
    p = parquet(tmp, "jobs.parquet", df)
    return ["calibrate", "overhead", p, "--out", tmp / "overhead.json"]


def run(tmp: Path, wl: Path) -> list:
    return ["run", config(tmp, wl), "--out", tmp / "out"]


def run_with_overhead(tmp: Path, doc) -> list:
    """A run of a valid workload whose config's overhead.file is ``doc``."""
    cfg = config(tmp, workload(tmp))
    raw = yaml.safe_load(cfg.read_text())
    raw["overhead"] = {"file": str(jsondoc(tmp, "oh.json", doc))}
    cfg.write_text(yaml.safe_dump(raw))
    return ["run", cfg, "--out", tmp / "out"]


def run_with_calibration(tmp: Path, doc) -> list:
    """A run of a valid workload with ``doc`` as the calibration file of its GPU (the case sets
    $MUXSIM_CALIBRATION_DIR to the folder)."""
    jsondoc(tmp, f"{GPU}.json", doc)
    return run(tmp, workload(tmp))


# --------------------------------------------------------------------------------------------
# The corpus


@dataclass(frozen=True)
class Case:
    """One bad input: ``build(folder)`` writes its files and returns the command line;
    ``expected`` is a substring of the one error line (case-insensitive); ``xfail`` (a reason)
    marks a case that needs a change outside the data loaders; ``env`` sets environment
    variables (``{tmp}`` is the test folder)."""

    id: str
    build: Callable[[Path], list]
    expected: str
    xfail: str | None = None
    env: dict[str, str] | None = None
    tokenizer: bool = False


CASES: list[Case] = [
    # ---- workload Parquet: trace inspect / convert, and workload.file of a config ----------
    Case("workload-no-rows-inspect", lambda t: inspect(empty_workload(t)),
         "empty.parquet: no requests (the workload has no rows)"),
    Case("workload-no-rows-convert", lambda t: convert(empty_workload(t)), "no requests"),
    Case("workload-no-rows-run", lambda t: run(t, empty_workload(t)), "no requests"),
    Case("workload-arrival-1e308", lambda t: inspect(workload(t, arrival_s=[0, 1, 2, 1e308])),
         "'arrival_s' holds 1e+308 s (row 3); arrival times must lie in [0, 1e+09] s"),
    Case("workload-arrival-1e308-run", lambda t: run(t, workload(t, arrival_s=[0, 1, 2, 1e308])),
         "workload.file: "),
    Case("workload-arrival-beyond-bound", lambda t: inspect(workload(t, arrival_s=[0, 1, 2, 2e9])),
         "MAX_ARRIVAL_S"),
    Case("workload-arrival-inf", lambda t: inspect(workload(t, arrival_s=[0, 1, 2, np.inf])),
         "column 'arrival_s' must be finite"),
    Case("workload-arrival-nan", lambda t: inspect(workload(t, arrival_s=[0, np.nan, 2, 3])),
         "column 'arrival_s' must be finite"),
    Case("workload-arrival-negative", lambda t: run(t, workload(t, arrival_s=[-1.0, 1, 2, 3])),
         "'arrival_s' must be finite and >= 0 s"),
    Case("workload-arrival-unsorted", lambda t: inspect(workload(t, arrival_s=[0, 2, 1, 3])),
         "'arrival_s' must be sorted ascending"),
    Case("workload-tokens-huge", lambda t: inspect(workload(t, prompt_tokens=[16, 16, 16, 2**62])),
         "'prompt_tokens' holds 4611686018427387904 tokens; token counts must lie in [1,"),
    Case("workload-tokens-huge-run", lambda t: run(t, workload(t, output_tokens=[8, 8, 8, 2**60])),
         "MAX_TOKENS"),
    Case("workload-tokens-zero", lambda t: inspect(workload(t, output_tokens=[8, 0, 8, 8])),
         "'output_tokens' must be >= 1 token"),
    Case("workload-tokens-float", lambda t: convert(workload(t, prompt_tokens=[16.0, 16.5, 1, 2])),
         "'prompt_tokens' must be integer"),
    Case("workload-tokens-missing", lambda t: inspect(
        workload(t, prompt_tokens=pd.array([16, None, 16, 16], dtype="Int64"))),
         "'prompt_tokens' has missing values"),
    Case("workload-id-beyond-int64", lambda t: inspect(
        workload(t, request_id=np.array([0, 1, 2, 2**64 - 1], dtype=np.uint64))),
         "'request_id' holds 18446744073709551615, beyond int64"),
    Case("workload-id-duplicate", lambda t: inspect(workload(t, request_id=[0, 1, 1, 2])),
         "'request_id' has duplicate ids"),
    Case("workload-llm-empty-name", lambda t: inspect(workload(t, llm=["llm-0", "", "llm-0", "x"])),
         "column 'llm' holds an empty LLM name"),
    Case("workload-llm-missing", lambda t: inspect(workload(t, llm=["llm-0", None, "x", "y"])),
         "column 'llm' must hold strings with no missing values"),
    Case("workload-column-missing", lambda t: inspect(parquet(
        t, "w.parquet", pd.read_parquet(workload(t)).drop(columns="output_tokens"))),
         "missing column(s) ['output_tokens']"),
    Case("workload-not-parquet", lambda t: inspect(text(t, "w.parquet", "request_id,llm\n")),
         "w.parquet: not a readable Parquet workload"),
    Case("parquet-format-on-csv", lambda t: convert(azure_ok(t), "--format", "parquet"),
         "az.csv: not a readable Parquet workload"),

    # ---- azure --------------------------------------------------------------------------
    Case("azure-timestamp-1e308", lambda t: convert(csv(t, "az.csv", AZURE, "0,16,8", "1e308,16,8")),
         "az.csv line 3: column 'arrived_at' is out of range ('1e308'); timestamps must be finite "
         "and within +-1e+12 s"),
    Case("azure-span-beyond-bound", lambda t: convert(csv(t, "az.csv", AZURE, "0,16,8", "2e9,16,8")),
         "az.csv line 3: arrival 2e+09 s after the first request; a trace may span at most 1e+09 s"),
    Case("azure-negative-span", lambda t: inspect(csv(t, "az.csv", AZURE, "-1e11,16,8", "0,16,8")),
         "az.csv line 3: arrival 1e+11 s after the first request"),
    Case("azure-datetime-span", lambda t: convert(csv(
        t, "az.csv", AZURE_RAW, "1900-01-01 00:00:00,16,8", "2100-01-01 00:00:00,16,8")),
         "a trace may span at most 1e+09 s"),
    Case("azure-raw-timestamp-1e300", lambda t: inspect(csv(t, "az.csv", AZURE_RAW, "1e300,16,8")),
         "column 'TIMESTAMP' is out of range ('1e300')"),
    Case("azure-no-rows", lambda t: convert(csv(t, "az.csv", AZURE)), "az.csv: no requests"),
    Case("azure-only-zero-tokens", lambda t: convert(csv(t, "az.csv", AZURE, "0,0,8", "1,16,0")),
         "az.csv: no requests left after dropping 2 row(s) with 0 prompt or 0 output tokens"),
    Case("azure-nan-time", lambda t: convert(csv(t, "az.csv", AZURE, "0,16,8", "nan,16,8")),
         "az.csv line 3: column 'arrived_at' is not a finite number of seconds ('nan')"),
    Case("azure-inf-tokens", lambda t: convert(csv(t, "az.csv", AZURE, "0,inf,8")),
         "column 'num_prefill_tokens' is not an integer ('inf')"),
    Case("azure-tokens-too-large", lambda t: convert(csv(t, "az.csv", AZURE, "0,1e20,8")),
         "column 'num_prefill_tokens' is too large ('1e20')"),
    Case("azure-negative-tokens", lambda t: inspect(csv(t, "az.csv", AZURE, "0,16,-8")),
         "column 'num_decode_tokens' is negative ('-8')"),
    Case("azure-missing-column", lambda t: convert(csv(t, "az.csv", "arrived_at,num_prefill_tokens",
                                                       "0,16")),
         "missing column 'num_decode_tokens' or 'GeneratedTokens'"),

    # ---- lengths (length-only; arrivals drawn at --rate) --------------------------------
    Case("lengths-no-rows", lambda t: convert(csv(t, "len.csv", LENGTHS), "--rate", "1"),
         "len.csv: no requests"),
    Case("lengths-only-zero-tokens", lambda t: convert(csv(t, "len.csv", LENGTHS, "0,8", "16,0"),
                                                       "--rate", "1"),
         "no requests left after dropping 2 row(s)"),
    Case("lengths-nan-tokens", lambda t: convert(csv(t, "len.csv", LENGTHS, "16,nan"), "--rate", "1"),
         "column 'num_decode_tokens' is not an integer ('nan')"),
    Case("lengths-rate-too-low", lambda t: convert(lengths_ok(t), "--rate", "1e-300"),
         "rate 1e-300 req/s is too low for 2 requests: they would arrive beyond 1e+09 s"),
    Case("lengths-cv-underflow", lambda t: convert(lengths_ok(t), "--rate", "1", "--arrival",
                                                   "gamma", "--cv", "1e-200"),
         "cv must be"),
    Case("lengths-cv-huge", lambda t: convert(lengths_ok(t), "--rate", "1", "--arrival", "gamma",
                                              "--cv", "1e100"),
         "cv must be"),

    # ---- burstgpt -----------------------------------------------------------------------
    Case("burstgpt-no-rows", lambda t: convert(csv(t, "b.csv", BURST)), "b.csv: no requests"),
    Case("burstgpt-only-failed", lambda t: convert(csv(t, "b.csv", BURST, "0,ChatGPT,16,0",
                                                       "1,GPT-4,16,0")),
         "no requests left after dropping 2 row(s)"),
    Case("burstgpt-inf-time", lambda t: convert(csv(t, "b.csv", BURST, "inf,ChatGPT,16,8")),
         "column 'Timestamp' is not a finite number of seconds ('inf')"),
    Case("burstgpt-span-beyond-bound", lambda t: inspect(csv(t, "b.csv", BURST, "0,ChatGPT,16,8",
                                                             "5e9,GPT-4,16,8")),
         "b.csv line 3: arrival 5e+09 s after the first request"),
    Case("burstgpt-empty-model", lambda t: convert(csv(t, "b.csv", BURST, "0,,16,8")),
         "column 'Model' is empty"),

    # ---- mooncake -----------------------------------------------------------------------
    Case("mooncake-timestamp-1e308", lambda t: convert(jsonl(t, "m.jsonl", mooncake(0),
                                                             mooncake(1e308))),
         "m.jsonl line 2: 'timestamp' is out of range (1e+308); timestamps must be finite and "
         "within +-1e+15 ms"),
    Case("mooncake-span-beyond-bound", lambda t: convert(jsonl(t, "m.jsonl", mooncake(0),
                                                               mooncake(2e12))),
         "m.jsonl line 2: arrival 2e+09 s after the first request"),
    Case("mooncake-blank-lines-only", lambda t: convert(text(t, "m.jsonl", "\n\n"), "--format",
                                                        "mooncake"),
         "m.jsonl: no requests"),
    Case("mooncake-nan-timestamp", lambda t: convert(jsonl(
        t, "m.jsonl", '{"timestamp": NaN, "input_length": 16, "output_length": 8}')),
         "'timestamp' is not a finite number of ms"),
    Case("mooncake-only-zero-tokens", lambda t: convert(jsonl(t, "m.jsonl", mooncake(0, o=0))),
         "no requests left after dropping 1 row(s)"),
    Case("mooncake-tokens-too-large", lambda t: convert(jsonl(t, "m.jsonl", mooncake(0, i=1e17))),
         "'input_length' is too large"),
    Case("mooncake-hash-ids-infinite", lambda t: convert(jsonl(
        t, "m.jsonl", '{"timestamp": 0, "input_length": 16, "output_length": 8, "hash_ids": [1e400]}')),
         "'hash_ids' holds a non-integer"),

    # ---- muxserve workload JSON ---------------------------------------------------------
    Case("muxserve-empty-list", lambda t: convert(jsondoc(t, "x.json", []), "--format",
                                                  "muxserve-workload"),
         "x.json: no requests"),
    Case("muxserve-empty-requests", lambda t: convert(jsondoc(t, "x.json", {"requests": []})),
         "x.json: no requests"),
    Case("muxserve-arrival-1e20", lambda t: convert(jsondoc(t, "x.json", [muxreq(0), muxreq(1e20)])),
         "x.json records[1]: 'arrival_time' is out of range (1e+20)"),
    Case("muxserve-span-beyond-bound", lambda t: inspect(jsondoc(t, "x.json",
                                                                 [muxreq(0), muxreq(3e9)])),
         "x.json records[1]: arrival 3e+09 s after the first request"),
    Case("muxserve-infinite-arrival", lambda t: convert(jsondoc(
        t, "x.json", '[{"arrival_time": Infinity, "prompt_len": 16, "output_len": 8}]')),
         "'arrival_time' is not a finite number of seconds"),
    Case("muxserve-only-zero-tokens", lambda t: convert(jsondoc(t, "x.json", [muxreq(0, p=0)])),
         "no requests left after dropping 1 row(s)"),
    Case("muxserve-bool-tokens", lambda t: convert(jsondoc(t, "x.json", [muxreq(0, p=True)])),
         "'prompt_len' is not an integer (True)"),

    # ---- muxserve rates files (popularity.rates_file of a synth spec) -------------------
    Case("rates-all-zero", lambda t: synth(spec(t, {"source": {"path": str(azure_ok(t))},
                                                    "popularity": {"rates_file": str(rates(t, [
                                                        {"name": "a", "model": "llama-7b", "rate": 0},
                                                        {"name": "b", "model": "llama-7b", "rate": 0}]))}})),
         "models.yaml must have a positive sum"),
    Case("rates-no-models", lambda t: synth(spec(t, {"source": {"path": str(azure_ok(t))},
                                                     "popularity": {"rates_file": str(rates(t, []))}})),
         "models.yaml: expected a mapping with a non-empty 'models' list"),
    Case("rates-unknown-model", lambda t: synth(spec(t, {"source": {"path": str(azure_ok(t))},
                                                         "popularity": {"rates_file": str(rates(t, [
                                                             {"name": "a", "model": "/ckpt/gpt-9", "rate": 1}]))}})),
         "model 'gpt-9' (from '/ckpt/gpt-9') is not in muxsim.catalog.MODELS; known: llama-7b"),
    Case("rates-infinite-rate", lambda t: synth(spec(t, {"source": {"path": str(azure_ok(t))},
                                                         "popularity": {"rates_file": str(text(
                                                             t, "models.yaml",
                                                             "models: [{name: a, model: llama-7b, rate: .inf}]\n"))}})),
         "'rate' is not a finite rate >= 0 req/s"),

    # ---- sharegpt -----------------------------------------------------------------------
    Case("sharegpt-empty-list", lambda t: convert(jsondoc(t, "sg.json", []), "--format", "sharegpt",
                                                  "--rate", "1"),
         "sg.json: no requests (no human -> gpt turn pair in 0 conversations)"),
    Case("sharegpt-no-pairs", lambda t: convert(jsondoc(t, "sg.json", [conv(("human", "hi")),
                                                                      conv(("gpt", "hello"))]),
                                                "--rate", "1"),
         "no human -> gpt turn pair in 2 conversations"),
    Case("sharegpt-unknown-speaker", lambda t: convert(jsondoc(t, "sg.json", [conv(("robot", "hi"))]),
                                                       "--rate", "1"),
         "sg.json records[0].conversations[0]: unknown speaker 'robot'"),
    Case("sharegpt-no-tokenizer", lambda t: convert(jsondoc(t, "sg.json", [conv(("human", "hi"),
                                                                               ("gpt", "hello"))]),
                                                    "--rate", "1"),
         "sg.json: ShareGPT conversation JSON needs a tokenizer"),
    Case("sharegpt-only-empty-answers", lambda t: convert(
        jsondoc(t, "sg.json", [conv(("human", "hi"), ("gpt", "")), conv(("human", "hi"), ("gpt", " "))]),
        "--rate", "1", "--tokenizer", t.parent / "tokenizer"),
         "sg.json: no requests left after dropping 2 row(s) with 0 prompt or 0 output tokens",
         tokenizer=True),

    # ---- synthesis specs ----------------------------------------------------------------
    Case("synth-condense-stretches", lambda t: synth(spec(t, {"source": {"path": str(azure_ok(t))},
                                                              "condense": 1e-300})),
         "condense factor 1e-300 stretches the trace to 3e+300 s; arrival times must lie within "
         "1e+09 s"),
    Case("synth-target-rate-stretches", lambda t: synth(spec(t, {"source": {"path": str(azure_ok(t))},
                                                                 "target_rate": 1e-300})),
         "target_rate: target rate 1e-300 req/s stretches the trace"),
    Case("synth-source-rate-too-low", lambda t: synth(spec(t, {"source": {"path": str(lengths_ok(t)),
                                                                          "rate": 1e-300}})),
         "rate 1e-300 req/s is too low for 2 requests"),
    Case("synth-source-empty-parquet", lambda t: synth(spec(t, {"source": {"path": str(empty_workload(t))}})),
         "empty.parquet: no requests"),
    Case("synth-source-arrival-1e308", lambda t: synth(spec(t, {"source": {"path": str(
        workload(t, arrival_s=[0, 1, 2, 1e308]))}})),
         "'arrival_s' holds 1e+308 s"),
    Case("synth-source-no-usable-rows", lambda t: synth(spec(t, {"source": {"path": str(
        csv(t, "az.csv", AZURE, "0,0,8", "1,16,0"))}})),
         "no requests left after dropping 2 row(s)"),
    Case("synth-window-keeps-nothing", lambda t: synth(spec(t, {"source": {"path": str(azure_ok(t))},
                                                                "window": {"start_s": 100}})),
         "window: [100, inf) s keeps no requests; the source spans 0 .. 3 s"),
    Case("synth-weights-all-zero", lambda t: synth(spec(t, {"source": {"path": str(azure_ok(t))},
                                                            "llms": 2, "popularity": {"weights": [0, 0]}})),
         "weights must have a positive sum"),

    # ---- MuxServe profiles (calibrate fit PROFILE.json) ---------------------------------
    Case("profile-too-few-points", lambda t: fit_json(t, profile(batches=(1, 2), seqs=(32, 64)), GPU),
         "profile.json: no (model, GPU count) had enough points to fit"),
    Case("profile-decode-not-measured", lambda t: fit_json(t, profile(lat=lambda b, s: (5 + b * s, -1))),
         "found llama-7b on 1 GPU(s): 20 prefill and 0 decode points"),
    Case("profile-nothing-measured", lambda t: fit_json(t, profile(lat=lambda b, s: (-1, -1))),
         "profile.json: profile holds no measured point (every latency is -1, not measured)"),
    Case("profile-unknown-model", lambda t: fit_json(t, profile(model="gpt-17")),
         "model 'gpt-17' is not in the catalog; allowed: llama-13b"),
    Case("profile-unknown-gpu", lambda t: fit_json(t, profile(), "tpu-v9"),
         "unknown GPU 'tpu-v9'; allowed: a100-80gb"),
    Case("profile-latency-huge", lambda t: fit_json(t, profile(lat=lambda b, s: (1e300, 1e300))),
         "latency 1e+300 ms is out of range; latencies must be -1 (not measured) or in [0.001, 1e+09] ms"),
    Case("profile-latency-tiny", lambda t: fit_json(t, profile(lat=lambda b, s: (1e-300, 3.0))),
         "latency 1e-300 ms is out of range"),
    Case("profile-latency-infinite", lambda t: fit_json(
        t, '{"llama-7b": {"1": {"100": {"1": {"32": {"prefill": Infinity, "decoding": 1}}}}}}'),
         "['prefill']: latency inf must be positive ms or -1"),
    Case("profile-latency-nan", lambda t: fit_json(
        t, '{"llama-7b": {"1": {"100": {"1": {"32": {"prefill": 1, "decoding": NaN}}}}}}'),
         "['decoding']: latency nan must be positive ms or -1"),
    Case("profile-batch-key-huge", lambda t: fit_json(t, profile(batches=(1, 2, 4, 10**30))),
         "batch key '1000000000000000000000000000000' is too large (at most 2**53)"),
    Case("profile-no-points", lambda t: fit_json(t, {"llama-7b": {}}),
         "profile.json: profile holds no measurement points"),
    Case("profile-sm-over-100", lambda t: fit_json(t, profile(sms=("130",))), "SM% key '130' exceeds 100"),
    Case("profile-not-json", lambda t: fit_json(t, "{not json"), "profile.json: invalid JSON"),

    # ---- calibration tables (calibrate fit TABLE.parquet) --------------------------------
    Case("table-too-few-points", lambda t: fit_table(t, table(batches=(1, 2), seqs=(32, 64))),
         "calibration.parquet: no (model, GPU count) had enough points to fit"),
    Case("table-no-rows", lambda t: fit_table(t, table().iloc[:0]),
         "calibration.parquet: no measurement points (the table has no rows)"),
    Case("table-unknown-model", lambda t: fit_table(t, table(model="gpt-x")),
         "calibration.parquet: unknown model 'gpt-x'; allowed: llama-7b"),
    Case("table-nan-median", lambda t: fit_table(t, with_row(table(), "median_ms", np.nan)),
         "column median_ms has missing values"),
    Case("table-inf-p90", lambda t: fit_table(t, with_row(table(), "p90_ms", np.inf)),
         "column p90_ms must be finite and > 0"),
    Case("table-latency-huge", lambda t: fit_table(t, table(median_ms=1e300)),
         "column median_ms holds 1e+300 ms; durations must lie in [0.001, 1e+09] ms"),
    Case("table-fit-fails", lambda t: fit_table(t, table(batch=table().batch * 10**17)),
         "calibration.parquet: the fit of llama-tiny-s on 1 GPU(s) failed"),
    Case("table-cuda-needs-gpu", lambda t: fit_table(t, table(device="cuda:0")),
         "gpu: required for calibration.parquet, measured on 'cuda:0'; allowed: a100-80gb"),
    Case("table-unknown-gpu", lambda t: fit_table(t, table(device="cuda:0"), "--gpu", "v100"),
         "unknown GPU 'v100'; allowed: a100-80gb"),
    Case("table-unknown-phase", lambda t: fit_table(t, with_row(table(), "phase", "warmup")),
         "unknown phase(s) 'warmup'; allowed: decode, prefill"),
    Case("table-float-threads", lambda t: fit_table(t, table(threads=1.0)),
         "column threads must be integer"),
    Case("table-not-parquet", lambda t: fit(text(t, "calibration.parquet", "nope")),
         "calibration.parquet: not a readable Parquet file"),

    # ---- job tables (calibrate overhead JOBS.parquet) ------------------------------------
    Case("jobs-no-rows", lambda t: overhead(t, jobs().iloc[:0]), "no jobs (the table has no rows)"),
    Case("jobs-no-rows-names-file", lambda t: overhead(t, jobs().iloc[:0]), "jobs.parquet"),
    Case("jobs-no-decode", lambda t: overhead(t, jobs(kind="prefill")),
         "holds no decode job to fit the per-sequence cost to"),
    Case("jobs-one-batch-size", lambda t: overhead(t, jobs(n_seqs=4)),
         "no model's decode jobs have more than one batch size (n_seqs)"),
    Case("jobs-nan-measured", lambda t: overhead(t, with_row(jobs(), "measured_s", np.nan, 3)),
         "column 'measured_s' holds NaN or inf"),
    Case("jobs-inf-submitted", lambda t: overhead(t, with_row(jobs(), "submitted_s", np.inf, 5)),
         "column 'submitted_s' holds NaN or inf"),
    Case("jobs-duration-huge", lambda t: overhead(t, jobs(measured_s=1e300)),
         "column 'measured_s' must lie in [0, 1e+09] s"),
    Case("jobs-negative-duration", lambda t: overhead(t, jobs(predicted_s=-1.0)),
         "column 'predicted_s' must lie in [0, 1e+09] s"),
    Case("jobs-zero-seqs", lambda t: overhead(t, jobs(n_seqs=0)),
         "column 'n_seqs' must hold integers >= 1"),
    Case("jobs-text-seqs", lambda t: overhead(t, jobs(n_seqs="4")), "column 'n_seqs' must be numeric"),
    Case("jobs-unknown-model", lambda t: overhead(t, jobs(model="gpt-x")),
         "column 'model' holds model(s) not in the catalog: 'gpt-x'; allowed: llama-7b"),
    Case("jobs-unknown-kind", lambda t: overhead(t, jobs(kind="warmup")),
         "column 'kind' holds 'warmup'; allowed: prefill, decode"),
    Case("jobs-missing-llm", lambda t: overhead(t, jobs(llm=None)),
         "column 'llm' must hold non-empty strings"),
    Case("jobs-missing-column", lambda t: overhead(t, jobs().drop(columns="ended_s")),
         "lacks column(s) ['ended_s']"),

    # ---- files a run reads: overhead.file, $MUXSIM_CALIBRATION_DIR -----------------------
    Case("overhead-file-unknown-model", lambda t: run_with_overhead(
        t, {"dispatch_s": 0.001, "decode_per_seq_s": {"gpt-x": 1e-4}}),
         "oh.json: decode_per_seq_s names model(s) not in the catalog: 'gpt-x'; allowed: llama-7b"),
    Case("overhead-file-negative", lambda t: run_with_overhead(t, {"dispatch_s": -1.0}),
         "oh.json: overhead figures must be finite and >= 0 s"),
    Case("overhead-file-huge", lambda t: run_with_overhead(t, {"dispatch_s": 1e300}),
         "oh.json: overhead figures must be at most 1 s per job or sequence"),
    Case("calibration-dir-unknown-model", lambda t: run_with_calibration(
        t, {"format": "muxsim-latency-calibration/1", "gpu": GPU, "coefficients": {"gpt-x": {}}}),
         "a100-80gb.json: coefficients for model(s) not in the catalog: 'gpt-x'; allowed:",
         env={"MUXSIM_CALIBRATION_DIR": "{tmp}"}),
    Case("calibration-dir-unknown-gpu", lambda t: run_with_calibration(
        t, {"format": "muxsim-latency-calibration/1", "gpu": "tpu-v9", "coefficients": {}}),
         "a100-80gb.json: unknown GPU 'tpu-v9'; allowed: a100-80gb",
         env={"MUXSIM_CALIBRATION_DIR": "{tmp}"}),
]


def _param(c: Case):
    marks = [pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else []
    return pytest.param(c, id=c.id, marks=marks)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A real transformers tokenizer saved offline (word level, whitespace split)."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab={"[UNK]": 0, "hi": 1},
                                                           unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    folder = tmp_path_factory.mktemp("tok")
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(
        folder / "tokenizer")
    return folder


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_data_is_refused(case: Case, tmp_path: Path, monkeypatch, request):
    folder = tmp_path
    if case.tokenizer:
        # the tokenizer is made once and lives beside a per-case folder
        folder = request.getfixturevalue("tokenizer_dir") / case.id
        folder.mkdir()
    for k, v in (case.env or {}).items():
        monkeypatch.setenv(k, v.format(tmp=folder))
    check_bad_input(case.build(folder), case.expected, folder)


def test_corpus_is_table_driven_and_large_enough():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    assert len(CASES) >= 60


# --------------------------------------------------------------------------------------------
# The good files the cases start from are accepted


def _ok(args: list) -> None:
    res, _ = invoke(args)
    assert res.exit_code == 0, (res.exit_code, res.output, res.stderr)


def test_valid_baselines(tmp_path):
    _ok(inspect(workload(tmp_path)))
    _ok(convert(azure_ok(tmp_path)))
    _ok(convert(lengths_ok(tmp_path), "--rate", "1", "--arrival", "gamma", "--cv", "2"))
    _ok(convert(csv(tmp_path, "b.csv", BURST, "0,ChatGPT,16,8", "1,GPT-4,16,8")))
    _ok(convert(jsonl(tmp_path, "m.jsonl", mooncake(0), mooncake(1500))))
    _ok(convert(jsondoc(tmp_path, "x.json", [muxreq(0), muxreq(2)])))
    _ok(synth(spec(tmp_path, {"source": {"path": str(azure_ok(tmp_path))}, "condense": 2,
                              "popularity": {"rates_file": str(rates(tmp_path, [
                                  {"name": "a", "model": "llama-7b", "rate": 1e308},
                                  {"name": "b", "model": "llama-7b", "rate": 1e308}]))}})))
    _ok(fit_json(tmp_path, profile()))
    _ok(fit_table(tmp_path, table()))
    _ok(overhead(tmp_path, jobs()))
