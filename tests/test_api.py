"""The Python API (muxsim.run / load_config / simulate): the same results as `muxsim run`,
its errors, and a cheap `import muxsim`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import muxsim
from muxsim.cli import app
from muxsim.config import ConfigError
from muxsim.files import OutputPathError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """The quickstart config at 20 s of arrivals."""
    cfg = yaml.safe_load((ROOT / "experiments" / "quickstart_h100.yaml").read_text())
    cfg["workload"]["duration_s"] = 20
    path = tmp_path_factory.mktemp("api") / "quick.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def cli_out(small, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "out"
    res = CliRunner().invoke(app, ["run", str(small), "--out", str(out), "--jobs", "2", "--seed", "5"])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def api_res(small, tmp_path_factory):
    return muxsim.run(small, jobs=1, seed=5, out=tmp_path_factory.mktemp("api_out") / "out")


def test_run_equals_the_command_line(cli_out, api_res):
    """Same config and seed: the API's output folder is the CLI's, file by file (a file the
    CLI writes that the API does not, or any differing byte, fails), and its tables are the
    ones in the folder."""
    api_out = api_res.out
    cli_files = sorted(p.relative_to(cli_out) for p in cli_out.rglob("*") if p.is_file())
    api_files = sorted(p.relative_to(api_out) for p in api_out.rglob("*") if p.is_file())
    assert api_files == cli_files
    for rel in cli_files:
        if rel.suffix == ".parquet":
            pd.testing.assert_frame_equal(pd.read_parquet(api_out / rel), pd.read_parquet(cli_out / rel))
        else:
            assert (api_out / rel).read_bytes() == (cli_out / rel).read_bytes(), rel
    pd.testing.assert_frame_equal(api_res.summary, pd.read_parquet(cli_out / "summary.parquet"))
    pd.testing.assert_frame_equal(api_res.requests, pd.read_parquet(cli_out / "requests.parquet"))
    pd.testing.assert_frame_equal(api_res.ratios.reset_index(drop=True),
                                  pd.read_csv(cli_out / "ratios.csv"), check_dtype=False)
    assert api_res.config.seed == 5 and api_res.n_requests == len(api_res.requests)
    assert api_res.cells == ["alpha=0.9", "alpha=2.1"]
    assert set(api_res.latency_sources.values()) == {"roofline"}  # H100: no calibration shipped
    assert 0 < api_res.cpu_s and api_res.wall_s > 0


def test_run_without_out_writes_nothing_and_can_write_later(small, tmp_path, monkeypatch, cli_out):
    monkeypatch.chdir(tmp_path)
    res = muxsim.run(muxsim.load_config(small, seed=5), jobs=2)
    assert res.out is None and list(tmp_path.iterdir()) == []
    pd.testing.assert_frame_equal(res.summary, pd.read_parquet(cli_out / "summary.parquet"))
    written = res.write(tmp_path / "later")
    assert (written / "summary.csv").read_bytes() == (cli_out / "summary.csv").read_bytes()
    assert "written to" in repr(res)


def test_placements(api_res):
    cfg = api_res.config
    assert set(api_res.placements) == {(c, s) for c in api_res.cells for s in cfg.strategies}
    t = api_res.placements_table()
    for (cell, strategy), g in t.groupby(["cell", "strategy"]):
        # every LLM placed once, on meshes that fit the node's 8 GPUs
        assert sorted(g.llm) == sorted(cfg.llm_names()), (cell, strategy)
        meshes = g.drop_duplicates("mesh")
        assert meshes.gpus.sum() <= cfg.cluster.gpus_per_node
        p = api_res.placements[(cell, strategy)]
        assert g.estimated_throughput_rps.sum() == pytest.approx(p.total_est_throughput)
    # spatial gives every LLM a mesh of its own
    sp = t[t.strategy == "spatial"]
    assert sp.groupby(["cell", "mesh"]).size().max() == 1


def test_simulate_gives_the_run_rows(small, api_res):
    one = muxsim.simulate(small, cell="alpha=2.1", strategy="spatial", seed=5)
    run_rows = api_res.summary[(api_res.summary.cell == "alpha=2.1") & (api_res.summary.strategy == "spatial")]
    pd.testing.assert_frame_equal(one.summary, run_rows.reset_index(drop=True))
    req = api_res.requests
    pd.testing.assert_frame_equal(one.requests,
                                  req[(req.cell == "alpha=2.1") & (req.strategy == "spatial")].reset_index(drop=True))
    assert one.placement.to_dict() == api_res.placements[("alpha=2.1", "spatial")].to_dict()
    assert len(one.workload) == len(one.requests) and one.n_jobs > 0
    # by index, and a strategy the config does not list
    rr = muxsim.simulate(small, 1, "roundrobin", seed=5)
    assert rr.cell == "alpha=2.1" and set(rr.requests.strategy) == {"roundrobin"}
    pd.testing.assert_frame_equal(rr.workload, one.workload)


@pytest.mark.parametrize("call,exc,match", [
    (lambda p: muxsim.load_config(p.parent / "missing.yaml"), ConfigError, "not found"),
    (lambda p: muxsim.simulate(p, cell="alpha=5"), ConfigError, "cells: alpha=0.9, alpha=2.1"),
    (lambda p: muxsim.simulate(p, cell=2), ConfigError, "out of range"),
    (lambda p: muxsim.simulate(p, strategy="fastest"), ConfigError, "strategy must be one of muxserve"),
    (lambda p: muxsim.run(p, seed=-1), ConfigError, "seed"),
    (lambda p: muxsim.run(muxsim.load_config(p), seed=-1), ConfigError, "seed: must be an integer >= 0"),
    (lambda p: muxsim.run(p, jobs=0), ValueError, "jobs must be an integer >= 1"),
    (lambda p: muxsim.run(p, out=p), OutputPathError, "--out"),
])
def test_errors_are_the_cli_s_one_line_exceptions(small, call, exc, match):
    before = sorted(small.parent.iterdir())
    with pytest.raises(exc, match=match) as e:
        call(small)
    assert len(str(e.value).splitlines()) == 1
    assert sorted(small.parent.iterdir()) == before  # nothing written


def test_import_muxsim_stays_cheap():
    """`import muxsim` loads neither the API nor pandas; the first `muxsim.run` access does."""
    code = ("import sys, muxsim; heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pandas', 'numpy', 'simpy', 'pydantic') or m.startswith('muxsim.'));"
            "print(heavy); f = muxsim.run; print('muxsim.api' in sys.modules, f.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout.splitlines()
    assert out == ["['muxsim._native', 'muxsim._version']", "True muxsim.api"]
    assert {"run", "simulate", "load_config", "Results"} <= set(dir(muxsim))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        muxsim.nope  # noqa: B018
