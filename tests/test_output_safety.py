"""Nothing of the user's is ever lost (issue 12): muxsim writes an output folder only where it
may (new, empty, or its own earlier output), checks the path before any work, keeps files it
did not write when it replaces its own output, never replaces a file of another kind, and
cleans up after killed runs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from _badinput import check_bad_input, invoke, snapshot  # noqa: E402

from muxsim.files import MARKER, remove_stale_staging  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _config(folder: Path, **top) -> Path:
    cfg = yaml.safe_load((ROOT / "experiments" / "zipf_alpha.yaml").read_text())
    cfg["workload"]["duration_s"] = 3
    cfg["workload"]["popularity"] = {"alpha": [2.1], "max_rate": 2}
    cfg["strategies"] = ["muxserve"]
    cfg.update(top)
    path = folder / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A working folder with a config, a user's folder ``victim/`` with a file, and a user's
    file ``notes.txt``; the current folder is ``work/run`` (results go to ``work/run/results``)."""
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "precious.txt").write_text("mine")
    (tmp_path / "notes.txt").write_text("mine too")
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.chdir(run)
    return tmp_path


def _run(args, cwd):
    res, _ = invoke(args, cwd)
    assert res.exit_code == 0, (res.output, res.stderr)
    return res


@pytest.mark.parametrize("out,expected", [
    ("", "is the current folder or a folder above it"),  # typer reads an empty path as "."
    (".", "is the current folder or a folder above it"),
    ("sub/..", "is the current folder or a folder above it"),
    ("..", "is the current folder or a folder above it"),
    ("../victim", "is a folder muxsim did not write (it holds 'precious.txt')"),
    ("../notes.txt", "is a file; give a folder"),
    ("../notes.txt/sub", "is a file, not a folder"),
    ("x" * 300, "longer than 255 bytes"),
])
def test_run_refuses_an_unsafe_out_before_any_work(work, out, expected):
    cfg = _config(work / "run")
    check_bad_input(["run", cfg, "--out", out], expected, work, cwd=work / "run")
    assert (work / "victim" / "precious.txt").read_text() == "mine"


@pytest.mark.parametrize("command", [
    lambda cfg, out: ["workload", cfg, "--out", out],
    lambda cfg, out: ["validate", ROOT / "experiments" / "validate_cpu.yaml", "--out", out],
])
def test_other_folder_writers_refuse_a_users_folder(work, command):
    cfg = _config(work / "run")
    check_bad_input(command(cfg, work / "victim"), "is a folder muxsim did not write", work, cwd=work / "run")


def test_replacing_an_earlier_output_keeps_the_users_files(work):
    cfg = _config(work / "run")
    out = work / "out"
    _run(["run", cfg, "--out", out], work / "run")
    owned = json.loads((out / MARKER).read_text())["files"]
    assert "summary.csv" in owned and "requests.parquet" in owned
    (out / "my_analysis.ipynb").write_text("user work")
    (out / "summary.csv").write_text("stale")  # one of muxsim's own files: replaced
    _run(["run", cfg, "--out", out, "--seed", "5"], work / "run")
    assert (out / "my_analysis.ipynb").read_text() == "user work"
    assert (out / "summary.csv").read_text() != "stale"
    assert "my_analysis.ipynb" not in json.loads((out / MARKER).read_text())["files"]
    assert not [p for p in work.iterdir() if ".staging-" in p.name or ".old-" in p.name]


def test_an_output_of_an_earlier_muxsim_without_the_marker_is_recognised(work):
    cfg = _config(work / "run")
    out = work / "out"
    _run(["run", cfg, "--out", out], work / "run")
    (out / MARKER).unlink()  # as muxsim wrote folders before the marker existed
    (out / "keep.txt").write_text("user")
    _run(["run", cfg, "--out", out], work / "run")
    assert (out / "keep.txt").read_text() == "user" and (out / MARKER).is_file()


def test_default_out_under_results(work):
    cfg = _config(work / "run", name="small")
    _run(["run", cfg], work / "run")
    assert (work / "run" / "results" / "small" / "summary.csv").is_file()


def test_a_killed_runs_staging_is_removed_and_a_moved_aside_output_is_restored(work):
    out = work / "out"
    dead = 2**22 + 12345  # above the default pid_max: no such process
    assert not Path(f"/proc/{dead}").exists()
    stale = work / f".out.staging-{dead}"
    stale.mkdir()
    (stale / "summary.csv").write_text("half-written")
    aside = work / f".out.old-{dead}"
    aside.mkdir()
    (aside / "summary.csv").write_text("an earlier complete output")
    (aside / MARKER).write_text(json.dumps({"writer": "muxsim", "files": ["summary.csv"]}))
    done = remove_stale_staging(out)
    assert set(done) == {stale, aside}
    assert not stale.exists() and not aside.exists()
    assert (out / "summary.csv").read_text() == "an earlier complete output"
    # the next run replaces it as its own output
    cfg = _config(work / "run")
    _run(["run", cfg, "--out", out], work / "run")
    assert (out / "summary.csv").read_text() != "an earlier complete output"


def _workload(path: Path, n: int = 2) -> Path:
    from muxsim.workload import save_workload

    df = pd.DataFrame({"request_id": range(n), "llm": ["llm-0"] * n, "arrival_s": [float(k) for k in range(n)],
                       "prompt_tokens": [10 + k for k in range(n)], "output_tokens": [5] * n})
    return save_workload(df, path)


def test_single_file_writers_replace_only_their_own_kind(work):
    src = _workload(work / "w.parquet")
    check_bad_input(["trace", "convert", src, "--out", work / "notes.txt"], "exists and is not a workload Parquet",
                    work, cwd=work / "run")
    check_bad_input(["calibrate", "fit", src, "--out", work / "notes.txt", "--gpu", "a100-80gb"],
                    "exists and is not a calibration JSON", work, cwd=work / "run")
    check_bad_input(["calibrate", "overhead", src, "--out", work / "notes.txt"],
                    "exists and is not a job-overhead JSON", work, cwd=work / "run")
    check_bad_input(["trace", "convert", src, "--out", work / "victim"], "is a folder; give a file name",
                    work, cwd=work / "run")
    # a workload file is replaced by a new one
    target = _workload(work / "old.parquet", n=5)
    _run(["trace", "convert", src, "--out", target], work / "run")
    assert len(pd.read_parquet(target)) == 2
    assert (work / "notes.txt").read_text() == "mine too"


def test_trace_inspect_writes_only_an_output_folder(work):
    src = _workload(work / "w.parquet")
    check_bad_input(["trace", "inspect", src, "--out", work / "victim"], "is a folder muxsim did not write",
                    work, cwd=work / "run")
    _run(["trace", "inspect", src, "--out", work / "stats"], work / "run")
    assert (work / "stats" / "stats.csv").is_file()


def test_nothing_outside_the_outputs_changes_on_success(work):
    before = {k: v for k, v in snapshot(work).items() if not k.startswith("run/")}
    cfg = _config(work / "run")
    _run(["run", cfg, "--out", work / "out"], work / "run")
    after = {k: v for k, v in snapshot(work).items() if not k.startswith(("run/", "out/"))}
    assert after == before
    assert os.listdir(work / "out")


def test_size_guard_refuses_before_drawing(work):
    cfg = _config(work / "run")
    raw = yaml.safe_load(cfg.read_text())
    raw["workload"]["duration_s"] = 1e6
    raw["workload"]["popularity"] = {"alpha": [0.9], "max_rate": 1e4}
    raw["workload"].pop("requests", None)
    cfg.write_text(yaml.safe_dump(raw))
    check_bad_input(["run", cfg, "--out", work / "out"], "above limits.max_requests", work, cwd=work / "run")
    raw["limits"] = {"max_requests": 10**12, "max_events": 10**15, "max_memory_gib": 2}
    cfg.write_text(yaml.safe_dump(raw))
    check_bad_input(["run", cfg, "--out", work / "out"], "GiB of memory", work, cwd=work / "run")


def test_a_workload_with_no_request_is_refused_in_one_line(work):
    cfg = _config(work / "run")
    raw = yaml.safe_load(cfg.read_text())
    raw["workload"]["duration_s"] = 1e-3
    cfg.write_text(yaml.safe_dump(raw))
    check_bad_input(["run", cfg, "--out", work / "out"], "its workload has no request", work, cwd=work / "run")


def test_validate_without_live_section_writes_nothing(work):
    cfg = _config(work / "run")
    before = snapshot(work)
    res, _ = invoke(["validate", cfg], work / "run")
    assert res.exit_code == 2 and "no 'live' section" in res.stderr
    assert snapshot(work) == before and not (work / "run" / "results").exists()


def test_a_failed_write_leaves_no_folder_it_created(work):
    from muxsim.files import staged_folder

    out = work / "a" / "b" / "out"
    with pytest.raises(RuntimeError), staged_folder(out) as staging:
        (staging / "summary.csv").write_text("half")
        raise RuntimeError("the writer failed")
    assert not (work / "a").exists()
    with staged_folder(out) as staging:
        (staging / "summary.csv").write_text("whole")
    assert (out / "summary.csv").read_text() == "whole"
    assert json.loads((out / MARKER).read_text())["files"] == ["summary.csv"]
