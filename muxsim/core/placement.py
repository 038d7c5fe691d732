"""Placement: which LLMs share which mesh, at which SM shares.

- :func:`muxserve_placement`: MuxServe's popularity-aware search (../shared/docs/muxserve.md §4):
  enumerate every way to split the cluster's nodes into meshes, place LLMs greedily (most
  demanding first) on the mesh with the largest score gain, keep the best layout.
- :func:`spatial_placement`: every LLM alone on dedicated GPUs.
- :func:`explicit_placement`: a placement given in the config, checked for feasibility.

Throughput estimates use the latency model with the workload's mean prompt and output
lengths: an LLM serving batch B completes B requests every
``T_decode(B) x mean_output + sum of the mesh's T_prefill(B_j)`` seconds.

Deviations from the reference implementation, and why:
- mesh scores are memoised by (mesh size, set of LLMs), which makes the search exact and fast
  (the reference recomputes them and takes 1-2 minutes);
- an LLM's throughput counts towards a score only up to its arrival rate, since a mesh cannot
  serve more requests than arrive;
- a share "covers" a rate when throughput >= max(1.1 x rate, rate + 0.5 req/s).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from muxsim.catalog import KV_BLOCK_TOKENS, GPUSpec, ModelSpec
from muxsim.core.memory import kv_blocks_per_gpu

__all__ = [
    "PlacementError",
    "LLMDemand",
    "MeshPlan",
    "Placement",
    "PlacementContext",
    "node_splits",
    "default_prefill_pct",
    "muxserve_placement",
    "spatial_placement",
    "explicit_placement",
    "check_fits_somewhere",
]

#: Decode SM shares (%) the search tries (MuxServe reference: 30..90 step 10).
DECODE_SHARES = (30, 40, 50, 60, 70, 80, 90)


class PlacementError(ValueError):
    """No feasible placement; the one-line message says which LLM or constraint failed."""


@dataclass(frozen=True)
class LLMDemand:
    """One LLM to place: its name, architecture and arrival rate (req/s)."""

    name: str
    model: ModelSpec
    rate: float


@dataclass(frozen=True)
class MeshPlan:
    """One mesh: ``gpus`` GPUs of node ``node`` starting at local GPU ``first_gpu``, its LLMs and
    their SM shares in percent, ``sm[name] = (prefill %, decode %)``."""

    node: int
    first_gpu: int
    gpus: int
    llms: tuple[str, ...]
    sm: dict[str, tuple[float, float]]


@dataclass
class Placement:
    """A placement: meshes, per-LLM estimated throughput (req/s) and how it was made.

    Attributes:
        meshes: the meshes with at least one LLM.
        est_throughput: per LLM name, the estimate the search used (req/s), capped at its rate.
        method: ``"search"``, ``"spatial"`` or ``"explicit"``.
        layouts_searched: layouts evaluated (search only).
    """

    meshes: list[MeshPlan]
    est_throughput: dict[str, float] = field(default_factory=dict)
    method: str = "search"
    layouts_searched: int = 0

    @property
    def total_est_throughput(self) -> float:
        """Sum of the per-LLM estimates (req/s)."""
        return sum(self.est_throughput.values())

    def to_dict(self) -> list[dict]:
        """Plain-data form, as accepted in a config's ``placement`` key."""
        return [
            {"node": m.node, "gpus": m.gpus, "llms": list(m.llms),
             "sm": {k: [float(v[0]), float(v[1])] for k, v in m.sm.items()}}
            for m in self.meshes
        ]


def default_prefill_pct(model: ModelSpec) -> float:
    """Prefill SM share (%): 80 for 7B-class, 90 for 13B-class, 100 for larger (MuxServe ref)."""
    return {1: 80.0, 2: 90.0}.get(model.compute_weight, 100.0)


def node_splits(gpus_per_node: int) -> list[tuple[int, ...]]:
    """Ways to split one node into meshes of power-of-two sizes, each sorted descending.

    For 8 GPUs: the 10 splits [8], [4,4], [4,2,2], ..., [1]*8.
    """
    sizes = [s for s in (1, 2, 4, 8, 16) if s <= gpus_per_node]
    out: list[tuple[int, ...]] = []

    def rec(left: int, max_part: int, acc: list[int]):
        if left == 0:
            out.append(tuple(acc))
            return
        for s in reversed(sizes):
            if s <= min(left, max_part):
                rec(left - s, s, acc + [s])

    rec(gpus_per_node, gpus_per_node, [])
    return out


class PlacementContext:
    """Everything the estimates need: LLMs, GPU kind, latency model and workload means.

    Args:
        llms: the LLMs in popularity order.
        gpu: GPU kind of the cluster.
        latency: object with ``curve(model, n_gpus, gpu) -> LatencyCurve``.
        mean_prompt, mean_output: workload mean lengths (tokens); reference 161 / 337.
        activation_reserve_gib, context_reserve_gib: memory reserves (see core.memory).
        max_batch: cap on a batch in the estimates (vLLM's max_num_seqs, 256).
        sm_capacity_pct: the decode shares of a mesh may sum to this (reference: 120 %).
        kv_fraction: KV cache per GPU as a fraction of its memory (the spatial baseline's
            setting, :func:`muxsim.core.memory.kv_blocks_per_gpu`); None: what is left.
    """

    def __init__(self, llms: Sequence[LLMDemand], gpu: GPUSpec, latency, mean_prompt: float,
                 mean_output: float, activation_reserve_gib: float = 6.0,
                 context_reserve_gib: float = 0.8, max_batch: int = 256,
                 sm_capacity_pct: float = 120.0, kv_fraction: float | None = None):
        self.llms = list(llms)
        self.gpu = gpu
        self.latency = latency
        self.mean_prompt = float(mean_prompt)
        self.mean_output = float(mean_output)
        self.reserves = (activation_reserve_gib, context_reserve_gib)
        self.max_batch = max_batch
        self.sm_capacity_pct = sm_capacity_pct
        self.kv_fraction = kv_fraction
        seq_tokens = mean_prompt + mean_output
        self._seq_steps = max(1, -(-int(round(seq_tokens)) // KV_BLOCK_TOKENS))
        self._curves: dict = {}
        self._share: dict = {}
        self.score = lru_cache(maxsize=None)(self._score)

    def curve(self, i: int, m: int):
        """Latency curve of LLM ``i`` on an ``m``-GPU mesh."""
        key = (self.llms[i].model.name, m)
        c = self._curves.get(key)
        if c is None:
            c = self.latency.curve(self.llms[i].model, m, self.gpu)
            self._curves[key] = c
        return c

    def seq_blocks(self, i: int, m: int) -> int:
        """KV blocks per GPU a mean-length sequence of LLM ``i`` holds on an ``m``-GPU mesh."""
        return self._seq_steps * self.llms[i].model.blocks_per_step(m)

    def kv_blocks(self, members: Sequence[int], m: int) -> int:
        """KV blocks per GPU left on an ``m``-GPU mesh holding ``members`` (may be negative)."""
        return kv_blocks_per_gpu([self.llms[i].model for i in members], m, self.gpu, *self.reserves,
                                 self.kv_fraction)

    def throughput(self, i: int, m: int, batch: int, decode_pct: float, prefill_time_s: float) -> float:
        """Estimated req/s of LLM ``i`` at ``batch`` when a cycle also spends ``prefill_time_s``
        on prefills."""
        c = self.curve(i, m)
        ctx = batch * (self.mean_prompt + self.mean_output / 2)
        cycle = c.decode_s(batch, int(ctx), decode_pct) * self.mean_output + prefill_time_s
        return batch / cycle

    def prefill_time(self, i: int, m: int, batch: int) -> float:
        """Seconds to prefill ``batch`` mean-length prompts of LLM ``i`` at its prefill share."""
        tokens = int(batch * self.mean_prompt)
        return self.curve(i, m).prefill_s(max(tokens, 1), batch, default_prefill_pct(self.llms[i].model))

    def decode_share(self, i: int, m: int) -> float:
        """Decode SM share (%) of LLM ``i`` on an ``m``-GPU mesh: the first of 30..90 % whose
        estimated throughput covers its rate, else the best."""
        key = (i, m)
        if key in self._share:
            return self._share[key]
        llm = self.llms[i]
        blocks = self.kv_blocks([i], m)
        batch = min(self.max_batch, blocks // self.seq_blocks(i, m)) if blocks > 0 else 0
        need = max(1.1 * llm.rate, llm.rate + 0.5)
        best, best_thr = DECODE_SHARES[-1], -1.0
        if batch >= 1:
            pf = self.prefill_time(i, m, batch)
            for s in DECODE_SHARES:
                thr = self.throughput(i, m, batch, s, pf)
                if thr >= need:
                    best = s
                    break
                if thr > best_thr:
                    best, best_thr = s, thr
        self._share[key] = float(best)
        return float(best)

    def _score(self, m: int, members: tuple[int, ...]):
        """Score of an ``m``-GPU mesh holding ``members`` (sorted LLM indices).

        Returns:
            (score, per-member throughput estimates) or None when infeasible (memory, SM
            shares or minimum mesh size). Score = sum of rate x min(throughput, rate).
        """
        if not members:
            return 0.0, ()
        llms = self.llms
        if any(llms[i].model.min_gpus > m for i in members):
            return None
        if sum(self.decode_share(i, m) for i in members) > self.sm_capacity_pct + 1e-9:
            return None
        free = self.kv_blocks(members, m)
        if free <= 0:
            return None
        weights = [max(llms[i].rate, 1e-9) * llms[i].model.blocks_per_step(m) for i in members]
        wsum = sum(weights)
        bmax = []
        for i, w in zip(members, weights):
            b = min(self.max_batch, int(free * w / wsum) // self.seq_blocks(i, m))
            if b < 1:
                return None
            bmax.append(b)
        k = len(members)
        batch = [1] * k
        pf = [self.prefill_time(i, m, 1) for i in members]
        shares = [self.decode_share(i, m) for i in members]
        rates = [llms[i].rate for i in members]
        best_score, best_thr = -1.0, ()
        while True:
            pf_sum = sum(pf)
            thr = [self.throughput(i, m, batch[j], shares[j], pf_sum) for j, i in enumerate(members)]
            score = sum(r * min(t, r) for r, t in zip(rates, thr))
            if score > best_score:
                best_score, best_thr = score, tuple(min(t, r) for r, t in zip(rates, thr))
            # grow the batch of the LLM furthest below its rate
            grow, deficit = -1, 0.0
            for j in range(k):
                d = rates[j] - thr[j]
                if d > deficit and batch[j] < bmax[j]:
                    grow, deficit = j, d
            if grow < 0:
                break
            b = batch[grow]
            batch[grow] = min(bmax[grow], b + max(1, b // 4))
            pf[grow] = self.prefill_time(members[grow], m, batch[grow])
        return best_score, best_thr


def _mesh_positions(layout: Sequence[tuple[int, ...]]) -> list[tuple[int, int, int]]:
    """(node, first GPU, size) of every mesh of a layout (one split per node)."""
    out = []
    for node, split in enumerate(layout):
        g = 0
        for size in split:
            out.append((node, g, size))
            g += size
    return out


def check_fits_somewhere(ctx: PlacementContext, gpus_per_node: int) -> None:
    """Raise :class:`PlacementError` naming the first LLM that fits on no mesh of a node."""
    for i, llm in enumerate(ctx.llms):
        if llm.model.min_gpus > gpus_per_node:
            raise PlacementError(
                f"{llm.name} ({llm.model.name}) fits on no mesh: it needs >= {llm.model.min_gpus} "
                f"GPUs in one node, nodes have {gpus_per_node}")
        m = gpus_per_node
        if ctx.kv_blocks([i], m) < ctx.seq_blocks(i, m):
            raise PlacementError(
                f"{llm.name} ({llm.model.name}) fits on no mesh: its weights and reserves leave no "
                f"KV cache for one sequence even on {m} {ctx.gpu.name} GPUs")


def muxserve_placement(ctx: PlacementContext, nodes: int, gpus_per_node: int) -> Placement:
    """MuxServe's placement search over every multiset of node splits.

    Args:
        ctx: LLMs, GPU kind, latency model and workload means.
        nodes, gpus_per_node: the cluster.

    Returns:
        The best layout's placement; meshes left empty are dropped.

    Raises:
        PlacementError: an LLM fits on no mesh, or no layout places every LLM.
    """
    n = len(ctx.llms)
    if n == 0:
        raise PlacementError("no LLMs to place")
    check_fits_somewhere(ctx, gpus_per_node)
    order = sorted(range(n), key=lambda i: (-ctx.llms[i].rate * ctx.llms[i].model.compute_weight, i))
    biggest_min = max(l.model.min_gpus for l in ctx.llms)
    best = None
    searched = 0
    for layout in itertools.combinations_with_replacement(node_splits(gpus_per_node), nodes):
        positions = _mesh_positions(layout)
        if max(p[2] for p in positions) < biggest_min or len(positions) > n:
            continue
        searched += 1
        result = _greedy(ctx, order, [p[2] for p in positions])
        if result is None:
            continue
        total, members = result
        if best is None or total > best[0] + 1e-12:
            best = (total, positions, members)
    if best is None:
        raise PlacementError(
            f"no layout of {nodes} x {gpus_per_node} {ctx.gpu.name} GPUs holds all {n} LLMs "
            "within memory and SM shares")
    _, positions, members = best
    return _make_placement(ctx, positions, members, "search", searched)


def _greedy(ctx: PlacementContext, order: Sequence[int], sizes: Sequence[int]):
    members: list[tuple[int, ...]] = [() for _ in sizes]
    score = ctx.score
    current = [0.0] * len(sizes)
    for i in order:
        best_gain, best_j = None, -1
        seen: set = set()
        for j, m in enumerate(sizes):
            key = (m, members[j])
            if key in seen:
                continue  # an identical mesh gives the same gain; the first one wins ties
            seen.add(key)
            cand = tuple(sorted(members[j] + (i,)))
            res = score(m, cand)
            if res is None:
                continue
            gain = res[0] - current[j]
            if (best_gain is None or gain > best_gain + 1e-12
                    or (abs(gain - best_gain) <= 1e-12 and m < sizes[best_j])):
                best_gain, best_j = gain, j
        if best_j < 0:
            return None
        members[best_j] = tuple(sorted(members[best_j] + (i,)))
        current[best_j] = score(sizes[best_j], members[best_j])[0]
    return sum(current), members


def _make_placement(ctx: PlacementContext, positions, members, method: str, searched: int = 0) -> Placement:
    meshes = []
    est = {}
    for (node, first, size), mem in zip(positions, members):
        if not mem:
            continue
        res = ctx.score(size, tuple(sorted(mem)))
        sm = {}
        for k, i in enumerate(sorted(mem)):
            llm = ctx.llms[i]
            sm[llm.name] = (default_prefill_pct(llm.model), ctx.decode_share(i, size))
            est[llm.name] = res[1][k] if res is not None else float("nan")
        meshes.append(MeshPlan(node, first, size, tuple(ctx.llms[i].name for i in sorted(mem)), sm))
    est = {l.name: est[l.name] for l in ctx.llms if l.name in est}
    return Placement(meshes, est, method, searched)


def _pack(sizes: Sequence[int], nodes: int, gpus_per_node: int):
    """First-fit-decreasing of mesh sizes into nodes; list of (node, first GPU) or None."""
    free = [gpus_per_node] * nodes
    out = [None] * len(sizes)
    for k in sorted(range(len(sizes)), key=lambda k: (-sizes[k], k)):
        for node in range(nodes):
            if free[node] >= sizes[k]:
                out[k] = (node, gpus_per_node - free[node])
                free[node] -= sizes[k]
                break
        else:
            return None
    return out


def spatial_placement(ctx: PlacementContext, nodes: int, gpus_per_node: int) -> Placement:
    """Every LLM alone on its own GPUs (spatial partitioning).

    Each LLM starts on its smallest mesh; spare GPUs then double the meshes of the largest
    models first (the paper's 32-GPU setup: 1 GPU per 7B and 13B, 4 per 30B, 8 for 65B).

    Raises:
        PlacementError: the cluster has fewer GPUs than the LLMs' smallest meshes need.
    """
    n = len(ctx.llms)
    if n == 0:
        raise PlacementError("no LLMs to place")
    check_fits_somewhere(ctx, gpus_per_node)
    sizes = [l.model.min_gpus for l in ctx.llms]
    packed = _pack(sizes, nodes, gpus_per_node)
    if packed is None:
        raise PlacementError(
            f"spatial partitioning needs {sum(sizes)} GPUs in meshes of {sorted(sizes, reverse=True)}; "
            f"the cluster has {nodes} x {gpus_per_node}")
    grown = True
    while grown:
        grown = False
        for i in sorted(range(n), key=lambda i: (-ctx.llms[i].model.compute_weight, -ctx.llms[i].rate, i)):
            if sizes[i] * 2 > gpus_per_node:
                continue
            trial = sizes.copy()
            trial[i] *= 2
            p = _pack(trial, nodes, gpus_per_node)
            if p is not None:
                sizes, packed, grown = trial, p, True
                break
    meshes = []
    est = {}
    for i, ((node, first), size) in enumerate(zip(packed, sizes)):
        llm = ctx.llms[i]
        meshes.append(MeshPlan(node, first, size, (llm.name,), {llm.name: (100.0, 100.0)}))
        res = ctx.score(size, (i,))
        est[llm.name] = res[1][0] if res is not None else float("nan")
    order = sorted(range(n), key=lambda i: (meshes[i].node, meshes[i].first_gpu))
    return Placement([meshes[i] for i in order], est, "spatial")


def explicit_placement(ctx: PlacementContext, meshes_cfg, nodes: int, gpus_per_node: int) -> Placement:
    """Check and complete a placement given in the config.

    Args:
        meshes_cfg: sequence of objects with ``node``, ``gpus``, ``llms`` and optional ``sm``
            (``{name: (prefill %, decode %)}``); missing shares take the defaults.

    Raises:
        PlacementError: a node over-subscribed, a mesh too small or out of memory, SM shares
            outside (0, 100], or decode shares over the mesh's capacity.
    """
    names = {l.name: i for i, l in enumerate(ctx.llms)}
    used = [0] * nodes
    plans = []
    est = {}
    for k, mc in enumerate(meshes_cfg):
        if mc.gpus not in (1, 2, 4, 8, 16) or mc.gpus > gpus_per_node:
            raise PlacementError(f"placement mesh {k}: gpus must be a power of two <= {gpus_per_node}, got {mc.gpus}")
        first = used[mc.node]
        used[mc.node] += mc.gpus
        if used[mc.node] > gpus_per_node:
            raise PlacementError(f"placement: node {mc.node} is given {used[mc.node]} GPUs, it has {gpus_per_node}")
        idx = tuple(sorted(names[n] for n in mc.llms))
        for i in idx:
            if ctx.llms[i].model.min_gpus > mc.gpus:
                raise PlacementError(
                    f"placement mesh {k}: {ctx.llms[i].name} ({ctx.llms[i].model.name}) needs >= "
                    f"{ctx.llms[i].model.min_gpus} GPUs, the mesh has {mc.gpus}")
        if ctx.kv_blocks(idx, mc.gpus) < max(ctx.seq_blocks(i, mc.gpus) for i in idx):
            raise PlacementError(f"placement mesh {k}: {list(mc.llms)} do not fit in the memory of {mc.gpus} GPU(s)")
        sm = {}
        for i in idx:
            name = ctx.llms[i].name
            given = (mc.sm or {}).get(name)
            pf, dec = given if given is not None else (default_prefill_pct(ctx.llms[i].model), ctx.decode_share(i, mc.gpus))
            if not (0 < pf <= 100 and 0 < dec <= 100):
                raise PlacementError(f"placement mesh {k}: SM shares of {name} must be in (0, 100] %, got {[pf, dec]}")
            sm[name] = (float(pf), float(dec))
        if sum(v[1] for v in sm.values()) > ctx.sm_capacity_pct + 1e-9:
            raise PlacementError(
                f"placement mesh {k}: decode SM shares sum to {sum(v[1] for v in sm.values()):g} %, "
                f"above the mesh's {ctx.sm_capacity_pct:g} %")
        res = ctx.score(mc.gpus, idx)
        for j, i in enumerate(idx):
            est[ctx.llms[i].name] = res[1][j] if res is not None else float("nan")
        plans.append(MeshPlan(mc.node, first, mc.gpus, tuple(ctx.llms[i].name for i in idx), sm))
    return Placement(plans, est, "explicit")
