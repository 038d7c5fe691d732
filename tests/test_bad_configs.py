"""The bad-input corpus of experiment configs and command-line options (issue 12).

Every case is one mutation of a small valid config (experiments/zipf_alpha.yaml reduced to
5 s, alpha 0.9, max_rate 2, strategy muxserve), a YAML-level problem, or a bad command line;
each must end in exactly one ``error:`` line naming the field or option, exit code 2, no
traceback, nothing written under the test folder, in under 10 s
(:func:`_badinput.check_bad_input`). The CLI runs in-process, in the test folder.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _badinput import check_bad_input

ROOT = Path(__file__).resolve().parents[1]

NAN, INF = float("nan"), float("inf")
DELETE = object()  # a mutation value: remove the key


def _base() -> dict:
    cfg = yaml.safe_load((ROOT / "experiments" / "zipf_alpha.yaml").read_text())
    cfg["workload"]["duration_s"] = 5
    cfg["workload"]["popularity"] = {"alpha": [0.9], "max_rate": 2}
    cfg["strategies"] = ["muxserve"]
    return cfg


BASE = _base()

#: A valid explicit placement of the base config's 19 LLMs on its 4 x 8 GPUs (the one
#: MuxServe's search finds for it).
MESHES = [
    {"node": 0, "gpus": 8, "llms": ["llm-5", "llm-12", "llm-13", "llm-14"]},
    {"node": 1, "gpus": 8, "llms": ["llm-6", "llm-7", "llm-8", "llm-15"]},
    {"node": 2, "gpus": 8, "llms": ["llm-9", "llm-10", "llm-11"]},
    {"node": 3, "gpus": 4, "llms": ["llm-0", "llm-1", "llm-2", "llm-18"]},
    {"node": 3, "gpus": 4, "llms": ["llm-3", "llm-4", "llm-16", "llm-17"]},
]
MESH2 = MESHES[2]["llms"]

#: A workload.trace section over the folder's small Azure-format trace.
TRACE = {"source": {"path": "trace.csv"}, "popularity": {"alpha": [0.9]}}


class Text(str):
    """The config file's whole text (a YAML-level problem)."""


class Raw(bytes):
    """The config file's bytes (a binary file)."""


def _set(cfg: dict, path: str, value) -> None:
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    d = cfg
    for k in keys[:-1]:
        if isinstance(k, str) and k not in d:
            d[k] = {}
        d = d[k]
    if value is DELETE:
        del d[keys[-1]]
    else:
        d[keys[-1]] = value


def _trace(**changes) -> dict:
    """Changes that make the workload a trace replay, then apply ``changes`` to it."""
    t = copy.deepcopy(TRACE)
    for k, v in changes.items():
        _set(t, k, v)
    return {"workload": {"trace": t}}


def _meshes(k: int | None = None, **changes) -> dict:
    """The explicit placement :data:`MESHES`, mesh ``k`` changed by ``changes``."""
    m = copy.deepcopy(MESHES)
    for key, v in changes.items():
        _set(m[k], key, v)
    return {"placement": {"meshes": m}}


def _live(**changes) -> dict:
    live = {"engine": "transformers", "device": "cpu"}
    for k, v in changes.items():
        _set(live, k, v)
    return {"live": live}


def C(case_id: str, change, expected: str, command: str = "run"):
    """A config case: ``change`` ({dotted path: value}, a :class:`Text` or a :class:`Raw`)
    applied to the base config, run with ``muxsim <command>``; the error must contain
    ``expected``."""
    return pytest.param(command, change, expected, id=case_id)


CONFIG_CASES = [
    # --- YAML-level problems
    C("yaml-malformed", Text("name: [unclosed\n"), "malformed YAML"),
    C("yaml-bad-indent", Text("cluster:\n  nodes: 1\n gpus_per_node: 8\n"), "malformed YAML at line"),
    C("yaml-tab-indent", Text("cluster:\n\tnodes: 1\n"), "malformed YAML"),
    C("yaml-duplicate-top-key", Text(yaml.safe_dump(BASE, sort_keys=False) + "seed: 3\n"), "duplicate key 'seed'"),
    C("yaml-duplicate-nested-key",
      Text(yaml.safe_dump(BASE, sort_keys=False).replace("  nodes: 4\n", "  nodes: 4\n  nodes: 1\n")),
      "duplicate key 'nodes' at line"),
    C("yaml-duplicate-key-in-list-item",
      Text(yaml.safe_dump(BASE, sort_keys=False).replace("- model: llama-7b\n", "- model: llama-7b\n  model: llama-13b\n")),
      "duplicate key 'model'"),
    C("yaml-duplicate-flow-key", Text("cluster: {nodes: 1, nodes: 2, gpus_per_node: 8}\n"), "duplicate key 'nodes'"),
    C("yaml-not-a-mapping-list", Text("- name: a\n- name: b\n"), "expected a mapping"),
    C("yaml-not-a-mapping-scalar", Text("42\n"), "expected a mapping"),
    C("yaml-empty-file", Text(""), "expected a mapping"),
    C("yaml-only-comments", Text("# nothing here\n"), "expected a mapping"),
    C("yaml-binary-not-utf8", Raw(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"), "cannot read"),
    C("yaml-binary-nul-bytes", Raw(b"name: a\x00\x01\x02\n"), "malformed YAML"),
    C("yaml-unhashable-key", Text("? [a, b]\n: 1\n"), "malformed YAML"),
    C("yaml-python-tag", Text("name: !!python/object/apply:os.system [echo]\n"), "malformed YAML"),
    # --- top level
    C("top-unknown-key", {"bogus": 1}, "bogus: unknown key; allowed: name"),
    C("top-typo-key", {"strategy": ["muxserve"]}, "strategy: unknown key"),
    # --- name (it names the output folder)
    C("name-parent-escape", {"name": "../victim"}, "name: must be 1-100 characters"),
    C("name-two-levels-up", {"name": "../../escaped"}, "name: must be 1-100 characters"),
    C("name-dot", {"name": "."}, "name: must be 1-100 characters"),
    C("name-dotdot", {"name": ".."}, "name: must be 1-100 characters"),
    C("name-empty", {"name": ""}, "name: must be 1-100 characters"),
    C("name-slash", {"name": "a/b"}, "name: must be"),
    C("name-backslash", {"name": "a\\b"}, "name: must be"),
    C("name-absolute", {"name": "/tmp/x"}, "name: must be"),
    C("name-control-char", {"name": "a\x01b"}, "name: must be"),
    C("name-newline", {"name": "a\nb"}, "name: must be"),
    C("name-hidden", {"name": ".hidden"}, "name: must be"),
    C("name-space", {"name": "my run"}, "letters, digits and _ . - + = , @"),
    C("name-too-long", {"name": "x" * 101}, "(101 characters)"),
    C("name-300-chars", {"name": "y" * 300}, "1-100 characters"),
    C("name-not-text", {"name": 5}, "name: Input should be a valid string"),
    C("name-null", {"name": None}, "name:"),
    # --- seed
    C("seed-negative", {"seed": -1}, "seed: must be in [0, 4294967295], got -1"),
    C("seed-too-big", {"seed": 2**40}, "seed: must be in [0, 4294967295]"),
    C("seed-fraction", {"seed": 1.5}, "seed: must be a whole number"),
    C("seed-text", {"seed": "abc"}, "seed: must be a whole number"),
    C("seed-boolean", {"seed": True}, "seed: must be a number"),
    # --- strategies
    C("strategies-unknown", {"strategies": ["fastest"]}, "unknown strategy 'fastest'; allowed: muxserve"),
    C("strategies-empty", {"strategies": []}, "strategies:"),
    C("strategies-repeated", {"strategies": ["muxserve", "muxserve"]}, "strategies must be unique"),
    C("strategies-not-a-list", {"strategies": "muxserve"}, "strategies: Input should be a valid list"),
    # --- cluster
    C("cluster-missing", {"cluster": DELETE}, "cluster: required field is missing"),
    C("cluster-not-a-mapping", {"cluster": 4}, "cluster:"),
    C("cluster-nodes-zero", {"cluster.nodes": 0}, "cluster.nodes: must be in [1, 1024], got 0"),
    C("cluster-nodes-too-many", {"cluster.nodes": 1025}, "cluster.nodes: must be in [1, 1024]"),
    C("cluster-nodes-boolean", {"cluster.nodes": True}, "cluster.nodes: must be a number in [1, 1024], not a boolean"),
    C("cluster-nodes-fraction", {"cluster.nodes": 1.5}, "cluster.nodes: must be a whole number"),
    C("cluster-nodes-text", {"cluster.nodes": "four"}, "cluster.nodes: must be a whole number"),
    C("cluster-nodes-inf", {"cluster.nodes": INF}, "cluster.nodes"),
    C("cluster-gpus-zero", {"cluster.gpus_per_node": 0}, "cluster.gpus_per_node: must be in [1, 16]"),
    C("cluster-gpus-too-many", {"cluster.gpus_per_node": 17}, "cluster.gpus_per_node"),
    C("cluster-gpu-unknown", {"cluster.gpu": "v100"}, "unknown GPU 'v100'; allowed:"),
    C("cluster-unknown-key", {"cluster.nodez": 2}, "cluster.nodez: unknown key; allowed: nodes, gpus_per_node, gpu"),
    C("cluster-fits-nowhere", {"cluster.gpus_per_node": 2}, "fits on no mesh"),
    C("cluster-price-zero", {"cluster.usd_per_gpu_hour": 0}, "cluster.usd_per_gpu_hour: must be in (0, 1000]"),
    C("cluster-price-huge", {"cluster.usd_per_gpu_hour": 5000}, "cluster.usd_per_gpu_hour: must be in (0, 1000]"),
    C("cluster-price-text", {"cluster.usd_per_gpu_hour": "cheap"}, "cluster.usd_per_gpu_hour: must be a number"),
    # --- llms
    C("llms-empty", {"llms": []}, "llms:"),
    C("llms-not-a-list", {"llms": "llama-7b"}, "llms:"),
    C("llms-unknown-model", {"llms.0.model": "gpt-9"}, "unknown model 'gpt-9'; allowed: llama-7b"),
    C("llms-missing-model", {"llms.0.model": DELETE}, "llms.0.model: required field is missing"),
    C("llms-count-zero", {"llms.0.count": 0}, "llms.0.count: must be in [1, 1024], got 0"),
    C("llms-count-huge", {"llms.0.count": 5000}, "llms.0.count: must be in [1, 1024]"),
    C("llms-count-boolean", {"llms.1.count": True}, "llms.1.count: must be a number"),
    C("llms-rate-zero", {"llms.0.rate": 0}, "llms.0.rate: must be in (0, 1e+06], got 0"),
    C("llms-rate-negative", {"llms.0.rate": -1.0}, "llms.0.rate"),
    C("llms-rate-inf", {"llms.0.rate": INF}, "llms.0.rate: must be a finite number in (0, 1e+06], got inf"),
    C("llms-rate-nan", {"llms.0.rate": NAN}, "llms.0.rate: must be a finite number"),
    C("llms-rate-huge", {"llms.0.rate": 1e9}, "llms.0.rate: must be in (0, 1e+06]"),
    C("llms-rate-text", {"llms.0.rate": "fast"}, "llms.0.rate: must be a number"),
    C("llms-unknown-key", {"llms.0.size": 7}, "llms.0.size: unknown key; allowed: model, count, rate"),
    # --- workload: duration, arrivals
    C("workload-missing", {"workload": DELETE}, "workload: required field is missing"),
    C("workload-duration-missing", {"workload.duration_s": DELETE}, "duration_s is required"),
    C("workload-duration-zero", {"workload.duration_s": 0}, "workload.duration_s: must be in (0, 1e+07], got 0"),
    C("workload-duration-negative", {"workload.duration_s": -5}, "workload.duration_s"),
    C("workload-duration-inf", {"workload.duration_s": INF}, "workload.duration_s: must be a finite number"),
    C("workload-duration-nan", {"workload.duration_s": NAN}, "workload.duration_s: must be a finite number"),
    C("workload-duration-1e12", {"workload.duration_s": 1e12}, "workload.duration_s: must be in (0, 1e+07], got 1e+12"),
    C("workload-duration-boolean", {"workload.duration_s": True}, "workload.duration_s: must be a number"),
    C("workload-duration-text", {"workload.duration_s": "long"}, "workload.duration_s: must be a number"),
    C("workload-arrival-unknown", {"workload.arrival": "weibull"}, "workload.arrival: Input should be 'poisson' or 'gamma'"),
    C("workload-cv-zero", {"workload.arrival": "gamma", "workload.cv": 0}, "workload.cv: must be in [0.001, 1000], got 0"),
    C("workload-cv-tiny", {"workload.arrival": "gamma", "workload.cv": 1e-6}, "workload.cv: must be in [0.001, 1000]"),
    C("workload-cv-inf", {"workload.arrival": "gamma", "workload.cv": INF}, "workload.cv: must be a finite number"),
    C("workload-cv-huge", {"workload.arrival": "gamma", "workload.cv": 5000}, "workload.cv: must be in [0.001, 1000]"),
    C("workload-cv-with-poisson", {"workload.cv": 2}, "workload.cv: cv=2 only applies to arrival: gamma"),
    C("workload-max-requests-zero", {"workload.max_requests_per_llm": 0}, "workload.max_requests_per_llm"),
    C("workload-max-requests-fraction", {"workload.max_requests_per_llm": 2.5}, "workload.max_requests_per_llm: must be a whole number"),
    C("workload-drain-zero", {"workload.drain_limit_s": 0}, "workload.drain_limit_s"),
    C("workload-drain-inf", {"workload.drain_limit_s": INF}, "workload.drain_limit_s: must be a finite number"),
    C("workload-unknown-key", {"workload.duraton": 3}, "workload.duraton: unknown key; allowed: duration_s"),
    # --- workload.popularity
    C("popularity-missing", {"workload.popularity": DELETE}, "workload.popularity is missing"),
    C("popularity-alpha-negative", {"workload.popularity.alpha": [0.5, -1]}, "alpha must be >= 0"),
    C("popularity-alpha-nan", {"workload.popularity.alpha": NAN}, "workload.popularity.alpha"),
    C("popularity-alpha-inf", {"workload.popularity.alpha": INF}, "alpha must be in [0, 10]"),
    C("popularity-alpha-huge", {"workload.popularity.alpha": 11}, "alpha must be in [0, 10], got 11"),
    C("popularity-alpha-empty", {"workload.popularity.alpha": []}, "alpha list is empty"),
    C("popularity-alpha-repeated", {"workload.popularity.alpha": [0.9, 0.9]}, "alpha values must be unique"),
    C("popularity-alpha-boolean", {"workload.popularity.alpha": True}, "workload.popularity.alpha: must be a number"),
    C("popularity-alpha-boolean-in-list", {"workload.popularity.alpha": [0.9, False]}, "workload.popularity.alpha: must be a number"),
    C("popularity-alpha-text", {"workload.popularity.alpha": "zipf"}, "workload.popularity.alpha: must be a number"),
    C("popularity-max-rate-zero", {"workload.popularity.max_rate": 0}, "max_rate must be > 0"),
    C("popularity-max-rate-inf", {"workload.popularity.max_rate": INF}, "max_rate must be > 0 and <= 1e+06 (finite), got inf"),
    C("popularity-max-rate-huge", {"workload.popularity.max_rate": 1e9}, "max_rate must be in (0, 1e+06]"),
    C("popularity-max-rate-repeated", {"workload.popularity.max_rate": [2, 2]}, "max_rate values must be unique"),
    C("popularity-max-rate-missing", {"workload.popularity.max_rate": DELETE}, "workload.popularity.max_rate: required field is missing"),
    C("popularity-rate-scale-zero", {"workload.popularity.rate_scale": 0}, "rate_scale must be > 0"),
    C("popularity-rate-scale-huge", {"workload.popularity.rate_scale": 1e4}, "rate_scale must be in (0, 1000]"),
    C("popularity-unknown-key", {"workload.popularity.beta": 1}, "workload.popularity.beta: unknown key"),
    # --- workload.rate_sets
    C("rate-sets-wrong-length", {"workload.popularity": DELETE, "workload.rate_sets": [{"label": "a", "rates": [1, 2]}]},
      "workload.rate_sets.0.rates: workload.rate_sets[0] 'a' has 2 rates; the config lists 19 LLMs"),
    C("rate-sets-rate-zero", {"workload.popularity": DELETE, "workload.rate_sets": [{"label": "a", "rates": [0] * 19}]},
      "rates must be finite req/s > 0"),
    C("rate-sets-rate-inf", {"workload.popularity": DELETE, "workload.rate_sets": [{"label": "a", "rates": [INF] * 19}]},
      "workload.rate_sets.0.rates"),
    C("rate-sets-empty", {"workload.popularity": DELETE, "workload.rate_sets": []}, "workload.rate_sets"),
    C("rate-sets-repeated-label", {"workload.popularity": DELETE, "workload.rate_sets": [
        {"label": "a", "rates": [1] * 19}, {"label": "a", "rates": [2] * 19}]}, "rate_sets labels must be unique"),
    C("rate-sets-empty-label", {"workload.popularity": DELETE, "workload.rate_sets": [{"label": "", "rates": [1] * 19}]},
      "workload.rate_sets.0.label"),
    C("rate-sets-and-popularity", {"workload.rate_sets": [{"label": "a", "rates": [1] * 19}]},
      "give either 'rate_sets' or 'popularity'"),
    C("rate-sets-and-group-rate", {"workload.popularity": DELETE, "llms.0.rate": 1.0,
                                   "workload.rate_sets": [{"label": "a", "rates": [1] * 19}]}, "drop 'rate' from llms"),
    # --- workload.lengths
    C("lengths-kind-unknown", {"workload.lengths.kind": "alpaca"}, "workload.lengths.kind: Input should be"),
    C("lengths-fixed-without-values", {"workload.lengths": {"kind": "fixed"}}, "lengths.kind 'fixed' needs both"),
    C("lengths-prompt-zero", {"workload.lengths": {"kind": "fixed", "prompt": 0, "output": 8}},
      "workload.lengths.prompt: must be in [1, 32768]"),
    C("lengths-output-huge", {"workload.lengths": {"kind": "fixed", "prompt": 8, "output": 40000}},
      "workload.lengths.output: must be in [1, 32768]"),
    C("lengths-scale-zero", {"workload.lengths.scale": 0}, "workload.lengths.scale: must be in (0, 100]"),
    C("lengths-scale-inf", {"workload.lengths.scale": INF}, "workload.lengths.scale: must be a finite number in (0, 100]"),
    C("lengths-scale-huge", {"workload.lengths.scale": 1000}, "workload.lengths.scale"),
    C("lengths-mean-prompt-alone", {"workload.lengths.mean_prompt": 100}, "give both 'mean_prompt' and 'mean_output'"),
    C("lengths-mean-too-small", {"workload.lengths.mean_prompt": 2, "workload.lengths.mean_output": 100},
      "workload.lengths.mean_prompt"),
    C("lengths-mean-and-scale", {"workload.lengths.mean_prompt": 100, "workload.lengths.mean_output": 100,
                                 "workload.lengths.scale": 2}, "'scale' and 'mean_prompt'/'mean_output' both resize"),
    # --- workload.requests
    C("requests-rule-unknown", {"workload.requests.rule": "many"}, "workload.requests.rule"),
    C("requests-factor-zero", {"workload.requests.factor": 0}, "workload.requests.factor: must be in (0, 1000]"),
    C("requests-factor-inf", {"workload.requests.factor": INF}, "workload.requests.factor: must be a finite number"),
    C("requests-seconds-nan", {"workload.requests.seconds": NAN}, "workload.requests.seconds: must be a finite number"),
    C("requests-seconds-huge", {"workload.requests.seconds": 1e9}, "workload.requests.seconds: must be in (0, 1e+07]"),
    C("requests-fixed-without-counts", {"workload.requests": {"rule": "fixed"}}, "requests.rule 'fixed' needs 'counts'"),
    C("requests-counts-negative", {"workload.requests": {"rule": "fixed", "counts": -1}},
      "workload.requests.counts: requests.counts must be whole numbers in [0, 1e9]"),
    C("requests-counts-wrong-length", {"workload.requests": {"rule": "fixed", "counts": [1, 2]}},
      "workload.requests.counts has 2 entries; the config lists 19 LLMs"),
    C("requests-counts-with-estimate", {"workload.requests.counts": 3}, "requests.counts applies to rule 'fixed'"),
    C("requests-counts-all-zero", {"workload.requests": {"rule": "fixed", "counts": 0}},
      "workload.requests.counts: requests.counts gives every LLM 0 requests"),
    C("requests-counts-boolean", {"workload.requests": {"rule": "fixed", "counts": True}}, "workload.requests.counts: must be a number"),
    # --- workload.file
    C("file-missing", {"workload": {"file": "nope.parquet"}}, "workload.file: file not found: nope.parquet"),
    C("file-is-a-folder", {"workload": {"file": "afolder"}}, "workload.file: is a folder, not a file"),
    C("file-empty-path", {"workload": {"file": ""}}, "workload.file"),
    C("file-and-requests", {"workload": {"file": "nope.parquet", "requests": {"rule": "estimate"}}},
      "'requests' does not apply to a replayed 'file'"),
    C("file-and-rate-sets", {"workload": {"file": "nope.parquet", "rate_sets": [{"label": "a", "rates": [1] * 19}]}},
      "give either 'rate_sets' or a replayed 'file'"),
    # --- workload.trace
    C("trace-source-missing-file", _trace(**{"source.path": "missing.csv"}), "workload.trace.source.path: file not found"),
    C("trace-and-popularity", {**_trace(), "workload.popularity": {"alpha": 1, "max_rate": 2}}, "give either 'trace' or 'popularity'"),
    C("trace-llms-count-mismatch", _trace(llms=4), "workload.trace.llms: workload.trace.llms is 4; the config lists 19"),
    C("trace-llms-boolean", _trace(llms=True), "workload.trace.llms"),
    C("trace-alpha-inf", _trace(**{"popularity.alpha": [0.9, INF]}), "alpha must be finite and >= 0"),
    C("trace-alpha-huge", _trace(**{"popularity.alpha": 20}), "alpha must be in [0, 10]"),
    C("trace-two-laws", _trace(**{"popularity.weights": [1] * 19}), "give exactly one of alpha, weights"),
    C("trace-weights-inf", _trace(**{"popularity.alpha": DELETE, "popularity.weights": [1] * 18 + [INF]}),
      "workload.trace.popularity.weights.18: must be a finite number"),
    C("trace-rates-file-missing", _trace(**{"popularity.alpha": DELETE, "popularity.rates_file": "rates.json"}),
      "workload.trace.popularity.rates_file: file not found"),
    C("trace-condense-zero", _trace(condense=0), "workload.trace.condense: must be in (0, 1e+06]"),
    C("trace-target-rate-inf", _trace(target_rate=INF), "workload.trace.target_rate: must be a finite number"),
    C("trace-condense-and-rate", _trace(condense=2, target_rate=3), "give condense or target_rate"),
    C("trace-seed-negative", _trace(seed=-1), "workload.trace.seed: must be in [0, 4294967295]"),
    C("trace-max-requests-zero", _trace(max_requests=0), "workload.trace.max_requests: must be in [1, 1000000000]"),
    C("trace-window-order", _trace(window={"start_s": 10, "end_s": 5}), "end_s (5) must be > start_s (10)"),
    C("trace-window-inf", _trace(window={"end_s": INF}), "workload.trace.window.end_s: must be a finite number"),
    C("trace-source-rate-inf", _trace(**{"source.rate": INF}), "workload.trace.source.rate: must be a finite number"),
    C("trace-source-cv-huge", _trace(**{"source.arrival": "gamma", "source.cv": 1e4}),
      "workload.trace.source.cv: must be in [0.001, 1000]"),
    C("trace-source-cv-poisson", _trace(**{"source.cv": 2}), "cv=2.0 only applies to arrival: gamma"),
    C("trace-source-format-unknown", _trace(**{"source.format": "csv"}), "unknown trace format 'csv'"),
    C("trace-unknown-key", _trace(bogus=1), "workload.trace.bogus: unknown key"),
    C("trace-with-cv", {**_trace(), "workload.arrival": "gamma", "workload.cv": 2}, "'arrival'/'cv' do not apply to a trace"),
    # --- slo
    C("slo-scales-empty", {"slo.scales": []}, "scales must be a non-empty list"),
    C("slo-scales-zero", {"slo.scales": [0, 1]}, "scales must be a non-empty list of numbers in (0, 1e+06]"),
    C("slo-scales-nan", {"slo.scales": [1, NAN]}, "slo.scales: scales must be"),
    C("slo-scales-inf", {"slo.scales": [1, INF]}, "slo.scales"),
    C("slo-scales-text", {"slo.scales": ["x"]}, "slo.scales.0: must be a number"),
    C("slo-scales-boolean", {"slo.scales": [1, True]}, "slo.scales: must be a number"),
    C("slo-goodput-zero", {"slo.goodput_scale": 0}, "slo.goodput_scale: must be in (0, 1e+06]"),
    C("slo-goodput-nan", {"slo.goodput_scale": NAN}, "slo.goodput_scale: must be a finite number"),
    C("slo-base-unknown", {"slo.base": "median"}, "slo.base: Input should be"),
    C("slo-ttft-zero", {"slo.ttft_ms": 0}, "slo.ttft_ms: must be in (0, 1e+09]"),
    C("slo-tpot-negative", {"slo.tpot_ms": -5}, "slo.tpot_ms: must be in (0, 1e+09]"),
    C("slo-e2e-nan", {"slo.e2e_ms": NAN}, "slo.e2e_ms: must be a finite number"),
    C("slo-ttft-text", {"slo.ttft_ms": "fast"}, "slo.ttft_ms: must be a number"),
    C("slo-unknown-key", {"slo.scale": [1]}, "slo.scale: unknown key; allowed: scales, goodput_scale, base"),
    # --- scheduler
    C("scheduler-sm-units-zero", {"scheduler.sm_units": 0}, "scheduler.sm_units: must be in [1, 100]"),
    C("scheduler-sm-units-huge", {"scheduler.sm_units": 1000}, "scheduler.sm_units"),
    C("scheduler-sm-units-boolean", {"scheduler.sm_units": True}, "scheduler.sm_units: must be a number"),
    C("scheduler-overload-negative", {"scheduler.sm_overload_units": -1}, "scheduler.sm_overload_units"),
    C("scheduler-prefill-tokens-zero", {"scheduler.max_prefill_tokens": 0}, "scheduler.max_prefill_tokens"),
    C("scheduler-num-seqs-huge", {"scheduler.max_num_seqs": 10**6}, "scheduler.max_num_seqs: must be in [1, 65536]"),
    C("scheduler-adapt-interval-inf", {"scheduler.adapt_interval_s": INF}, "scheduler.adapt_interval_s: must be a finite number"),
    C("scheduler-adapt-window-zero", {"scheduler.adapt_window_jobs": 0}, "scheduler.adapt_window_jobs"),
    C("scheduler-reserve-negative", {"scheduler.activation_reserve_gib": -1}, "scheduler.activation_reserve_gib: must be in [0, 1024]"),
    C("scheduler-reserve-nan", {"scheduler.context_reserve_gib": NAN}, "scheduler.context_reserve_gib: must be a finite number"),
    C("scheduler-quota-zero", {"scheduler.quota_seq_tokens": 0}, "scheduler.quota_seq_tokens"),
    C("scheduler-overlap-not-boolean", {"scheduler.overlap_phases": 3}, "scheduler.overlap_phases: Input should be a valid boolean"),
    C("scheduler-kv-fraction-zero", {"scheduler.spatial_kv_fraction": 0}, "scheduler.spatial_kv_fraction: must be in (0, 1]"),
    C("scheduler-kv-fraction-above-one", {"scheduler.spatial_kv_fraction": 1.5}, "scheduler.spatial_kv_fraction"),
    C("scheduler-temporal-zero", {"scheduler.temporal_sm_pct": [0, 90]}, "SM shares must be in (0, 100] %"),
    C("scheduler-temporal-inf", {"scheduler.temporal_sm_pct": [100, INF]}, "scheduler.temporal_sm_pct: SM shares must be in (0, 100] %"),
    C("scheduler-temporal-one-value", {"scheduler.temporal_sm_pct": [100]}, "scheduler.temporal_sm_pct"),
    C("scheduler-temporal-boolean", {"scheduler.temporal_sm_pct": [True, 90]}, "scheduler.temporal_sm_pct: must be a number"),
    C("scheduler-unknown-key", {"scheduler.max_batch": 8}, "scheduler.max_batch: unknown key; allowed: sm_units"),
    # --- overhead
    C("overhead-dispatch-negative", {"overhead.dispatch_ms": -1}, "overhead.dispatch_ms: must be in [0, 1000]"),
    C("overhead-dispatch-inf", {"overhead.dispatch_ms": INF}, "overhead.dispatch_ms: must be a finite number"),
    C("overhead-per-seq-nan", {"overhead.decode_per_seq_ms": NAN}, "overhead.decode_per_seq_ms: must be finite and in [0, 1000] ms"),
    C("overhead-per-seq-unknown-model", {"overhead.decode_per_seq_ms": {"gpt-9": 0.1}}, "unknown model 'gpt-9'"),
    C("overhead-per-seq-boolean", {"overhead.decode_per_seq_ms": {"llama-7b": True}}, "overhead.decode_per_seq_ms: must be a number"),
    C("overhead-file-missing", {"overhead.file": "nope.json"}, "overhead.file: file not found: nope.json"),
    C("overhead-file-malformed", {"overhead.file": "bad_overhead.json"}, "malformed overhead file"),
    C("overhead-unknown-key", {"overhead.dispatch_s": 1}, "overhead.dispatch_s: unknown key"),
    # --- placement
    C("placement-search-unknown", {"placement.search": "exhaustive"}, "placement.search: Input should be"),
    C("placement-estimator-unknown", {"placement.estimator": "magic"}, "placement.estimator"),
    C("placement-objective-unknown", {"placement.objective": "latency"}, "placement.objective"),
    C("placement-candidates-zero", {"placement.candidates": 0}, "placement.candidates: must be in [1, 1000000]"),
    C("placement-budget-inf", {"placement.budget_s": INF}, "placement.budget_s: must be a finite number in (0, 86400]"),
    C("placement-seed-negative", {"placement.seed": -1}, "placement.seed: must be in [0, 4294967295]"),
    C("placement-starts-huge", {"placement.starts": 51}, "placement.starts: must be in [1, 50]"),
    C("placement-prefix-nan", {"placement.prefix_s": NAN}, "placement.prefix_s: must be a finite number"),
    C("placement-unknown-key", {"placement.mesh": []}, "placement.mesh: unknown key"),
    C("meshes-empty", {"placement.meshes": []}, "placement.meshes"),
    C("meshes-unknown-llm", _meshes(2, llms=[*MESH2, "llm-19"]), "placement.meshes.2.llms: placement names unknown LLM 'llm-19'"),
    C("meshes-llm-twice", _meshes(2, llms=[*MESH2, "llm-0"]), "placement puts LLM 'llm-0' on more than one mesh"),
    C("meshes-llm-twice-in-a-mesh", _meshes(2, llms=[*MESH2, "llm-9"]), "placement.meshes.2.llms: lists 'llm-9' more than once"),
    C("meshes-unplaced", {"placement": {"meshes": MESHES[:4]}},
      "placement.meshes: placement leaves LLMs unplaced: ['llm-3', 'llm-4', 'llm-16', 'llm-17']"),
    C("meshes-plain-list-unplaced", {"placement": MESHES[1:]}, "placement leaves LLMs unplaced"),
    C("meshes-node-outside-cluster", _meshes(2, node=4), "placement.meshes.2.node: placement mesh on node 4, cluster has 4"),
    C("meshes-node-negative", _meshes(2, node=-1), "placement.meshes.2.node: must be in [0, 1023]"),
    C("meshes-node-boolean", _meshes(2, node=True), "placement.meshes.2.node: must be a number"),
    C("meshes-gpus-not-power-of-two", _meshes(2, gpus=3), "placement.meshes.2.gpus: must be 1, 2, 4, 8 or 16"),
    C("meshes-gpus-zero", _meshes(2, gpus=0), "placement.meshes.2.gpus: must be in [1, 16]"),
    C("meshes-gpus-above-node", _meshes(2, gpus=16), "a mesh has at most cluster.gpus_per_node = 8 GPUs"),
    C("meshes-node-overfull", _meshes(2, node=0), "node 0 is given 16 GPUs by meshes 0..2, it has 8"),
    C("meshes-model-too-big", _meshes(3, gpus=2), "placement.meshes.3.gpus: llm-18 (llama-65b) needs >= 4 GPUs, the mesh has 2"),
    C("meshes-sm-other-mesh", _meshes(0, sm={"llm-15": [50, 50]}), "placement.meshes.0.sm.llm-15: 'llm-15' is not on this mesh"),
    C("meshes-sm-unknown-llm", _meshes(0, sm={"llm-99": [50, 50]}), "'llm-99' is not on this mesh"),
    C("meshes-sm-zero", _meshes(3, sm={"llm-18": [0, 50]}), "placement.meshes.3.sm.llm-18: SM shares [prefill %, decode %] must be in [1, 100]"),
    C("meshes-sm-above-100", _meshes(3, sm={"llm-18": [100, 101]}), "must be in [1, 100], got [100, 101]"),
    C("meshes-sm-fraction", _meshes(3, sm={"llm-18": [50.5, 50]}), "placement.meshes.3.sm.llm-18.0: must be a whole number"),
    C("meshes-sm-boolean", _meshes(3, sm={"llm-18": [True, 50]}), "placement.meshes.3.sm: must be a number"),
    C("meshes-sm-one-value", _meshes(3, sm={"llm-18": [50]}), "placement.meshes.3.sm.llm-18"),
    C("meshes-unknown-key", _meshes(2, gpu=8), "placement.meshes.2.gpu: unknown key; allowed: node, gpus, llms, sm"),
    C("meshes-no-llms", _meshes(2, llms=[]), "placement.meshes.2.llms"),
    # --- live (validate)
    C("live-engine-unknown", _live(engine="tensorrt"), "live.engine: Input should be", "validate"),
    C("live-device-unknown", _live(device="tpu"), "device must be 'cpu' or 'cuda[:N]'", "validate"),
    C("live-threads-zero", _live(threads=0), "live.threads: must be in [1, 1024], got 0", "validate"),
    C("live-max-drift-inf", _live(max_drift=INF), "live.max_drift: must be a finite number", "validate"),
    C("live-retries-negative", _live(retries=-1), "live.retries: must be in [0, 100]", "validate"),
    C("live-replay-window-zero", _live(replay_window_s=0), "live.replay_window_s: must be in [0.01, 86400]", "validate"),
    C("live-checkpoint-unknown-model", _live(checkpoints={"gpt-9": "/ckpt"}), "unknown model 'gpt-9'", "validate"),
    C("live-batches-zero", _live(**{"calibration.batches": [0, 1]}), "live.calibration.batches: must be whole numbers in [1, 4096]", "validate"),
    C("live-seqs-empty", _live(**{"calibration.seqs": []}), "live.calibration.seqs", "validate"),
    C("live-repeats-zero", _live(**{"calibration.repeats": 0}), "live.calibration.repeats", "validate"),
    C("live-pin-cores-not-boolean", _live(pin_cores="maybe"), "live.pin_cores", "validate"),
    C("live-unknown-key", _live(gpus=2), "live.gpus: unknown key; allowed: engine", "validate"),
    # --- the other commands that read a config
    C("place-seed-negative", {"seed": -1}, "seed: must be in [0, 4294967295]", "place"),
    C("place-duplicate-key", Text("name: a\nname: b\n"), "duplicate key 'name' at line 2 (first at line 1)", "place"),
    C("place-sm-other-mesh", _meshes(0, sm={"llm-15": [50, 50]}), "'llm-15' is not on this mesh", "place"),
    C("workload-cmd-duration-inf", {"workload.duration_s": INF}, "workload.duration_s: must be a finite number", "workload"),
    C("workload-cmd-name-escape", {"name": "../victim"}, "name: must be 1-100 characters", "workload"),
    C("validate-cmd-seed-negative", {**_live(), "seed": -1}, "seed: must be in [0, 4294967295]", "validate"),
]

_COMMAND_ARGS = {
    "run": ["--out", "out", "--jobs", "1"],
    "place": [],
    "workload": ["--out", "out"],
    "validate": ["--out", "out"],
}


def _write_inputs(folder: Path) -> None:
    """The files some cases point at: a small Azure-format trace, a folder, a malformed
    overhead JSON."""
    (folder / "trace.csv").write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n"
                                      + "".join(f"{0.5 * i},{20 + i},{5 + i}\n" for i in range(40)))
    (folder / "afolder").mkdir()
    (folder / "bad_overhead.json").write_text('{"dispatch": ')
    (folder / "not_parquet.parquet").write_text("this is not parquet\n")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    _write_inputs(tmp_path)
    return tmp_path


@pytest.mark.parametrize("command, change, expected", CONFIG_CASES)
def test_bad_config_is_refused_at_load(folder, command, change, expected):
    path = folder / "config.yaml"
    if isinstance(change, Raw):
        path.write_bytes(bytes(change))
    elif isinstance(change, Text):
        path.write_text(str(change))
    else:
        cfg = copy.deepcopy(BASE)
        for key, value in change.items():
            _set(cfg, key, value)
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    check_bad_input([command, path.name, *_COMMAND_ARGS[command]], expected, folder, cwd=folder)


def test_the_base_config_and_placement_are_valid(folder):
    """The corpus mutates valid inputs: the base config loads, with and without the explicit
    placement, the trace or a live section (so each case fails for its one change)."""
    from muxsim.config import load_config

    for change in ({}, _meshes(), _trace(), _live()):
        cfg = copy.deepcopy(BASE)
        for key, value in change.items():
            _set(cfg, key, value)
        path = folder / "ok.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        load_config(path)


def test_the_explicit_placement_passes_preflight(folder):
    from muxsim.config import load_config
    from muxsim.experiment import preflight

    cfg = copy.deepcopy(BASE)
    cfg.update(_meshes())
    path = folder / "ok.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    preflight(load_config(path))


# ---------------------------------------------------------------------------------------------
# command-line options


def O(case_id: str, args: list[str], expected: str):
    """A command-line case: ``muxsim <args>`` (run in the test folder, where ``config.yaml``
    is the valid base config); the error must contain ``expected``."""
    return pytest.param(args, expected, id=case_id)


CLI_CASES = [
    # run
    O("run-unknown-option", ["run", "config.yaml", "--bogus"], "No such option: --bogus"),
    O("run-missing-argument", ["run"], "Missing argument"),
    O("run-missing-config-file", ["run", "nope.yaml"], "config file not found: nope.yaml"),
    O("run-config-is-a-folder", ["run", "afolder"], "is a folder"),
    O("run-jobs-zero", ["run", "config.yaml", "--jobs", "0"], "--jobs"),
    O("run-jobs-text", ["run", "config.yaml", "--jobs", "x"], "--jobs"),
    O("run-jobs-negative", ["run", "config.yaml", "--jobs", "-2"], "--jobs"),
    O("run-seed-negative", ["run", "config.yaml", "--seed", "-1"], "seed"),
    O("run-seed-text", ["run", "config.yaml", "--seed", "abc"], "--seed"),
    O("run-out-without-value", ["run", "config.yaml", "--out"], "--out"),
    # place
    O("place-unknown-option", ["place", "config.yaml", "--fast"], "No such option: --fast"),
    O("place-missing-argument", ["place"], "Missing argument"),
    O("place-missing-config-file", ["place", "nope.yaml"], "config file not found"),
    O("place-strategy-unknown", ["place", "config.yaml", "--strategy", "fastest"], "--strategy must be one of"),
    O("place-cell-unknown", ["place", "config.yaml", "--cell", "alpha=7"], "--cell 'alpha=7' is not a cell"),
    # workload
    O("workload-missing-out", ["workload", "config.yaml"], "--out"),
    O("workload-unknown-option", ["workload", "config.yaml", "--out", "w", "--bogus"], "No such option: --bogus"),
    O("workload-seed-negative", ["workload", "config.yaml", "--out", "w", "--seed", "-1"], "seed"),
    O("workload-missing-config-file", ["workload", "nope.yaml", "--out", "w"], "config file not found"),
    # validate
    O("validate-unknown-option", ["validate", "config.yaml", "--bogus"], "No such option: --bogus"),
    O("validate-missing-argument", ["validate"], "Missing argument"),
    O("validate-missing-config-file", ["validate", "nope.yaml"], "config file not found"),
    O("validate-recalibrate-takes-no-value", ["validate", "config.yaml", "--recalibrate", "yes"], "unexpected extra argument"),
    # calibrate fit | overhead | run
    O("calibrate-unknown-subcommand", ["calibrate", "guess"], "No such command 'guess'"),
    O("calibrate-fit-missing-argument", ["calibrate", "fit"], "Missing argument"),
    O("calibrate-fit-missing-profile", ["calibrate", "fit", "nope.json"], "profile not found: nope.json"),
    O("calibrate-fit-unknown-option", ["calibrate", "fit", "nope.json", "--bogus"], "No such option: --bogus"),
    O("calibrate-overhead-missing-argument", ["calibrate", "overhead"], "Missing argument"),
    O("calibrate-overhead-missing-file", ["calibrate", "overhead", "nope.parquet"], "job table not found"),
    O("calibrate-overhead-not-parquet", ["calibrate", "overhead", "not_parquet.parquet"], "not a readable Parquet"),
    O("calibrate-run-missing-model", ["calibrate", "run", "--out", "c.parquet"], "--model"),
    O("calibrate-run-missing-out", ["calibrate", "run", "--model", "llama-7b"], "--out"),
    O("calibrate-run-gpus-zero", ["calibrate", "run", "--model", "llama-7b", "--out", "c.parquet", "--gpus", "0"], "--gpus"),
    O("calibrate-run-batch-zero", ["calibrate", "run", "--model", "llama-7b", "--out", "c.parquet", "--batch", "0"], "--batch"),
    O("calibrate-run-batch-text", ["calibrate", "run", "--model", "llama-7b", "--out", "c.parquet", "--batch", "a,b"], "--batch"),
    O("calibrate-run-seq-zero", ["calibrate", "run", "--model", "llama-7b", "--out", "c.parquet", "--seq", "0"], "--seq"),
    O("calibrate-run-sm-text", ["calibrate", "run", "--model", "llama-7b", "--out", "c.parquet", "--sm", "lots"], "--sm"),
    O("calibrate-run-engine-unknown", ["calibrate", "run", "--model", "llama-7b", "--out", "c.parquet", "--engine", "tensorrt"], "--engine"),
    O("calibrate-run-repeats-zero", ["calibrate", "run", "--model", "llama-7b", "--out", "c.parquet", "--repeats", "0"], "--repeats"),
    O("calibrate-run-warmup-negative", ["calibrate", "run", "--model", "llama-7b", "--out", "c.parquet", "--warmup", "-1"], "--warmup"),
    O("calibrate-run-threads-text", ["calibrate", "run", "--model", "llama-7b", "--out", "c.parquet", "--threads", "x"], "--threads"),
    # trace convert | inspect | synth
    O("trace-unknown-subcommand", ["trace", "merge"], "No such command 'merge'"),
    O("trace-convert-missing-out", ["trace", "convert", "trace.csv"], "--out"),
    O("trace-convert-missing-file", ["trace", "convert", "nope.csv", "--out", "o.parquet"], "trace file not found"),
    O("trace-convert-unknown-option", ["trace", "convert", "trace.csv", "--out", "o.parquet", "--bogus"], "No such option: --bogus"),
    O("trace-convert-format-unknown", ["trace", "convert", "trace.csv", "--out", "o.parquet", "--format", "bogus"], "unknown trace format 'bogus'"),
    O("trace-convert-rate-text", ["trace", "convert", "trace.csv", "--out", "o.parquet", "--rate", "fast"], "--rate"),
    O("trace-convert-seed-negative", ["trace", "convert", "trace.csv", "--out", "o.parquet", "--seed", "-1"], "--seed"),
    O("trace-convert-rate-on-timed-trace", ["trace", "convert", "trace.csv", "--out", "o.parquet", "--rate", "2"], "--rate/--arrival/--cv apply only"),
    O("trace-inspect-missing-argument", ["trace", "inspect"], "Missing argument"),
    O("trace-inspect-missing-file", ["trace", "inspect", "nope.csv"], "trace file not found"),
    O("trace-inspect-bin-negative", ["trace", "inspect", "trace.csv", "--bin-s", "-3"], "--bin-s"),
    O("trace-inspect-bin-zero", ["trace", "inspect", "trace.csv", "--bin-s", "0"], "--bin-s"),
    O("trace-inspect-bin-nan", ["trace", "inspect", "trace.csv", "--bin-s", "nan"], "--bin-s"),
    O("trace-inspect-bin-text", ["trace", "inspect", "trace.csv", "--bin-s", "x"], "--bin-s"),
    O("trace-synth-missing-out", ["trace", "synth", "spec.yaml"], "--out"),
    O("trace-synth-missing-spec", ["trace", "synth", "nope.yaml", "--out", "o.parquet"], "synth spec not found"),
    O("trace-synth-duplicate-key", ["trace", "synth", "spec_dup.yaml", "--out", "o.parquet"], "duplicate key 'llms'"),
    O("trace-synth-condense-inf", ["trace", "synth", "spec_inf.yaml", "--out", "o.parquet"], "condense: must be a finite number"),
    O("trace-synth-seed-negative", ["trace", "synth", "spec_seed.yaml", "--out", "o.parquet"], "seed: must be in [0, 4294967295]"),
    O("trace-synth-llms-boolean", ["trace", "synth", "spec_bool.yaml", "--out", "o.parquet"], "llms: must be a count"),
    O("trace-synth-not-a-mapping", ["trace", "synth", "spec_list.yaml", "--out", "o.parquet"], "expected a mapping"),
    # top level
    O("unknown-command", ["simulate", "config.yaml"], "No such command 'simulate'"),
]

_SPECS = {
    "spec.yaml": "source: {path: trace.csv}\nllms: 2\n",
    "spec_dup.yaml": "source: {path: trace.csv}\nllms: 2\nllms: 3\n",
    "spec_inf.yaml": "source: {path: trace.csv}\nllms: 2\ncondense: .inf\n",
    "spec_seed.yaml": "source: {path: trace.csv}\nllms: 2\nseed: -1\n",
    "spec_bool.yaml": "source: {path: trace.csv}\nllms: true\n",
    "spec_list.yaml": "- source: {path: trace.csv}\n",
}


@pytest.mark.parametrize("args, expected", CLI_CASES)
def test_bad_command_line_is_refused(folder, args, expected):
    (folder / "config.yaml").write_text(yaml.safe_dump(BASE, sort_keys=False))
    for name, text in _SPECS.items():
        (folder / name).write_text(text)
    check_bad_input(args, expected, folder, cwd=folder)


def test_corpus_size():
    """Issue 12 asks for a corpus of at least 150 bad inputs across the bad-input tests; this
    file holds configs and command lines."""
    assert len(CONFIG_CASES) + len(CLI_CASES) >= 150
    ids = [p.id for p in CONFIG_CASES + CLI_CASES]
    assert len(ids) == len(set(ids))
