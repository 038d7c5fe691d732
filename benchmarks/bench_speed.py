"""Speed of the simulator on the paper's setup (one process, one core).

Reports, per cell and strategy: simulated requests per wall second and simulated seconds per
wall second. Default: the 1000-s overload sweep (experiments/zipf_alpha_overload.yaml, the
longest runs); ``--config experiments/zipf_alpha.yaml`` times the paper's protocol.
Placement search times are benchmarks/bench_placement.py's.

    python benchmarks/bench_speed.py --repeat 3
    python benchmarks/bench_speed.py --config experiments/zipf_alpha.yaml --cell alpha=0.7,scale=1

Times on shared machines are noisy: the script reports the median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from muxsim.config import load_config
from muxsim.experiment import plan_experiment, simulate_cell, strategy_placement

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "experiments" / "zipf_alpha_overload.yaml"))
    ap.add_argument("--cell", action="append", help="only this cell label (repeatable; default: all)")
    ap.add_argument("--strategies", nargs="+", default=["muxserve", "spatial", "temporal"])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    cfg = load_config(args.config)
    cfg = cfg.model_copy(update={"strategies": args.strategies})
    cells = [c for c in cfg.cells() if not args.cell or c.label in args.cell]
    rows = []
    print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}")
    for plan in plan_experiment(cfg, cells=cells):
        cell, wl = plan.cell, plan.workload
        print(f"{cell.label}: {len(wl):,} requests")
        for strategy in args.strategies:
            p = plan.placements[strategy_placement(cfg, strategy)]
            walls = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                res = simulate_cell(cfg, cell, strategy, p, wl)
                walls.append(time.perf_counter() - t0)
            wall = statistics.median(walls)
            row = {"cell": cell.label, "strategy": strategy, "requests": len(wl), "jobs": res.n_jobs,
                   "sim_time_s": res.sim_time_s, "wall_s": wall,
                   "requests_per_wall_s": len(wl) / wall, "sim_s_per_wall_s": res.sim_time_s / wall,
                   "us_per_job": 1e6 * wall / max(res.n_jobs, 1)}
            rows.append(row)
            print(f"  {strategy:12s} wall {wall:6.2f} s  {row['requests_per_wall_s']:9,.0f} req/s  "
                  f"{row['sim_s_per_wall_s']:7,.0f} sim s/s  {res.n_jobs:,} jobs ({row['us_per_job']:.1f} us/job)")
    total_req = sum(r["requests"] for r in rows)
    total_wall = sum(r["wall_s"] for r in rows)
    print(f"overall: {total_req / total_wall:,.0f} simulated requests per wall second (one core)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
