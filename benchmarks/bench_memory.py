"""Peak memory of a whole ``muxsim run``: the main process, the largest worker, and bytes per
simulated request, raw and above the main process's fixed baseline (issue 13, item 3).

    python benchmarks/bench_memory.py                      # experiments/zipf_alpha.yaml, --jobs 2
    python benchmarks/bench_memory.py --config tests-small.yaml --jobs 1 --json mem.json
    PYTHONPATH=/tmp/wt-before python benchmarks/bench_memory.py   # another checkout's muxsim

The run is ``python -m muxsim run CONFIG --jobs N --out TMP`` in a child process, started
through a small wrapper that, at the child's exit, records

- the main process's own peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``: exact, including the
  last moments, when the outputs are written), and
- the largest peak RSS among the processes it reaped (``RUSAGE_CHILDREN``: the pool workers;
  none with ``--jobs 1``, where everything runs in the main process).

Meanwhile the process tree's ``VmHWM`` (peak RSS, from ``/proc/<pid>/status``) is sampled every
``--interval`` s, as a cross-check and for workers the main process does not reap itself.
``/usr/bin/time -v`` would report ``max(main, reaped workers)`` (wait4's rusage), not the main
process alone, hence the wrapper.

The baseline is the peak RSS of a process that only imports what ``muxsim run`` imports before
any work (the CLI, the experiment layer, the report module with matplotlib and seaborn):
Python, numpy, pandas, pyarrow and matplotlib, ~200-300 MB that do not grow with the run.

Figures are in MB (10**6 bytes) and bytes per simulated request (the rows of the run's
``requests.parquet``). Linux only (``/proc``, ``ru_maxrss`` in KiB).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Runs ``python -m muxsim`` with the arguments after the first (an output JSON path) and writes
#: the peak RSS of this process and of its largest reaped child there at exit (KiB on Linux).
_WRAPPER = r"""
import atexit, json, resource, runpy, sys
out = sys.argv[1]
def _report():
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(out, "w") as f:
        json.dump({"self_kib": me, "children_kib": kids}, f)
atexit.register(_report)
sys.argv = ["muxsim", *sys.argv[2:]]
runpy.run_module("muxsim", run_name="__main__")
"""

#: What ``muxsim run`` imports before any work; its peak RSS is the baseline.
_BASELINE = ("import resource, muxsim.cli.app, muxsim.cli.run, muxsim.experiment, muxsim.report; "
             "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")


def _hwm_kib(pid: int) -> int | None:
    """``VmHWM`` of ``pid`` (KiB), or None when it is gone or has no memory (a zombie)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (``/proc/<pid>/task/*/children``)."""
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += _children(p)
    return out


def baseline_kib(env: dict) -> int:
    """Peak RSS (KiB) of a process that imports what ``muxsim run`` imports, nothing more."""
    res = subprocess.run([sys.executable, "-c", _BASELINE], capture_output=True, text=True, env=env, check=True)
    return int(res.stdout.split()[-1])


def measure(config: str, jobs: int, interval: float, env: dict, keep_out: Path | None = None) -> dict:
    """Run ``muxsim run config --jobs jobs`` in a child process and measure its memory.

    Returns:
        a dict of the figures (see the module docstring), KiB and counts.

    Raises:
        RuntimeError: the run failed (its output's tail in the message).
    """
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        tmp = Path(tmp)
        report = tmp / "rusage.json"
        out = keep_out if keep_out is not None else tmp / "out"
        log = tmp / "log.txt"
        cmd = [sys.executable, "-c", _WRAPPER, str(report), "run", str(config), "--jobs", str(jobs),
               "--out", str(out)]
        hwm: dict[int, int] = {}
        t0 = time.perf_counter()
        with open(log, "w") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            try:
                while proc.poll() is None:
                    for p in _tree(proc.pid):
                        v = _hwm_kib(p)
                        if v is not None:
                            hwm[p] = max(hwm.get(p, 0), v)
                    time.sleep(interval)
            except BaseException:
                proc.kill()
                raise
        wall = time.perf_counter() - t0
        text = log.read_text(errors="replace")
        if proc.returncode != 0 or not report.is_file():
            raise RuntimeError(f"muxsim run failed (rc {proc.returncode}):\n{text[-3000:]}")
        rusage = json.loads(report.read_text())
        n = pq.ParquetFile(out / "requests.parquet").metadata.num_rows
    workers = {p: v for p, v in hwm.items() if p != proc.pid}
    return {
        "config": str(config), "jobs": jobs, "wall_s": round(wall, 1), "requests": n,
        "main_peak_kib": rusage["self_kib"],
        "main_peak_sampled_kib": hwm.get(proc.pid),
        "worker_peak_kib": rusage["children_kib"] if jobs > 1 else None,
        "worker_peak_sampled_kib": max(workers.values()) if workers else None,
        "processes_sampled": len(hwm),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "experiments" / "zipf_alpha.yaml"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--interval", type=float, default=0.2, help="seconds between /proc samples")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--keep-out", type=Path, help="write the run's outputs here (default: a temporary folder)")
    args = ap.parse_args()

    env = dict(os.environ)
    import muxsim

    base = baseline_kib(env)
    r = measure(args.config, args.jobs, args.interval, env, args.keep_out)
    r["baseline_kib"] = base
    r["muxsim"] = str(Path(muxsim.__file__).parent)
    n = max(r["requests"], 1)
    mb = lambda kib: kib * 1024 / 1e6  # noqa: E731
    per = lambda kib: kib * 1024 / n  # noqa: E731
    r["main_bytes_per_request"] = round(per(r["main_peak_kib"]), 1)
    r["main_bytes_per_request_above_baseline"] = round(per(r["main_peak_kib"] - base), 1)
    print(f"muxsim at {r['muxsim']}; {args.config}, --jobs {args.jobs}: {r['requests']:,} simulated "
          f"requests in {r['wall_s']:.0f} s")
    print(f"baseline (imports only)  {mb(base):8.1f} MB")
    print(f"main process peak        {mb(r['main_peak_kib']):8.1f} MB  "
          f"{r['main_bytes_per_request']:7.1f} B/request raw, "
          f"{r['main_bytes_per_request_above_baseline']:7.1f} B/request above the baseline")
    if r["worker_peak_kib"]:
        r["worker_bytes_per_request"] = round(per(r["worker_peak_kib"]), 1)
        print(f"largest worker peak      {mb(r['worker_peak_kib']):8.1f} MB  "
              f"(sampled {mb(r['worker_peak_sampled_kib'] or 0):.1f} MB)")
    if args.json:
        args.json.write_text(json.dumps(r, indent=1) + "\n")


if __name__ == "__main__":
    main()
