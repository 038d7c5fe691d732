"""Simulation-guided placement search: muxsim's own contribution beyond MuxServe.

MuxServe's analytic search (:func:`muxsim.core.placement.muxserve_placements`) ranks placements
by an estimate; this search starts from its best layouts and improves them by local moves, each
candidate scored by simulating the cell's own workload with ADBS. The precedent is AlpaServe's
simulator-guided placement (Li et al., "AlpaServe: Statistical Multiplexing with Model
Parallelism for Deep Learning Serving", OSDI 2023, §4), which scores placements by simulating
the workload instead of trusting a formula.

Moves: move an LLM to another mesh, swap two LLMs of different meshes, change an LLM's decode
SM share by 10 points, re-split a node into other meshes (its LLMs re-placed by MuxServe's
greedy rule). Every candidate must be feasible: each LLM on a mesh of at least its smallest
size, weights and reserves in memory with KV blocks for one mean-length sequence per LLM, decode
shares within the mesh's SM capacity.

Scoring: meshes share nothing in the simulation, so each mesh is simulated alone on its LLMs'
requests and the per-mesh results are cached (a move re-simulates only the meshes it changes);
the sum over meshes is exactly the full simulation's (a test checks it). A candidate is kept
only when it is at least as good as the current one in both the sum of per-LLM throughputs and
SLO attainment at the goodput scale, and strictly better in the configured objective, so the
search never returns a placement that simulates worse than its starting point in either.

The budget is a number of candidate placements (deterministic: same config and seed, same
placement), with a wall-time cap that, when it stops the search first, is recorded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from muxsim.core.placement import (
    DECODE_SHARES,
    MeshPlan,
    Placement,
    PlacementContext,
    default_prefill_pct,
    greedy_assign,
    node_splits,
)
from muxsim.core.replay import RunSpec
from muxsim.sim.driver import simulate

__all__ = ["SearchSettings", "MeshEvaluator", "simulated_search"]


@dataclass(frozen=True)
class SearchSettings:
    """Knobs of :func:`simulated_search`.

    Attributes:
        objective: ``throughput`` (sum of per-LLM throughputs, req/s), ``goodput`` (sum of
            per-LLM requests meeting the SLO at ``goodput_scale`` per second) or
            ``attainment`` (fraction of all requests meeting it).
        candidates: candidate placements to simulate at most (the budget).
        budget_s: wall-time cap (s); hitting it first is recorded in the result.
        seed: seed of the move proposals.
        starts: analytic layouts to start from (best first).
        goodput_scale: SLO scale of goodput and attainment.
    """

    objective: str = "throughput"
    candidates: int = 400
    budget_s: float = 45.0
    seed: int = 0
    starts: int = 3
    goodput_scale: float = 8.0


class MeshEvaluator:
    """Simulates meshes alone on their LLMs' requests and keeps the results.

    Args:
        ctx: the placement context (LLMs, GPU, latency model with overheads).
        workload: the cell's workload (request rows in arrival order).
        models: catalog spec per LLM, in ``ctx.llms`` order.
        sched_cfg: scheduler knobs; ``seq_tokens``: tokens per sequence of ADBS quotas.
        slo_latency, slo_base: the SLO base's latency model and kind (as the run uses).
        drain_limit_s: as :func:`muxsim.sim.driver.simulate`.
    """

    def __init__(self, ctx: PlacementContext, workload: pd.DataFrame, models, sched_cfg, seq_tokens: int,
                 slo_latency, slo_base: str, goodput_scale: float, drain_limit_s: float | None = None):
        self.ctx = ctx
        self.names = [l.name for l in ctx.llms]
        self.rates = [l.rate for l in ctx.llms]
        self.models = list(models)
        self.cfg = sched_cfg
        self.seq_tokens = seq_tokens
        self.slo_latency = slo_latency
        self.slo_base = slo_base
        self.scale = float(goodput_scale)
        self.drain = drain_limit_s
        wl = workload.reset_index(drop=True)
        self._rows = {n: np.flatnonzero((wl["llm"] == n).to_numpy()) for n in self.names}
        self._wl = wl
        self._cache: dict = {}
        self.simulated = 0

    def mesh(self, size: int, members: tuple[int, ...], shares: tuple[float, ...]) -> dict[int, tuple]:
        """Per member LLM index: (requests, finished, last completion s, meeting the SLO)."""
        key = (size, members, shares)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        names = [self.names[i] for i in members]
        rows = np.sort(np.concatenate([self._rows[n] for n in names]))
        out: dict[int, tuple] = {}
        if len(rows):
            sm = {n: (default_prefill_pct(self.ctx.llms[i].model), s) for n, i, s in zip(names, members, shares)}
            pl = Placement([MeshPlan(0, 0, size, tuple(names), sm)], method="simulated")
            res = simulate(RunSpec(pl, "muxserve", self._wl.iloc[rows], names, [self.models[i] for i in members],
                                   [self.rates[i] for i in members], self.ctx.gpu, self.ctx.latency, self.cfg,
                                   self.seq_tokens, self.drain, slo_latency=self.slo_latency,
                                   slo_base=self.slo_base))
            self.simulated += 1
            df = res.requests
            lat = (df["finish_s"] - df["arrival_s"]).to_numpy()
            meet = df["finished"].to_numpy() & (lat <= self.scale * df["slo_base_s"].to_numpy())
            fin = df["finished"].to_numpy()
            finish = df["finish_s"].to_numpy()
            llm = df["llm"].to_numpy()
            for n, i in zip(names, members):
                sel = llm == n
                done = fin & sel
                out[i] = (int(sel.sum()), int(done.sum()), float(finish[done].max()) if done.any() else math.nan,
                          int((meet & sel).sum()))
        for i in members:
            out.setdefault(i, (0, 0, math.nan, 0))
        self._cache[key] = out
        return out


    def evaluate(self, placement: Placement) -> tuple[float, float, float]:
        """(sum of per-LLM throughputs req/s, sum of per-LLM goodputs req/s, SLO attainment) of
        a whole placement, as :func:`muxsim.sim.driver.simulate` of it gives them."""
        index = {n: i for i, n in enumerate(self.names)}
        per: dict[int, tuple] = {}
        for m in placement.meshes:
            members = tuple(sorted(index[n] for n in m.llms))
            per.update(self.mesh(m.gpus, members, tuple(float(m.sm[self.names[i]][1]) for i in members)))
        return _metrics(per)


def _metrics(per_llm: dict[int, tuple]) -> tuple[float, float, float]:
    """(sum of per-LLM throughputs, sum of per-LLM goodputs, attainment) of per-LLM results."""
    thr = good = 0.0
    n = meet = 0
    for reqs, fin, last, m in per_llm.values():
        n += reqs
        meet += m
        if fin and last > 0:
            thr += fin / last
            good += m / last
    return thr, good, (meet / n if n else 0.0)


@dataclass
class _Candidate:
    splits: list[tuple[int, ...]]          # per node, mesh sizes in order
    members: list[list[tuple[int, ...]]]   # per node, per mesh: sorted LLM indices
    shares: dict[int, float]               # LLM index -> decode share (%)

    def copy(self) -> "_Candidate":
        return _Candidate(list(self.splits), [list(m) for m in self.members], dict(self.shares))

    def meshes(self):
        for node, (split, mem) in enumerate(zip(self.splits, self.members)):
            first = 0
            for size, m in zip(split, mem):
                yield node, first, size, m
                first += size


class _Search:
    def __init__(self, ctx: PlacementContext, evaluator: MeshEvaluator, settings: SearchSettings, gpus_per_node: int):
        self.ctx = ctx
        self.ev = evaluator
        self.s = settings
        self.gpn = gpus_per_node
        self.rng = np.random.default_rng(settings.seed)
        self.splits = node_splits(gpus_per_node)
        self.evaluated = 0

    # ---- feasibility and scoring ---------------------------------------------------------------
    def feasible_mesh(self, size: int, members: tuple[int, ...], shares) -> bool:
        if not members:
            return True
        ctx = self.ctx
        if any(ctx.llms[i].model.min_gpus > size for i in members):
            return False
        if sum(shares[i] for i in members) > ctx.sm_capacity_pct + 1e-9:
            return False
        free = ctx.kv_blocks(members, size)
        return free > 0 and free >= sum(ctx.seq_blocks(i, size) for i in members)

    def feasible(self, c: _Candidate) -> bool:
        return all(self.feasible_mesh(size, m, c.shares) for _, _, size, m in c.meshes())

    def evaluate(self, c: _Candidate) -> tuple[float, float, float]:
        self.evaluated += 1
        per: dict[int, tuple] = {}
        for _, _, size, m in c.meshes():
            if m:
                per.update(self.ev.mesh(size, m, tuple(c.shares[i] for i in m)))
        return _metrics(per)

    def objective(self, metrics) -> float:
        return {"throughput": metrics[0], "goodput": metrics[1], "attainment": metrics[2]}[self.s.objective]

    def better(self, new, cur) -> bool:
        eps = 1e-9
        return (new[0] >= cur[0] - eps and new[2] >= cur[2] - eps
                and self.objective(new) > self.objective(cur) + eps)

    # ---- moves -------------------------------------------------------------------------------
    def _slots(self, c: _Candidate):
        return [(node, k) for node, mem in enumerate(c.members) for k in range(len(mem))]

    def _where(self, c: _Candidate, i: int):
        for node, mem in enumerate(c.members):
            for k, m in enumerate(mem):
                if i in m:
                    return node, k
        raise KeyError(i)

    def _pick_llm(self, weights: np.ndarray) -> int:
        n = len(self.ctx.llms)
        if self.rng.random() < 0.5 and weights.sum() > 0:
            return int(self.rng.choice(n, p=weights / weights.sum()))
        return int(self.rng.integers(n))

    def propose(self, c: _Candidate, deficit: np.ndarray) -> _Candidate | None:
        r = self.rng.random()
        new = c.copy()
        slots = self._slots(c)
        if r < 0.35:  # move an LLM to another mesh
            i = self._pick_llm(deficit)
            node, k = self._where(c, i)
            node2, k2 = slots[int(self.rng.integers(len(slots)))]
            if (node2, k2) == (node, k):
                return None
            new.members[node][k] = tuple(x for x in c.members[node][k] if x != i)
            new.members[node2][k2] = tuple(sorted(c.members[node2][k2] + (i,)))
            new.shares[i] = self.ctx.decode_share(i, c.splits[node2][k2])
        elif r < 0.6:  # swap two LLMs of different meshes
            i = self._pick_llm(deficit)
            j = int(self.rng.integers(len(self.ctx.llms)))
            (a, ka), (b, kb) = self._where(c, i), self._where(c, j)
            if (a, ka) == (b, kb):
                return None
            new.members[a][ka] = tuple(sorted([x for x in c.members[a][ka] if x != i] + [j]))
            new.members[b][kb] = tuple(sorted([x for x in c.members[b][kb] if x != j] + [i]))
            new.shares[i] = self.ctx.decode_share(i, c.splits[b][kb])
            new.shares[j] = self.ctx.decode_share(j, c.splits[a][ka])
        elif r < 0.85:  # change a decode share
            i = self._pick_llm(deficit)
            step = 10.0 if self.rng.random() < 0.5 else -10.0
            s = c.shares[i] + step
            if not (DECODE_SHARES[0] <= s <= DECODE_SHARES[-1]):
                return None
            new.shares[i] = s
        else:  # re-split a node and re-place its LLMs greedily
            node = int(self.rng.integers(len(c.splits)))
            split = self.splits[int(self.rng.integers(len(self.splits)))]
            if tuple(split) == tuple(c.splits[node]):
                return None
            llms = sorted((i for m in c.members[node] for i in m),
                          key=lambda i: (-self.ctx.llms[i].rate * self.ctx.llms[i].model.compute_weight, i))
            placed = greedy_assign(self.ctx, llms, split)
            if placed is None:
                return None
            members = list(placed[1])
            new.splits[node] = tuple(split)
            new.members[node] = members
            for k, size in enumerate(split):
                for i in members[k]:
                    new.shares[i] = self.ctx.decode_share(i, size)
        return new if self.feasible(new) else None


def _from_placement(p: Placement, ctx: PlacementContext, nodes: int, gpus_per_node: int) -> _Candidate:
    index = {l.name: i for i, l in enumerate(ctx.llms)}
    splits: list[list[int]] = [[] for _ in range(nodes)]
    members: list[list[tuple[int, ...]]] = [[] for _ in range(nodes)]
    shares = {}
    for m in sorted(p.meshes, key=lambda m: (m.node, m.first_gpu)):
        splits[m.node].append(m.gpus)
        members[m.node].append(tuple(sorted(index[n] for n in m.llms)))
        for n in m.llms:
            shares[index[n]] = float(m.sm[n][1])
    for node in range(nodes):
        left = gpus_per_node - sum(splits[node])
        # GPUs the placement leaves idle become empty meshes a move may fill
        for size in (8, 4, 2, 1):
            while left >= size:
                splits[node].append(size)
                members[node].append(())
                left -= size
    return _Candidate([tuple(s) for s in splits], members, shares)


def _to_placement(c: _Candidate, ctx: PlacementContext) -> tuple[list[MeshPlan], dict[str, float]]:
    """Its meshes and the analytic estimator's estimate of each LLM at its shares (req/s)."""
    meshes, est = [], {}
    for node, first, size, m in c.meshes():
        if not m:
            continue
        names = tuple(ctx.llms[i].name for i in m)
        sm = {ctx.llms[i].name: (default_prefill_pct(ctx.llms[i].model), c.shares[i]) for i in m}
        meshes.append(MeshPlan(node, first, size, names, sm))
        res = ctx.score(size, m, tuple(c.shares[i] for i in m))
        for k, i in enumerate(m):
            est[ctx.llms[i].name] = res.served[k] if res is not None else float("nan")
    return meshes, {l.name: est[l.name] for l in ctx.llms if l.name in est}


def simulated_search(ctx: PlacementContext, starts: Sequence[Placement], evaluator: MeshEvaluator,
                     nodes: int, gpus_per_node: int, settings: SearchSettings) -> Placement:
    """Improve the analytic ``starts`` (best first) by simulated local moves.

    Returns:
        The best placement found (method ``"simulated"``); its ``est_throughput`` is the
        analytic estimator's estimate of it (req/s), its ``score`` the objective, and ``search`` records
        the candidates simulated, moves accepted, meshes simulated, each start's and the
        result's throughput and attainment, the wall time and whether the time cap stopped it.

    Raises:
        ValueError: no start, or an unknown objective.
    """
    if not starts:
        raise ValueError("the simulated search needs at least one starting placement")
    if settings.objective not in ("throughput", "goodput", "attainment"):
        raise ValueError(f"objective must be throughput, goodput or attainment; got {settings.objective!r}")
    t0 = time.perf_counter()
    search = _Search(ctx, evaluator, settings, gpus_per_node)
    begin = [_from_placement(p, ctx, nodes, gpus_per_node) for p in starts]
    scored = [(c, search.evaluate(c)) for c in begin]
    first = scored[0][1]
    best_c, best_m = scored[0]
    per_start = max(1, (settings.candidates - len(scored)) // len(scored))
    accepted = 0
    timed_out = False
    for c, m in scored:
        cur_c, cur_m = c, m
        done = proposals = 0
        # infeasible proposals cost no simulation; the proposal cap keeps a start whose moves
        # are nearly all infeasible from spinning
        while done < per_start and search.evaluated < settings.candidates and proposals < 50 * per_start:
            if time.perf_counter() - t0 > settings.budget_s:
                timed_out = True
                break
            proposals += 1
            deficit = np.zeros(len(ctx.llms))
            for _, _, size, mem in cur_c.meshes():
                if mem:
                    for i, (reqs, fin, last, _) in evaluator.mesh(size, mem, tuple(cur_c.shares[i] for i in mem)).items():
                        thr = fin / last if fin and last > 0 else 0.0
                        deficit[i] = max(0.0, ctx.llms[i].rate - thr)
            new = search.propose(cur_c, deficit)
            if new is None:
                continue
            done += 1
            nm = search.evaluate(new)
            if search.better(nm, cur_m):
                cur_c, cur_m = new, nm
                accepted += 1
        if search.better(cur_m, best_m):
            best_c, best_m = cur_c, cur_m
        if timed_out:
            break
    meshes, est = _to_placement(best_c, ctx)
    info = {"search": "simulated", "objective": settings.objective, "candidates_simulated": search.evaluated,
            "meshes_simulated": evaluator.simulated, "moves_accepted": accepted, "starts": len(starts),
            "start_throughput_rps": first[0], "start_attainment": first[2],
            "throughput_rps": best_m[0], "attainment": best_m[2], "goodput_rps": best_m[1],
            "wall_s": round(time.perf_counter() - t0, 3), "stopped_by_time_cap": timed_out,
            "budget_candidates": settings.candidates, "budget_s": settings.budget_s, "seed": settings.seed}
    return Placement(meshes, est, "simulated", starts[0].layouts_searched, search.objective(best_m), info)
