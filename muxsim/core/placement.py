"""Placement: which LLMs share which mesh, at which SM shares.

- :func:`muxserve_placement`: MuxServe's popularity-aware search (../shared/docs/muxserve.md §4):
  enumerate every way to split the cluster's nodes into meshes, place LLMs greedily (most
  demanding first) on the mesh with the largest score gain, keep the best layout; on clusters
  with more than :data:`EXHAUSTIVE_MAX_LAYOUTS` such layouts, the large-scale search below.
- :func:`spatial_placement`: every LLM alone on dedicated GPUs.
- :func:`explicit_placement`: a placement given in the config, checked for feasibility.

Throughput estimates (:class:`PlacementContext`) use the latency model, job overheads included,
and the workload's lengths: the reference's cycle (an LLM serving batch B completes B requests
per ``T_decode(B) x mean_output`` plus the mesh's prefill time) with what muxsim's simulation of
ADBS shows a mesh does (batch-weighted context, prefills in the small batches continuous
arrivals give, the share of time prefills hold the decodes); ``estimator: reference`` gives the
reference's own latency choices.

Deviations from the reference implementation, and why (measured in the README, "Placement"):
- the estimator's three corrections above: with the reference's choices the simulation of its
  own placements serves 0.71-0.87 x the estimate on the paper's 20 cells, with muxsim's
  0.91-0.97 x;
- mesh scores are memoised by (mesh size, set of LLMs, shares), which makes the search exact
  and fast (the reference recomputes them and takes 1-2 minutes); batches grow by a quarter
  (at least one) per step instead of one, which reaches batch 256 in 20 steps instead of 255;
- an LLM's throughput counts towards a score only up to its arrival rate, since a mesh cannot
  serve more requests than arrive;
- the score is the sum of rate x served throughput, the reference's layout score; the greedy
  gain is that sum's gain, not the gain of a mesh's rate-weighted mean;
- a share "covers" a rate when throughput >= max(1.1 x rate, rate + 0.5 req/s), as the
  reference's slack.

Large clusters (``search="large"``; ``"auto"`` picks it when the multisets of node splits
number more than :data:`EXHAUSTIVE_MAX_LAYOUTS`, i.e. beyond 6 nodes of 8 GPUs: 16 nodes have
2.0 million, 128 nodes 3.6 x 10^13). Below the threshold the exhaustive search runs unchanged.

- The greedy step sees a layout only through its mesh counts (c_1, c_2, c_4, c_8): a mesh's
  node changes no estimate, and meshes of one size are interchangeable. With power-of-two
  nodes every count vector of power-of-two meshes packs into the nodes (largest first). So the
  search runs over count vectors under the exhaustive search's filters (all GPUs in meshes, no
  more meshes than LLMs, a mesh for the largest model): with the paper's mix scaled, 117 at
  4 nodes x 8 (19 LLMs) instead of 715 layouts, 5,069 at 16 nodes (76 LLMs), 1.4 x 10^5 at
  128 (256), 8.6 x 10^6 at 512 (1,024): too many to enumerate there, hence the local search.
  Where even the largest meshes would outnumber the LLMs it uses n largest meshes' worth of
  GPUs and leaves the rest idle (the exhaustive search finds no layout there).
- :func:`greedy_assign_counts` scores a vector with the same greedy step, in time that does
  not grow with the meshes it can rule out: empty meshes are one bucket per size; an LLM
  gains at most its score alone on an empty mesh of the size (sharing only takes KV memory
  and decode time from it, and a decode's throughput rises with its batch), so the occupied
  meshes of a size are scanned only when that bound could beat the best gain found, and a
  scan stops at the first mesh that reaches it (a cold LLM, served in full at batch 1 or 2,
  stops at the first mesh with room). A mesh holds at most 4 LLMs at the default SM
  capacity (decode shares of at least 30 % in 120 %), and meshes with no SM room left drop
  out of the scans. Ties go to the smaller mesh, then an occupied one (packing cold LLMs; the
  positional greedy's first-mesh rule mostly picks an occupied one too), then the one opened
  first. Mesh scores stay memoised in the context across vectors.
- A best-improvement local search over the vectors: from the largest meshes only and from
  every node split applied to all nodes (in order of their scores), moves that trade the GPUs
  of k meshes between two sizes (k from GPUs / 64 halving to 1; at k = 1 also any two such
  trades at once), until no move improves. It stops as soon as a layout reaches the upper
  bound sum_i max_s score(s, {i}) (every LLM served as alone on its best mesh), which no
  placement exceeds under the monotonicity above.

Optimality gap, measured (``python benchmarks/bench_placement_scale.py --gap``): over alpha
in {0.7, 0.9, 1.3, 1.7, 2.1} x max rate {20, 40, 50} req/s with the paper's mix scaled (19, 24,
28, 38 LLMs on 4, 5, 6, 8 nodes against the exhaustive search; 76 LLMs on 16 nodes against
every count vector under the same greedy step), 75 cases, the large-scale search found
the best score in every case (worst gap 0 %, against 0.41 % when it started from the
single-size layouts only), and no reference exceeded the upper bound. At 1,024 and 4,096 GPUs
(256 and 1,024 LLMs, alpha 0.9) it reaches the upper bound: no placement scores more there.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from muxsim.catalog import KV_BLOCK_TOKENS, PROFILE_LENGTHS, GPUSpec, ModelSpec
from muxsim.core.memory import kv_blocks_per_gpu

__all__ = [
    "PlacementError",
    "LLMDemand",
    "MeshPlan",
    "MeshEstimate",
    "Placement",
    "PlacementContext",
    "node_splits",
    "default_prefill_pct",
    "muxserve_placement",
    "muxserve_placements",
    "layout_count",
    "layout_search",
    "greedy_assign",
    "greedy_assign_counts",
    "EXHAUSTIVE_MAX_LAYOUTS",
    "spatial_placement",
    "explicit_placement",
    "check_fits_somewhere",
]

#: Decode SM shares (%) the search tries (MuxServe reference: 30..90 step 10).
DECODE_SHARES = (30, 40, 50, 60, 70, 80, 90)

#: Most node-split multisets (:func:`layout_count`) the exhaustive search enumerates; above it
#: ``search="auto"`` runs the large-scale search. 5,005 = 6 nodes of 8 GPUs (3-5 s on one core
#: with 28 LLMs; 7 nodes would be 11,440 layouts, 8 nodes 24,310 and 7-23 s).
EXHAUSTIVE_MAX_LAYOUTS = 5005

#: Layout searches :func:`muxserve_placements` offers (``auto``: by :data:`EXHAUSTIVE_MAX_LAYOUTS`).
SEARCHES = ("auto", "exhaustive", "large")

#: Tolerance of score comparisons (score units, req^2/s^2): gains closer than this are ties.
_TIE = 1e-12


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
        method: ``"analytic"`` (MuxServe's search), ``"simulated"`` (the simulation-guided
            search), ``"spatial"`` or ``"explicit"``.
        layouts_searched: layouts evaluated (analytic search: multisets of node splits, or mesh
            count vectors for the large-scale search, whose ``search`` then holds
            ``layout_search: "large"``, the chosen ``mesh_counts`` and the ``upper_bound``).
        score: the search's score of it: the estimator's sum of rate x served throughput
            (analytic), or the simulated objective (simulated).
        search: what the search did, for the run's records (candidates simulated, moves
            accepted, the starting point's score, wall time, ...).
    """

    meshes: list[MeshPlan]
    est_throughput: dict[str, float] = field(default_factory=dict)
    method: str = "analytic"
    layouts_searched: int = 0
    score: float = float("nan")
    search: dict = field(default_factory=dict)

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


class MeshEstimate(NamedTuple):
    """The estimator's view of one mesh: its ``score`` (sum of rate x served), per member (in
    sorted LLM order) the throughput it ``served`` (req/s, capped at the rate), its uncapped
    ``capacity`` (req/s) and the decode ``batches`` behind them."""

    score: float
    served: tuple[float, ...]
    capacity: tuple[float, ...]
    batches: tuple[int, ...]


#: Estimators :class:`PlacementContext` offers (see its docstring).
ESTIMATORS = ("muxsim", "reference")


class PlacementContext:
    """Everything the estimates need: LLMs, GPU kind, latency model and workload lengths.

    Two estimators of an LLM's throughput on a mesh (req/s) at decode batch B:

    - ``reference`` -- the reference placement estimator (../shared/docs/muxserve.md §4 items
      2-3, 7): B / (T_decode(B) x mean_output + sum over the mesh's LLMs j of T_prefill(B_j)),
      T_decode(B) the mean decode latency over profiled context lengths up to the mean output
      length, T_prefill(B) the prefill of B prompts at the first profiled length above the mean
      prompt (the job-overhead model is part of both latencies).
    - ``muxsim`` (default) -- the same cycle, with what muxsim's own simulation of ADBS shows
      a mesh does (measured with benchmarks/estimate_vs_sim.py; README "Placement estimator"):
      (a) a running sequence holds ``ctx_tokens`` KV tokens on average (the batch-weighted
      context E[o (p + o/2)] / E[o] of the workload's lengths; long requests stay in the batch
      longer), (b) prefills run in the small batches continuous arrivals give under prefill
      priority (k = 1 + rate x T_prefill(k) prompts, the arrivals during one prefill), and (c)
      LLM i decodes a fraction 1 - f_i of the time, f_i = sum_j served_j x p_j over the LLMs j
      whose prefill cannot run beside every decode of the mesh (SM units), p_j the prefill time
      per request: throughput_i = (1 - f_i) x B_i / (T_decode,i(B_i) x mean_output).

    Args:
        llms: the LLMs in popularity order.
        gpu: GPU kind of the cluster.
        latency: object with ``curve(model, n_gpus, gpu) -> LatencyCurve`` (job overheads
            included, :class:`muxsim.perf.overhead.OverheadLatency`).
        mean_prompt, mean_output: workload mean lengths (tokens); reference 161 / 337.
        activation_reserve_gib, context_reserve_gib: memory reserves (see core.memory).
        max_batch: cap on a batch in the estimates (vLLM's max_num_seqs, 256).
        sm_capacity_pct: the decode shares of a mesh may sum to this (reference: 120 %).
        kv_fraction: KV cache per GPU as a fraction of its memory (the spatial baseline's
            setting, :func:`muxsim.core.memory.kv_blocks_per_gpu`); None: what is left.
        estimator: ``"muxsim"`` or ``"reference"`` (above).
        ctx_tokens: mean KV tokens of a running sequence (tokens); None: mean_prompt +
            mean_output / 2.
        sm_units: SM units of a mesh (reference 10; its capacity is ``sm_capacity_pct`` of them).
        max_prefill_tokens: prompt tokens of one prefill job at most (reference 2048).

    Raises:
        ValueError: unknown ``estimator``.
    """

    def __init__(self, llms: Sequence[LLMDemand], gpu: GPUSpec, latency, mean_prompt: float,
                 mean_output: float, activation_reserve_gib: float = 6.0,
                 context_reserve_gib: float = 0.8, max_batch: int = 256,
                 sm_capacity_pct: float = 120.0, kv_fraction: float | None = None,
                 estimator: str = "muxsim", ctx_tokens: float | None = None, sm_units: int = 10,
                 max_prefill_tokens: int = 2048):
        if estimator not in ESTIMATORS:
            raise ValueError(f"placement estimator must be one of {', '.join(ESTIMATORS)}; got {estimator!r}")
        self.llms = list(llms)
        self.gpu = gpu
        self.latency = latency
        self.mean_prompt = float(mean_prompt)
        self.mean_output = float(mean_output)
        self.reserves = (activation_reserve_gib, context_reserve_gib)
        self.max_batch = max_batch
        self.sm_capacity_pct = sm_capacity_pct
        self.kv_fraction = kv_fraction
        self.estimator = estimator
        self.ctx_tokens = float(ctx_tokens) if ctx_tokens is not None else self.mean_prompt + self.mean_output / 2
        self.sm_units = sm_units
        self._unit_pct = 100.0 / sm_units
        self._capacity_units = int(round(sm_capacity_pct / self._unit_pct))
        self.max_prefill_tokens = max_prefill_tokens
        seq_tokens = mean_prompt + mean_output
        self._seq_steps = max(1, -(-int(round(seq_tokens)) // KV_BLOCK_TOKENS))
        out_lengths = [n for n in PROFILE_LENGTHS if n <= self.mean_output] or [PROFILE_LENGTHS[0]]
        self._ref_decode_lengths = tuple(out_lengths)
        self._ref_prefill_length = next((n for n in PROFILE_LENGTHS if n > self.mean_prompt), PROFILE_LENGTHS[-1])
        self._curves: dict = {}
        self._share: dict = {}
        self._p_req: dict = {}
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

    def decode_time(self, i: int, m: int, batch: int, decode_pct: float) -> float:
        """Seconds of one decode iteration of ``batch`` sequences of LLM ``i`` on an ``m``-GPU
        mesh at ``decode_pct`` % SMs, as the estimator sees it."""
        c = self.curve(i, m)
        if self.estimator == "reference":
            lengths = self._ref_decode_lengths
            return sum(c.decode_s(batch, batch * n, decode_pct) for n in lengths) / len(lengths)
        return c.decode_s(batch, int(batch * self.ctx_tokens), decode_pct)

    def prefill_time(self, i: int, m: int, batch: int) -> float:
        """Seconds to prefill ``batch`` prompts of LLM ``i`` in one job at its prefill share
        (mean-length prompts; the reference: prompts of the first profiled length above it)."""
        length = self._ref_prefill_length if self.estimator == "reference" else self.mean_prompt
        tokens = int(batch * length)
        return self.curve(i, m).prefill_s(max(tokens, 1), batch, default_prefill_pct(self.llms[i].model))

    def prefill_per_request(self, i: int, m: int) -> float:
        """Prefill seconds per request of LLM ``i`` on an ``m``-GPU mesh when prompts arrive at
        its rate and each prefill job takes what arrived during the previous one (muxsim's
        estimator, (b) of the class docstring): T_prefill(k) / k, k = 1 + rate x T_prefill(k)
        (at most ``max_prefill_tokens`` of prompts)."""
        key = (i, m)
        p = self._p_req.get(key)
        if p is None:
            c = self.curve(i, m)
            pct = default_prefill_pct(self.llms[i].model)
            k_max = max(1.0, self.max_prefill_tokens / max(self.mean_prompt, 1.0))
            rate = self.llms[i].rate
            k = 1.0
            for _ in range(20):
                t = c.prefill_s(max(1, int(k * self.mean_prompt)), max(1, int(round(k))), pct)
                k_new = min(k_max, 1.0 + rate * t)
                if abs(k_new - k) < 1e-3:
                    break
                k = k_new
            t = c.prefill_s(max(1, int(k * self.mean_prompt)), max(1, int(round(k))), pct)
            p = t / k
            self._p_req[key] = p
        return p

    def _units(self, pct: float) -> int:
        return int(-(-pct // self._unit_pct)) if pct > 0 else 0

    def throughputs(self, m: int, members: Sequence[int], batches: Sequence[int],
                    shares: Sequence[float]) -> list[float]:
        """Estimated throughput (req/s, uncapped) of each of ``members`` on an ``m``-GPU mesh at
        decode ``batches`` and decode ``shares`` (%), by the context's estimator."""
        out = self.mean_output
        if self.estimator == "reference":
            pf = sum(self.prefill_time(i, m, b) for i, b in zip(members, batches))
            return [b / (self.decode_time(i, m, b, s) * out + pf) for i, b, s in zip(members, batches, shares)]
        raw = [b / (self.decode_time(i, m, b, s) * out) for i, b, s in zip(members, batches, shares)]
        dec_units = sum(self._units(s) for s in shares)
        # prefills that cannot run beside every decode of the mesh hold the decodes back
        blocking = [(self.prefill_per_request(i, m), self.llms[i].rate, a) for i, a in zip(members, raw)
                    if self._units(default_prefill_pct(self.llms[i].model)) + dec_units > self._capacity_units]
        if not blocking:
            return raw
        return [_decoding_fraction(blocking) * a for a in raw]

    def decode_share(self, i: int, m: int) -> float:
        """Decode SM share (%) of LLM ``i`` on an ``m``-GPU mesh: the first of 30..90 % whose
        estimated throughput, alone on the mesh at the batch its KV memory holds, covers its
        rate with slack (max(1.1 x rate, rate + 0.5 req/s)), else the best (reference §4 item 2)."""
        key = (i, m)
        if key in self._share:
            return self._share[key]
        llm = self.llms[i]
        blocks = self.kv_blocks([i], m)
        batch = min(self.max_batch, blocks // self.seq_blocks(i, m)) if blocks > 0 else 0
        need = max(1.1 * llm.rate, llm.rate + 0.5)
        best, best_thr = DECODE_SHARES[-1], -1.0
        if batch >= 1:
            for s in DECODE_SHARES:
                (thr,) = self.throughputs(m, [i], [batch], [s])
                if thr >= need:
                    best = s
                    break
                if thr > best_thr:
                    best, best_thr = s, thr
        self._share[key] = float(best)
        return float(best)

    def _score(self, m: int, members: tuple[int, ...], shares: tuple[float, ...] | None = None):
        """Score of an ``m``-GPU mesh holding ``members`` (sorted LLM indices) at decode
        ``shares`` (%, one per member; default: :meth:`decode_share`'s).

        Returns:
            a :class:`MeshEstimate` (score, per-member throughput estimates capped at their
            rates, the uncapped ones, the batches) or None when infeasible (memory, SM shares
            or minimum mesh size). Score = sum of rate x min(throughput, rate).
        """
        if not members:
            return MeshEstimate(0.0, (), (), ())
        llms = self.llms
        if any(llms[i].model.min_gpus > m for i in members):
            return None
        shares = [self.decode_share(i, m) for i in members] if shares is None else list(shares)
        if sum(shares) > self.sm_capacity_pct + 1e-9:
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
        rates = [llms[i].rate for i in members]
        best = None
        while True:
            thr = self.throughputs(m, members, batch, shares)
            score = sum(r * min(t, r) for r, t in zip(rates, thr))
            if best is None or score > best.score:
                best = MeshEstimate(score, tuple(min(t, r) for r, t in zip(rates, thr)), tuple(thr), tuple(batch))
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
        return best

    def mesh_capacity(self, m: int, members: tuple[int, ...]) -> tuple[float, ...]:
        """Estimated throughput (req/s) of each of ``members`` (sorted LLM indices) on an
        ``m``-GPU mesh at the largest batches its KV memory holds (what it can serve when
        saturated); NaN each when infeasible."""
        members = tuple(sorted(members))
        if self.score(m, members) is None:
            return tuple(float("nan") for _ in members)
        free = self.kv_blocks(members, m)
        weights = [max(self.llms[i].rate, 1e-9) * self.llms[i].model.blocks_per_step(m) for i in members]
        bmax = [min(self.max_batch, int(free * w / sum(weights)) // self.seq_blocks(i, m)) for i, w in zip(members, weights)]
        return tuple(self.throughputs(m, members, bmax, [self.decode_share(i, m) for i in members]))


def _decoding_fraction(blocking) -> float:
    """The fraction x of time a mesh decodes when prefills of the ``blocking`` LLMs, given as
    (prefill s per request, rate, decode-only throughput at x = 1), hold its decodes: the root
    of 1 - x = sum_j p_j min(rate_j, x a_j) (the right side rises in x, concave and piecewise
    linear, the left falls), solved exactly segment by segment."""
    pts = sorted((r / a if a > 0 else float("inf"), p, r, a) for p, r, a in blocking)
    c = 0.0  # sum of p_j r_j over LLMs already capped at their rate
    d = sum(p * a for _, p, _, a in pts)  # slope of the uncapped ones
    lo = 0.0
    for t, p, r, a in pts:
        x = (1.0 - c) / (1.0 + d)
        if x <= t:
            return max(lo, x)
        lo = t
        c += p * r
        d -= p * a
    return max(lo, (1.0 - c) / (1.0 + d)) if c < 1.0 else lo


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


def muxserve_placement(ctx: PlacementContext, nodes: int, gpus_per_node: int, search: str = "auto") -> Placement:
    """MuxServe's placement search: over every multiset of node splits while there are at most
    :data:`EXHAUSTIVE_MAX_LAYOUTS` of them, else the large-scale search (module docstring).

    Args:
        ctx: LLMs, GPU kind, latency model and workload means.
        nodes, gpus_per_node: the cluster.
        search: ``"auto"`` (by the layout count), ``"exhaustive"`` or ``"large"`` (forced).

    Returns:
        The best layout's placement; meshes left empty are dropped.

    Raises:
        PlacementError: an LLM fits on no mesh, or no layout places every LLM.
        ValueError: unknown ``search``.
    """
    return muxserve_placements(ctx, nodes, gpus_per_node, top=1, search=search)[0]


def layout_count(nodes: int, gpus_per_node: int) -> int:
    """Multisets of node splits the exhaustive search enumerates (before its filters):
    C(splits + nodes - 1, nodes); 715 for 4 nodes of 8 GPUs, 2,042,975 for 16."""
    return math.comb(len(node_splits(gpus_per_node)) + nodes - 1, nodes)


def layout_search(nodes: int, gpus_per_node: int) -> str:
    """The search ``search="auto"`` runs on the cluster: ``"exhaustive"`` while
    :func:`layout_count` <= :data:`EXHAUSTIVE_MAX_LAYOUTS`, else ``"large"``."""
    return "exhaustive" if layout_count(nodes, gpus_per_node) <= EXHAUSTIVE_MAX_LAYOUTS else "large"


def muxserve_placements(ctx: PlacementContext, nodes: int, gpus_per_node: int, top: int = 1,
                        search: str = "auto") -> list[Placement]:
    """The ``top`` best layouts of MuxServe's placement search (best first; see
    :func:`muxserve_placement`). Layouts that place the LLMs on the same meshes count once.

    Raises:
        PlacementError: an LLM fits on no mesh, or no layout places every LLM.
        ValueError: unknown ``search``.
    """
    if search not in SEARCHES:
        raise ValueError(f"placement search must be one of {', '.join(SEARCHES)}; got {search!r}")
    n = len(ctx.llms)
    if n == 0:
        raise PlacementError("no LLMs to place")
    check_fits_somewhere(ctx, gpus_per_node)
    order = sorted(range(n), key=lambda i: (-ctx.llms[i].rate * ctx.llms[i].model.compute_weight, i))
    if search == "auto":
        search = layout_search(nodes, gpus_per_node)
    if search == "large":
        return _large_placements(ctx, nodes, gpus_per_node, top, order)
    biggest_min = max(l.model.min_gpus for l in ctx.llms)
    found = []  # (-total, order found, positions, members)
    searched = 0
    for layout in itertools.combinations_with_replacement(node_splits(gpus_per_node), nodes):
        positions = _mesh_positions(layout)
        if max(p[2] for p in positions) < biggest_min or len(positions) > n:
            continue
        searched += 1
        result = greedy_assign(ctx, order, [p[2] for p in positions])
        if result is None:
            continue
        total, members = result
        found.append((-total, searched, positions, members))
    if not found:
        raise PlacementError(
            f"no layout of {nodes} x {gpus_per_node} {ctx.gpu.name} GPUs holds all {n} LLMs "
            "within memory and SM shares")
    found.sort(key=lambda f: (round(f[0], 9), f[1]))
    out, seen = [], set()
    for neg, _, positions, members in found:
        key = frozenset((p[2], m) for p, m in zip(positions, members) if m)
        if key in seen:
            continue
        seen.add(key)
        out.append(_make_placement(ctx, positions, members, "analytic", searched, -neg))
        if len(out) == top:
            break
    return out


def greedy_assign(ctx: PlacementContext, order: Sequence[int], sizes: Sequence[int]):
    """MuxServe's greedy step (§4 item 5): LLMs in ``order`` (indices), each onto the mesh of
    ``sizes`` (GPUs) with the largest score gain (ties: the smaller mesh, then the first).

    Returns:
        (sum of the meshes' scores, per mesh the sorted LLM indices), or None when some LLM
        fits on no mesh.
    """
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


def greedy_assign_counts(ctx: PlacementContext, order: Sequence[int], counts: dict[int, int]):
    """:func:`greedy_assign` on a layout given by its mesh counts (``counts[size]`` meshes of
    ``size`` GPUs), in time that scales to thousands of meshes (module docstring, "Large
    clusters"): meshes still empty are one bucket per size, an LLM is tried on the occupied
    meshes of a size only while its score alone on an empty mesh of that size (the most the
    mesh can gain from it) could beat the best gain found, and a scan stops at the first mesh
    that gains that much.

    Ties (gains within 1e-12): the smaller mesh, then an occupied mesh before an empty one,
    then the mesh opened first. :func:`greedy_assign` breaks them by mesh position instead, so
    the two may pick different meshes of equal gain; on layouts both run the totals agree.

    Returns:
        (sum of the meshes' scores, the meshes that hold LLMs as (size, sorted LLM indices) in
        the order they were opened), or None when some LLM fits on no mesh.
    """
    sizes = sorted(s for s, c in counts.items() if c > 0)
    empty = {s: counts[s] for s in sizes}
    score = ctx.score
    cap = ctx.sm_capacity_pct + 1e-9
    size_of: list[int] = []
    members: list[tuple[int, ...]] = []
    current: list[float] = []
    shares: list[float] = []
    open_meshes: dict[int, list[int]] = {s: [] for s in sizes}  # meshes with SM room left, opening order
    for i in order:
        alone = {}
        for s in sizes:
            res = score(s, (i,))
            if res is not None:
                alone[s] = res[0]
        best_gain, best_size, best_j = None, 0, -1  # best_j -1: an empty mesh of best_size
        for s in sizes:
            if empty[s] and s in alone and (best_gain is None or alone[s] > best_gain + _TIE):
                best_gain, best_size = alone[s], s
        for s in sorted(alone, key=lambda s: (-alone[s], s)):
            bound = alone[s]
            if best_gain is not None and not (bound > best_gain + _TIE
                                              or (bound >= best_gain - _TIE and s <= best_size)):
                continue  # no mesh of this size can beat the best gain found
            share = ctx.decode_share(i, s)
            for j in open_meshes[s]:
                if shares[j] + share > cap:
                    continue
                res = score(s, tuple(sorted(members[j] + (i,))))
                if res is None:
                    continue
                gain = res[0] - current[j]
                if (best_gain is None or gain > best_gain + _TIE
                        or (gain >= best_gain - _TIE and (s < best_size or (s == best_size and best_j < 0)))):
                    best_gain, best_size, best_j = gain, s, j
                if gain >= bound - _TIE:
                    break  # the most this size gives; later meshes could only tie
        if best_gain is None:
            return None
        s = best_size
        if best_j < 0:
            empty[s] -= 1
            best_j = len(size_of)
            size_of.append(s)
            members.append((i,))
            current.append(alone[s])
            shares.append(ctx.decode_share(i, s))
            open_meshes[s].append(best_j)
        else:
            members[best_j] = tuple(sorted(members[best_j] + (i,)))
            current[best_j] = score(s, members[best_j])[0]
            shares[best_j] += ctx.decode_share(i, s)
        if shares[best_j] + DECODE_SHARES[0] > cap:
            open_meshes[s].remove(best_j)  # no LLM's decode share fits beside these any more
    return sum(current), list(zip(size_of, members))


def _count_positions(counts: dict[int, int], nodes: int, gpus_per_node: int):
    """(node, first GPU, size) of ``counts[size]`` meshes of each size, packed node by node
    largest first, or None when they do not fit in the nodes. For a power-of-two
    ``gpus_per_node`` every set of power-of-two meshes of at most the cluster's GPUs fits."""
    left = {s: c for s, c in counts.items() if c > 0}
    big_first = sorted(left, reverse=True)
    out = []
    for node in range(nodes):
        if not any(left.values()):
            break
        g = 0
        for s in big_first:
            while left[s] and g + s <= gpus_per_node:
                out.append((node, g, s))
                g += s
                left[s] -= 1
    return None if any(left.values()) else out


def _large_placements(ctx: PlacementContext, nodes: int, gpus_per_node: int, top: int,
                      order: Sequence[int]) -> list[Placement]:
    """The large-scale search (module docstring, "Large clusters"): a local search over mesh
    counts, each count vector scored by :func:`greedy_assign_counts`."""
    t0 = time.perf_counter()
    n = len(ctx.llms)
    sizes = [s for s in (1, 2, 4, 8, 16) if s <= gpus_per_node]
    # every GPU in some mesh, as in the exhaustive search, unless even the largest meshes would
    # outnumber the LLMs: then as many GPUs as n largest meshes hold, the other nodes idle
    total = min(nodes * gpus_per_node, n * sizes[-1])
    biggest_min = max(l.model.min_gpus for l in ctx.llms)
    power_of_two = gpus_per_node & (gpus_per_node - 1) == 0

    def feasible(v: tuple[int, ...]) -> bool:
        # the exhaustive search's filters: no more meshes than LLMs, a mesh for the largest model
        if min(v) < 0 or sum(v) > n or sum(s * c for s, c in zip(sizes, v)) != total:
            return False
        if not any(c for s, c in zip(sizes, v) if s >= biggest_min):
            return False
        return power_of_two or _count_positions(dict(zip(sizes, v)), nodes, gpus_per_node) is not None

    evaluated: dict[tuple[int, ...], tuple] = {}  # count vector -> (score or -inf, meshes)

    def value(v: tuple[int, ...]) -> float:
        if v not in evaluated:
            res = greedy_assign_counts(ctx, order, dict(zip(sizes, v)))
            evaluated[v] = (float("-inf"), []) if res is None else res
        return evaluated[v][0]

    # every LLM alone on its best mesh: no placement scores more while a decode's throughput
    # rises with its batch (sharing a mesh only takes KV memory and decode time away)
    bound = 0.0
    for i in range(n):
        alone = [r[0] for r in (ctx.score(s, (i,)) for s in sizes) if r is not None]
        bound += max(alone, default=0.0)
    reached = bound - 1e-9 * max(1.0, bound)

    moves = []  # trade the GPUs of one mesh of the larger size between two sizes
    for a in range(len(sizes)):
        for b in range(len(sizes)):
            if a != b:
                unit = max(sizes[a], sizes[b])
                d = [0] * len(sizes)
                d[a] -= unit // sizes[a]
                d[b] += unit // sizes[b]
                moves.append(tuple(d))
    zero = (0,) * len(sizes)
    pairs = sorted({tuple(x + y for x, y in zip(m1, m2)) for m1 in moves for m2 in moves} - {zero} - set(moves))

    def best_neighbour(v, k, deltas, cur):
        best_w, best_val = None, cur
        for d in deltas:
            w = tuple(c + k * x for c, x in zip(v, d))
            if not feasible(w):
                continue
            val = value(w)
            if val > best_val + 1e-9 * max(1.0, abs(best_val)) or (
                    best_w is not None and abs(val - best_val) <= 1e-9 * max(1.0, abs(best_val)) and w > best_w):
                best_w, best_val = w, val
            if val >= reached:
                break
        return best_w, best_val

    # starts: the largest meshes only, then every node split the same way (always packable)
    starts = [tuple(total // sizes[-1] if k == len(sizes) - 1 else 0 for k in range(len(sizes)))]
    for split in node_splits(gpus_per_node):
        starts.append(tuple(nodes * split.count(size) for size in sizes))
    starts = [v for k, v in enumerate(starts) if v not in starts[:k] and feasible(v)]
    # the most promising first: a start that climbs to the upper bound ends the search
    starts.sort(key=lambda v: -value(v))
    step0 = max(1, total // 64)
    best = float("-inf")
    for v in starts:
        cur, k = value(v), step0
        while cur < reached:
            w, val = best_neighbour(v, k, moves, cur)
            if w is None and k == 1:
                w, val = best_neighbour(v, 1, pairs, cur)
            if w is not None:
                v, cur = w, val
            elif k > 1:
                k //= 2
            else:
                break
        best = max(best, cur)
        if best >= reached:
            break
    found = [(res[0], idx, v, res[1]) for idx, (v, res) in enumerate(evaluated.items()) if res[0] > float("-inf")]
    if not found:
        raise PlacementError(
            f"no layout of {nodes} x {gpus_per_node} {ctx.gpu.name} GPUs the large-scale search tried holds "
            f"all {n} LLMs within memory and SM shares")
    found.sort(key=lambda f: (round(-f[0], 9), f[1]))
    wall = time.perf_counter() - t0
    out, seen = [], set()
    for sc, _, v, meshes in found:
        key = frozenset(meshes)
        if key in seen:
            continue
        seen.add(key)
        counts = dict(zip(sizes, v))
        positions = _count_positions(counts, nodes, gpus_per_node)
        by_size: dict[int, list[tuple[int, ...]]] = {}
        for size, mem in meshes:
            by_size.setdefault(size, []).append(mem)
        members = []
        for _, _, size in positions:
            queue = by_size.get(size)
            members.append(queue.pop(0) if queue else ())
        p = _make_placement(ctx, positions, members, "analytic", len(evaluated), sc)
        p.search = {"layout_search": "large", "mesh_counts": {str(s): c for s, c in counts.items()},
                    "upper_bound": round(bound, 6), "wall_s": wall}
        out.append(p)
        if len(out) == top:
            break
    return out


def _make_placement(ctx: PlacementContext, positions, members, method: str, searched: int = 0,
                    score: float = float("nan")) -> Placement:
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
    return Placement(meshes, est, method, searched, score)


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
