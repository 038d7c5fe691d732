"""Analytic placement at scale: wall time and quality at 32, 128, 1,024 and 4,096 GPUs.

Clusters of 4, 16, 128 and 512 nodes x 8 A100-80GB serving 19, 76, 256 and 1,024 LLMs in the
paper's mix (12 LLaMA-7B : 4 13B : 2 30B : 1 65B, counts rounded by largest remainder, listed
7B first as experiments/zipf_alpha.yaml orders them) at rates 40 x (i+1)^-alpha req/s. The
placement context is the one experiments build (``placement_context``: zipf_alpha.yaml's
ShareGPT lengths, job overheads and scheduler limits), fresh per point so its memoised scores
start cold; the latency model is warmed once first. Per point: the search ``search="auto"``
picks, its wall time (median of ``--repeat``), the estimated throughput against the summed
arrival rate, the score against its upper bound (every LLM alone on its best mesh), the used
meshes by size, and at 32 GPUs the large-scale search's gap to the exhaustive one.

``--gap`` instead measures the large-scale search's optimality gap: against the exhaustive
search at 4, 5, 6 and 8 nodes, and at 16 nodes (where the exhaustive search does not finish)
against every mesh-count vector scored by the same greedy step, over alpha in {0.7, 0.9, 1.3,
1.7, 2.1} x max rate in {20, 40, 50} req/s (single process; several minutes).

    python benchmarks/bench_placement_scale.py                 # the four scale points
    python benchmarks/bench_placement_scale.py --alpha 0.7 --points 4,16
    python benchmarks/bench_placement_scale.py --gap
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections import Counter
from pathlib import Path

from muxsim.config import load_config
from muxsim.core.placement import (
    greedy_assign_counts,
    layout_search,
    muxserve_placement,
)
from muxsim.experiment import placement_for
from muxsim.experiment.placements import placement_context

ROOT = Path(__file__).resolve().parents[1]
MIX = (("llama-7b", 12), ("llama-13b", 4), ("llama-30b", 2), ("llama-65b", 1))
#: (nodes, LLMs) of the scale points: 32, 128, 1,024 and 4,096 GPUs.
POINTS = {4: 19, 16: 76, 128: 256, 512: 1024}
GAP_POINTS = {4: 19, 5: 24, 6: 28, 8: 38, 16: 76}


def mix_counts(n: int) -> list[int]:
    """LLMs of each model of :data:`MIX` among ``n``, by largest remainder (19 -> 12/4/2/1)."""
    weight = sum(w for _, w in MIX)
    quota = [n * w / weight for _, w in MIX]
    counts = [int(q) for q in quota]
    for k in sorted(range(len(MIX)), key=lambda k: (-(quota[k] - counts[k]), k))[: n - sum(counts)]:
        counts[k] += 1
    return counts


def config_for(nodes: int, n: int, alpha: float, max_rate: float = 40.0):
    """zipf_alpha.yaml with ``nodes`` x 8 A100-80GB, ``n`` LLMs of the mix and one cell."""
    llms = []
    for (model, _), c in zip(MIX, mix_counts(n)):
        while c > 0:  # a group holds at most 1,024 LLMs
            llms.append({"model": model, "count": min(c, 1024)})
            c -= 1024
    return load_config(ROOT / "experiments" / "zipf_alpha.yaml", overrides={
        "cluster": {"nodes": nodes, "gpus_per_node": 8, "gpu": "a100-80gb"},
        "llms": llms,
        "workload": {"duration_s": 10, "arrival": "poisson", "lengths": {"kind": "sharegpt_v3"},
                     "popularity": {"alpha": alpha, "max_rate": max_rate}},
        "strategies": ["muxserve"]})


def context_for(nodes: int, n: int, alpha: float, max_rate: float = 40.0):
    cfg = config_for(nodes, n, alpha, max_rate)
    return placement_context(cfg, cfg.cells()[0])


def timed(nodes: int, n: int, alpha: float, search: str, repeat: int, max_rate: float = 40.0):
    """(placement, median wall s) of ``repeat`` searches, each on a fresh context."""
    walls = []
    for _ in range(repeat):
        ctx = context_for(nodes, n, alpha, max_rate)
        t0 = time.perf_counter()
        p = muxserve_placement(ctx, nodes, 8, search=search)
        walls.append(time.perf_counter() - t0)
    return ctx, p, statistics.median(walls)


def scale_points(args) -> list[dict]:
    rows = []
    for nodes in args.points:
        n = POINTS[nodes]
        search = layout_search(nodes, 8)
        ctx, p, wall = timed(nodes, n, args.alpha, "auto", args.repeat if nodes <= 16 else 1)
        rate = sum(l.rate for l in ctx.llms)
        meshes = dict(sorted(Counter(m.gpus for m in p.meshes).items()))
        row = {"gpus": nodes * 8, "nodes": nodes, "llms": n, "search": search, "wall_s": round(wall, 3),
               "layouts_searched": p.layouts_searched, "score": round(p.score, 3),
               "est_throughput_rps": round(p.total_est_throughput, 3), "rate_rps": round(rate, 3),
               "covered": round(p.total_est_throughput / rate, 4), "meshes": meshes}
        if "upper_bound" in p.search:
            row["upper_bound"] = p.search["upper_bound"]
        line = (f"{nodes * 8:5d} GPUs {n:5d} LLMs  {search:10s} {wall:8.2f} s  {p.layouts_searched:5d} layouts  "
                f"score {p.score:9.2f}  est. {p.total_est_throughput:8.2f} of {rate:8.2f} req/s "
                f"({100 * row['covered']:.1f} %)  meshes {meshes}")
        if search == "exhaustive":
            _, q, wall_l = timed(nodes, n, args.alpha, "large", args.repeat)
            row.update(large_wall_s=round(wall_l, 3), large_score=round(q.score, 3),
                       large_est_throughput_rps=round(q.total_est_throughput, 3),
                       upper_bound=q.search["upper_bound"], gap_pct=round(100 * (p.score - q.score) / p.score, 4))
            line += (f"\n{'':16s}large      {wall_l:8.2f} s  {q.layouts_searched:5d} layouts  score {q.score:9.2f}  "
                     f"est. {q.total_est_throughput:8.2f} req/s; gap to exhaustive {row['gap_pct']:.3f} % of the score")
        if "upper_bound" in row:
            line += f"; upper bound {row['upper_bound']:.2f}"
        print(line, flush=True)
        rows.append(row)
    return rows


def count_vectors(total: int, n: int, biggest_min: int, sizes=(1, 2, 4, 8)):
    """Every mesh-count vector the large-scale search could visit (its filters applied)."""
    def rec(k: int, left: int):
        if k == 0:
            yield (left,)
            return
        for c in range(left // sizes[k] + 1):
            for rest in rec(k - 1, left - c * sizes[k]):
                yield rest + (c,)
    for v in rec(len(sizes) - 1, total):
        if sum(v) <= n and any(c for s, c in zip(sizes, v) if s >= biggest_min):
            yield v


def gap(args) -> list[dict]:
    rows, worst, above = [], {}, False
    for nodes, n in GAP_POINTS.items():
        for alpha in (0.7, 0.9, 1.3, 1.7, 2.1):
            for max_rate in (20.0, 40.0, 50.0):
                ctx = context_for(nodes, n, alpha, max_rate)
                t0 = time.perf_counter()
                q = muxserve_placement(ctx, nodes, 8, search="large")
                wall_l = time.perf_counter() - t0
                t0 = time.perf_counter()
                if layout_search(nodes, 8) == "exhaustive" or nodes <= 8:
                    ref, how = muxserve_placement(ctx, nodes, 8, search="exhaustive").score, "exhaustive"
                else:  # every count vector, the same greedy step: the exhaustive search's optimum up to ties
                    order = sorted(range(n), key=lambda i: (-ctx.llms[i].rate * ctx.llms[i].model.compute_weight, i))
                    bmin = max(l.model.min_gpus for l in ctx.llms)
                    ref, how = float("-inf"), "all count vectors"
                    for v in count_vectors(nodes * 8, n, bmin):
                        r = greedy_assign_counts(ctx, order, dict(zip((1, 2, 4, 8), v)))
                        if r is not None:
                            ref = max(ref, r[0])
                wall_r = time.perf_counter() - t0
                g = 100 * (ref - q.score) / ref
                bound = q.search["upper_bound"]
                worst[nodes] = max(worst.get(nodes, 0.0), g)
                above = above or ref > bound + 1e-6
                rows.append({"nodes": nodes, "llms": n, "alpha": alpha, "max_rate": max_rate, "reference": how,
                             "reference_score": ref, "large_score": q.score, "upper_bound": bound, "gap_pct": g,
                             "large_layouts": q.layouts_searched, "large_s": wall_l, "reference_s": wall_r})
                print(f"{nodes:3d} nodes {n:3d} LLMs alpha {alpha:3.1f} max {max_rate:4.0f} req/s: {how} {ref:9.3f} "
                      f"({wall_r:5.1f} s), large {q.score:9.3f} ({q.layouts_searched} vectors, {wall_l:5.2f} s), "
                      f"bound {bound:9.3f}, gap {g:6.3f} %", flush=True)
    for nodes, g in worst.items():
        print(f"worst gap at {nodes} nodes: {g:.3f} %")
    print("a reference score above the upper bound: " + ("yes (the bound's assumption failed)" if above else "none"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--points", default="4,16,128,512", help="nodes of the scale points, of 4,16,128,512")
    ap.add_argument("--repeat", type=int, default=3, help="runs per point up to 16 nodes (median)")
    ap.add_argument("--gap", action="store_true", help="measure the optimality gap instead (module docstring)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.points = [int(x) for x in args.points.split(",")]
    print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}, "
          "one process")
    cfg = config_for(4, 19, args.alpha)
    placement_for(cfg, cfg.cells()[0], "muxserve")  # warm-up: fits the latency curves once
    rows = gap(args) if args.gap else scale_points(args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
