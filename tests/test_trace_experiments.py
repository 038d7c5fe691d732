"""Experiments driven by a real request trace (``workload.trace``): validation, path lookup,
determinism, a small end-to-end ``muxsim run`` and the shipped azure_conv experiment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from muxsim.cli import app
from muxsim.config import ConfigError, ExperimentConfig, load_config, trace_workload
from muxsim.experiment import cell_workload, workload_means
from muxsim.workload.synth import SynthSpec, synthesize

ROOT = Path(__file__).resolve().parents[1]
AZURE = ROOT.parent / "shared" / "data" / "traces" / "azure_llm_2023_conv.csv"
runner = CliRunner()


def _write_trace(folder: Path, n: int = 90, span_s: float = 30.0, seed: int = 1) -> Path:
    """A small Azure-format CSV (arrived_at s, prompt and output tokens), bursty arrivals."""
    rng = np.random.default_rng(seed)
    gaps = rng.gamma(0.25, 4.0, n)  # gap CV 2
    t = np.cumsum(gaps)
    t = (t - t[0]) * span_s / (t[-1] - t[0])
    df = pd.DataFrame({"arrived_at": np.round(t, 6),
                       "num_prefill_tokens": rng.integers(16, 400, n),
                       "num_decode_tokens": rng.integers(4, 64, n)})
    path = folder / "trace.csv"
    df.to_csv(path, index=False)
    return path


def _config(trace: dict | None = None, **workload) -> dict:
    return {
        "name": "tiny_trace",
        "seed": 0,
        "cluster": {"nodes": 1, "gpus_per_node": 4, "gpu": "a100-80gb"},
        "llms": [{"model": "llama-7b", "count": 3}],
        "workload": {"trace": trace if trace is not None else {"source": {"path": "trace.csv"},
                                                               "popularity": {"alpha": [0.9, 2.1]}},
                     **workload},
        "strategies": ["muxserve", "spatial", "temporal"],
        "slo": {"scales": [1, 8, 100], "goodput_scale": 8},
    }


def _save(tmp_path: Path, cfg: dict, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


# ------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize("change, expected", [
    ({"popularity": {"alpha": 0.9, "max_rate": 5}}, "give either 'trace' or 'popularity'"),
    ({"rate_sets": [{"label": "a", "rates": [1, 1, 1]}]}, "give either 'trace' or 'rate_sets'"),
    ({"file": "w.parquet"}, "give either 'trace' or 'file'"),
    ({"lengths": {"kind": "fixed", "prompt": 10, "output": 10}}, "'lengths' does not apply to a trace"),
    ({"arrival": "gamma", "cv": 2}, "'arrival'/'cv' do not apply to a trace"),
    ({"max_requests_per_llm": 5}, "use trace.max_requests"),
    ({"trace": {"source": {"path": "trace.csv"}, "llms": 4}}, "workload.trace.llms is 4; the config lists 3"),
    ({"trace": {"source": {"path": "trace.csv"}, "llms": ["llm-0", "llm-1", "x"]}},
     "names LLMs the config does not list: ['x']"),
    ({"trace": {"source": {"path": "trace.csv"}, "llms": ["llm-0", "llm-1"]}}, "lists 2 LLMs"),
    ({"trace": {"source": {"path": "trace.csv"}, "popularity": {"weights": [1, 2]}}},
     "gives weights for 2 LLMs; the config lists 3"),
    ({"trace": {"source": {"path": "trace.csv"}, "popularity": {"alpha": [0.9, -1]}}}, "alpha must be finite and >= 0"),
    ({"trace": {"source": {"path": "trace.csv"}, "popularity": {"alpha": [0.9, 0.9]}}}, "alpha values must be unique"),
    ({"trace": {"source": {"path": "trace.csv"}, "condense": 2, "target_rate": 3}}, "give condense or target_rate"),
    ({"trace": {"source": {"path": "trace.csv"}, "bogus": 1}}, "workload.trace.bogus: unknown key"),
    ({"trace": {"source": {"path": "missing.csv"}}}, "workload.trace.source.path: file not found: missing.csv"),
])
def test_bad_trace_configs_give_one_line_errors(tmp_path, change, expected):
    _write_trace(tmp_path)
    cfg = _config()
    cfg["workload"].update(change)
    with pytest.raises(ConfigError) as e:
        load_config(_save(tmp_path, cfg))
    msg = str(e.value)
    assert expected in msg and "\n" not in msg, msg


def test_group_rate_is_refused_with_a_trace(tmp_path):
    _write_trace(tmp_path)
    cfg = _config()
    cfg["llms"] = [{"model": "llama-7b", "count": 2}, {"model": "llama-7b", "rate": 2.0}]
    with pytest.raises(ConfigError, match=r"drop 'rate' from llms group\(s\) \[1\]"):
        load_config(_save(tmp_path, cfg))


def test_trace_path_is_looked_up_beside_the_config(tmp_path, monkeypatch):
    _write_trace(tmp_path)
    monkeypatch.chdir(ROOT)  # trace.csv is not in the cwd, only beside the config
    cfg = load_config(_save(tmp_path, _config()))
    assert Path(cfg.workload.trace.source.path) == tmp_path / "trace.csv"
    assert cfg.workload.duration_s is None and [c.label for c in cfg.cells()] == ["alpha=0.9", "alpha=2.1"]


# ------------------------------------------------------------------------------------------
# cells, rates, means, determinism


def test_cells_rates_and_means_come_from_the_synthesized_trace(tmp_path, monkeypatch):
    trace = _write_trace(tmp_path)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(_save(tmp_path, _config()))
    src = pd.read_csv(trace)
    cells = cfg.cells()
    assert [c.params for c in cells] == [{"alpha": 0.9}, {"alpha": 2.1}]
    for k, cell in enumerate(cells):
        wl = cell_workload(cfg, cell, k)
        assert len(wl) == len(src) and set(wl.llm) <= set(cfg.llm_names())
        span = wl.arrival_s.max()
        counts = wl.llm.value_counts()
        assert cell.rates == pytest.approx([max(counts.get(n, 0) / span, 1e-3) for n in cfg.llm_names()])
        assert counts.idxmax() == "llm-0"
    # the most skewed split gives llm-0 the larger share
    assert cells[1].rates[0] > cells[0].rates[0]
    assert workload_means(cfg) == pytest.approx((src.num_prefill_tokens.mean(), src.num_decode_tokens.mean()))
    # duration_s keeps the arrivals before it
    short = ExperimentConfig.model_validate({**cfg.model_dump(), "workload": {
        **cfg.model_dump()["workload"], "duration_s": 10.0}})
    wl = trace_workload(short, 0)
    assert 0 < len(wl) < len(src) and wl.arrival_s.max() < 10.0
    assert list(wl.request_id) == list(range(len(wl)))
    assert sum(short.cells()[0].rates) == pytest.approx(len(wl) / 10.0)


def test_same_seed_gives_identical_workload_and_matches_trace_synth(tmp_path, monkeypatch):
    _write_trace(tmp_path)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(_save(tmp_path, _config()))
    a = trace_workload(cfg, 1)
    from muxsim.config.traces import _synthesized

    _synthesized.cache_clear()
    b = trace_workload(load_config(_save(tmp_path, _config())), 1)
    pd.testing.assert_frame_equal(a, b)
    # the config's trace reads like a `muxsim trace synth` spec: same keys, same workload
    spec = SynthSpec.model_validate({"source": {"path": "trace.csv"}, "llms": 3,
                                     "popularity": {"alpha": 2.1}, "seed": 0})
    pd.testing.assert_frame_equal(a, synthesize(spec))
    # the experiment seed (--seed) drives the split unless trace.seed is given
    other = trace_workload(load_config(_save(tmp_path, _config()), {"seed": 5}), 1)
    assert not a.llm.equals(other.llm)
    pinned = _config()
    pinned["workload"]["trace"]["seed"] = 0
    fixed = trace_workload(load_config(_save(tmp_path, pinned), {"seed": 5}), 1)
    pd.testing.assert_frame_equal(a, fixed)


# ------------------------------------------------------------------------------------------
# command line


def test_run_with_an_inline_trace_end_to_end(tmp_path, monkeypatch):
    _write_trace(tmp_path)
    monkeypatch.chdir(ROOT)  # the trace is found beside the config
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(_save(tmp_path, _config())), "--out", str(out), "--jobs", "1"])
    assert res.exit_code == 0, res.output + res.stderr
    req = pd.read_parquet(out / "requests.parquet")
    assert set(req.strategy) == {"muxserve", "spatial", "temporal"}
    assert set(req.alpha) == {0.9, 2.1} and set(req.cell) == {"alpha=0.9", "alpha=2.1"}
    assert (req.groupby(["cell", "strategy"]).size() == 90).all()
    assert (req.finished | (req.reason != "")).all()
    for _, cell in req.groupby("cell"):  # every strategy of a cell sees the same requests
        ids = [g.sort_values("request_id")[["llm", "arrival_s", "prompt_tokens"]].to_numpy().tolist()
               for _, g in cell.groupby("strategy")]
        assert ids[0] == ids[1] == ids[2]
    saved = pd.read_parquet(out / "workload_1.parquet")
    assert len(saved) == 90
    resolved = yaml.safe_load((out / "config.resolved.yaml").read_text())
    assert resolved["workload"]["trace"]["popularity"]["alpha"] == [0.9, 2.1]


def test_run_with_a_missing_trace_exits_2_with_one_line(tmp_path):
    cfg = _config({"source": {"path": str(tmp_path / "nowhere" / "trace.csv")}})
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(_save(tmp_path, cfg)), "--out", str(out), "--jobs", "1"])
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.startswith("error:") and "workload.trace.source.path: file not found" in " ".join(err.split())
    assert len(err.splitlines()) == 1 and "Traceback" not in res.output + res.stderr
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


# ------------------------------------------------------------------------------------------
# the shipped experiment


def test_azure_conv_config_is_valid():
    raw = yaml.safe_load((ROOT / "experiments" / "azure_conv.yaml").read_text())
    cfg = ExperimentConfig.model_validate(raw)  # the schema, without reading the trace
    assert len(cfg.llm_names()) == 19 and cfg.cluster.n_gpus == 32
    assert cfg.workload.trace.alphas() == [0.9, 1.3, 2.1]
    assert cfg.slo.goodput_scale == 8


@pytest.mark.skipif(not AZURE.is_file(), reason=f"needs {AZURE} (../shared/data is not in the repo)")
def test_azure_conv_workload_splits_the_whole_trace(monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_config(ROOT / "experiments" / "azure_conv.yaml")
    cells = cfg.cells()
    assert [c.label for c in cells] == ["alpha=0.9", "alpha=1.3", "alpha=2.1"]
    shares = []
    for k, cell in enumerate(cells):
        wl = cell_workload(cfg, cell, k)
        assert len(wl) == 19_366 and wl.llm.nunique() == 19
        counts = wl.llm.value_counts()
        assert counts.idxmax() == "llm-0"
        shares.append(counts["llm-0"] / len(wl))
        assert sum(cell.rates) == pytest.approx(cfg.workload.trace.target_rate, rel=1e-6)
    assert shares == sorted(shares)  # more skew, larger share for the most popular LLM
    mp, mo = workload_means(cfg)
    assert mp == pytest.approx(1154.7, abs=0.1) and mo == pytest.approx(211.1, abs=0.1)
