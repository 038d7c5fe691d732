"""The ChatLMSYS experiment: ``workload.rate_sets`` sweeps, mean-matched ShareGPT lengths, the
committed rate figures against MuxServe's files, and a short end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from muxsim.cli import app
from muxsim.config import ConfigError, ExperimentConfig, load_config
from muxsim.experiment import lengths_sampler
from muxsim.workload import EmpiricalLengths, ScaledLengths

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "chatlmsys.yaml"
SHARED = ROOT.parent / "shared" / "data" / "chatlmsys"
# the source files' name stem, per time compression (../shared/data/chatlmsys)
SOURCE = ("requests_over_time_models_days_from_day55_to_day55_condense{c}_N17_"
          "maxrate_{m}_avgrate_{a}.yaml")
SOURCE_FILES = {500: SOURCE.format(c=500, m=8, a=2), 800: SOURCE.format(c=800, m=13, a=4),
                1200: SOURCE.format(c=1200, m=19, a=6), 1600: SOURCE.format(c=1600, m=26, a=8),
                2000: SOURCE.format(c=2000, m=32, a=11)}


def _base(**workload) -> dict:
    return {
        "cluster": {"nodes": 1, "gpus_per_node": 8},
        "llms": [{"model": "llama-7b", "count": 2}, {"model": "llama-13b"}],
        "workload": {"duration_s": 10,
                     "rate_sets": [{"label": "low", "rates": [1, 2, 3]},
                                   {"label": "high", "rates": [2, 4, 9]}],
                     **workload},
    }


def _write(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


# --- rate_sets: validation and cells -------------------------------------------------------

def test_rate_sets_make_one_cell_each_in_listed_order(tmp_path):
    cfg = load_config(_write(tmp_path, _base()))
    cells = cfg.cells()
    assert [c.label for c in cells] == ["low", "high"]
    assert cells[0].rates == [1.0, 2.0, 3.0] and cells[1].rates == [2.0, 4.0, 9.0]
    assert cells[0].params == {"avg_rate": 2.0} and cells[1].params == {"avg_rate": 5.0}


def test_rate_set_with_wrong_count_names_the_set_and_the_llm_count(tmp_path):
    raw = _base(rate_sets=[{"label": "ok", "rates": [1, 2, 3]}, {"label": "short", "rates": [1, 2]}])
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, raw))
    msg = str(e.value)
    assert "rate_sets[1]" in msg and "'short'" in msg and "2 rates" in msg and "3 LLMs" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("extra, match", [
    ({"popularity": {"alpha": 1.0, "max_rate": 5}}, "either 'rate_sets' or 'popularity'"),
    ({"file": "w.parquet"}, "either 'rate_sets' or a replayed 'file'"),
])
def test_rate_sets_exclude_popularity_and_file(tmp_path, extra, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_config(_write(tmp_path, _base(**extra)))
    assert "\n" not in str(e.value) and "workload" in str(e.value)


def test_rate_sets_exclude_per_group_rates(tmp_path):
    raw = _base()
    raw["llms"][1]["rate"] = 2.0
    with pytest.raises(ConfigError, match=r"drop 'rate' from llms group\(s\) \[1\]"):
        load_config(_write(tmp_path, raw))


@pytest.mark.parametrize("sets, match", [
    ([{"label": "a", "rates": [1, 2, 3]}, {"label": "a", "rates": [1, 2, 3]}], "unique"),
    ([{"label": "a", "rates": [1, 0, 3]}], "> 0"),
    ([{"label": "a", "rates": [1, -2, 3]}], "> 0"),
    ([], "at least 1"),
    ([{"rates": [1, 2, 3]}], "label"),
])
def test_bad_rate_sets(tmp_path, sets, match):
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, _base(rate_sets=sets)))


# --- mean-matched lengths ------------------------------------------------------------------

@pytest.mark.parametrize("target", [(100.2, 261.3), (20.0, 40.0), (300.0, 900.0)])
def test_matching_means_hits_the_targets(target):
    s = ScaledLengths.matching_means(EmpiricalLengths.sharegpt(), *target)
    # the sampler's own estimate, which placement and KV quotas use
    assert s.mean_prompt == pytest.approx(target[0], rel=1e-3)
    assert s.mean_output == pytest.approx(target[1], rel=1e-3)
    # a fresh sample (another seed): within 1 % (sampling error about 0.3 % / 0.13 %)
    p, o = s.sample(np.random.default_rng(12345), 200_000)
    assert p.mean() == pytest.approx(target[0], rel=0.01)
    assert o.mean() == pytest.approx(target[1], rel=0.01)
    assert p.min() >= 4 and o.min() >= 4
    assert s.scale != s.output_scale  # each side has its own factor


def test_matching_means_accounts_for_the_minimum_clamp():
    # at a small target many lengths hit the 4-token floor: the naive factor overshoots
    base = EmpiricalLengths.sharegpt()
    naive = ScaledLengths(base, 12.0 / base.mean_prompt)
    matched = ScaledLengths.matching_means(base, 12.0, 30.0)
    assert naive.mean_prompt > 12.0 * 1.02
    assert matched.mean_prompt == pytest.approx(12.0, rel=2e-3)
    assert matched.scale < naive.scale


def test_matching_means_rejects_unreachable_targets():
    with pytest.raises(ValueError, match="mean_prompt"):
        ScaledLengths.matching_means(EmpiricalLengths.sharegpt(), 4.0, 100.0)
    with pytest.raises(ValueError, match="mean_output"):
        ScaledLengths.matching_means(EmpiricalLengths.sharegpt(), 100.0, float("nan"))


def test_config_lengths_mean_keys(tmp_path):
    raw = _base(lengths={"kind": "sharegpt", "mean_prompt": 100.2, "mean_output": 261.3})
    cfg = load_config(_write(tmp_path, raw))
    s = lengths_sampler(cfg)
    assert s.mean_prompt == pytest.approx(100.2, rel=1e-3)
    assert s.mean_output == pytest.approx(261.3, rel=1e-3)
    for lengths, match in [
        ({"kind": "sharegpt", "mean_prompt": 100.2}, "both 'mean_prompt' and 'mean_output'"),
        ({"kind": "sharegpt", "mean_prompt": 100, "mean_output": 200, "scale": 0.5}, "give one"),
        ({"kind": "fixed", "prompt": 1, "output": 2, "mean_prompt": 100, "mean_output": 200},
         "kind 'fixed'"),
        ({"kind": "sharegpt", "mean_prompt": 3, "mean_output": 200}, "mean_prompt"),
    ]:
        with pytest.raises(ConfigError, match=match):
            load_config(_write(tmp_path, _base(lengths=lengths)))


# --- the committed experiment --------------------------------------------------------------

def test_chatlmsys_config_shape():
    cfg = load_config(CONFIG)
    assert cfg.cluster.n_gpus == 32
    models = cfg.llm_models()
    assert len(models) == 16
    assert {m: models.count(m) for m in set(models)} == {
        "llama-7b": 4, "llama-13b": 6, "llama-30b": 3, "llama-65b": 3}
    cells = cfg.cells()
    assert [c.label for c in cells] == [f"condense{c}" for c in SOURCE_FILES]
    # the paper's average rates: about 3.0, 4.8, 7.1, 9.5, 11.9 req/s
    assert [round(c.params["avg_rate"], 1) for c in cells] == [3.0, 4.8, 7.1, 9.5, 11.9]
    assert 8 in cfg.slo.scales and cfg.slo.goodput_scale == 8
    assert cfg.strategies == ["muxserve", "spatial", "temporal"]


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"needs {SHARED} (../shared/data is not in the repo)")
def test_committed_rates_equal_muxserve_files():
    cfg = load_config(CONFIG)
    cells = {c.label: c for c in cfg.cells()}
    for condense, name in SOURCE_FILES.items():
        src = yaml.safe_load((SHARED / name).read_text())
        assert [m["name"] for m in src["models"]] == [f"llm-{k}" for k in range(1, 17)]
        # one group per LLM in the files' order; the model is the checkpoint path's last part
        assert cfg.llm_models() == [m["model"].rstrip("/").rsplit("/", 1)[-1] for m in src["models"]]
        np.testing.assert_allclose(cells[f"condense{condense}"].rates,
                                   [m["rate"] for m in src["models"]], rtol=0, atol=1e-9)
        lc = cfg.workload.lengths
        assert lc.mean_prompt == pytest.approx(src["avg_prompt_len"], abs=1e-9)
        assert lc.mean_output == pytest.approx(src["avg_output_len"], abs=1e-9)
        assert src["cluster"] == {"nnodes": cfg.cluster.nodes, "ngpus_per_node": cfg.cluster.gpus_per_node}


def test_chatlmsys_short_run_end_to_end(tmp_path):
    raw = yaml.safe_load(CONFIG.read_text())
    raw["workload"]["duration_s"] = 15
    cfg_path = tmp_path / "chatlmsys_short.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    ExperimentConfig.model_validate(raw)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", str(cfg_path), "--out", str(out), "--jobs", "1"])
    assert res.exit_code == 0, res.output
    for f in ("requests.parquet", "summary.parquet", "summary.csv", "ratios.csv", "throughput.png",
              "slo_attainment.png", "slo_attainment_sweep.png", "config.resolved.yaml", "run.json"):
        assert (out / f).stat().st_size > 0, f
    summary = pd.read_parquet(out / "summary.parquet")
    overall = summary[summary.llm == "all"]
    assert list(pd.unique(overall.cell)) == [f"condense{c}" for c in SOURCE_FILES]
    assert len(overall) == 15 and (overall.throughput_rps > 0).all()
    assert overall.avg_rate.round(1).tolist() == [r for r in (3.0, 4.8, 7.1, 9.5, 11.9) for _ in range(3)]
    thr = overall.pivot(index="cell", columns="strategy", values="throughput_rps")
    # Robust in this setup: temporal (one job at a time per mesh, FCFS) is far behind MuxServe on
    # the same placement in every cell (2-6x in the full 1000 s run).
    assert (thr.muxserve > thr.temporal).all(), thr
    req = pd.read_parquet(out / "requests.parquet", columns=["prompt_tokens", "output_tokens"])
    assert req.prompt_tokens.mean() == pytest.approx(100.17, rel=0.05)
    assert req.output_tokens.mean() == pytest.approx(261.31, rel=0.05)
    assert json.loads((out / "run.json").read_text())["seed"] == 0
