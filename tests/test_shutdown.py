"""Clean shutdown (issue 12, item 4): worker processes die with their parent, however it ends,
and an interrupted ``muxsim run`` leaves nothing that looks complete.

Real processes throughout: a ``muxsim run`` subprocess big enough to still be simulating when it
is killed (``kill -9``), interrupted (SIGINT) or terminated (SIGTERM), and small parent scripts
for the pool and the die-with-parent helper. Process checks read ``/proc`` (Linux) and poll
against deadlines, so a loaded machine only makes them slower, not flaky.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

#: How long a killed parent's workers may outlive it (s): prctl kills them at once, the polling
#: fallback within ~1 s; the rest is slack for a loaded machine.
GONE_S = 10.0


# --------------------------------------------------------------------------------------------
# Process helpers (Linux /proc)
# --------------------------------------------------------------------------------------------

def _stat(pid: int) -> tuple[str, int, float] | None:
    """(state, start time in clock ticks, CPU seconds used) of ``pid``, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = text[text.rindex(")") + 2:].split()
    tick = os.sysconf("SC_CLK_TCK")
    return fields[0], int(fields[19]), (int(fields[11]) + int(fields[12])) / tick


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    kids = []
    for f in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids += [int(k) for k in f.read_text().split()]
        except OSError:
            pass
    return sorted(set(kids))


def _alive(procs: dict[int, int]) -> list[int]:
    """The pids of ``procs`` (pid -> start time) still running: not gone, not a zombie, and not
    a later process that reuses the pid."""
    out = []
    for pid, start in procs.items():
        st = _stat(pid)
        if st is not None and st[0] != "Z" and st[1] == start:
            out.append(pid)
    return out


def _wait_for(what: str, cond, timeout_s: float, poll_s: float = 0.05):
    """Poll ``cond()`` until it returns something truthy (returned) or ``timeout_s`` passes
    (AssertionError naming ``what``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


def _busy_workers(pid: int, n: int, cpu_s: float = 0.3) -> dict[int, int] | None:
    """pid -> start time of ``pid``'s children once it has at least ``n`` and each has used
    ``cpu_s`` of CPU (they are running tasks), else None."""
    kids = {}
    for k in _children(pid):
        st = _stat(k)
        if st is not None and st[0] != "Z":
            if st[2] < cpu_s:
                return None
            kids[k] = st[1]
    return kids if len(kids) >= n else None


def _gone_after(workers: dict[int, int]) -> float:
    """Seconds until none of ``workers`` runs (AssertionError after :data:`GONE_S`, once the
    orphans are killed: a failing test must not leave them behind)."""
    t0 = time.monotonic()
    try:
        _wait_for(f"workers {sorted(workers)} to die", lambda: not _alive(workers), GONE_S)
    except AssertionError:
        for pid in _alive(workers):
            os.kill(pid, signal.SIGKILL)
        raise
    return time.monotonic() - t0


# --------------------------------------------------------------------------------------------
# muxsim run, killed
# --------------------------------------------------------------------------------------------

def _config(tmp_path: Path, name: str, big: bool) -> Path:
    """A reduced experiments/zipf_alpha.yaml: ``big`` runs ~25 s with --jobs 2 on 2 cores (far
    longer than any test waits), else ~1 s."""
    cfg = yaml.safe_load((ROOT / "experiments" / "zipf_alpha.yaml").read_text())
    cfg["strategies"] = ["muxserve", "spatial", "temporal"]
    if big:
        cfg["workload"]["duration_s"] = 200
        cfg["workload"]["popularity"] = {"alpha": [0.7, 0.9, 1.3, 1.7, 2.1], "max_rate": 40,
                                         "rate_scale": [1.0, 1.25]}
    else:
        cfg["workload"]["duration_s"] = 5
        cfg["workload"]["popularity"] = {"alpha": [2.1], "max_rate": 2}
        cfg["strategies"] = ["muxserve"]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _start_run(tmp_path: Path) -> tuple[subprocess.Popen, dict[int, int], Path]:
    """Start a big ``muxsim run --jobs 2`` to ``tmp_path/out`` and wait until its two workers
    are busy; returns (the process, its workers, the output folder)."""
    out = tmp_path / "out"
    cfg = _config(tmp_path, "big", big=True)
    # output to files, not pipes: an unread pipe that fills up would block the run
    proc = subprocess.Popen([sys.executable, "-m", "muxsim", "run", str(cfg), "--out", str(out),
                             "--jobs", "2"], cwd=tmp_path, stdout=(tmp_path / "stdout.txt").open("w"),
                            stderr=(tmp_path / "stderr.txt").open("w"))
    try:
        workers = _wait_for("2 busy workers", lambda: proc.poll() is None and _busy_workers(proc.pid, 2)
                            or (proc.poll() is not None and "exited"), 40.0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if workers == "exited":
        raise AssertionError(f"the run ended (exit {proc.returncode}) before its workers were busy:\n"
                             + (tmp_path / "stderr.txt").read_text()[-2000:])
    return proc, workers, out


def _staging(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob(".out.*"))


def test_kill_9_of_a_run_leaves_no_workers_and_no_output(tmp_path):
    proc, workers, out = _start_run(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    gone = _gone_after(workers)
    print(f"kill -9: {len(workers)} workers gone {gone:.2f} s after the parent died")
    assert not out.exists(), "a killed run left a complete-looking output folder"
    # A run killed while writing leaves its staging folder; this one was killed while
    # simulating (outputs are staged only at the end), so make the staging folder such a kill
    # leaves, with a partial file in it, to check that the next run removes it.
    stale = tmp_path / f".out.staging-{proc.pid}"
    assert [p for p in _staging(tmp_path) if p != stale] == []
    stale.mkdir(exist_ok=True)
    (stale / "summary.csv").write_text("partial")
    res = subprocess.run([sys.executable, "-m", "muxsim", "run", str(_config(tmp_path, "tiny", big=False)),
                          "--out", str(out), "--jobs", "1"], check=False, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "run.json").is_file()
    assert _staging(tmp_path) == [], "the next run did not remove the dead run's staging folder"


@pytest.mark.parametrize("sig, code, says", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated")],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_stops_a_run_promptly_and_cleanly(tmp_path, sig, code, says):
    proc, workers, out = _start_run(tmp_path)
    t0 = time.monotonic()
    os.kill(proc.pid, sig)
    try:
        rc = proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the run did not stop within 15 s of {sig.name}") from None
    stopped = time.monotonic() - t0
    gone = _gone_after(workers)
    print(f"{sig.name}: run exited {stopped:.2f} s after the signal (exit {rc}), "
          f"workers gone {gone:.2f} s later")
    err = (tmp_path / "stderr.txt").read_text()
    assert "Traceback" not in err, err[-3000:]
    assert rc == code, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], err[-2000:]
    assert not out.exists()
    assert _staging(tmp_path) == []
    assert stopped < 10.0


# --------------------------------------------------------------------------------------------
# The pool and the helper
# --------------------------------------------------------------------------------------------

def _parent_script(tmp_path: Path, body: str) -> tuple[subprocess.Popen, Path]:
    """Run ``body`` (Python; ``PIDS`` is the path it writes its workers' pids to, then a
    newline) as a parent process in the repository's environment; returns it and ``PIDS``."""
    script = tmp_path / "parent.py"
    pids = tmp_path / "pids.txt"
    script.write_text(f"PIDS = {str(pids)!r}\n" + textwrap.dedent(body))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, pids


def _kill_parent_and_wait(proc: subprocess.Popen, pids_file: Path) -> float:
    """Once ``proc`` has written the pids of its workers to ``pids_file`` (space-separated),
    kill it -9; returns how long they outlived it."""

    def listed():
        if proc.poll() is not None:
            return "exited"
        text = pids_file.read_text() if pids_file.exists() else ""
        if not text.endswith("\n"):  # not written completely yet
            return None
        pids = [int(pid) for pid in text.split()]
        assert pids, f"{pids_file.name} lists no workers"
        return {pid: st[1] for pid in pids if (st := _stat(pid)) is not None}

    try:
        workers = _wait_for(f"the worker pids in {pids_file.name}", listed, 30.0)
        assert workers != "exited", proc.communicate()[1][-2000:]
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    return _gone_after(workers)


def test_pool_worker_dies_when_its_parent_is_killed(tmp_path):
    proc, pids = _parent_script(tmp_path, """
        import os, time
        from muxsim.experiment.tasks import worker_pool

        with worker_pool(2) as ex:
            assert ex is not None, "needs 2 CPUs"
            futs = [ex.submit(time.sleep, 120) for _ in range(2)]
            while not all(f.running() for f in futs):
                time.sleep(0.05)
            with open(PIDS, "w") as f:
                f.write(" ".join(map(str, ex._processes)) + "\\n")  # pid -> process
            time.sleep(120)
    """)
    gone = _kill_parent_and_wait(proc, pids)
    print(f"pool: workers gone {gone:.2f} s after their parent was killed -9")
    assert gone < 3.0


def test_live_engine_worker_dies_when_its_parent_is_killed(tmp_path):
    # A ProcessEngine worker busy in a job (here: one that never reads its pipe again) would
    # only notice a dead parent when it next reads or writes; it must not wait that long.
    proc, pids = _parent_script(tmp_path, """
        import time
        from muxsim.catalog import get_model
        from muxsim.live.engine import Partition
        from muxsim.live.workers import ProcessEngine

        def busy_worker(conn):
            conn.send(("ready", {}))
            time.sleep(120)

        class Busy(ProcessEngine):
            def load(self, llm, model, partition, checkpoint=None, seed=0):
                self._spawn_worker(llm, model, partition, busy_worker, (), name="busy",
                                   daemon=True, how="")

        if __name__ == "__main__":
            eng = Busy(load_timeout_s=60)
            eng.load("a", get_model("llama-tiny-s"), Partition(device="cpu"))
            with open(PIDS, "w") as f:
                f.write(" ".join(map(str, eng.worker_pids())) + "\\n")
            time.sleep(120)
    """)
    gone = _kill_parent_and_wait(proc, pids)
    print(f"live engine: worker gone {gone:.2f} s after its parent was killed -9")
    assert gone < 3.0


def test_polling_fallback_ends_an_orphan(tmp_path):
    # the portable path, where PR_SET_PDEATHSIG is unavailable: the watcher thread's os._exit
    proc, pids = _parent_script(tmp_path, """
        import multiprocessing as mp, os, time
        from muxsim.procs import die_with_parent

        def child(parent, ready):
            assert die_with_parent(parent, poll_s=0.2, use_prctl=False) == "poll"
            ready.set()
            time.sleep(120)

        if __name__ == "__main__":
            ctx = mp.get_context("spawn")
            ready = ctx.Event()
            p = ctx.Process(target=child, args=(os.getpid(), ready))
            p.start()
            assert ready.wait(60)
            with open(PIDS, "w") as f:
                f.write(f"{p.pid}\\n")
            time.sleep(120)
    """)
    gone = _kill_parent_and_wait(proc, pids)
    print(f"poll fallback: child gone {gone:.2f} s after its parent was killed -9")
    assert gone < 3.0


def test_a_child_whose_parent_is_already_gone_exits_at_once():
    # the pid handed in is not our parent's: as if the parent died before prctl was armed
    code = "import os; from muxsim.procs import die_with_parent; die_with_parent(os.getpid()); print('still here')"
    res = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 1 and "still here" not in res.stdout, res.stderr


def test_an_exception_in_the_pool_block_stops_running_tasks_at_once():
    from muxsim.experiment.tasks import worker_pool

    # this process may have children of its own already (e.g. multiprocessing's resource tracker)
    before = set(_children(os.getpid()))
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt), worker_pool(2) as ex:
        assert ex is not None, "needs 2 CPUs"
        futs = [ex.submit(time.sleep, 120) for _ in range(6)]
        def new_children():
            kids = {k: st[1] for k in set(_children(os.getpid())) - before if (st := _stat(k))}
            return kids if len(kids) >= 2 else None

        workers = _wait_for("2 pool workers", new_children, 20.0)
        _wait_for("2 running tasks", lambda: sum(f.running() for f in futs) >= 2, 20.0)
        raise KeyboardInterrupt
    stopped = time.monotonic() - t0
    assert not _alive(workers)
    # the tasks that never reached a worker are cancelled; the others fail (broken pool)
    assert futs[-1].cancelled()
    _wait_for("every future to be done", lambda: all(f.done() for f in futs), 10.0)
    assert stopped < 25.0
