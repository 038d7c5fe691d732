"""muxsim next to Vidur: the same LLaMA-2-7B / one A100 / Poisson ShareGPT problem, both timed.

Vidur (Microsoft, MLSys 2024; the ``vidur`` package on PyPI) is the field's reference LLM
inference simulator. This script times both simulators, in ONE run on this machine, on one
problem:

* one LLaMA-2-7B on one A100 (muxsim: catalog ``llama-7b``, the same architecture, on
  ``a100-80gb``, strategy ``spatial`` = vLLM-style continuous batching of one LLM on its own
  GPU; Vidur: ``meta-llama/Llama-2-7b-hf``, device ``a100``, tensor parallel 1, one replica,
  its ``vllm`` replica scheduler);
* the same knobs: batch cap 256 requests, 2048 tokens per prefill batch, KV blocks of 32 tokens,
  the same KV capacity (muxsim's spatial baseline: half the GPU's memory; Vidur keeps its
  default watermark of 1 % of the blocks);
* the same requests: ``--requests`` (10,000) with ShareGPT V3 first-turn lengths (muxsim's
  ``sharegpt_v3`` length sampler, shipped as package data), Poisson arrivals at ``--rate``
  req/s (6.5: about 80 % of the ~8.1 req/s muxsim's spatial 7B sustains on this length mix),
  one ``--seed``. They are written once, as a muxsim workload Parquet and as the CSV Vidur's
  ``trace_replay`` request generator reads (columns Date, Time, PromptTokenCount,
  CompletionTokenCount; its scale factors set to 1).

Each simulator runs in its own fresh subprocess, pinned to one core (``taskset -c 0`` when
present) with OMP/BLAS threads at 1. Per simulator the script reports: the simulation's wall
time (the event loop only; median of ``--repeat`` runs), simulated requests per wall second,
the cold start (process wall of a 1-request run: interpreter start, imports, set-up, one
request) and the set-up time inside the full run, and the peak RSS of the process (from
``wait4``), plus muxsim / Vidur ratios; then both simulators' headline outputs side by side
(mean / p50 / p99 TTFT and end-to-end latency, throughput, preemptions).

Vidur runs in its own virtualenv (``--venv``, default ``~/.cache/muxsim-bench/vidur-venv``),
created and filled from PyPI (``pip install vidur==0.0.26``; no torch needed) when it lacks
Vidur. Vidur 0.0.26 takes its kernel profiles, and the predictions its random forests make from
them, from HuggingFace datasets (project-vajra/...); the HuggingFace hub cannot be reached from
this project's machines, and no PyPI release of Vidur ships profiling CSVs (checked: 0.0.1 to
0.0.26). So the script writes a Vidur-format A100 profile of LLaMA-2-7B (``mlp.csv.xz``,
``attention.csv.xz``, laid out as the hub's cache lays a dataset out, read with
``HF_HUB_OFFLINE=1``) **derived from muxsim's A100 latency curves** (fitted to MuxServe's A100
measurements, job overheads included): per layer, the four projections share the token-count
part of a job by their FLOPs, ``attn_prefill`` and ``attn_decode`` carry the rest of muxsim's
prefill / decode latency. Once (cached in ``<venv>/../vidur-cache``), Vidur trains its random
forests on that profile (its own 10-fold grid search, reduced to one setting -- 250 trees,
depth 16, min split 2 -- to keep the one-off short; ``--vidur-full-grid`` runs Vidur's
27-setting default) and predicts its
lookup tables; the script then files those tables where Vidur looks for its published
predictions, so the timed runs take Vidur's ordinary path (load the predictions, simulate).
Both simulators thus run on (nearly) the same latency model, so their outputs should agree to
within their scheduling differences; the speed figures do not depend on the profile's values.
If Vidur cannot be installed or run, the script prints ``skipped: <reason>`` and exits 0 after
reporting muxsim's figures.

Run (from the project root; the first run installs Vidur, a few minutes, and trains its forests
once, ~1.5 min)::

    python benchmarks/bench_vidur.py                       # 10,000 requests, rate 6.5, 3 repeats
    python benchmarks/bench_vidur.py --requests 2000 --repeat 1 --json /tmp/vidur.json
    python benchmarks/bench_vidur.py --muxsim-only --requests 200   # no Vidur (the test's mode)

What is timed: muxsim's wall is ``simulate_cell`` (event loop plus its per-request table);
Vidur's is ``Simulator.run`` less its output writing (request-metrics CSV, ~0.9 s, reported as
``write_s`` in the JSON); set-up (imports, config, workload, placement / predictor tables) is
reported apart, and the cold start covers all of it for one request.

Result (this project's 2-core AMD EPYC VM, shared with other work: load average ~2.5 during
the run; Python 3.11.7, muxsim at 90f1323, Vidur 0.0.26; 10,000 requests, 6.5 req/s, seed 0,
median of 3 interleaved runs, each pinned to core 0; ``python benchmarks/bench_vidur.py``)::

    |                                       | muxsim | Vidur  | muxsim / Vidur |
    | simulation wall (s)                   | 0.253  | 11.54  | 0.022          |
    | simulated requests per wall second    | 39,526 | 867    | 45.6x          |
    | set-up inside the full run (s)        | 1.28   | 3.08   | 0.42           |
    | cold start, 1-request process (s)     | 1.82   | 3.47   | 0.53           |
    | full run, process wall (s)            | 2.35   | 16.03  | 0.15           |
    | peak RSS, full run (MiB)              | 261    | 314    | 0.83           |
    | TTFT mean / p50 / p99 (ms)            | 43.7 / 36.5 / 118 | 46.0 / 39.5 / 123 |  |
    | E2E mean / p50 / p99 (s)              | 7.12 / 4.33 / 32.0 | 8.46 / 5.15 / 38.6 |  |
    | throughput (req/s; output tokens/s)   | 6.516; 1,525 | 6.509; 1,524 |        |

Vidur's end-to-end latencies run ~19 % longer because it rounds each decode batch's mean
context up to a multiple of 256 tokens (``kv_cache_prediction_granularity``, its default); with
``--vidur-kv-granularity 32`` every headline output agrees with muxsim's within 1.4 % (TTFT
43.7 / 36.6 / 119 ms, E2E 7.18 / 4.35 / 32.5 s, 6.514 req/s) and the speed ratio is the same
(45.4x: 31,815 vs 701 req/s in that run). Run-to-run noise on this VM is 10-25 %: a third run
(a clean export of 90f1323, load average 4.1) gave 28,692 vs 532 req/s, 53.9x, with the same
outputs to the last digit. Vidur's one-off forest training on the derived profile took 67-92 s
(2 cores, reduced grid).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

VIDUR_VERSION = "0.0.26"
VIDUR_MODEL = "meta-llama/Llama-2-7b-hf"
VIDUR_DEVICE = "a100"
VIDUR_NETWORK = "a100_pairwise_nvlink"
MODEL = "llama-7b"  # LLaMA-1 7B: LLaMA-2-7B's architecture (catalog: the same profile)
GPU = "a100-80gb"
BATCH_CAP = 256  # muxsim scheduler.max_num_seqs
PREFILL_TOKENS = 2048  # muxsim scheduler.max_prefill_tokens = Vidur vllm max_tokens_in_batch
BLOCK_TOKENS = 32  # muxsim's KV block (catalog.KV_BLOCK_TOKENS); Vidur's block_size
MAX_TOKENS = 4096  # LLaMA-2's context: Vidur's per-request cap and prediction range
TRACE_DATE = "2023-08-21"  # Vidur's trace_replay keeps rows of one date
PROFILE_ORG = "muxsim-bench"
PRED_ORG, PRED_COLLECTION = "project-vajra", "dev-staging"  # Vidur's defaults
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "RAYON_NUM_THREADS")

# Vidur's per-layer operations and their FLOP shares of a LLaMA-2-7B layer's matmuls
# (qkv 3 d^2, o d^2, gate+up 2 d f, down d f; d = 4096, f = 11008).
_D, _F = 4096, 11008
_PROJ_FLOPS = {"attn_pre_proj": 3 * _D * _D, "attn_post_proj": _D * _D,
               "mlp_up_proj": 2 * _D * _F, "mlp_down_proj": _D * _F}
_ZERO_OPS = ("mlp_act", "input_layernorm", "post_attention_layernorm", "attn_rope", "add")


# --------------------------------------------------------------------------------------------
# the problem

def make_workload(n: int, rate: float, seed: int) -> pd.DataFrame:
    """``n`` requests of one LLM: ShareGPT V3 lengths, Poisson arrivals at ``rate`` req/s."""
    from muxsim.workload.lengths import EmpiricalLengths

    rng = np.random.default_rng(seed)
    prompt, output = EmpiricalLengths.sharegpt_v3().sample(rng, n)
    arrival = np.cumsum(rng.exponential(1.0 / rate, n))
    return pd.DataFrame({"request_id": np.arange(n, dtype=np.int64), "llm": "llm-0",
                         "arrival_s": arrival, "prompt_tokens": prompt.astype(np.int64),
                         "output_tokens": output.astype(np.int64)})


def write_problem(wl: pd.DataFrame, folder: Path) -> tuple[Path, Path, Path]:
    """The workload as a muxsim Parquet plus an experiment config replaying it, and as a
    Vidur trace_replay CSV. Returns (config, parquet, csv)."""
    from muxsim.workload.generate import save_workload

    folder.mkdir(parents=True, exist_ok=True)
    parquet = save_workload(wl, folder / "workload.parquet")
    cfg = folder / "muxsim.yaml"
    cfg.write_text(
        "name: bench_vidur\nseed: 0\n"
        f"cluster: {{nodes: 1, gpus_per_node: 1, gpu: {GPU}}}\n"
        f"llms:\n  - {{model: {MODEL}, count: 1}}\n"
        f"workload:\n  file: {parquet}\n"
        f"scheduler: {{max_num_seqs: {BATCH_CAP}, max_prefill_tokens: {PREFILL_TOKENS}}}\n"
        "strategies: [spatial]\n")
    csv = folder / "vidur_trace.csv"
    pd.DataFrame({"Date": TRACE_DATE, "Time": wl["arrival_s"].to_numpy(),
                  "PromptTokenCount": wl["prompt_tokens"].to_numpy(),
                  "CompletionTokenCount": wl["output_tokens"].to_numpy()}).to_csv(csv, index=False)
    return cfg, parquet, csv


def muxsim_kv_tokens() -> int:
    """KV tokens the spatial baseline's single 7B GPU holds (muxsim's head-wise blocks)."""
    from muxsim.catalog import KV_BLOCK_TOKENS, get_gpu, get_model
    from muxsim.core.memory import kv_blocks_per_gpu
    from muxsim.core.settings import SchedulerConfig

    s, m = SchedulerConfig(), get_model(MODEL)
    blocks = kv_blocks_per_gpu([m], 1, get_gpu(GPU), s.activation_reserve_gib, s.context_reserve_gib,
                               s.spatial_kv_fraction)
    return blocks // (m.n_layers * m.n_kv_heads) * KV_BLOCK_TOKENS


# --------------------------------------------------------------------------------------------
# the muxsim half (runs in a child process)

def headline(arrival, first_token, finish, output_tokens, preemptions) -> dict:
    """Latency and throughput figures of one simulated run (seconds, req/s, tokens/s)."""
    arrival, first_token, finish = (np.asarray(x, dtype=float) for x in (arrival, first_token, finish))
    ttft, e2e = first_token - arrival, finish - arrival
    span = float(np.max(finish) - np.min(arrival))
    q = lambda x, p: float(np.quantile(x, p))  # noqa: E731
    return {"requests": int(len(arrival)), "makespan_s": span,
            "throughput_req_s": len(arrival) / span,
            "throughput_out_tok_s": float(np.sum(output_tokens)) / span,
            "ttft_mean_s": float(np.mean(ttft)), "ttft_p50_s": q(ttft, 0.5), "ttft_p99_s": q(ttft, 0.99),
            "e2e_mean_s": float(np.mean(e2e)), "e2e_p50_s": q(e2e, 0.5), "e2e_p99_s": q(e2e, 0.99),
            "preemptions": int(np.sum(preemptions))}


def muxsim_child(cfg_path: str, out: str) -> None:
    t0 = time.perf_counter()
    from muxsim.config import load_config
    from muxsim.experiment import plan_experiment, simulate_cell, strategy_placement

    cfg = load_config(cfg_path)
    plan = plan_experiment(cfg)[0]
    placement = plan.placements[strategy_placement(cfg, "spatial")]
    t1 = time.perf_counter()
    res = simulate_cell(cfg, plan.cell, "spatial", placement, plan.workload)
    t2 = time.perf_counter()
    r = res.requests
    done = r[r["finished"]]
    fig = {"setup_s": t1 - t0, "sim_wall_s": t2 - t1, "sim_time_s": res.sim_time_s, "jobs": res.n_jobs,
           "unfinished": int((~r["finished"]).sum()),
           **headline(done["arrival_s"], done["first_token_s"], done["finish_s"], done["output_tokens"],
                      done["preemptions"])}
    Path(out).write_text(json.dumps(fig))


# --------------------------------------------------------------------------------------------
# the Vidur half

#: Runs inside Vidur's virtualenv: ``python runner.py OUT MODE -- <vidur.main arguments>``.
#: Times the import, the set-up (config, request generation, predictor) and the event loop,
#: apart from the output writing (request metrics CSV). MODE "setup" also reports the
#: repository ids and hashes under which Vidur looks for published predictions.
VIDUR_RUNNER = r'''
import json, sys, time
t0 = time.perf_counter()
out, mode = sys.argv[1], sys.argv[2]
sys.argv = [sys.argv[0]] + sys.argv[4:]
from vidur.config import SimulationConfig
from vidur.simulator import Simulator
from vidur.utils.random import set_seeds
from vidur.execution_time_predictor import sklearn_execution_time_predictor as sk
made = []
if mode == "setup":
    _init = sk.SklearnExecutionTimePredictor.__init__
    def _rec(self, *a, **k):
        made.append(self)
        _init(self, *a, **k)
    sk.SklearnExecutionTimePredictor.__init__ = _rec
t1 = time.perf_counter()
config = SimulationConfig.create_from_cli_args()
set_seeds(config.seed)
sim = Simulator(config)
t2 = time.perf_counter()
w = {}
_write = sim._write_output
def _timed():
    t = time.perf_counter()
    _write()
    w["s"] = time.perf_counter() - t
sim._write_output = _timed
sim.run()
t3 = time.perf_counter()
fig = {"import_s": t1 - t0, "setup_s": t2 - t0, "sim_wall_s": t3 - t2 - w["s"], "write_s": w["s"],
       "sim_time_s": float(sim._time), "output_dir": config.metrics_config.output_dir}
if made:
    p = made[0]
    fig["compute_repo"] = p._get_compute_prediction_repo_id()
    fig["network_repo"] = p._get_network_prediction_repo_id()
    fig["compute_hash"] = p._get_hash(sk.ModelType.COMPUTE)
    fig["network_hash"] = p._get_hash(sk.ModelType.NETWORK)
json.dump(fig, open(out, "w"))
'''


def vidur_profile(curve, kv_step: int = 256, n_layers: int = 32) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A Vidur-format profile (mlp.csv, attention.csv rows; ms per layer) of LLaMA-2-7B on one
    A100, derived from muxsim's latency curve ``curve`` (seconds per job, overheads included).

    Token-count part ``f(T)`` (ms per layer, T = tokens in the batch): the smaller of muxsim's
    prefill of T tokens without its attention term and its decode of T requests without its KV
    term; the four projections share it by FLOPs, the elementwise operations get
    0. ``attn_prefill(kv, c)`` = (muxsim prefill of one c-token prompt - L f(c)) / L;
    ``attn_decode(B, K)`` = (muxsim decode of B requests of K context tokens each - L f(B)) / L
    (clipped at 0). A batch of Vidur then costs L f(T) + its attention, which is muxsim's job
    latency for one prompt or a decode batch (batched prompts: within a few %).
    """
    def f(t: int) -> float:
        # t prompts of one token each: muxsim's prefill without its attention term (r t ~ 0);
        # t requests with empty caches: muxsim's decode without its KV term
        return min(curve.prefill_s(t, t, 100.0), curve.decode_s(t, 0, 100.0)) * 1e3 / n_layers

    tokens = list(range(1, 8)) + list(range(8, MAX_TOKENS + 1, 8))
    share = {k: v / sum(_PROJ_FLOPS.values()) for k, v in _PROJ_FLOPS.items()}
    mlp = pd.DataFrame({"num_tokens": tokens})
    ft = np.array([f(t) for t in tokens])
    for op, s in share.items():
        mlp[f"time_stats.{op}.median"] = ft * s
    for op in _ZERO_OPS:
        mlp[f"time_stats.{op}.median"] = 0.0
    for col, v in (("n_head", 32), ("n_kv_head", 32), ("n_embd", _D), ("n_expanded_embd", _F),
                   ("use_gated_mlp", True), ("vocab_size", 32768), ("num_tensor_parallel_workers", 1)):
        mlp[col] = v

    rows = []
    batches = list(range(1, 16)) + list(range(16, BATCH_CAP + 1, 8))
    for b in batches:
        for kv in range(kv_step, MAX_TOKENS + 1, kv_step):
            t = (curve.decode_s(b, b * kv, 100.0) * 1e3 - n_layers * f(b)) / n_layers
            rows.append((b, kv, 0, 0.0, max(t, 0.0)))
    for c in range(32, MAX_TOKENS + 1, 32):
        t = (curve.prefill_s(c, 1, 100.0) * 1e3 - n_layers * f(c)) / n_layers
        for kv in (0, MAX_TOKENS):
            rows.append((1, kv, c, max(t, 0.0), 0.0))
    att = pd.DataFrame(rows, columns=["batch_size", "kv_cache_size", "prefill_chunk_size",
                                      "time_stats.attn_prefill.median", "time_stats.attn_decode.median"])
    att["time_stats.attn_kv_cache_save.median"] = 0.0
    for col, v in (("n_embd", _D), ("n_q_head", 32), ("n_kv_head", 32), ("block_size", BLOCK_TOKENS),
                   ("num_tensor_parallel_workers", 1)):
        att[col] = v
    return mlp, att


def _hub_dataset(cache: Path, repo_id: str, files: dict[str, Path | bytes]) -> None:
    """Lay ``files`` out as huggingface_hub's cache holds dataset ``repo_id`` (so that
    ``snapshot_download(..., cache_dir=cache)`` finds it with HF_HUB_OFFLINE=1)."""
    store = cache / ("datasets--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snap = store / "snapshots" / commit
    if store.exists():
        shutil.rmtree(store)
    snap.mkdir(parents=True)
    (store / "refs").mkdir()
    (store / "refs" / "main").write_text(commit)
    for name, data in files.items():
        if isinstance(data, Path):
            shutil.copyfile(data, snap / name)
        else:
            (snap / name).write_bytes(data)


def muxsim_curve():
    """muxsim's latency curve of the benchmark's model and GPU as its runs use it (the GPU's
    fitted curves plus the default job-overhead model)."""
    from muxsim.catalog import get_gpu, get_model
    from muxsim.config import load_config
    from muxsim.experiment.placements import latency_models

    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "c.yaml"
        cfg_path.write_text(f"name: p\nseed: 0\ncluster: {{nodes: 1, gpus_per_node: 1, gpu: {GPU}}}\n"
                            f"llms:\n  - {{model: {MODEL}, count: 1, rate: 1}}\n"
                            "workload: {duration_s: 1}\nstrategies: [spatial]\n")
        run_latency, _ = latency_models(load_config(cfg_path))
    return run_latency.curve(get_model(MODEL), 1, get_gpu(GPU))


def prepare_vidur_profile(cache: Path, kv_step: int) -> tuple[str, str, str]:
    """Write the profile datasets into ``cache``; return (compute repo, network repo, digest)."""
    curve = muxsim_curve()
    mlp, att = vidur_profile(curve, kv_step)
    blob_m = mlp.to_csv(index=False).encode()
    blob_a = att.to_csv(index=False).encode()
    digest = hashlib.sha256(blob_m + blob_a).hexdigest()[:10]
    compute = f"{PROFILE_ORG}/llama-2-7b-a100-from-muxsim-{digest}"
    network = f"{PROFILE_ORG}/a100-pairwise-nvlink-unused"
    _hub_dataset(cache / "profiling_data" / "compute", compute, {
        "config.json": json.dumps({"model": VIDUR_MODEL, "device_sku": VIDUR_DEVICE,
                                   "source": "derived from muxsim's a100-80gb llama-7b curves"}).encode(),
        "mlp.csv.xz": lzma.compress(blob_m), "attention.csv.xz": lzma.compress(blob_a)})
    # tensor parallel 1 and one pipeline stage: Vidur reads no network profile, only its config
    empty = lzma.compress(b"size,num_workers,devices_per_node,collective,time_stats.all_reduce.median\n")
    _hub_dataset(cache / "profiling_data" / "network", network, {
        "config.json": json.dumps({"sku": VIDUR_NETWORK}).encode(),
        "all_reduce.csv.xz": empty, "send_recv.csv.xz": empty})
    return compute, network, digest


def vidur_args(trace: Path, n_blocks: int, seed: int, cache: Path, outdir: Path, compute: str, network: str,
               full_grid: bool, kv_granularity: int = 256) -> list[str]:
    """``vidur.main`` arguments of the benchmark problem."""
    p = "--random_forrest_execution_time_predictor_config_"
    args = ["--seed", str(seed),
            "--replica_config_model_name", VIDUR_MODEL, "--replica_config_device", VIDUR_DEVICE,
            "--replica_config_network_device", VIDUR_NETWORK,
            "--replica_config_tensor_parallel_size", "1", "--replica_config_num_pipeline_stages", "1",
            "--cluster_config_num_replicas", "1",
            "--cache_config_block_size", str(BLOCK_TOKENS), "--cache_config_num_blocks", str(n_blocks),
            "--global_scheduler_config_type", "round_robin",
            "--replica_scheduler_config_type", "vllm",
            "--vllm_scheduler_config_batch_size_cap", str(BATCH_CAP),
            "--vllm_scheduler_config_max_tokens_in_batch", str(PREFILL_TOKENS),
            "--request_generator_config_type", "trace_replay",
            "--trace_request_generator_config_trace_file", str(trace),
            "--trace_request_generator_config_date", TRACE_DATE,
            "--trace_request_generator_config_max_tokens", str(MAX_TOKENS),
            "--trace_request_generator_config_prefill_scale_factor", "1",
            "--trace_request_generator_config_decode_scale_factor", "1",
            "--trace_request_generator_config_time_scale_factor", "1",
            "--execution_time_predictor_config_type", "random_forrest",
            p + "model_profiling_dataset", compute, p + "network_profiling_dataset", network,
            p + "cache_dir", str(cache),
            p + "prediction_max_batch_size", str(BATCH_CAP),
            p + "prediction_max_tokens_per_request", str(MAX_TOKENS),
            p + "kv_cache_prediction_granularity", str(kv_granularity),
            "--metrics_config_output_dir", str(outdir),
            "--no-metrics_config_enable_chrome_trace", "--no-metrics_config_store_plots"]
    if not full_grid:
        args += [p + "num_estimators", "250", p + "max_depth", "16", p + "min_samples_split", "2"]
    return args


def ensure_vidur(venv: Path) -> str | None:
    """Create ``venv`` with Vidur from PyPI unless it has it; None when ready, else the reason."""
    py = venv / "bin" / "python"
    check = [str(py), "-c", "import vidur.simulator, vidur._native"]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return None
    print(f"installing vidur=={VIDUR_VERSION} into {venv} (once) ...", flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if r.returncode:
        return f"cannot create a virtualenv at {venv}: {r.stderr.strip()[-300:]}"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", f"vidur=={VIDUR_VERSION}"],
                       capture_output=True, text=True)
    if r.returncode:
        return f"pip install vidur=={VIDUR_VERSION} failed: {r.stderr.strip()[-500:]}"
    r = subprocess.run(check, capture_output=True, text=True)
    if r.returncode:
        return f"vidur does not import after install: {r.stderr.strip()[-500:]}"
    return None


def publish_predictions(cache: Path, setup: dict) -> None:
    """File the predictions Vidur computed (``cache/predictions/<hash>``) where Vidur looks for
    published ones (its hub cache), so timed runs load them as a user's Vidur does."""
    for kind in ("compute", "network"):
        folder = cache / "predictions" / setup[f"{kind}_hash"]
        files = {p.name: p for p in folder.glob("*.csv.xz")} if folder.is_dir() else {}
        _hub_dataset(cache / "hf_predictions" / kind, setup[f"{kind}_repo"],
                     {"config.json": b"{}", **files})


def vidur_headline(outdir: str, sim_time_s: float, wl: pd.DataFrame) -> dict:
    """Headline figures from Vidur's request_metrics.csv (its ids follow the trace's rows)."""
    m = pd.read_csv(Path(outdir) / "request_metrics.csv")
    wl = wl.reset_index(drop=True)
    ids = m["Request Id"].to_numpy() if "Request Id" in m else np.arange(len(m))
    arrival = wl["arrival_s"].to_numpy()[ids]
    first = arrival + m["prefill_e2e_time"].to_numpy()
    finish = arrival + m["request_e2e_time"].to_numpy()
    restarts = m["request_num_restarts"].to_numpy() if "request_num_restarts" in m else np.zeros(len(m))
    fig = headline(arrival, first, finish, wl["output_tokens"].to_numpy()[ids], restarts)
    fig["sim_time_s"] = sim_time_s
    return fig


# --------------------------------------------------------------------------------------------
# processes

def child_env() -> dict:
    env = dict(os.environ)
    for v in THREAD_VARS:
        env[v] = "1"
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="disabled", WANDB_SILENT="true", PYTHONWARNINGS="ignore",
               TOKENIZERS_PARALLELISM="false")
    return env


def run_child(cmd: list[str], out: Path, pin: bool = True, timeout: float = 3600) -> dict:
    """Run ``cmd`` (which writes its figures to ``out``) in a fresh process, pinned to core 0.

    Returns its figures plus ``process_wall_s`` and ``peak_rss_mib`` (from ``wait4``).

    Raises:
        RuntimeError: the command failed (with its last output lines).
    """
    if pin and shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    if out.exists():
        out.unlink()
    with tempfile.TemporaryFile() as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(), cwd=out.parent)
        deadline = t0 + timeout
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, ru = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode or not out.exists():
            log.seek(0)
            tail = log.read().decode(errors="replace").strip().splitlines()[-15:]
            raise RuntimeError(f"{' '.join(cmd[:6])} ... exited {proc.returncode}:\n  " + "\n  ".join(tail))
    fig = json.loads(out.read_text())
    fig["process_wall_s"] = wall
    fig["peak_rss_mib"] = ru.ru_maxrss / 1024.0
    return fig


def summarise(runs: list[dict]) -> dict:
    """Figures of repeated runs: wall times are medians (each run's kept in ``<key>_all``), RSS
    the largest, the rest from the last run."""
    fig = dict(runs[-1])
    for k in ("sim_wall_s", "setup_s", "process_wall_s", "import_s", "write_s"):
        if k in fig:
            fig[k] = statistics.median(r[k] for r in runs)
            fig[k + "_all"] = [r[k] for r in runs]
    fig["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
    fig["runs"] = len(runs)
    return fig


# --------------------------------------------------------------------------------------------
# report

def _row(label: str, mux, vid, fmt: str, ratio: bool = True) -> str:
    def cell(v):
        return "-" if v is None else format(v, fmt)
    r = ""
    if ratio and mux is not None and vid:
        r = f"{mux / vid:.3g}"
    return f"| {label} | {cell(mux)} | {cell(vid)} | {r} |"


def report(res: dict) -> str:
    m, v = res["muxsim"], res.get("vidur") or {}
    mc, vc = res["muxsim_cold"], res.get("vidur_cold") or {}
    lines = ["| | muxsim | Vidur | muxsim / Vidur |", "|---|---|---|---|"]
    lines.append(_row("simulation wall (s, median)", m["sim_wall_s"], v.get("sim_wall_s"), ".3f"))
    lines.append(_row("simulated requests per wall second", m["req_per_wall_s"], v.get("req_per_wall_s"), ",.0f"))
    lines.append(_row("set-up in the full run (s: imports, config, predictor)", m["setup_s"], v.get("setup_s"), ".2f"))
    lines.append(_row("cold start (process wall of a 1-request run, s)", mc["process_wall_s"],
                      vc.get("process_wall_s"), ".2f"))
    lines.append(_row("full run, process wall (s)", m["process_wall_s"], v.get("process_wall_s"), ".2f"))
    lines.append(_row("peak RSS, full run (MiB)", m["peak_rss_mib"], v.get("peak_rss_mib"), ",.0f"))
    lines.append(_row("peak RSS, 1-request run (MiB)", mc["peak_rss_mib"], vc.get("peak_rss_mib"), ",.0f"))
    lines += ["", "| output | muxsim | Vidur | muxsim / Vidur |", "|---|---|---|---|"]
    for k, label, fmt in (("ttft_mean_s", "TTFT mean (s)", ".4f"), ("ttft_p50_s", "TTFT p50 (s)", ".4f"),
                          ("ttft_p99_s", "TTFT p99 (s)", ".4f"), ("e2e_mean_s", "E2E mean (s)", ".3f"),
                          ("e2e_p50_s", "E2E p50 (s)", ".3f"), ("e2e_p99_s", "E2E p99 (s)", ".3f"),
                          ("throughput_req_s", "throughput (req/s)", ".3f"),
                          ("throughput_out_tok_s", "output tokens/s", ",.0f"),
                          ("makespan_s", "first arrival to last finish (s)", ",.1f"),
                          ("preemptions", "preemptions / restarts", ",d")):
        lines.append(_row(label, m.get(k), v.get(k), fmt))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=6.5, help="Poisson arrival rate, req/s (default 6.5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="runs per simulator; wall times are medians")
    ap.add_argument("--venv", type=Path, default=Path.home() / ".cache" / "muxsim-bench" / "vidur-venv",
                    help="Vidur's virtualenv (created when it lacks Vidur)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--muxsim-only", action="store_true", help="skip Vidur (installs nothing)")
    ap.add_argument("--vidur-full-grid", action="store_true",
                    help="train Vidur's forests with its default 27-setting grid search (slow, once)")
    ap.add_argument("--vidur-kv-granularity", type=int, default=256, choices=[32, 64, 128, 256],
                    help="Vidur's kv_cache_prediction_granularity (tokens; its default 256)")
    ap.add_argument("--workdir", type=Path, help="keep the problem and outputs here (default: a temp dir)")
    ap.add_argument("--_child", choices=["muxsim"], help=argparse.SUPPRESS)
    ap.add_argument("--_cfg", help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child == "muxsim":
        muxsim_child(args._cfg, args._out)
        return 0
    if args.requests < 1 or args.rate <= 0 or args.repeat < 1:
        ap.error("--requests and --repeat must be >= 1, --rate > 0")

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_vidur_")
        work = Path(tmp.name)
    else:
        work = args.workdir.resolve()
        work.mkdir(parents=True, exist_ok=True)
    try:
        return _bench(args, work)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _bench(args, work: Path) -> int:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    print(f"machine: {os.cpu_count()} cores, {cpu}; python {platform.python_version()}; "
          f"pinned to core 0: {bool(shutil.which('taskset'))}; load average {os.getloadavg()[0]:.1f}")
    wl = make_workload(args.requests, args.rate, args.seed)
    one = make_workload(1, args.rate, args.seed)
    cfg, _, trace = write_problem(wl, work / "full")
    cfg1, _, trace1 = write_problem(one, work / "one")
    kv_tokens = muxsim_kv_tokens()
    print(f"problem: {MODEL} (= LLaMA-2-7B) on one {GPU}; {len(wl):,} requests, Poisson {args.rate:g} req/s, "
          f"seed {args.seed}; ShareGPT V3 lengths: mean prompt {wl.prompt_tokens.mean():.1f}, "
          f"output {wl.output_tokens.mean():.1f} tokens; batch cap {BATCH_CAP}, prefill batch "
          f"{PREFILL_TOKENS} tokens, KV {kv_tokens:,} tokens in blocks of {BLOCK_TOKENS}")
    res: dict = {"machine": {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
                             "load_average_1min": os.getloadavg()[0]},
                 "problem": {"requests": len(wl), "rate_req_s": args.rate, "seed": args.seed,
                             "mean_prompt": float(wl.prompt_tokens.mean()),
                             "mean_output": float(wl.output_tokens.mean()), "batch_cap": BATCH_CAP,
                             "prefill_batch_tokens": PREFILL_TOKENS, "kv_tokens": kv_tokens,
                             "block_tokens": BLOCK_TOKENS, "repeat": args.repeat}}

    me = [sys.executable, str(Path(__file__).resolve()), "--_child", "muxsim"]
    jobs = {"muxsim_cold": lambda: [*me, "--_cfg", str(cfg1), "--_out", str(work / "muxsim.json")],
            "muxsim": lambda: [*me, "--_cfg", str(cfg), "--_out", str(work / "muxsim.json")]}
    outs = {"muxsim_cold": work / "muxsim.json", "muxsim": work / "muxsim.json"}
    skipped = "--muxsim-only" if args.muxsim_only else None
    if not skipped:
        try:
            skipped = _prepare_vidur(args, work, trace, trace1, kv_tokens, res, jobs, outs)
        except (RuntimeError, OSError) as exc:
            skipped = f"Vidur failed to run: {exc}"
    # the simulators take turns, so that a change in the machine's load hits both alike
    runs: dict[str, list[dict]] = {k: [] for k in jobs}
    for _ in range(args.repeat):
        for k, make in list(jobs.items()):
            try:
                runs[k].append(run_child(make(), outs[k]))
            except RuntimeError as exc:
                if not k.startswith("vidur"):
                    raise
                skipped = f"Vidur failed to run: {exc}"
                for j in [j for j in jobs if j.startswith("vidur")]:
                    jobs.pop(j)
                    runs.pop(j)
    for k, rs in runs.items():
        res[k] = summarise(rs)
    res["muxsim"]["req_per_wall_s"] = len(wl) / res["muxsim"]["sim_wall_s"]
    print(f"muxsim: simulation {res['muxsim']['sim_wall_s']:.3f} s wall "
          f"({res['muxsim']['req_per_wall_s']:,.0f} req/s), cold start "
          f"{res['muxsim_cold']['process_wall_s']:.2f} s, peak RSS {res['muxsim']['peak_rss_mib']:,.0f} MiB")
    if "vidur" in res:
        v = res["vidur"]
        v.update(vidur_headline(v["output_dir"], v["sim_time_s"], wl))
        v["req_per_wall_s"] = len(wl) / v["sim_wall_s"]
        print(f"vidur: simulation {v['sim_wall_s']:.2f} s wall ({v['req_per_wall_s']:,.0f} req/s), cold start "
              f"{res['vidur_cold']['process_wall_s']:.2f} s, peak RSS {v['peak_rss_mib']:,.0f} MiB")
    if skipped:
        res["vidur_skipped"] = skipped
        print(f"skipped: {skipped}")
    print()
    print(report(res))
    print("\nmuxsim: fitted curves of MuxServe's A100 profile (job overheads included). Vidur: its random "
          "forests over a profile derived from those curves (its own A100 profiles are on the HuggingFace "
          "hub, unreachable here), so the two should agree up to their scheduling, the forests' fit and "
          f"Vidur's rounding of each decode batch's mean context up to {args.vidur_kv_granularity} tokens.")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=float))
        print(f"figures: {args.json}")
    return 0


def _prepare_vidur(args, work: Path, trace: Path, trace1: Path, kv_tokens: int, res: dict, jobs: dict,
                   outs: dict) -> str | None:
    """Install Vidur and its predictions (once), add its runs to ``jobs``; a reason string when it
    cannot run."""
    reason = ensure_vidur(args.venv)
    if reason:
        return reason
    py = str(args.venv / "bin" / "python")
    # Vidur keys its cached forests and tables by neither the grid nor the profile's content,
    # so a full-grid training gets a cache of its own (the profile's digest names its dataset)
    cache = args.venv.parent / ("vidur-cache-full-grid" if args.vidur_full_grid else "vidur-cache")
    compute, network, digest = prepare_vidur_profile(cache, args.vidur_kv_granularity)
    n_blocks = kv_tokens // BLOCK_TOKENS
    runner = work / "vidur_runner.py"
    runner.write_text(VIDUR_RUNNER)
    out = work / "vidur.json"

    def cmd(tr: Path, mode: str) -> list[str]:
        return [py, str(runner), str(out), mode, "--",
                *vidur_args(tr, n_blocks, args.seed, cache, work / "vidur_out", compute, network,
                            args.vidur_full_grid, args.vidur_kv_granularity)]

    stamp = cache / f"published-{digest}.json"
    if not stamp.exists():
        print("vidur: training its random forests on the derived profile and predicting its tables "
              "(once; cached in " + str(cache) + ") ...", flush=True)
        t0 = time.perf_counter()
        setup = run_child(cmd(trace1, "setup"), out, pin=False, timeout=7200)
        setup["train_wall_s"] = time.perf_counter() - t0
        publish_predictions(cache, setup)
        stamp.write_text(json.dumps(setup))
        print(f"vidur: trained and published in {setup['train_wall_s']:.0f} s", flush=True)
    res["vidur_setup"] = json.loads(stamp.read_text())
    jobs["vidur_cold"] = lambda: cmd(trace1, "run")
    jobs["vidur"] = lambda: cmd(trace, "run")
    outs["vidur_cold"] = outs["vidur"] = out
    return None


if __name__ == "__main__":
    sys.exit(main())
