"""Speed of the simulator on the paper's protocol, one process pinned to one core.

For every cell of the config (default experiments/zipf_alpha.yaml, the paper's 20 cells) and
every strategy, it times ``simulate_cell`` -- the whole simulation of that cell: the run spec,
the event loop and the per-request table -- twice in the same run:

- **runs**: the default, decode iterations that follow one another with nothing else able to
  happen on their mesh run as one job (``fuse_decodes=True``);
- **per iteration**: one job per decode iteration (``fuse_decodes=False``), the old path,

and reports simulated requests per wall second of each (median of ``--repeat`` runs), their ratio,
jobs and completions processed per request. Both give identical results (tests/test_decode_runs.py
checks it); the script also checks that they did here.

    python benchmarks/bench_speed.py                     # every cell, 3 runs each
    python benchmarks/bench_speed.py --cell alpha=2.1,scale=1 --repeat 5
    python benchmarks/bench_speed.py --config experiments/zipf_alpha_overload.yaml

Times on shared machines are noisy: compare the two paths within one run (they alternate).
Placement searches are benchmarks/bench_placement.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import pandas as pd

from muxsim import _native
from muxsim.config import load_config
from muxsim.experiment import plan_experiment, strategy_placement
from muxsim.experiment.placements import latency_models
from muxsim.experiment.simulation import run_spec
from muxsim.sim.driver import simulate

ROOT = Path(__file__).resolve().parents[1]
TARGET = 50_000  # simulated requests per wall second per core (issue 13)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "experiments" / "zipf_alpha.yaml"))
    ap.add_argument("--cell", action="append", help="only this cell label (repeatable; default: all)")
    ap.add_argument("--strategies", nargs="+", default=["muxserve", "spatial", "temporal"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the first allowed)")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()

    if hasattr(os, "sched_setaffinity"):
        cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
    cfg = load_config(args.config)
    cfg = cfg.model_copy(update={"strategies": args.strategies})
    cells = [c for c in cfg.cells() if not args.cell or c.label in args.cell]
    print(f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}; pinned to one core; median of {args.repeat}")
    modes = sorted(set(_native.status().values()))
    print(f"simulation core: {', '.join(modes)} (MUXSIM_PURE_PYTHON=1 runs the pure-Python source)")
    lat, base = latency_models(cfg, None)
    rows = []
    for plan in plan_experiment(cfg, cells=cells):
        n = len(plan.workload)
        for strategy in args.strategies:
            p = plan.placements[strategy_placement(cfg, strategy)]
            walls = {True: [], False: []}
            res = {}
            for _ in range(args.repeat):
                for fuse in (True, False):  # alternate, so that drift hits both alike
                    t0 = time.perf_counter()
                    res[fuse] = simulate(run_spec(cfg, plan.cell, strategy, p, plan.workload, lat, base),
                                         fuse_decodes=fuse)
                    walls[fuse].append(time.perf_counter() - t0)
            pd.testing.assert_frame_equal(res[True].requests, res[False].requests, check_exact=True)
            assert res[True].n_jobs == res[False].n_jobs and res[True].sim_time_s == res[False].sim_time_s
            fast, slow = statistics.median(walls[True]), statistics.median(walls[False])
            row = {"cell": plan.cell.label, "strategy": strategy, "requests": n, "jobs": res[True].n_jobs,
                   "completions": res[True].n_completions, "wall_s": fast, "per_iteration_wall_s": slow,
                   "requests_per_s": n / fast, "per_iteration_requests_per_s": n / slow, "speedup": slow / fast}
            rows.append(row)
            print(f"{plan.cell.label:20s} {strategy:9s} {n:7,d} req  {n / fast:8,.0f} req/s "
                  f"(per iteration {n / slow:8,.0f}, x{slow / fast:4.2f})  jobs/req {row['jobs'] / n:5.1f}  "
                  f"completions/req {row['completions'] / n:4.2f}", flush=True)
    df = pd.DataFrame(rows)
    per_cell = df.groupby("cell", sort=False).agg(requests=("requests", "sum"), wall_s=("wall_s", "sum"),
                                                 slow=("per_iteration_wall_s", "sum"))
    print("\nper cell (all strategies):")
    for cell, r in per_cell.iterrows():
        print(f"  {cell:20s} {r.requests / r.wall_s:8,.0f} req/s (per iteration {r.requests / r.slow:8,.0f})")
    tot = df.requests.sum()
    print(f"overall: {tot / df.wall_s.sum():,.0f} simulated requests per wall second on one core "
          f"(per iteration {tot / df.per_iteration_wall_s.sum():,.0f}; x{df.per_iteration_wall_s.sum() / df.wall_s.sum():.2f}); "
          f"slowest (cell, strategy): {df.requests_per_s.min():,.0f} req/s; "
          f"{(df.requests_per_s >= TARGET).sum()} of {len(df)} at >= {TARGET:,}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
