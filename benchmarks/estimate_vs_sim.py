"""How far the placement estimator is from the simulation of the placement it chose, per cell,
mesh and LLM (the diagnosis behind issue 10).

For every cell of an experiment (default: the paper's zipf_alpha), the MuxServe placement's
estimate (req/s, capped at the rate, as the search uses it) and the estimator's uncapped capacity
of each LLM are set against two simulations of the same placement:

- **served**: the cell's own workload (the reference's request counts), throughput = completed
  / last completion per LLM, as the paper measures it;
- **capacity** (``--capacity``): for each LLM, its mesh alone with that LLM saturated --
  Poisson arrivals at ``--load`` x the larger of its rate and its estimated capacity, the
  mesh's other LLMs at their rates, for ``--seconds`` s -- and its completions per second in
  the second half (the steady state): what it can serve beside the others, the figure the
  estimator's capacity (its throughput at the largest batch its KV share holds) predicts.

    python benchmarks/estimate_vs_sim.py                     # every cell, served only
    python benchmarks/estimate_vs_sim.py --capacity --cell alpha=1.3,scale=0.5 --meshes

Prints one line per cell (sums over LLMs) and, with ``--meshes``, per mesh and LLM; ``--json``
writes every figure.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from muxsim import metrics
from muxsim.catalog import get_gpu, get_model
from muxsim.config import load_config
from muxsim.core.placement import Placement
from muxsim.core.replay import RunSpec
from muxsim.experiment import (
    latency_models,
    lengths_sampler,
    placement_context,
    plan_experiment,
    seq_tokens,
    simulate_cell,
)
from muxsim.sim.driver import simulate
from muxsim.workload import generate_workload

ROOT = Path(__file__).resolve().parents[1]


def capacity(cfg, cell, placement: Placement, mesh, est: dict[str, float], load: float, seconds: float,
             seed: int = 0) -> dict[str, float]:
    """Steady-state completions per second of each LLM of ``mesh`` (run alone) when that LLM's
    arrivals come at ``load`` x max(rate, ``est`` capacity) and the others' at their rates
    (second half of a ``seconds``-s run; one run per LLM)."""
    return {n: _saturated(cfg, cell, placement, mesh, n, est, load, seconds, seed) for n in mesh.llms}


def _saturated(cfg, cell, placement, mesh, hot, est, load, seconds, seed):
    names = list(mesh.llms)
    idx = [cfg.llm_names().index(n) for n in names]
    rates = [max(cell.rates[i], est[n]) * load if n == hot else cell.rates[i] for i, n in zip(idx, names)]
    wl = generate_workload(names, rates, seconds, lengths_sampler(cfg), seed=seed)
    one = Placement([mesh], {n: placement.est_throughput[n] for n in names}, "explicit")
    run_latency, base = latency_models(cfg)
    # quotas follow the LLMs' own rates, as in the cell
    res = simulate(RunSpec(one, "muxserve", wl, names, [get_model(cfg.llm_models()[i]) for i in idx],
                           [cell.rates[i] for i in idx], get_gpu(cfg.cluster.gpu), run_latency, cfg.scheduler,
                           seq_tokens(cfg), drain_limit_s=1e-9, slo_latency=base))
    df = res.requests
    fin = df[df.finished & (df.finish_s >= seconds / 2) & (df.finish_s < seconds)]
    return float((fin.llm == hot).sum()) / (seconds / 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "experiments" / "zipf_alpha.yaml"))
    ap.add_argument("--cell", action="append", help="only this cell label (repeatable)")
    ap.add_argument("--meshes", action="store_true", help="print every mesh and LLM")
    ap.add_argument("--capacity", action="store_true", help="also simulate each mesh saturated")
    ap.add_argument("--load", type=float, default=1.5)
    ap.add_argument("--seconds", type=float, default=400.0)
    ap.add_argument("--estimator", choices=["muxsim", "reference"], help="override placement.estimator")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    cfg = load_config(args.config)
    if args.estimator:
        cfg = cfg.model_copy(update={"placement": cfg.placement.model_copy(update={"estimator": args.estimator})})
    cells = [c for c in cfg.cells() if not args.cell or c.label in args.cell]
    plans = plan_experiment(cfg.model_copy(update={"strategies": ["muxserve"]}), cells=cells)
    rows = []
    for p in plans:
        t0 = time.perf_counter()
        pl = p.placements["muxserve"]
        ctx = placement_context(cfg, p.cell)
        res = simulate_cell(cfg, p.cell, "muxserve", pl, p.workload)
        summ = metrics.summarize(res.requests.assign(cell=p.cell.label, strategy="muxserve"), [8], 8)
        served = summ.set_index("llm")["throughput_rps"].to_dict()
        att = summ.set_index("llm")["slo_attainment@8"].to_dict()
        for mi, mesh in enumerate(pl.meshes):
            members = tuple(sorted(cfg.llm_names().index(n) for n in mesh.llms))
            unc = dict(zip([ctx.llms[i].name for i in members], ctx.mesh_capacity(mesh.gpus, members)))
            cap = capacity(cfg, p.cell, pl, mesh, unc, args.load, args.seconds) if args.capacity else {}
            for n in mesh.llms:
                i = cfg.llm_names().index(n)
                rows.append({"cell": p.cell.label, "mesh": mi, "gpus": mesh.gpus, "llm": n,
                             "model": cfg.llm_models()[i], "rate": p.cell.rates[i],
                             "decode_pct": mesh.sm[n][1], "estimate": pl.est_throughput[n],
                             "capacity_est": unc[n], "served": served.get(n, 0.0),
                             "capacity_sim": cap.get(n, np.nan), "slo8": att.get(n, np.nan)})
        df = pd.DataFrame([r for r in rows if r["cell"] == p.cell.label])
        claims = df[df.capacity_est >= df.rate]
        ok = (claims.served >= 0.85 * claims.estimate).mean() if len(claims) else np.nan
        line = (f"{p.cell.label:22s} estimate {df.estimate.sum():7.2f}  served {df.served.sum():7.2f} "
                f"({df.served.sum() / df.estimate.sum():.2f}x)  LLMs claimed served {len(claims):2d}, "
                f"within 15 %: {ok:.0%}  worst served/estimate {(df.served / df.estimate).min():.2f} "
                f"({df.loc[(df.served / df.estimate).idxmin(), 'llm']})")
        if args.capacity:
            line += f"  capacity sim/est {df.capacity_sim.sum() / df.capacity_est.sum():.2f}"
        print(line + f"  [{time.perf_counter() - t0:.1f} s]", flush=True)
        if args.meshes:
            print(df.drop(columns="cell").to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
