"""Every Parquet file a run writes against its schema file (muxsim/data/schema/*.yaml), both
ways: no undocumented column, no missing one, the documented Arrow type. Small runs (seconds):
a popularity sweep over max_rate with a timeline (jobs.parquet) and absolute SLOs, a rate-set
sweep (avg_rate) and fixed rates (no sweep parameter)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from muxsim import output_schema as S
from muxsim.cli import app
from muxsim.config import load_config
from muxsim.config.sweep import sweep_cells

_BASE = {
    "seed": 0,
    "cluster": {"nodes": 1, "gpus_per_node": 4, "gpu": "a100-80gb"},
    "llms": [{"model": "llama-7b", "count": 2}, {"model": "llama-13b", "count": 1}],
    "strategies": ["muxserve", "spatial"],
    "slo": {"scales": [2, 8], "goodput_scale": 4},
}

CONFIGS = {
    # alpha, rate_scale and max_rate as sweep parameters; the job log; absolute SLOs
    "popularity": {**_BASE, "name": "schema_pop",
                   "workload": {"duration_s": 3, "lengths": {"kind": "sharegpt_v3"},
                                "popularity": {"alpha": 0.9, "max_rate": [2, 4]}},
                   "slo": {**_BASE["slo"], "ttft_ms": 500, "e2e_ms": 20000},
                   "timeline": {"window_s": [0.5, 1.5], "cells": [0]}},
    # avg_rate
    "rate_sets": {**_BASE, "name": "schema_sets", "strategies": ["muxserve"],
                  "workload": {"duration_s": 3, "lengths": {"kind": "fixed", "prompt": 64, "output": 16},
                               "rate_sets": [{"label": "low", "rates": [1, 0.5, 0.5]}]}},
    # a cluster sweep (nodes, gpus_per_node, gpu, n_gpus as parameters) on which spatial
    # partitioning cannot place the three LLMs on 2 GPUs: an infeasible row
    "clusters": {**_BASE, "name": "schema_clusters",
                 "cluster": {"nodes": 1, "gpus_per_node": [2, 4], "gpu": ["a100-80gb", "h100-80gb"]},
                 "workload": {"duration_s": 3, "lengths": {"kind": "fixed", "prompt": 64, "output": 16},
                              "popularity": {"alpha": 0.9, "max_rate": 2}}},
    # no sweep parameter at all
    "fixed": {**_BASE, "name": "schema_fixed", "strategies": ["spatial"],
              "llms": [{"model": "llama-7b", "count": 2, "rate": 1.0}],
              "workload": {"duration_s": 3, "lengths": {"kind": "fixed", "prompt": 32, "output": 8}}},
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def run(request, tmp_path_factory):
    """(its key in CONFIGS, config, output folder) of one small run."""
    tmp = tmp_path_factory.mktemp(request.param)
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(CONFIGS[request.param]))
    out = tmp / "out"
    res = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--jobs", "1"])
    assert res.exit_code == 0, res.output
    return request.param, load_config(path), out


def test_every_parquet_output_matches_its_schema(run):
    _, cfg, out = run
    sweep = list(dict.fromkeys(k for c in sweep_cells(cfg) for k in c.params))
    files = sorted(p.name for p in out.glob("*.parquet"))
    assert "requests.parquet" in files and "summary.parquet" in files and "workload_0.parquet" in files
    if cfg.timeline is not None:
        assert "jobs.parquet" in files
    for name in files:
        schema = S.schema_for(name)  # KeyError: a Parquet output without a schema file
        expected = schema.expected(cfg.slo.scales, cfg.slo.goodput_scale, sweep)
        problems = S.column_problems(pq.read_schema(out / name), expected)
        assert not problems, f"{name}: {problems}"


def test_the_sweep_parameters_are_what_the_configs_sweep(run):
    key, _, out = run
    want = {"popularity": {"alpha", "rate_scale", "max_rate"}, "rate_sets": {"avg_rate"}, "fixed": set(),
            "clusters": {"alpha", "rate_scale", "nodes", "gpus_per_node", "gpu", "n_gpus"}}[key]
    for name in ("requests.parquet", "summary.parquet"):
        assert set(S.sweep_parameters()) & set(pq.read_schema(out / name).names) == want, name
    status = set(pd.read_parquet(out / "summary.parquet", columns=["status"])["status"])
    # every summary says whether each run could be placed; here spatial cannot on 2 GPUs
    assert status == ({"ok", "infeasible"} if key == "clusters" else {"ok"})


def test_schema_files_are_complete_and_shipped():
    root = Path(S.__file__).parent / "data" / "schema"
    assert sorted(p.stem for p in root.glob("*.yaml")) == sorted([*S.SCHEMAS, "sweep_parameters"])
    pyproject = (Path(S.__file__).parents[1] / "pyproject.toml").read_text()
    assert '"data/schema/*.yaml"' in pyproject
    for name in S.SCHEMAS:
        s = S.load_schema(name)
        assert s.description and s.file.endswith(".parquet")
        for c in s.columns:
            assert c.definition.strip(), (name, c.name)
    for c in S.sweep_parameters().values():
        assert c.definition.strip()
    assert S.schema_for("workload_17.parquet").name == "workload"
    with pytest.raises(KeyError, match="no output schema"):
        S.schema_for("other.parquet")


def test_the_check_reports_every_kind_of_difference():
    expected = {"a": "int64", "b": "string", "c": "double"}
    written = pa.schema([("a", pa.int64()), ("b", pa.large_string()), ("c", pa.int64()), ("d", pa.bool_())])
    problems = S.column_problems(written, expected)
    assert problems == ["undocumented column 'd' (bool)", "column 'c' is int64, documented as double"]
    assert S.column_problems(pa.schema([("a", pa.int64())]), {"a": "int64", "z": "bool"}) == [
        "missing column 'z' (bool)"]
    with pytest.raises(ValueError, match="not documented"):
        S.load_schema("summary").expected([8], 8, ["replicas"])
    with pytest.raises(ValueError, match="unknown output schema"):
        S.load_schema("ratios")
