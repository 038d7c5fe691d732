"""``muxsim run --executor ray`` (issue 13, item 5): the same outputs as the process pool, byte
for byte; a failing task or a signal stops the Ray tasks and the local Ray instance; without ray
installed, or with a bad ``--executor``, one ``error:`` line and exit code 2.

The tests that start Ray skip when ray is not installed (``pip install 'muxsim[ray]'``); each
starts a local instance (a few seconds on 2 cores).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _badinput import check_bad_input, invoke, snapshot  # noqa: E402

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed (pip install 'muxsim[ray]')")


def _config(tmp_path: Path, duration_s: float = 60, name: str = "tiny") -> Path:
    """A small zipf_alpha-like experiment: 1 node x 8 A100s, 5 LLMs, 2 cells, strategies
    muxserve, spatial and muxserve+sim (a simulated search bounded by candidates, never by
    time, so it is deterministic); ~2 s with --jobs 2 at ``duration_s`` 60."""
    cfg = {
        "name": name, "seed": 0,
        "cluster": {"nodes": 1, "gpus_per_node": 8, "gpu": "a100-80gb"},
        "llms": [{"model": "llama-7b", "count": 4}, {"model": "llama-13b", "count": 1}],
        "workload": {"duration_s": duration_s, "arrival": "poisson", "lengths": {"kind": "sharegpt_v3"},
                     "popularity": {"alpha": [0.9, 2.1], "max_rate": 6}},
        "strategies": ["muxserve", "spatial", "muxserve+sim"],
        "placement": {"candidates": 4, "budget_s": 10_000, "starts": 2},
        "slo": {"scales": [1, 2, 5, 10], "goodput_scale": 5},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@needs_ray
def test_ray_outputs_are_byte_identical_to_the_process_pool(tmp_path):
    import ray

    cfg = _config(tmp_path)
    outs = {}
    for how, extra in (("process", []), ("ray", ["--executor", "ray"])):
        out = tmp_path / how
        res, seconds = invoke(["run", cfg, "--out", out, "--jobs", "2", *extra], cwd=tmp_path)
        assert res.exit_code == 0, res.output + res.stderr
        assert "Traceback" not in res.output + res.stderr
        print(f"{how}: {seconds:.1f} s")
        outs[how] = snapshot(out)
    assert "local Ray, 2 CPUs" in res.output
    assert not ray.is_initialized(), "the local Ray instance was not shut down after the run"
    # run.json holds no wall time (results.py drops it), so every file compares byte for byte
    assert sorted(outs["ray"]) == sorted(outs["process"])
    assert {"requests.parquet", "summary.csv", "run.json", "throughput.png"} <= set(outs["ray"])
    for name, data in outs["process"].items():
        assert outs["ray"][name] == data, name


@needs_ray
def test_a_failing_task_stops_the_ray_tasks_and_shuts_ray_down():
    import ray

    from muxsim.experiment.tasks import map_tasks, worker_pool

    t0 = time.monotonic()
    with pytest.raises(ValueError) as e:
        with worker_pool(2, executor="ray") as ex:
            t_started = time.monotonic()
            slow = ex.submit(time.sleep, 300)
            map_tasks(ex, int, ["1", "not a number"], lambda label: None, str)
    # the task's own exception, not Ray's wrapper (whose message holds the remote traceback)
    assert type(e.value) is ValueError and "invalid literal" in str(e.value)
    assert "\n" not in str(e.value)
    assert slow.cancelled()
    assert not ray.is_initialized()
    print(f"Ray start-up {t_started - t0:.1f} s, failing block {time.monotonic() - t_started:.1f} s")
    assert time.monotonic() - t_started < 60


def _descendants(pid: int) -> dict[int, int]:
    """pid -> start time (clock ticks) of every process below ``pid`` (Linux /proc)."""
    out, todo = {}, [pid]
    while todo:
        p = todo.pop()
        for f in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                kids = [int(k) for k in f.read_text().split()]
            except OSError:
                continue
            for k in kids:
                st = _stat(k)
                if st is not None and k not in out:
                    out[k] = st[1]
                    todo.append(k)
    return out


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of ``pid``; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(procs: dict[int, int]) -> list[int]:
    """Those of ``procs`` still running (not gone, not a zombie, not a reused pid)."""
    return [p for p, start in procs.items()
            if (st := _stat(p)) is not None and st[0] != "Z" and st[1] == start]


@needs_ray
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig, code, says", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated")],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_ray_run_and_its_local_instance(tmp_path, sig, code, says):
    cfg = _config(tmp_path, duration_s=1500, name="big")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "muxsim", "run", str(cfg), "--out", str(out), "--jobs", "2",
                             "--executor", "ray"], cwd=tmp_path, stdout=(tmp_path / "stdout.txt").open("w"),
                            stderr=(tmp_path / "stderr.txt").open("w"))
    ray_procs: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 90
        while not any(_cmdline(p).startswith("ray::_run_task") for p in ray_procs):
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-2000:]
            assert time.monotonic() < deadline, "no Ray task started within 90 s"
            time.sleep(0.05)
            ray_procs.update(_descendants(proc.pid))
        ray_procs.update(_descendants(proc.pid))
        t0 = time.monotonic()
        os.kill(proc.pid, sig)
        rc = proc.wait(30)
        stopped = time.monotonic() - t0
        deadline = time.monotonic() + 30
        while _alive(ray_procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = {p: _cmdline(p)[:60] for p in _alive(ray_procs)}
        print(f"{sig.name}: exit {rc} {stopped:.1f} s after the signal; {len(ray_procs)} Ray processes")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in _alive(ray_procs):  # a failing test leaves nothing behind
            os.kill(p, signal.SIGKILL)
    err = (tmp_path / "stderr.txt").read_text()
    assert "Traceback" not in err and "SIGTERM received" not in err, err[-3000:]
    assert rc == code, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], err[-2000:]
    assert not out.exists()
    assert not left, f"Ray processes outlived the run: {left}"


def test_executor_ray_without_ray_is_one_line_exit_2(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    check_bad_input(["run", _config(tmp_path), "--out", tmp_path / "out", "--executor", "ray"],
                    "error: --executor ray needs the ray extra: pip install 'muxsim[ray]'", tmp_path)


def test_a_bad_executor_is_a_usage_error_naming_the_choices(tmp_path):
    check_bad_input(["run", _config(tmp_path), "--out", tmp_path / "out", "--executor", "dask"],
                    "'dask' is not one of 'process', 'ray'", tmp_path)


def test_address_needs_the_ray_executor(tmp_path):
    check_bad_input(["run", _config(tmp_path), "--out", tmp_path / "out", "--address", "auto"],
                    "--address needs --executor ray", tmp_path)


@needs_ray
def test_an_unreachable_address_is_one_line_exit_2(tmp_path):
    check_bad_input(["run", _config(tmp_path), "--out", tmp_path / "out", "--executor", "ray",
                     "--address", "127.0.0.1:1"], "cannot reach Ray at 127.0.0.1:1", tmp_path)
