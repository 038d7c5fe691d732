"""Speed of the placement search and the simulator on the paper's setup (one process, one core).

Reports, per strategy and alpha: simulated requests per wall second and simulated seconds per
wall second; and the wall time of MuxServe's placement search for the 19-LLM / 32-GPU case.
Targets (issue #2): placement <= 60 s; >= 20,000 simulated requests per wall second per core.

    python benchmarks/bench_speed.py                       # alpha 0.7 and 2.1, 1000 s
    python benchmarks/bench_speed.py --alpha 0.9 --duration 300 --repeat 3

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
from muxsim.runner import cell_workload, placement_for, seq_tokens
from muxsim.catalog import get_gpu, get_model
from muxsim.perf import get_latency_model
from muxsim.sim.driver import simulate

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "experiments" / "zipf_alpha.yaml"))
    ap.add_argument("--alpha", type=float, nargs="+", default=[0.7, 2.1])
    ap.add_argument("--duration", type=float, default=1000.0, help="workload duration (s)")
    ap.add_argument("--strategies", nargs="+", default=["muxserve", "spatial", "temporal"])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    cfg = load_config(args.config)
    raw = cfg.model_dump(mode="json")
    raw["workload"]["duration_s"] = args.duration
    raw["workload"]["popularity"]["alpha"] = list(args.alpha)
    cfg = type(cfg).model_validate(raw)
    gpu = get_gpu(cfg.cluster.gpu)
    lat = get_latency_model(cfg.cluster.gpu)
    models = [get_model(m) for m in cfg.llm_models()]
    rows = []
    print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}")
    for ci, cell in enumerate(cfg.cells()):
        t_place = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            placement = placement_for(cfg, cell, "muxserve")
            t_place.append(time.perf_counter() - t0)
        spatial = placement_for(cfg, cell, "spatial")
        wl = cell_workload(cfg, cell, ci)
        print(f"{cell.label}: placement search {statistics.median(t_place):.2f} s "
              f"({placement.layouts_searched} layouts), {len(wl):,} requests")
        for strategy in args.strategies:
            p = spatial if strategy == "spatial" else placement
            walls = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                res = simulate(p, strategy, wl, cfg.llm_names(), models, cell.rates, gpu, lat,
                               cfg.scheduler, seq_tokens(cfg), cfg.workload.drain_limit_s)
                walls.append(time.perf_counter() - t0)
            wall = statistics.median(walls)
            row = {"cell": cell.label, "strategy": strategy, "requests": len(wl), "jobs": res.n_jobs,
                   "sim_time_s": res.sim_time_s, "wall_s": wall,
                   "requests_per_wall_s": len(wl) / wall, "sim_s_per_wall_s": res.sim_time_s / wall,
                   "us_per_job": 1e6 * wall / max(res.n_jobs, 1),
                   "placement_s": statistics.median(t_place)}
            rows.append(row)
            print(f"  {strategy:9s} wall {wall:6.2f} s  {row['requests_per_wall_s']:9,.0f} req/s  "
                  f"{row['sim_s_per_wall_s']:7,.0f} sim s/s  {res.n_jobs:,} jobs ({row['us_per_job']:.1f} us/job)")
    total_req = sum(r["requests"] for r in rows)
    total_wall = sum(r["wall_s"] for r in rows)
    print(f"overall: {total_req / total_wall:,.0f} simulated requests per wall second (one core)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
