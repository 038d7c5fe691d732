"""`muxsim trace convert | inspect | synth` end to end, including bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from muxsim.cli import app
from muxsim.cli.trace import rate_over_time, trace_stats
from muxsim.workload import load_workload, save_workload
from muxsim.workload.synth import burstiness_cv, mean_rate, split_among_llms

runner = CliRunner()

pytest.importorskip("muxsim.workload.formats")


def _azure_csv(path: Path, n: int = 3000, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.gamma(0.25, 0.4, n))
    pd.DataFrame({"arrived_at": t, "num_prefill_tokens": rng.integers(1, 900, n),
                  "num_decode_tokens": rng.integers(1, 300, n)}).to_csv(path, index=False)
    return path


def _lengths_csv(path: Path, n: int = 500) -> Path:
    rng = np.random.default_rng(1)
    pd.DataFrame({"num_prefill_tokens": rng.integers(1, 900, n),
                  "num_decode_tokens": rng.integers(1, 300, n)}).to_csv(path, index=False)
    return path


def _workload(path: Path, llms: int = 3, n: int = 2000) -> Path:
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"request_id": np.arange(n), "llm": "x",
                       "arrival_s": np.sort(rng.uniform(0, 100, n)),
                       "prompt_tokens": rng.integers(1, 900, n), "output_tokens": rng.integers(1, 300, n)})
    save_workload(split_among_llms(df, [f"llm-{i}" for i in range(llms)], [3, 2, 1][:llms], 0), path)
    return path


def _assert_error(res, expected: str) -> None:
    assert res.exit_code == 2, res.output
    text = " ".join(res.stderr.split())  # rich wraps long lines
    assert text.startswith("error:"), text
    assert expected in text, text
    assert "Traceback" not in res.output + res.stderr
    assert len(res.stderr.strip().splitlines()) <= 2  # one line (wrapped at most once)


def _no_leftovers(folder: Path, allowed: set[str]) -> None:
    # an output folder also lists what muxsim wrote in it (muxsim.files.MARKER)
    assert {p.name for p in folder.iterdir()} - {".muxsim-output.json"} == allowed


# ------------------------------------------------------------------------------ convert


def test_convert_writes_the_workload(tmp_path):
    src = _azure_csv(tmp_path / "azure.csv")
    out = tmp_path / "new" / "azure.parquet"  # missing folders are created
    res = runner.invoke(app, ["trace", "convert", str(src), "--out", str(out), "--llm", "gpt"])
    assert res.exit_code == 0, res.output
    df = load_workload(out)
    assert len(df) == 3000 and set(df.llm) == {"gpt"} and df.arrival_s.iloc[0] == 0.0
    raw = pd.read_csv(src)
    np.testing.assert_allclose(df.arrival_s, raw.arrived_at - raw.arrived_at.iloc[0])
    assert "3,000 requests written" in res.output
    _no_leftovers(out.parent, {"azure.parquet"})


def test_convert_length_only_needs_a_rate(tmp_path):
    src = _lengths_csv(tmp_path / "lengths.csv")
    out = tmp_path / "sub" / "l.parquet"
    res = runner.invoke(app, ["trace", "convert", str(src), "--out", str(out)])
    _assert_error(res, "is a length-only trace")
    assert "--rate" in res.stderr
    assert not (tmp_path / "sub").exists()

    args = ["trace", "convert", str(src), "--out", str(out), "--rate", "5", "--seed", "3",
            "--arrival", "gamma", "--cv", "2"]
    assert runner.invoke(app, args).exit_code == 0
    a = load_workload(out)
    assert len(a) == 500 and mean_rate(a.arrival_s) == pytest.approx(5.0, rel=0.3)
    assert burstiness_cv(a.arrival_s) > 1.4
    assert runner.invoke(app, args).exit_code == 0  # same seed, same arrivals
    pd.testing.assert_frame_equal(a, load_workload(out))


def test_convert_refuses_a_rate_for_a_timed_trace(tmp_path):
    src = _azure_csv(tmp_path / "azure.csv", n=50)
    out = tmp_path / "a.parquet"
    _assert_error(runner.invoke(app, ["trace", "convert", str(src), "--out", str(out), "--rate", "3"]),
                  "apply only to length-only traces")
    assert not out.exists()


BAD_CONVERT = {
    "missing file": (None, [], "trace file not found"),
    "unknown format": ("arrived_at,num_prefill_tokens,num_decode_tokens\n0,1,1\n", ["--format", "csv"],
                       "unknown trace format 'csv'; allowed: parquet, azure, mooncake, lengths"),
    "malformed row": ("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,10,5\n1.0,abc,5\n", [],
                      "line 3: column 'num_prefill_tokens' is not an integer ('abc')"),
    "undetectable": ("x,y\n1,2\n", [], "pass --format, one of: azure"),
    "empty": ("", [], "bad.csv"),
}


@pytest.mark.parametrize("case", list(BAD_CONVERT))
def test_convert_bad_input_is_one_line_exit_2_and_no_output(tmp_path, case):
    content, extra, expected = BAD_CONVERT[case]
    src = tmp_path / ("missing.csv" if content is None else "bad.csv")
    if content is not None:
        src.write_text(content)
    out = tmp_path / "out" / "w.parquet"
    _assert_error(runner.invoke(app, ["trace", "convert", str(src), "--out", str(out), *extra]), expected)
    _no_leftovers(tmp_path, set() if content is None else {"bad.csv"})


def test_convert_out_is_a_folder(tmp_path):
    src = _azure_csv(tmp_path / "azure.csv", n=20)
    _assert_error(runner.invoke(app, ["trace", "convert", str(src), "--out", str(tmp_path)]), "is a folder")


# ------------------------------------------------------------------------------ inspect


def test_inspect_prints_and_writes_stats(tmp_path):
    wl = _workload(tmp_path / "w.parquet")
    out = tmp_path / "inspect"
    res = runner.invoke(app, ["trace", "inspect", str(wl), "--bin-s", "10", "--out", str(out)])
    assert res.exit_code == 0, res.output
    for word in ("llm-0", "llm-2", "burstiness CV", "prompt p99", "rate over time"):
        assert word in res.output, word
    _no_leftovers(out, {"stats.csv", "rate_over_time.csv", "rate_over_time.png"})
    stats = pd.read_csv(out / "stats.csv")
    assert stats.llm.tolist() == ["llm-0", "llm-1", "llm-2", "all"]
    assert stats.requests.iloc[:3].sum() == stats.requests.iloc[3] == 2000
    assert stats.rate_rps.iloc[:3].sum() == pytest.approx(stats.rate_rps.iloc[3], rel=1e-4)
    for col in ("cv", "peak_rps", "prompt_mean", "prompt_p50", "prompt_p90", "prompt_p99", "prompt_max",
                "output_mean", "output_p50", "output_p90", "output_p99", "output_max"):
        assert col in stats.columns and stats[col].notna().all(), col
    rates = pd.read_csv(out / "rate_over_time.csv")
    assert rates.bin_start_s.nunique() == 10
    assert rates[rates.llm == "all"].requests.sum() == 2000
    assert (out / "rate_over_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_csv_trace_and_many_bins(tmp_path):
    src = _azure_csv(tmp_path / "azure.csv", n=500)
    res = runner.invoke(app, ["trace", "inspect", str(src), "--bin-s", "1"])
    assert res.exit_code == 0, res.output
    assert "bins of 1 s" in res.output and "--out DIR" in res.output
    _no_leftovers(tmp_path, {"azure.csv"})


def test_inspect_length_only_trace(tmp_path):
    src = _lengths_csv(tmp_path / "lengths.csv")
    out = tmp_path / "o"
    res = runner.invoke(app, ["trace", "inspect", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "length-only" in res.output
    _no_leftovers(out, {"stats.csv"})
    assert pd.read_csv(out / "stats.csv").requests.tolist() == [500, 500]


@pytest.mark.parametrize("args,expected", [(["--bin-s", "0"], "--bin-s must be a finite time > 0"),
                                           (["--bin-s", "0.0001"], "bins over"),
                                           (["--format", "weird"], "unknown trace format 'weird'")])
def test_inspect_bad_input(tmp_path, args, expected):
    wl = _workload(tmp_path / "w.parquet", n=200)
    out = tmp_path / "o"
    _assert_error(runner.invoke(app, ["trace", "inspect", str(wl), "--out", str(out), *args]), expected)
    assert not out.exists()


def test_inspect_out_that_is_a_file(tmp_path):
    wl = _workload(tmp_path / "w.parquet", n=100)
    _assert_error(runner.invoke(app, ["trace", "inspect", str(wl), "--out", str(wl)]), "is a file; give a folder")


def test_stats_functions():
    df = pd.DataFrame({"llm": ["b", "a", "b", "a10", "a2"], "arrival_s": [0.0, 1.0, 2.5, 3.0, 4.0],
                       "prompt_tokens": [1, 2, 3, 4, 5], "output_tokens": [5, 4, 3, 2, 1]})
    s = trace_stats(df, bin_s=2.0)
    assert s.llm.tolist() == ["a", "a2", "a10", "b", "all"]
    assert s.set_index("llm").loc["b", "rate_rps"] == pytest.approx(2 / 4.0)
    assert s.set_index("llm").loc["all", "peak_rps"] == pytest.approx(1.0)
    r = rate_over_time(df, 2.0)
    assert r.bin_start_s.unique().tolist() == [0.0, 2.0, 4.0]
    assert r[r.llm == "all"].requests.tolist() == [2, 2, 1]
    assert r[r.llm == "b"].rate_rps.tolist() == [0.5, 0.5, 0.0]
    with pytest.raises(ValueError):
        rate_over_time(df, -1.0)


# ------------------------------------------------------------------------------ synth


def _spec(tmp_path: Path, **kw) -> Path:
    _azure_csv(tmp_path / "azure.csv")
    spec = {"source": {"path": "azure.csv"}, "window": {"start_s": 10}, "target_rate": 20,
            "llms": 4, "popularity": {"alpha": 1.3}, "seed": 2, **kw}
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def test_synth_writes_a_multi_llm_workload(tmp_path):
    spec = _spec(tmp_path)
    out = tmp_path / "out" / "synth.parquet"
    res = runner.invoke(app, ["trace", "synth", str(spec), "--out", str(out)])
    assert res.exit_code == 0, res.output
    df = load_workload(out)
    assert set(df.llm) == {f"llm-{i}" for i in range(4)}
    assert mean_rate(df.arrival_s) == pytest.approx(20.0)
    assert (df.llm == "llm-0").mean() > (df.llm == "llm-3").mean()
    assert "llm-3" in res.output and "written to" in res.output
    res = runner.invoke(app, ["trace", "synth", str(spec), "--out", str(tmp_path / "again.parquet")])
    assert res.exit_code == 0
    pd.testing.assert_frame_equal(df, load_workload(tmp_path / "again.parquet"))


@pytest.mark.parametrize("change,expected", [
    ({"popularity": {"alpha": -1}}, "spec.yaml: popularity.alpha"),
    ({"condense": 2}, "target_rate: give condense or target_rate, not both"),
    ({"llm": 3}, "llm: unknown key"),
    ({"window": {"start_s": 1e9}}, "window: [1e+09, inf) s keeps no requests"),
    ({"source": {"path": "nope.csv"}}, "source.path: trace file not found"),
    ({"source": {"path": "azure.csv", "format": "mooncake"}}, "azure.csv"),  # malformed for the format
    # a drift window beyond the rescaled trace's span: refused, not silently ignored
    ({"popularity": {"drift": [{"until_s": 1e6, "alpha": 0.5}, {"alpha": 2.0}]}},
     "popularity.drift.1: starts at 1e+06 s (drift.0.until_s), after the workload's last arrival"),
])
def test_synth_bad_spec_is_one_line_exit_2_and_no_output(tmp_path, change, expected):
    spec = _spec(tmp_path, **change)
    out = tmp_path / "out" / "s.parquet"
    _assert_error(runner.invoke(app, ["trace", "synth", str(spec), "--out", str(out)]), expected)
    _no_leftovers(tmp_path, {"azure.csv", "spec.yaml"})


def test_synth_missing_spec(tmp_path):
    _assert_error(runner.invoke(app, ["trace", "synth", str(tmp_path / "x.yaml"), "--out", str(tmp_path / "o.parquet")]),
                  "synth spec not found")
