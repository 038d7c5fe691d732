"""Sizing (issue 14 item 2): the cluster as a sweep parameter, strategies that cannot be placed
on a cell reported infeasible while the run goes on, and ``muxsim size``'s two questions."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from _badinput import check_bad_input  # noqa: E402

from muxsim.cli import app  # noqa: E402
from muxsim.config import ConfigError, ExperimentConfig, SLOConfig, load_config  # noqa: E402
from muxsim.experiment import experiment_results, run_experiment  # noqa: E402
from muxsim.experiment.sizing import SizingSLO, evaluate_point  # noqa: E402

runner = CliRunner()

#: 12 LLMs (10 x 7B, 2 x 13B): MuxServe packs them on 8 A100s, spatial partitioning needs 12.
BASE = {
    "name": "small",
    "seed": 0,
    "cluster": {"nodes": 1, "gpus_per_node": 8, "gpu": "a100-80gb"},
    "llms": [{"model": "llama-7b", "count": 10}, {"model": "llama-13b", "count": 2}],
    "workload": {"duration_s": 4, "lengths": {"kind": "sharegpt_v3"},
                 "popularity": {"alpha": 2.1, "max_rate": 4}},
    "strategies": ["muxserve", "spatial", "temporal"],
    "slo": {"scales": [2, 8], "goodput_scale": 8},
}


def _cfg(**over) -> dict:
    d = json.loads(json.dumps(BASE))
    for k, v in over.items():
        node = d
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return d


def _write(tmp_path: Path, d: dict, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d))
    return p


# --- the cluster as a sweep parameter

def test_cluster_sweep_cells_params_and_labels():
    cfg = ExperimentConfig.model_validate(_cfg(**{"cluster.nodes": [1, 2], "cluster.gpu": ["a100-80gb", "h100-80gb"]}))
    cells = cfg.cells()
    assert [c.label for c in cells] == ["nodes=1,gpu=a100-80gb", "nodes=1,gpu=h100-80gb",
                                        "nodes=2,gpu=a100-80gb", "nodes=2,gpu=h100-80gb"]
    assert cells[3].params == {"alpha": 2.1, "rate_scale": 1.0, "nodes": 2, "gpus_per_node": 8,
                               "gpu": "h100-80gb", "n_gpus": 16}
    assert cells[3].cluster == (2, 8, "h100-80gb")
    # one workload on every cluster: the same key seeds it
    assert len({c.key for c in cells}) == 1 and len({c.ident for c in cells}) == 4
    assert {c.rates == cells[0].rates for c in cells} == {True}
    one = cfg.for_cell(cells[3])
    assert (one.cluster.nodes, one.cluster.gpus_per_node, one.cluster.gpu, one.cluster.n_gpus) == (2, 8, "h100-80gb", 16)
    # a workload sweep keeps its labels, followed by the swept cluster fields only
    cfg = ExperimentConfig.model_validate(_cfg(**{"cluster.nodes": [1, 2], "cluster.gpus_per_node": [8],
                                                  "workload.popularity": {"alpha": [0.9, 2.1], "max_rate": 4}}))
    assert [c.label for c in cfg.cells()] == ["alpha=0.9,nodes=1", "alpha=2.1,nodes=1",
                                              "alpha=0.9,nodes=2", "alpha=2.1,nodes=2"]
    # a scalar cluster: cells as before, no cluster params
    (cell,) = ExperimentConfig.model_validate(_cfg()).cells()
    assert cell.label == "alpha=2.1" and cell.params == {"alpha": 2.1, "rate_scale": 1.0} and cell.cluster is None


@pytest.mark.parametrize("over, expected", [
    ({"cluster.nodes": [1, 1]}, "nodes values must be unique"),
    ({"cluster.nodes": []}, "nodes list is empty"),
    ({"cluster.nodes": [1, 2000]}, "cluster.nodes"),
    ({"cluster.gpu": ["a100-80gb", "v100"]}, "unknown GPU 'v100'"),
    ({"cluster.nodes": [1, 2], "placement": [{"node": 1, "gpus": 8, "llms": [f"llm-{i}" for i in range(12)]}]},
     "placement mesh on node 1, cluster has 1 (nodes 0..0) of the swept cluster nodes=1"),
])
def test_bad_cluster_sweeps_are_refused_at_load(tmp_path, over, expected):
    with pytest.raises(ConfigError, match=None) as e:
        load_config(_write(tmp_path, _cfg(**over)))
    assert expected in str(e.value), str(e.value)


def _summary(cfg: ExperimentConfig) -> pd.DataFrame:
    plans, runs = run_experiment(cfg)
    return experiment_results(cfg, plans, runs).summary


def test_swept_cluster_results_equal_separate_scalar_runs():
    sweep = {"cluster.nodes": [1, 2], "cluster.gpu": ["a100-80gb", "h100-80gb"], "strategies": ["muxserve", "temporal"]}
    swept = _summary(ExperimentConfig.model_validate(_cfg(**sweep)))
    params = ["nodes", "gpus_per_node", "gpu", "n_gpus"]
    for (nodes, gpu), part in swept.groupby(["nodes", "gpu"], sort=False):
        alone = _summary(ExperimentConfig.model_validate(
            _cfg(**{"cluster.nodes": nodes, "cluster.gpu": gpu, "strategies": ["muxserve", "temporal"]})))
        got = part.drop(columns=["cell", *params]).reset_index(drop=True)
        pd.testing.assert_frame_equal(got, alone.drop(columns="cell"))
        assert (part["n_gpus"] == nodes * 8).all()
    # the GPU kind matters: A100 runs on fitted curves, H100 on the roofline model
    src = swept[swept.llm == "llm-0"].set_index(["gpu", "nodes", "strategy"])["latency_source"]
    assert src[("a100-80gb", 1, "muxserve")] != src[("h100-80gb", 1, "muxserve")]


# --- infeasible strategies

def test_infeasible_strategy_is_reported_and_the_run_goes_on(tmp_path):
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(_write(tmp_path, _cfg())), "--out", str(out), "--jobs", "1"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "alpha=2.1 spatial: infeasible: spatial partitioning needs 12 GPUs" in text
    summary = pd.read_parquet(out / "summary.parquet")
    sp = summary[summary.strategy == "spatial"]
    assert len(sp) == 13 and set(sp.status) == {"infeasible"}  # 12 LLMs and the overall row
    assert sp.reason.str.startswith("spatial partitioning needs 12 GPUs").all()
    assert (sp.n_requests == 0).all() and sp.throughput_rps.isna().all() and sp["slo_attainment@8"].isna().all()
    ok = summary[summary.strategy != "spatial"]
    assert set(ok.status) == {"ok"} and set(ok.reason) == {""}
    assert (ok[ok.llm == "all"].n_requests > 0).all() and list(pd.unique(summary.strategy)) == BASE["strategies"]
    assert set(pd.read_parquet(out / "requests.parquet").strategy) == {"muxserve", "temporal"}
    run = json.loads((out / "run.json").read_text())
    assert list(run["infeasible"]) == ["alpha=2.1 | spatial"]
    assert "alpha=2.1 | spatial" not in run["placements"]


def test_cluster_sweep_with_a_cell_too_small_for_spatial(tmp_path):
    cfg = ExperimentConfig.model_validate(_cfg(**{"cluster.nodes": [1, 2], "strategies": ["muxserve", "spatial"]}))
    s = _summary(cfg)
    overall = s[s.llm == "all"].set_index(["cell", "strategy"])
    assert overall.loc[("nodes=1", "spatial"), "status"] == "infeasible"
    assert overall.loc[("nodes=2", "spatial"), "status"] == "ok"
    assert overall.loc[("nodes=2", "spatial"), "throughput_rps"] > 0


def test_nothing_placeable_fails_with_one_line(tmp_path):
    check_bad_input(["run", _write(tmp_path, _cfg(strategies=["spatial"])), "--out", tmp_path / "out"],
                    "spatial partitioning needs 12 GPUs", tmp_path)


# --- muxsim size

def _size(tmp_path: Path, cfg: Path, *args: str) -> dict:
    out = tmp_path / "size"
    res = runner.invoke(app, ["size", str(cfg), "--out", str(out), *args])
    assert res.exit_code == 0, res.output
    return json.loads((out / "sizing.json").read_text()), res.output


def test_size_max_rate_is_checked_by_simulation(tmp_path):
    cfg_path = _write(tmp_path, _cfg(strategies=["muxserve"]))
    tol, target = 0.05, 0.95
    doc, output = _size(tmp_path, cfg_path, "--slo", "scale=8", "--attainment", str(target),
                        "--tolerance", str(tol), "--duration", "4")
    (ans,) = doc["answers"]
    s, (lo, hi) = ans["rate_scale"], ans["bracket"]
    assert lo == s and hi is not None and s < hi <= s * (1 + tol) + 1e-12
    assert ans["simulations"] == len(doc["simulations"]) and doc["attainment_column"] == "slo_attainment@8"
    assert "muxserve" in output and f"{s:.4g}" in output
    cfg = load_config(cfg_path)
    slo = SizingSLO(scale=8)
    at = evaluate_point(cfg, "muxserve", cfg.cluster, s, slo, target, 4)
    assert at.met and at.attainment >= target and math.isclose(at.total_rate_rps, ans["total_rate_rps"])
    above = evaluate_point(cfg, "muxserve", cfg.cluster, s * (1 + 2 * tol), slo, target, 4)
    assert not above.met and above.attainment < target
    # same config and seed: the same answer, byte for byte
    again, _ = _size(tmp_path, cfg_path, "--slo", "scale=8", "--attainment", str(target), "--tolerance", str(tol),
                     "--duration", "4")
    assert again == doc
    csv = pd.read_csv(tmp_path / "size" / "sizing.csv")
    assert len(csv) == ans["simulations"] and set(csv.columns) >= {"strategy", "nodes", "gpu", "rate_scale",
                                                                   "total_rate_rps", "attainment", "met"}


def test_size_smallest_cluster(tmp_path):
    cfg_path = _write(tmp_path, _cfg(strategies=["muxserve", "spatial"]))
    doc, output = _size(tmp_path, cfg_path, "--slo", "scale=8", "--attainment", "0.9", "--rate", "20",
                        "--nodes", "1,2", "--duration", "4")
    ans = {a["strategy"]: a for a in doc["answers"]}
    assert ans["muxserve"]["cluster"]["nodes"] == 1 and math.isclose(ans["muxserve"]["total_rate_rps"], 20)
    # spatial cannot be placed on one node (12 GPUs needed): that try fails, two nodes are tried
    sims = [p for p in doc["simulations"] if p["strategy"] == "spatial"]
    assert sims[0]["nodes"] == 1 and sims[0]["status"] == "infeasible" and not sims[0]["met"]
    assert ans["spatial"]["cluster"]["nodes"] == 2 and sims[1]["nodes"] == 2 and sims[1]["met"]
    assert "smallest cluster" in output


def test_size_absolute_slo(tmp_path):
    cfg_path = _write(tmp_path, _cfg(strategies=["muxserve"]))
    args = ["size", cfg_path, "--slo", "ttft_ms=500,tpot_ms=100", "--duration", "4", "--rate", "5",
            "--nodes", "1", "--out", tmp_path / "out"]
    if "ttft_ms" not in SLOConfig.model_fields:
        check_bad_input(args, "absolute SLO limits need slo.ttft_ms", tmp_path)
    else:  # the schema has absolute SLOs (issue 14 item 1): they are what is sized against
        doc, _ = _size(tmp_path, cfg_path, *[str(a) for a in args[2:-2]])
        assert doc["attainment_column"] == "slo_attainment_abs"
        assert doc["simulations"][0]["attainment"] is not None


@pytest.mark.parametrize("args, expected", [
    (["--slo", "scale=0"], "--slo 'scale=0': scale must be a finite number > 0"),
    (["--slo", "speed=3"], "is not one of scale=S, or any of ttft_ms=MS"),
    (["--slo", "scale=8,ttft_ms=100"], "not both"),
    (["--slo", "scale=fast"], "scale must be a number > 0"),
    (["--attainment", "1.5"], "--attainment must be a fraction in (0, 1], got 1.5"),
    (["--attainment", "0"], "--attainment must be a fraction in (0, 1]"),
    (["--tolerance", "0"], "--tolerance must be a fraction in (0, 1)"),
    (["--rate", "-3"], "--rate must be a total rate in (0, 1e6] req/s"),
    (["--nodes", "0,2"], "--nodes must be distinct whole numbers in [1, 1024]"),
    (["--duration", "0"], "--duration must be seconds in (0, 1e7]"),
])
def test_size_bad_input_is_one_line(tmp_path, args, expected):
    cfg = _write(tmp_path, _cfg())
    check_bad_input(["size", cfg, "--out", tmp_path / "out", *args], expected, tmp_path)


def test_size_refuses_a_workload_sweep(tmp_path):
    cfg = _write(tmp_path, _cfg(**{"workload.popularity": {"alpha": [0.9, 2.1], "max_rate": 4}}))
    check_bad_input(["size", cfg, "--out", tmp_path / "out"], "muxsim size sizes one workload, the config sweeps 2",
                    tmp_path)


def test_a_cell_where_nothing_fits_has_no_workload_and_the_others_run(tmp_path):
    d = _cfg(**{"cluster.gpus_per_node": [1, 8], "strategies": ["muxserve", "spatial", "muxserve+sim"],
                "llms": [{"model": "llama-7b", "count": 2}, {"model": "llama-30b", "count": 1}],
                "workload.requests": {"rule": "estimate", "factor": 1.1, "seconds": 4},
                "placement": {"candidates": 3, "budget_s": 1000, "starts": 1}})
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(_write(tmp_path, d)), "--out", str(out), "--jobs", "1"])
    assert res.exit_code == 0, res.output
    run = json.loads((out / "run.json").read_text())
    why = "llm-2 (llama-30b) fits on no mesh: it needs >= 2 GPUs in one node, nodes have 1"
    assert run["infeasible"] == {f"gpus_per_node=1 | {s}": why for s in d["strategies"]}
    # the request counts follow MuxServe's estimate: the 1-GPU cell has none, and no workload
    assert list(run["request_counts"]) == list(run["workloads"]) == ["gpus_per_node=8"]
    assert not (out / "workload_0.parquet").exists() and (out / "workload_1.parquet").exists()
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert set(summary[summary.cell == "gpus_per_node=8"].status) == {"ok"}
