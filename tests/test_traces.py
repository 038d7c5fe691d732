"""Tests for muxsim.workload.formats (real-trace loaders, format detection) and assign_arrivals.

Every loader runs on small inline samples written to tmp_path (made up here, never rows of
../shared/data). The tests at the end load the real files and skip when ../shared/data is
absent (a fresh clone).
"""

from __future__ import annotations

import inspect
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muxsim.workload import (
    TRACE_FORMATS,
    WORKLOAD_COLUMNS,
    TraceFormatError,
    assign_arrivals,
    detect_format,
    formats,
    load_muxserve_rates,
    load_trace,
    load_workload,
    save_workload,
)
from muxsim.workload.formats.common import read_json_document, trace_frame
from muxsim.workload.formats.sniff import SniffRule

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FAST = settings(max_examples=30, deadline=None)
needs_shared = pytest.mark.skipif(
    not (SHARED / "traces").is_dir(), reason="needs ../shared/data (absent on a fresh clone)"
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def check_workload(df: pd.DataFrame, timed: bool = True) -> None:
    """The frame has the workload schema (arrival_s only when ``timed``)."""
    cols = [c for c in WORKLOAD_COLUMNS if timed or c != "arrival_s"]
    assert list(df.columns[: len(cols)]) == cols
    assert ("arrival_s" in df.columns) == timed
    assert df["request_id"].tolist() == list(range(len(df)))
    assert df["request_id"].dtype == np.int64
    assert df["prompt_tokens"].dtype == np.int64 and df["output_tokens"].dtype == np.int64
    assert (df["prompt_tokens"] >= 1).all() and (df["output_tokens"] >= 1).all()
    assert all(isinstance(v, str) for v in df["llm"])
    if timed:
        t = df["arrival_s"].to_numpy()
        assert df["arrival_s"].dtype == np.float64
        assert t[0] == 0.0 and np.all(np.diff(t) >= 0)
    assert isinstance(df.index, pd.RangeIndex)


# ---------------------------------------------------------------------------------------------
# Azure

AZURE_VIDUR = """arrived_at,num_prefill_tokens,num_decode_tokens
10.5,100,20
11.0,200,30
12.25,300,40
"""

AZURE_ORIG = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:51.2224670,879,55
"""


def test_azure_vidur(tmp_path):
    df = load_trace(write(tmp_path, "conv.csv", AZURE_VIDUR), llm="m")
    check_workload(df)
    assert df["arrival_s"].tolist() == [0.0, 0.5, 1.75]
    assert df["prompt_tokens"].tolist() == [100, 200, 300]
    assert df["output_tokens"].tolist() == [20, 30, 40]
    assert set(df["llm"]) == {"m"}
    assert df.attrs["dropped_rows"] == 0 and df.attrs["format"] == "azure"


def test_azure_original_columns(tmp_path):
    df = load_trace(write(tmp_path, "AzureLLMInferenceTrace_conv.csv", AZURE_ORIG))
    check_workload(df)
    assert df["arrival_s"].to_numpy() == pytest.approx([0.0, 4.314579, 4.541877], abs=1e-6)
    assert df["prompt_tokens"].tolist() == [374, 396, 879]
    assert set(df["llm"]) == {"llm-0"}


def test_azure_mixed_naming(tmp_path):
    p = write(tmp_path, "mix.csv", "TIMESTAMP,num_prefill_tokens,GeneratedTokens\n"
              "2023-11-16 18:15:47,5,6\n2023-11-16 18:15:46,7,8\n")
    df = load_trace(p)
    assert df["arrival_s"].tolist() == [0.0, 1.0]
    assert df["prompt_tokens"].tolist() == [7, 5]


def test_azure_bad_datetime_names_line(tmp_path):
    p = write(tmp_path, "t.csv", AZURE_ORIG + "not a time,1,2\n")
    with pytest.raises(TraceFormatError, match=r"t\.csv line 5: column 'TIMESTAMP'.*'not a time'"):
        load_trace(p)


def test_unsorted_timestamps_sorted_stably(tmp_path):
    p = write(tmp_path, "u.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n"
              "5,1,1\n3,2,2\n5,3,3\n3,4,4\n9,5,5\n")
    df = load_trace(p)
    check_workload(df)
    # Ties keep file order; request_id follows arrival order; times re-zeroed.
    assert df["prompt_tokens"].tolist() == [2, 4, 1, 3, 5]
    assert df["arrival_s"].tolist() == [0.0, 0.0, 2.0, 2.0, 6.0]


@FAST
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 9), st.integers(0, 9)),
                min_size=1, max_size=30))
def test_sort_and_drop_property(rows):
    """Any rows: kept = non-zero rows, ordered by (time, file order), re-zeroed."""
    text = "arrived_at,num_prefill_tokens,num_decode_tokens\n" + "".join(
        f"{t},{p},{o}\n" for t, p, o in rows
    )
    kept = sorted(
        [(t, i, p, o) for i, (t, p, o) in enumerate(rows) if p > 0 and o > 0]
    )
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.csv"
        path.write_text(text)
        if not kept:
            with pytest.raises(TraceFormatError, match="no requests"):
                load_trace(path)
            return
        df = load_trace(path)
    check_workload(df)
    assert df.attrs["dropped_rows"] == len(rows) - len(kept)
    assert df["prompt_tokens"].tolist() == [k[2] for k in kept]
    assert df["output_tokens"].tolist() == [k[3] for k in kept]
    assert df["arrival_s"].tolist() == [float(k[0] - kept[0][0]) for k in kept]


# ---------------------------------------------------------------------------------------------
# Malformed CSV rows, missing columns, empty files


@pytest.mark.parametrize(
    "cell, problem",
    [
        ("abc", r"is not an integer \('abc'\)"),
        ("2.5", r"is not an integer \('2.5'\)"),
        ("-3", r"is negative \('-3'\)"),
        ("1e30", r"is too large \('1e30'\)"),
        ("", r"is empty"),
    ],
)
def test_bad_token_cell_names_line(tmp_path, cell, problem):
    # Blank lines count as file lines; the bad row is on line 7.
    text = ("arrived_at,num_prefill_tokens,num_decode_tokens\n1,2,3\n\n2,2,3\n3,2,3\n\n"
            f"4,2,{cell}\n5,2,3\n")
    p = write(tmp_path, "trace.csv", text)
    msg = rf"trace\.csv line 7: column 'num_decode_tokens' {problem}"
    with pytest.raises(TraceFormatError, match=msg):
        load_trace(p)


def test_bad_time_and_short_row(tmp_path):
    p = write(tmp_path, "t.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n1,2,3\nx,2,3\n")
    with pytest.raises(TraceFormatError,
                       match=r"t\.csv line 3: column 'arrived_at' is not a finite number"):
        load_trace(p)
    p = write(tmp_path, "s.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n1,2,3\n2,3\n")
    with pytest.raises(TraceFormatError,
                       match=r"s\.csv line 3: column 'num_decode_tokens' is empty"):
        load_trace(p)
    p = write(tmp_path, "l.csv",
              "arrived_at,num_prefill_tokens,num_decode_tokens\n1,2,3\n\n2,3,4,5\n")
    with pytest.raises(TraceFormatError, match=r"l\.csv line 4: expected 3 fields"):
        load_trace(p)
    p = write(tmp_path, "f.csv", "num_prefill_tokens,num_decode_tokens\n\n1,2,3\n4,5,6\n")
    with pytest.raises(TraceFormatError, match=r"f\.csv line 3: expected 2 fields.*saw 3"):
        load_trace(p)


def test_quoted_multiline_field_line_numbers(tmp_path):
    text = ('Timestamp,Model,Request tokens,Response tokens,Log Type\n'
            '1,ChatGPT,10,5,"two\nlines"\n'
            '2,GPT-4,oops,5,x\n')
    p = write(tmp_path, "b.csv", text)
    with pytest.raises(TraceFormatError, match=r"b\.csv line 4: column 'Request tokens'"):
        load_trace(p)


@pytest.mark.parametrize(
    "fmt, header, missing",
    [
        ("azure", "arrived_at,num_prefill_tokens", r"'num_decode_tokens' or 'GeneratedTokens'"),
        ("azure", "num_prefill_tokens,num_decode_tokens", r"'arrived_at' or 'TIMESTAMP'"),
        ("lengths", "num_prefill_tokens,foo", r"'num_decode_tokens'"),
        ("burstgpt", "Timestamp,Model,Request tokens", r"'Response tokens'"),
    ],
)
def test_missing_column(tmp_path, fmt, header, missing):
    p = write(tmp_path, "m.csv", header + "\n" + ",".join(["1"] * len(header.split(","))) + "\n")
    with pytest.raises(TraceFormatError,
                       match=rf"m\.csv: missing column {missing}.*expected columns"):
        load_trace(p, fmt)


def test_empty_and_header_only(tmp_path):
    for name, text in [("e.csv", ""), ("w.csv", "\n  \n"), ("e.jsonl", ""), ("e.json", "")]:
        with pytest.raises(TraceFormatError, match="no requests"):
            load_trace(write(tmp_path, name, text))
    with pytest.raises(TraceFormatError, match="no requests"):
        load_trace(write(tmp_path, "h.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n"))
    for fmt in ("azure", "lengths", "burstgpt", "mooncake"):
        with pytest.raises(TraceFormatError, match="no requests"):
            load_trace(write(tmp_path, "e2.txt", ""), fmt)
    with pytest.raises(TraceFormatError, match="no requests"):
        load_trace(write(tmp_path, "l.json", "[]"), "muxserve-workload")


def test_missing_file_and_bad_args(tmp_path):
    with pytest.raises(FileNotFoundError, match="trace file not found"):
        load_trace(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError):
        detect_format(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError):
        load_muxserve_rates(tmp_path / "nope.yaml")
    p = write(tmp_path, "a.csv", AZURE_VIDUR)
    with pytest.raises(ValueError, match="fmt must be one of"):
        load_trace(p, "csv")
    with pytest.raises(ValueError, match="sharegpt_turns"):
        load_trace(p, sharegpt_turns="some")
    with pytest.raises(ValueError, match="infer_sessions"):
        load_trace(p, infer_sessions=True)


def test_all_rows_zero(tmp_path):
    p = write(tmp_path, "z.csv", "num_prefill_tokens,num_decode_tokens\n0,3\n4,0\n")
    with pytest.raises(TraceFormatError, match="no requests left after dropping 2 row"):
        load_trace(p)


# ---------------------------------------------------------------------------------------------
# Token-length CSVs

LENGTHS = """num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio
10,5,15,2.0
20,4,24,5.0
3,7,10,0.4
0,9,9,0.0
12,0,12,inf
30,2,32,15.0
"""


def test_lengths(tmp_path):
    df = load_trace(write(tmp_path, "lengths.csv", LENGTHS), llm="x")
    check_workload(df, timed=False)
    assert df["prompt_tokens"].tolist() == [10, 20, 3, 30]
    assert df["output_tokens"].tolist() == [5, 4, 7, 2]
    assert df.attrs["dropped_rows"] == 2
    assert "session_id" not in df.columns


def test_lengths_sessions(tmp_path):
    df = load_trace(write(tmp_path, "lengths.csv", LENGTHS), infer_sessions=True)
    # 10+5=15 <= 20 continues; 3 < 24 new; 0 < 10 new; 12 >= 9 continues; 30 >= 12 continues.
    assert df["session_id"].dtype == np.int64
    assert df["session_id"].tolist() == [0, 0, 1, 2]


# ---------------------------------------------------------------------------------------------
# Mooncake

MOONCAKE = "\n".join(
    json.dumps(r)
    for r in [
        {"timestamp": 3000, "input_length": 600, "output_length": 10, "hash_ids": [0, 1]},
        {"timestamp": 0, "input_length": 700, "output_length": 20, "hash_ids": [0, 2]},
        {"timestamp": 0, "input_length": 50, "output_length": 0, "hash_ids": [3]},
        {"timestamp": 1500, "input_length": 800, "output_length": 30, "hash_ids": [0, 2, 4]},
    ]
) + "\n\n"


def test_mooncake(tmp_path):
    p = write(tmp_path, "trace.jsonl", MOONCAKE)
    assert detect_format(p) == "mooncake"
    df = load_trace(p, llm="kimi")
    check_workload(df)
    assert df["arrival_s"].tolist() == [0.0, 1.5, 3.0]
    assert df["prompt_tokens"].tolist() == [700, 800, 600]
    assert [list(x) for x in df["prefix_ids"]] == [[0, 2], [0, 2, 4], [0, 1]]
    assert df.attrs["dropped_rows"] == 1
    assert set(df["llm"]) == {"kimi"}


@pytest.mark.parametrize(
    "bad, problem",
    [
        ('{"timestamp": 1, "input_length": 5', r"line 3: malformed JSON"),
        ('{"timestamp": 1, "input_length": "5", "output_length": 2}',
         r"line 3: 'input_length' is not an integer \('5'\)"),
        ('{"timestamp": 1, "input_length": -5, "output_length": 2}',
         r"line 3: 'input_length' is negative"),
        ('{"timestamp": 1, "output_length": 2}',
         r"line 3: missing key\(s\) \['input_length'\]; expected keys"),
        ('{"timestamp": 1, "input_length": 5, "output_length": 2, "hash_ids": [1, "a"]}',
         r"line 3: 'hash_ids' holds a non-integer"),
        ('[1, 2]', r"line 3: expected a JSON object"),
    ],
)
def test_mooncake_bad_line(tmp_path, bad, problem):
    good = '{"timestamp": 0, "input_length": 5, "output_length": 2}'
    p = write(tmp_path, "m.jsonl", f"{good}\n\n{bad}\n{good}\n")
    with pytest.raises(TraceFormatError, match=rf"m\.jsonl {problem}"):
        load_trace(p, "mooncake")


# ---------------------------------------------------------------------------------------------
# BurstGPT

BURST = """Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type
5,ChatGPT,472,18,490,Conversation log
45,ChatGPT,1087,0,1087,Conversation log
1,GPT-4,417,276,693,API log
46,GPT-4,243,13,256,Conversation log
"""


def test_burstgpt(tmp_path):
    p = write(tmp_path, "BurstGPT_1.csv", BURST)
    assert detect_format(p) == "burstgpt"
    df = load_trace(p, llm="ignored")
    check_workload(df)
    assert df["llm"].tolist() == ["GPT-4", "ChatGPT", "GPT-4"]
    assert df["arrival_s"].tolist() == [0.0, 4.0, 45.0]
    assert df["output_tokens"].tolist() == [276, 18, 13]
    assert df.attrs["dropped_rows"] == 1


def test_burstgpt_empty_model(tmp_path):
    p = write(tmp_path, "b.csv", BURST + "50,,3,4,7,API log\n")
    with pytest.raises(TraceFormatError, match=r"b\.csv line 6: column 'Model' is empty"):
        load_trace(p)


# ---------------------------------------------------------------------------------------------
# ShareGPT conversation JSON

WORDS = ["hello", "world", "how", "are", "you", "fine", "thanks", "and", "what", "is", "up",
         "the", "sky", "blue"]

SHAREGPT = [
    {"id": "c1", "conversations": [
        {"from": "human", "value": "hello world"},
        {"from": "gpt", "value": "how are you"},
        {"from": "human", "value": "fine thanks"},
        {"from": "gpt", "value": "what is up"},
    ]},
    {"id": "c2", "conversations": [
        {"from": "gpt", "value": "hello"},
        {"from": "human", "value": "the sky is blue"},
        {"from": "gpt", "value": "fine"},
    ]},
    {"id": "c3", "conversations": [{"from": "human", "value": "lonely"}]},
    {"id": "c4", "conversations": [
        {"from": "human", "value": "hello"},
        {"from": "gpt", "value": ""},
    ]},
]


@pytest.fixture(scope="module")
def hf_tokenizer():
    """A real transformers tokenizer built offline: WordLevel over WORDS, whitespace split."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def test_sharegpt_first(tmp_path, hf_tokenizer):
    p = write(tmp_path, "sg.json", json.dumps(SHAREGPT))
    assert detect_format(p) == "sharegpt"
    df = load_trace(p, tokenizer=hf_tokenizer)
    check_workload(df, timed=False)
    assert df["session_id"].tolist() == ["c1", "c2"]
    assert df["prompt_tokens"].tolist() == [2, 4]
    assert df["output_tokens"].tolist() == [3, 1]
    assert df.attrs["dropped_rows"] == 1  # c4: empty answer
    assert df.attrs["skipped_conversations"] == 1  # c3: no pair


def test_sharegpt_all_turns(tmp_path, hf_tokenizer):
    p = write(tmp_path, "sg.json", json.dumps(SHAREGPT))
    df = load_trace(p, tokenizer=hf_tokenizer, sharegpt_turns="all", llm="vicuna")
    check_workload(df, timed=False)
    assert df["session_id"].tolist() == ["c1", "c1", "c2"]
    # c1 turn 2: "hello world" + "how are you" + "fine thanks" = 2 + 3 + 2 tokens.
    assert df["prompt_tokens"].tolist() == [2, 7, 1 + 4]
    assert df["output_tokens"].tolist() == [3, 3, 1]
    assert set(df["llm"]) == {"vicuna"}


def test_sharegpt_tokenizer_by_path_and_callable(tmp_path, hf_tokenizer):
    p = write(tmp_path, "sg.json", json.dumps(SHAREGPT))
    tok_dir = tmp_path / "tok"
    hf_tokenizer.save_pretrained(tok_dir)
    by_path = load_trace(p, tokenizer=str(tok_dir))
    by_fn = load_trace(p, tokenizer=str.split)
    by_obj = load_trace(p, tokenizer=hf_tokenizer)
    pd.testing.assert_frame_equal(by_path, by_obj)
    pd.testing.assert_frame_equal(by_fn, by_obj)
    with pytest.raises(OSError, match="offline"):
        load_trace(p, tokenizer=str(tmp_path / "no-such-tokenizer"))


def test_sharegpt_errors(tmp_path):
    p = write(tmp_path, "sg.json", json.dumps(SHAREGPT))
    with pytest.raises(TraceFormatError,
                       match=r"sg\.json: ShareGPT conversation JSON needs a tokenizer.*tokenizer="):
        load_trace(p)
    bad = SHAREGPT[:1] + [{"id": "x", "conversations": [{"from": "human"}]}]
    p = write(tmp_path, "bad.json", json.dumps(bad))
    with pytest.raises(TraceFormatError, match=r"bad\.json records\[1\]\.conversations\[0\]"):
        load_trace(p, "sharegpt", tokenizer=str.split)
    p = write(tmp_path, "broken.json", '[{"id": "a",\n "conversations": [}]')
    with pytest.raises(TraceFormatError, match=r"broken\.json line 2 column \d+: malformed JSON"):
        load_trace(p, "sharegpt", tokenizer=str.split)


# ---------------------------------------------------------------------------------------------
# MuxServe workload JSON and models.yaml


def test_muxserve_workload(tmp_path):
    reqs = [
        {"model_name": "llm-1", "arrival_time": 2.0, "prompt_len": 10, "output_len": 3},
        {"model": "llm-2", "timestamp": 1.0, "input_len": 20, "output_tokens": 4},
        {"llm": "llm-1", "arrival_s": 1.5, "prompt_tokens": 30, "output_len": 0},
    ]
    p = write(tmp_path, "wl.json", json.dumps({"requests": reqs}))
    assert detect_format(p) == "muxserve-workload"
    df = load_trace(p)
    check_workload(df)
    assert df["llm"].tolist() == ["llm-2", "llm-1"]
    assert df["arrival_s"].tolist() == [0.0, 1.0]
    assert df.attrs["dropped_rows"] == 1
    # Plain list, no model key -> the llm argument.
    p2 = write(tmp_path, "wl2.json",
               json.dumps([{"arrival_time": 0, "prompt_len": 1, "output_len": 1}]))
    assert load_trace(p2, llm="solo")["llm"].tolist() == ["solo"]


def test_muxserve_workload_errors(tmp_path):
    p = write(tmp_path, "wl.json", json.dumps([
        {"arrival_time": 0, "prompt_len": 1, "output_len": 1},
        {"arrival_time": 0, "output_len": 1},
    ]))
    msg = r"wl\.json records\[1\]: missing key 'prompt_len' or 'input_len' or 'prompt_tokens'"
    with pytest.raises(TraceFormatError, match=msg):
        load_trace(p, "muxserve-workload")
    p = write(tmp_path, "wl.json",
              json.dumps([{"arrival_time": "soon", "prompt_len": 1, "output_len": 1}]))
    with pytest.raises(TraceFormatError,
                       match=r"records\[0\]: 'arrival_time' is not a finite number"):
        load_trace(p, "muxserve-workload")


MODELS_YAML = """cluster:
  nnodes: 1
  ngpus_per_node: 4
models:
- name: a
  model: /ckpt/huggyllama/LLaMA-13B
  rate: 2.5
- name: b
  model: /ckpt/huggyllama/llama-7b/
  rate: 1
avg_output_len: 261.5
avg_prompt_len: 100.25
"""


def test_load_muxserve_rates(tmp_path):
    r = load_muxserve_rates(write(tmp_path, "models.yaml", MODELS_YAML))
    assert r["llm"].tolist() == ["a", "b"]
    assert r["model"].tolist() == ["llama-13b", "llama-7b"]
    assert r["rate"].tolist() == [2.5, 1.0] and r["rate"].dtype == np.float64
    assert r.attrs["avg_prompt_len"] == 100.25 and r.attrs["avg_output_len"] == 261.5
    assert r.attrs["nodes"] == 1 and r.attrs["gpus_per_node"] == 4


@pytest.mark.parametrize(
    "old, new, problem",
    [
        ("LLaMA-13B", "gpt-5",
         r"models\[0\] \('a'\): model 'gpt-5'.*not in muxsim\.catalog\.MODELS"),
        ("rate: 1\n", "rate: -1\n", r"models\[1\] \('b'\): 'rate' is not a finite rate"),
        ("- name: b\n", "- name: a\n", r"models\[1\]: duplicate name 'a'"),
        ("  rate: 2.5\n", "", r"models\[0\]: missing key\(s\) \['rate'\]"),
    ],
)
def test_load_muxserve_rates_errors(tmp_path, old, new, problem):
    p = write(tmp_path, "models.yaml", MODELS_YAML.replace(old, new))
    with pytest.raises(TraceFormatError, match=problem):
        load_muxserve_rates(p)


# ---------------------------------------------------------------------------------------------
# detect_format, assign_arrivals, save/load round trip


def test_detect_format(tmp_path):
    assert detect_format(write(tmp_path, "a.csv", AZURE_VIDUR)) == "azure"
    assert detect_format(write(tmp_path, "o.csv", AZURE_ORIG)) == "azure"
    assert detect_format(write(tmp_path, "l.csv", LENGTHS)) == "lengths"
    assert detect_format(write(tmp_path, "b.txt", BURST)) == "burstgpt"
    assert detect_format(write(tmp_path, "m.json", MOONCAKE)) == "mooncake"
    assert detect_format(write(tmp_path, "w.json", '[{"arrival_time": 0}]')) == "muxserve-workload"
    assert set(TRACE_FORMATS) == {"azure", "mooncake", "lengths", "burstgpt", "sharegpt",
                                  "muxserve-workload"}
    with pytest.raises(TraceFormatError, match="cannot tell.*azure, mooncake, lengths"):
        detect_format(write(tmp_path, "x.csv", "foo,bar\n1,2\n"))
    with pytest.raises(TraceFormatError, match="load_muxserve_rates"):
        detect_format(write(tmp_path, "models.yaml", MODELS_YAML))


def test_detect_format_precedence(tmp_path):
    # Where two formats' rules both match, their SNIFF ranks and then registry order decide.
    mixed = "Timestamp,Model,arrived_at,num_prefill_tokens\n0,a,0,3\n"
    assert detect_format(write(tmp_path, "m.csv", mixed)) == "burstgpt"
    assert detect_format(write(tmp_path, "v.csv", AZURE_VIDUR)) == "azure"  # has lengths' names
    both = [{"id": "c", "input_length": 3, "conversations": []}]
    assert detect_format(write(tmp_path, "p.json", json.dumps(both, indent=1))) == "sharegpt"
    assert detect_format(write(tmp_path, "l.jsonl", json.dumps(both[0]))) == "mooncake"
    pretty = '[\n {"timestamp": 1,\n "input_length": 2}]'  # no whole object on line 1
    assert detect_format(write(tmp_path, "t.json", pretty)) == "mooncake"


def test_registry_is_one_table(tmp_path, monkeypatch):
    params = inspect.signature(load_trace).parameters
    keyword_only = {n for n, v in params.items() if v.kind is v.KEYWORD_ONLY}
    assert formats.TRACE_FORMATS == tuple(formats.FORMATS) == TRACE_FORMATS
    for name, entry in formats.FORMATS.items():
        assert set(entry.options) <= keyword_only, name
        assert entry.load.__doc__ and entry.sniff, name

    # A new format is a loader, its detection rules and one registry entry; load_trace and
    # detect_format need no change.
    def load_pairs(p, *, llm):
        """JSON list of [prompt, output] pairs."""
        doc = read_json_document(p)
        prompt, output = (np.asarray(x, dtype=np.int64) for x in zip(*doc))
        return trace_frame(p, "pairs", llm, None, prompt, output)

    rule = SniffRule("json_text", lambda text: text.startswith("[["))
    monkeypatch.setitem(formats.FORMATS, "pairs", formats.TraceFormat(load_pairs, ("llm",), (rule,)))
    monkeypatch.setattr(formats, "TRACE_FORMATS", tuple(formats.FORMATS))
    path = write(tmp_path, "p.json", "[[3, 4], [0, 2], [5, 6]]")
    assert detect_format(path) == "pairs"
    df = load_trace(path, llm="m")
    check_workload(df, timed=False)
    assert df["prompt_tokens"].tolist() == [3, 5] and df.attrs["dropped_rows"] == 1
    with pytest.raises(ValueError, match="infer_sessions applies to fmt='lengths' only"):
        load_trace(path, infer_sessions=True)


@FAST
@given(n=st.integers(1, 300), rate=st.floats(0.1, 100.0), seed=st.integers(0, 2**32),
       gamma=st.booleans())
def test_assign_arrivals_property(n, rate, seed, gamma):
    df = pd.DataFrame({"request_id": np.arange(n, dtype=np.int64),
                       "llm": pd.Series(["m"] * n, dtype=str),
                       "prompt_tokens": np.ones(n, dtype=np.int64),
                       "output_tokens": np.ones(n, dtype=np.int64)})
    kw = {"process": "gamma", "cv": 3.0} if gamma else {}
    a = assign_arrivals(df, rate, seed, **kw)
    b = assign_arrivals(df, rate, seed, **kw)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == list(WORKLOAD_COLUMNS)
    t = a["arrival_s"].to_numpy()
    assert len(t) == n and t[0] >= 0 and np.all(np.diff(t) >= 0)
    assert "arrival_s" not in df.columns  # input untouched


def test_assign_arrivals_rate_and_errors(tmp_path):
    df = load_trace(write(tmp_path, "l.csv", "num_prefill_tokens,num_decode_tokens\n"
                          + "5,6\n" * 4000))
    a = assign_arrivals(df, 20.0, seed=1)
    gaps = np.diff(a["arrival_s"].to_numpy())
    assert gaps.mean() == pytest.approx(1 / 20.0, rel=0.06)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.08)
    assert not a["arrival_s"].equals(assign_arrivals(df, 20.0, seed=2)["arrival_s"])
    assert a.attrs["dropped_rows"] == 0
    g = assign_arrivals(df, 20.0, seed=1, process="gamma", cv=2.0)
    gg = np.diff(g["arrival_s"].to_numpy())
    assert gg.std() / gg.mean() == pytest.approx(2.0, rel=0.15)
    with pytest.raises(ValueError, match="seed"):
        assign_arrivals(df, 1.0, seed=-1)
    with pytest.raises(ValueError, match="rate"):
        assign_arrivals(df, 0.0, seed=0)
    with pytest.raises(ValueError, match="cv"):
        assign_arrivals(df, 1.0, seed=0, cv=2.0)
    with pytest.raises(ValueError, match="missing column"):
        assign_arrivals(df.drop(columns="llm"), 1.0, seed=0)


def test_round_trip_save_load(tmp_path):
    moon = load_trace(write(tmp_path, "m.jsonl", MOONCAKE))
    back = load_workload(save_workload(moon, tmp_path / "m.parquet"))
    pd.testing.assert_frame_equal(back.drop(columns="prefix_ids"),
                                  moon.drop(columns="prefix_ids"))
    assert [list(x) for x in back["prefix_ids"]] == [list(x) for x in moon["prefix_ids"]]
    lengths = load_trace(write(tmp_path, "l.csv", LENGTHS), infer_sessions=True)
    wl = assign_arrivals(lengths, 5.0, seed=3)
    back = load_workload(save_workload(wl, tmp_path / "l.parquet"))
    pd.testing.assert_frame_equal(back, wl)
    assert back["session_id"].dtype == np.int64
    burst = load_trace(write(tmp_path, "b.csv", BURST))
    back = load_workload(save_workload(burst, tmp_path / "b.parquet"))
    pd.testing.assert_frame_equal(back, burst)


# ---------------------------------------------------------------------------------------------
# The real files in ../shared/data (figures as in traces/README.md)

REAL = {
    # file: (format, rows, mean prompt, mean output, duration s or None, gap CV or None)
    "azure_llm_2023_conv.csv": ("azure", 19_366, 1154.7, 211.1, 3501.7, 1.094),
    "azure_llm_2023_code.csv": ("azure", 8_819, 2047.8, 27.9, 3435.9, 13.15),
    "mooncake_conversation_trace.jsonl": ("mooncake", 12_031, 12035.1, 342.6, 3537.0, 3.034),
    "sharegpt_8k_lengths_llama2.csv": ("lengths", 30_731, 2340.0, 438.7, None, None),
    "arxiv_summarization_lengths_llama2.csv": ("lengths", 28_257, 2588.1, 291.4, None, None),
}


@needs_shared
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_trace(name):
    fmt, rows, mp, mo, dur, cv = REAL[name]
    path = SHARED / "traces" / name
    if not path.is_file():
        pytest.skip(f"{path} absent")
    assert detect_format(path) == fmt
    df = load_trace(path)
    check_workload(df, timed=dur is not None)
    # Row counts of ../shared/data/README.md; none of these files has zero-token rows.
    assert df.attrs["dropped_rows"] == 0
    assert len(df) == rows
    assert df["prompt_tokens"].mean() == pytest.approx(mp, abs=0.05)
    assert df["output_tokens"].mean() == pytest.approx(mo, abs=0.05)
    if dur is not None:
        t = df["arrival_s"].to_numpy()
        gaps = np.diff(t)
        assert t[-1] == pytest.approx(dur, abs=0.05)
        assert gaps.std() / gaps.mean() == pytest.approx(cv, abs=0.005)
    if fmt == "mooncake":
        assert df["prefix_ids"].map(len).min() >= 1
    if name.startswith("sharegpt"):
        s = load_trace(path, infer_sessions=True)
        assert s["session_id"].nunique() == 5_678  # as traces/README.md (first turns)


@needs_shared
def test_real_muxserve_rates():
    files = sorted((SHARED / "chatlmsys").glob("*.yaml"))
    if not files:
        pytest.skip("no ../shared/data/chatlmsys/*.yaml")
    for f in files:
        r = load_muxserve_rates(f)
        assert len(r) == 16
        assert r["model"].value_counts().to_dict() == {"llama-13b": 6, "llama-7b": 4,
                                                       "llama-30b": 3, "llama-65b": 3}
        assert r.attrs["nodes"] == 4 and r.attrs["gpus_per_node"] == 8
        assert r.attrs["avg_prompt_len"] == pytest.approx(100.17, abs=0.01)
        # The file name states the maximum rate (rounded down).
        assert int(r["rate"].max()) == int(f.name.split("maxrate_")[1].split("_")[0])
