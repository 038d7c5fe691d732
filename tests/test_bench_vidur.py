"""benchmarks/bench_vidur.py: its muxsim half end to end (no Vidur, nothing installed) and the
Vidur-format profile it derives from muxsim's curves."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_vidur.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_vidur", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_muxsim_only_run_writes_the_figures(tmp_path):
    out = tmp_path / "figures.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--muxsim-only", "--requests", "200", "--repeat", "1",
                        "--json", str(out), "--workdir", str(tmp_path / "work")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "skipped: --muxsim-only" in r.stdout
    res = json.loads(out.read_text())
    assert res["problem"]["requests"] == 200 and res["problem"]["rate_req_s"] == 6.5
    assert res["problem"]["kv_tokens"] > 0
    m, cold = res["muxsim"], res["muxsim_cold"]
    for k in ("sim_wall_s", "req_per_wall_s", "setup_s", "process_wall_s", "peak_rss_mib", "ttft_mean_s",
              "ttft_p50_s", "ttft_p99_s", "e2e_mean_s", "e2e_p50_s", "e2e_p99_s", "throughput_req_s"):
        assert m[k] > 0, k
    assert m["requests"] == 200 and m["unfinished"] == 0
    assert m["ttft_p50_s"] <= m["ttft_p99_s"] and m["e2e_p50_s"] <= m["e2e_p99_s"]
    assert cold["requests"] == 1 and cold["process_wall_s"] > 0 and cold["peak_rss_mib"] > 0
    assert res["vidur_skipped"] == "--muxsim-only" and "vidur" not in res
    # the Vidur trace holds the same requests as muxsim's workload
    import pandas as pd

    wl = pd.read_parquet(tmp_path / "work" / "full" / "workload.parquet")
    tr = pd.read_csv(tmp_path / "work" / "full" / "vidur_trace.csv")
    assert list(tr.columns) == ["Date", "Time", "PromptTokenCount", "CompletionTokenCount"]
    assert (tr["PromptTokenCount"].to_numpy() == wl["prompt_tokens"].to_numpy()).all()
    assert (tr["CompletionTokenCount"].to_numpy() == wl["output_tokens"].to_numpy()).all()
    assert abs(tr["Time"].to_numpy() - wl["arrival_s"].to_numpy()).max() < 1e-9


def test_derived_vidur_profile_reproduces_muxsim_latency():
    mod = _module()
    curve = mod.muxsim_curve()
    mlp, att = mod.vidur_profile(curve)
    ops = [c for c in mlp.columns if c.startswith("time_stats.")]
    per_layer = mlp.set_index("num_tokens")[ops].sum(axis=1)
    L = 32
    # one prompt of c tokens: L (f(c) + attn_prefill(c)) = muxsim's prefill job
    pre = att[(att.prefill_chunk_size > 0) & (att.kv_cache_size == 0)].set_index("prefill_chunk_size")
    for c in (256, 512, 1024, 2048):
        ms = L * (per_layer[c] + pre.loc[c, "time_stats.attn_prefill.median"])
        assert ms == pytest.approx(curve.prefill_s(c, 1, 100.0) * 1e3, rel=1e-9)
    # a decode batch of B requests with K context tokens each: muxsim's decode iteration
    dec = att[att.prefill_chunk_size == 0].set_index(["batch_size", "kv_cache_size"])
    for b, kv in ((8, 512), (64, 256), (256, 1024)):
        ms = L * (per_layer[b] + dec.loc[(b, kv), "time_stats.attn_decode.median"])
        assert ms == pytest.approx(curve.decode_s(b, b * kv, 100.0) * 1e3, rel=1e-9)
    assert (att[["time_stats.attn_prefill.median", "time_stats.attn_decode.median"]] >= 0).all().all()
