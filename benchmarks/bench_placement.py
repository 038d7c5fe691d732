"""Wall time of the placement searches on the paper's setup (19 LLMs on 4 x 8 A100s), one core.

- analytic: MuxServe's enumeration + greedy search (target: under 1 s per cell), median of
  ``--repeat`` runs after one warm-up (the warm-up fits curves and samples the lengths once);
- simulated: the simulation-guided search from the three best analytic layouts (target: within
  60 s per cell; the main job runs two cells at once on two cores), with its candidates,
  meshes simulated, and the throughput and SLO attainment it started from and reached.

    python benchmarks/bench_placement.py                        # every cell, both searches
    python benchmarks/bench_placement.py --cell alpha=0.7,scale=1 --analytic-only
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from muxsim.config import load_config
from muxsim.experiment import placement_for, plan_experiment, simulated_placement

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "experiments" / "zipf_alpha.yaml"))
    ap.add_argument("--cell", action="append", help="only this cell label (repeatable)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--analytic-only", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    cfg = load_config(args.config)
    cfg = cfg.model_copy(update={"strategies": ["muxserve"]})
    cells = [c for c in cfg.cells() if not args.cell or c.label in args.cell]
    print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}")
    placement_for(cfg, cells[0], "muxserve")  # warm-up
    rows = []
    for plan in plan_experiment(cfg, cells=cells):
        walls = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            p = placement_for(cfg, plan.cell, "muxserve")
            walls.append(time.perf_counter() - t0)
        row = {"cell": plan.cell.label, "analytic_s": statistics.median(walls), "layouts": p.layouts_searched}
        line = f"{plan.cell.label:22s} analytic {row['analytic_s']:.3f} s ({p.layouts_searched} layouts)"
        if not args.analytic_only:
            t0 = time.perf_counter()
            sp = simulated_placement(cfg, plan.cell, plan.workload)
            row.update(simulated_s=time.perf_counter() - t0, **{k: v for k, v in sp.search.items()
                                                                 if isinstance(v, (int, float, str, bool))})
            line += (f"  simulated {row['simulated_s']:5.1f} s ({sp.search['candidates_simulated']} candidates, "
                     f"{sp.search['meshes_simulated']} meshes; throughput {sp.search['start_throughput_rps']:.2f} -> "
                     f"{sp.search['throughput_rps']:.2f} req/s, attainment {sp.search['start_attainment']:.3f} -> "
                     f"{sp.search['attainment']:.3f})")
        rows.append(row)
        print(line, flush=True)
    a = [r["analytic_s"] for r in rows]
    print(f"analytic: median {statistics.median(a):.3f} s, max {max(a):.3f} s")
    if not args.analytic_only:
        s = [r["simulated_s"] for r in rows]
        print(f"simulated: median {statistics.median(s):.1f} s, max {max(s):.1f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
