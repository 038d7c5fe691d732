"""Engine-agnostic per-mesh schedulers.

A scheduler owns one mesh's LLM runtimes, KV block pool and SM units. A driver (simulated or
live) calls :meth:`MeshScheduler.add` when a request arrives, :meth:`MeshScheduler.schedule` to
learn which jobs start now, and :meth:`MeshScheduler.complete` when a job ends. Schedulers never
sleep and never read a clock: ``now`` is always passed in.

- :class:`ADBSScheduler`: MuxServe's adaptive batch scheduling (prefill priority, round robin,
  KV quotas adapted periodically, concurrent prefill and decode jobs on SM shares);
  ``adaptive=False`` gives the reference's ``roundrobin`` variant.
- :class:`VLLMScheduler`: vLLM-style continuous batching, one job at a time at 100 % SMs (the
  spatial baseline: one LLM per mesh).
- :class:`FCFSScheduler`: the reference's ``fcfs`` approach (temporal multiplexing): one prefill
  at a time for the LLM whose oldest waiting request came first, decodes in order of the oldest
  running request, no KV quotas, no MPS.
"""

from __future__ import annotations

import math

from muxsim.core.llm import LLMRuntime, Request
from muxsim.core.resources import KVBlockPool, SMUnits, units_for_share

__all__ = ["PREFILL", "DECODE", "Job", "MeshScheduler", "ADBSScheduler", "VLLMScheduler", "FCFSScheduler"]

#: Job kinds, the same strings the live engines' results and job logs carry.
PREFILL = "prefill"
DECODE = "decode"


def _oldest_first(llm: LLMRuntime) -> tuple[float, int]:
    return llm.oldest_arrival(), llm.slot


def _oldest_running_first(llm: LLMRuntime) -> tuple[float, int]:
    return llm.oldest_running_arrival(), llm.slot


class Job:
    """One prefill batch or one decode iteration of one LLM.

    Attributes:
        kind: :data:`PREFILL` (``"prefill"``) or :data:`DECODE` (``"decode"``).
        llm: the LLM runtime it belongs to.
        sm_pct: SM share (%) it runs at.
        units: SM units it holds.
        n_tokens: prefill: prompt tokens processed; decode: KV tokens read (context incl. the
            token being written).
        n_seqs: prefill: prompts in the batch; decode: batch size.
        reqs: the prefill batch (None for decode).
    """

    __slots__ = ("kind", "llm", "sm_pct", "units", "n_tokens", "n_seqs", "reqs")

    def __init__(self, kind, llm, sm_pct, units, n_tokens, n_seqs, reqs=None):
        self.kind = kind
        self.llm = llm
        self.sm_pct = sm_pct
        self.units = units
        self.n_tokens = n_tokens
        self.n_seqs = n_seqs
        self.reqs = reqs


class MeshScheduler:
    """Base class: request admission, job completion and the resources of one mesh.

    Args:
        llms: runtimes of the LLMs placed on the mesh (their ``slot`` is their position).
        kv_blocks: head-wise KV blocks per GPU in the mesh's pool.
        sm_units, sm_overload_units: SM units of the mesh and the overload allowance.
        max_prefill_tokens: prompt-token budget of one prefill batch (MuxServe/vLLM: 2048).
        max_num_seqs: cap on admitted sequences per LLM (vLLM default 256).
    """

    def __init__(self, llms: list[LLMRuntime], kv_blocks: int, sm_units: int = 10,
                 sm_overload_units: int = 2, max_prefill_tokens: int = 2048,
                 max_num_seqs: int = 256):
        if not llms:
            raise ValueError("a mesh needs at least one LLM")
        self.llms = llms
        for slot, llm in enumerate(llms):
            llm.slot = slot
        self.pool = KVBlockPool(kv_blocks, len(llms))
        self.sm = SMUnits(sm_units, sm_overload_units)
        self.max_prefill_tokens = max_prefill_tokens
        self.max_num_seqs = max_num_seqs
        self._by_index = {llm.index: llm for llm in llms}

    def add(self, req: Request) -> bool:
        """Queue an arriving request.

        Returns:
            False when the request can never run here (its full sequence needs more KV blocks
            than the pool holds); it is then not queued.
        """
        llm = self._by_index[req.llm]
        if req.total_steps() * llm.bps > self.pool.total:
            return False
        llm.waiting.append(req)
        return True

    def schedule(self, now: float) -> list[Job]:
        """Jobs to start at time ``now`` (s); their resources are held until :meth:`complete`.

        Raises:
            NotImplementedError: on the base class (each policy defines it).
        """
        raise NotImplementedError(f"{type(self).__name__} does not define schedule()")

    def complete(self, job: Job, now: float) -> list[Request]:
        """Release ``job``'s resources and advance its requests.

        Returns:
            Requests that finished with this job.
        """
        self.sm.release(job.units)
        llm = job.llm
        if job.kind == PREFILL:
            llm.prefill_busy = False
            return llm.complete_prefill(job.reqs, self.pool, now)
        llm.decode_busy = False
        self._on_decode_done(llm, job.n_seqs)
        return llm.complete_decode(self.pool, now)

    def _on_decode_done(self, llm: LLMRuntime, batch: int, times: int = 1) -> None:
        """Hook for per-LLM decode statistics: ``times`` decodes of ``batch`` requests ended."""

    # ---- several decode iterations as one job (the simulator's fast path) ------------------
    def decode_run(self, job: Job) -> tuple[int, float]:
        """How many more decode iterations of ``job``'s LLM would follow ``job`` back to back if
        nothing else happened on the mesh: no other job ending and no request arriving.

        Called right after ``job`` (a decode) was started. Each of those iterations is what
        :meth:`schedule` would return, alone, when the previous one completes: same LLM, same
        batch, no request finishing, no preemption, and no other job starting and no other
        state changing at that completion. A driver may then run them as one job.

        Returns:
            ``(k, until)``: at most ``k`` further iterations (0: none), and only as long as the
            iteration completing before each ends before ``until`` (s; the policy's own next
            decision point, e.g. an ADBS quota rebalance). The driver adds its own bounds (the
            mesh's other jobs' ends, the next arrival, the drain limit).
        """
        return 0, -math.inf

    def decode_runs(self, jobs: list[Job]) -> list[tuple[int, float]] | None:
        """:meth:`decode_run` of several decode jobs in flight at once (the same answers;
        policies may share the work); None when none of them may run on."""
        return [self.decode_run(job) for job in jobs]

    def skip_decodes(self, job: Job, k: int) -> None:
        """Apply ``k`` (<= :meth:`decode_run`'s) further iterations of the decode ``job``: the
        completion and restart of each, with nobody finishing. ``job`` then stands for the last
        of them (its resources stay held; :meth:`complete` ends it)."""
        job.llm.skip_decodes(self.pool, k)
        self._on_decode_done(job.llm, job.n_seqs, k)
        job.n_tokens += job.n_seqs * k

    def _admissible(self, llm: LLMRuntime, max_seqs: int) -> bool:
        """Whether a prefill of ``llm`` could admit its first waiting request now (sequence cap
        and free KV blocks, as :meth:`LLMRuntime.admit`)."""
        if llm.n_active >= max_seqs:
            return False
        r = llm.waiting[0]
        return llm.blocks_per_seq(r.prompt + r.done) <= self.pool.free

    def _prefill_job(self, llm: LLMRuntime, batch: list[Request], pct: float, units: int) -> Job:
        llm.prefill_busy = True
        tokens = 0
        for r in batch:
            tokens += r.prompt + r.done
        return Job(PREFILL, llm, pct, units, tokens, len(batch), batch)

    def _decode_job(self, llm: LLMRuntime, n: int, pct: float, units: int) -> Job:
        llm.decode_busy = True
        return Job(DECODE, llm, pct, units, llm.ctx + n, n)


class ADBSScheduler(MeshScheduler):
    """MuxServe's adaptive batch scheduling on one mesh (../shared/docs/muxserve.md §5).

    Each LLM's prefill and decode jobs run at its own SM shares (``prefill_pct``,
    ``decode_pct``) and may overlap other jobs while SM units last. KV quotas: each LLM gets
    blocks in proportion to rate x blocks-per-step; its admitted sequences are capped at
    quota / blocks-per-sequence (a sequence assumed to hold ``seq_tokens`` tokens). With
    ``adaptive`` the quotas are rebalanced every ``adapt_interval_s`` from decode utilisation.

    Args (besides :class:`MeshScheduler`'s):
        seq_tokens: tokens a sequence is assumed to hold for quotas (reference: 416, or the
            workload's mean prompt + output).
        adaptive: rebalance quotas (ADBS) or keep them fixed (the reference's round robin).
        adapt_interval_s: seconds between rebalances (reference: 8).
        adapt_window_jobs: decode jobs whose batch sizes define utilisation (reference: 500).
        overlap_phases: an LLM's prefill and decode jobs may run at the same time (MuxServe runs
            them in separate processes); False when one partition holds both, as in the CPU
            engine.
    """

    def __init__(self, llms, kv_blocks, seq_tokens: int, adaptive: bool = True,
                 adapt_interval_s: float = 8.0, adapt_window_jobs: int = 500,
                 overlap_phases: bool = True, **kw):
        super().__init__(llms, kv_blocks, **kw)
        self.adaptive = adaptive
        self.overlap_phases = overlap_phases
        self.adapt_interval_s = adapt_interval_s
        self.seq_tokens = seq_tokens
        self._next_adapt = adapt_interval_s
        self._last_prefill = -1
        self._last_decode = -1
        self._window_max = adapt_window_jobs
        self._window: list[list[list[int]]] = [[] for _ in llms]
        unit_pct = 100.0 / self.sm.units
        self._pf_units = [units_for_share(l.prefill_pct, unit_pct) for l in llms]
        self._dec_units = [units_for_share(l.decode_pct, unit_pct) for l in llms]
        n = len(llms)
        # round-robin orders starting at each LLM (index n wraps to 0), built once
        self._rotations = [[(j % n, llms[j % n]) for j in range(k, k + n)] for k in range(n + 1)]
        self.n_adaptations = 0
        weights = [max(l.rate, 1e-9) * l.bps for l in llms]
        total_w = sum(weights)
        for l, w in zip(llms, weights):
            l.quota_blocks = int(self.pool.total * w / total_w)
            self._set_quota_seqs(l)

    def _seq_blocks(self, llm: LLMRuntime) -> int:
        return llm.blocks_per_seq(self.seq_tokens)

    def _set_quota_seqs(self, llm: LLMRuntime) -> None:
        llm.quota_seqs = max(1, min(self.max_num_seqs, llm.quota_blocks // self._seq_blocks(llm)))

    def _on_decode_done(self, llm, batch, times=1):
        # The window holds runs of equal batch sizes, [size, count], so that decodes the
        # simulator ran at once cost O(1); it is cut to its last adapt_window_jobs decodes
        # when read (mean_batch), or when the runs pile up.
        w = self._window[llm.slot]
        if w and w[-1][0] == batch:
            w[-1][1] += times
        else:
            w.append([batch, times])
            if len(w) > 2 * self._window_max + 8:
                self._trim(llm.slot)

    def _trim(self, slot: int) -> tuple[int, int]:
        """Cut LLM ``slot``'s window to its last ``adapt_window_jobs`` decodes; returns their
        count and summed batch sizes."""
        w = self._window[slot]
        n = total = 0
        keep = self._window_max
        for i in range(len(w) - 1, -1, -1):
            size, count = w[i]
            if n + count >= keep:
                count = keep - n
                n = keep
                total += size * count
                if count:
                    w[i][1] = count
                    del w[:i]
                else:
                    del w[:i + 1]
                break
            n += count
            total += size * count
        return n, total

    def skip_decodes(self, job, k):
        MeshScheduler.skip_decodes(self, job, k)
        if k > 0:
            self._last_decode = job.llm.slot  # each skipped restart was a round-robin pick

    def decode_run(self, job):
        # Why this is exact: between two completions of job.llm's decodes nothing else on the
        # mesh changes but its own counters and, monotonically, the free KV blocks (they only
        # shrink: nobody finishes or is preempted). So a prefill that could not admit its first
        # request still cannot, SM units are as they were, and the round-robin pointers do not
        # matter as long as no other LLM could take a decode or prefill at that completion.
        llm = job.llm
        if llm.prefill_busy and not self.overlap_phases:
            return 0, -math.inf
        sm = self.sm
        free_units = sm.capacity - (sm.in_use - job.units)  # as at the completion of job
        for i, x in enumerate(self.llms):
            if (x is not llm and not x.decode_busy and (x.running or x.pending)
                    and (self.overlap_phases or not x.prefill_busy) and self._dec_units[i] <= free_units):
                return 0, -math.inf  # another LLM could take a decode at that completion
            if not x.waiting or x.prefill_busy or x.n_active >= x.quota_seqs:
                continue
            if x.decode_busy and x is not llm and not self.overlap_phases:
                continue
            if self._pf_units[i] > free_units:
                return 0, -math.inf  # a starved prefill would hold the decodes back
            if self._admissible(x, x.quota_seqs):
                return 0, -math.inf
        k = llm.decode_headroom(self.pool)
        return k, (self._next_adapt if self.adaptive else math.inf)

    def decode_runs(self, jobs):
        if not self.overlap_phases:
            return MeshScheduler.decode_runs(self, jobs)
        # decode_run's checks of the other LLMs, done once: the cheapest decode an idle LLM with
        # work could take and the largest prefill that could start decide every job at once.
        sm = self.sm
        free = sm.capacity - sm.in_use
        min_dec = math.inf
        max_pf = 0
        for i, x in enumerate(self.llms):
            if not x.decode_busy and (x.running or x.pending):
                if self._dec_units[i] < min_dec:
                    min_dec = self._dec_units[i]
            if x.waiting and not x.prefill_busy and x.n_active < x.quota_seqs:
                if self._admissible(x, x.quota_seqs):
                    return None
                if self._pf_units[i] > max_pf:
                    max_pf = self._pf_units[i]
        until = self._next_adapt if self.adaptive else math.inf
        out = []
        for job in jobs:
            f = free + job.units
            if min_dec <= f or max_pf > f:
                out.append((0, until))
            else:
                out.append((job.llm.decode_headroom(self.pool), until))
        return out

    def mean_batch(self, slot: int) -> float:
        """Mean decode batch size of LLM ``slot`` over its last ``adapt_window_jobs`` decodes."""
        n, total = self._trim(slot)
        return total / n if n else 0.0

    def adapt(self) -> None:
        """Rebalance KV quotas (reference constants: lend below 90 % utilisation down to 95 %,
        busy when queued + admitted >= 1.1 x mean batch, take at most 10 % of the mean batch)."""
        self.n_adaptations += 1
        spare = 0
        lent: list[tuple[LLMRuntime, int]] = []
        means = [self.mean_batch(l.slot) for l in self.llms]
        for l, mb in zip(self.llms, means):
            sb = self._seq_blocks(l)
            util = mb / l.quota_seqs
            # An LLM with a queue is short of pool blocks, not of quota: it keeps its quota.
            if util < 0.9 and not l.waiting:
                lend = int((0.95 - util) * l.quota_seqs) * sb
                lend = min(lend, max(0, l.quota_blocks - sb))  # keep room for one sequence
                if lend > 0:
                    l.quota_blocks -= lend
                    spare += lend
                    lent.append((l, lend))
        for l, mb in zip(self.llms, means):
            demand = len(l.waiting) + l.n_active
            if spare and l.waiting and demand >= 1.1 * mb:
                sb = self._seq_blocks(l)
                take = min(int(min(max(1.0, 0.1 * mb), demand - mb)) * sb, spare)
                l.quota_blocks += take
                spare -= take
        # Leftover goes to the longest queues, each up to what its queue needs; what nobody
        # needs returns to the lenders pro rata, so an idle period does not strand memory.
        for l in sorted((l for l in self.llms if l.waiting), key=lambda l: (-len(l.waiting), l.slot)):
            if not spare:
                break
            take = min(spare, len(l.waiting) * self._seq_blocks(l))
            l.quota_blocks += take
            spare -= take
        if spare:
            total_lent = sum(n for _, n in lent)
            given = 0
            for l, n in lent:
                back = spare * n // total_lent
                l.quota_blocks += back
                given += back
            lent[0][0].quota_blocks += spare - given
        for l in self.llms:
            self._set_quota_seqs(l)

    def schedule(self, now: float) -> list[Job]:
        if self.adaptive and now >= self._next_adapt:
            self.adapt()
            self._next_adapt = now + self.adapt_interval_s
        sm = self.sm
        pool = self.pool
        jobs: list[Job] = []
        starved = False
        for i, llm in self._rotations[self._last_prefill + 1]:
            if not llm.waiting or llm.prefill_busy or llm.n_active >= llm.quota_seqs:
                continue
            if llm.decode_busy and not self.overlap_phases:
                continue
            units = self._pf_units[i]
            if not sm.try_acquire(units):
                starved = True
                continue
            batch = llm.admit(pool, self.max_prefill_tokens, llm.quota_seqs, now)
            if not batch:
                sm.release(units)
                continue
            self._last_prefill = i
            jobs.append(self._prefill_job(llm, batch, llm.prefill_pct, units))
        if starved:
            return jobs  # prefill priority: hold decodes until the prefill gets its SMs
        for i, llm in self._rotations[self._last_decode + 1]:
            if llm.decode_busy or not (llm.running or llm.pending):
                continue
            if llm.prefill_busy and not self.overlap_phases:
                continue
            units = self._dec_units[i]
            if not sm.try_acquire(units):
                continue
            b = llm.start_decode(pool)
            if b == 0:
                sm.release(units)
                continue
            self._last_decode = i
            llm.decode_busy = True
            jobs.append(Job(DECODE, llm, llm.decode_pct, units, llm.ctx + b, b))
        return jobs


class VLLMScheduler(MeshScheduler):
    """vLLM-style continuous batching, one job at a time at 100 % SMs (the spatial baseline).

    Within an LLM: a prefill of its waiting requests when any can be admitted (prefill
    priority, FIFO, as many as the KV blocks, ``max_prefill_tokens`` and ``max_num_seqs``
    allow), else one decode iteration of its running batch. On a mesh holding several LLMs the
    one holding the oldest request goes first (spatial meshes hold one).
    """

    def __init__(self, llms, kv_blocks, **kw):
        super().__init__(llms, kv_blocks, **kw)
        self._busy = False
        self._all_units = self.sm.units

    def complete(self, job, now):
        self._busy = False
        return MeshScheduler.complete(self, job, now)

    def decode_run(self, job):
        # At each completion of job.llm's decode the LLMs are taken in the same order (their
        # oldest arrivals do not change while nobody joins or finishes) and, with the free KV
        # blocks only shrinking, every prefill that failed still fails.
        llm = job.llm
        order = self.llms if len(self.llms) == 1 else sorted(self.llms, key=_oldest_first)
        for x in order:
            if x.waiting and self._admissible(x, self.max_num_seqs):
                return 0, -math.inf
            if x is llm:
                break
            if x.running or x.pending:
                return 0, -math.inf
        return llm.decode_headroom(self.pool), math.inf

    def schedule(self, now: float) -> list[Job]:
        if self._busy:
            return []
        if len(self.llms) == 1:
            order = self.llms
        else:
            order = sorted(self.llms, key=_oldest_first)
        for llm in order:
            if llm.waiting:
                batch = llm.admit(self.pool, self.max_prefill_tokens, self.max_num_seqs, now)
                if batch:
                    self._busy = True
                    self.sm.try_acquire(self._all_units)
                    return [self._prefill_job(llm, batch, 100.0, self._all_units)]
            if llm.running or llm.pending:
                b = llm.start_decode(self.pool)
                if b:
                    self._busy = True
                    self.sm.try_acquire(self._all_units)
                    return [self._decode_job(llm, b, 100.0, self._all_units)]
        return []


class FCFSScheduler(MeshScheduler):
    """The reference's ``fcfs`` approach, as its temporal-multiplexing baseline ran it
    (../shared/docs/muxserve.md §6): no MPS, no KV quotas.

    Each round: (1) if no prefill job runs, the LLM whose oldest waiting request arrived first
    starts a prefill (FIFO batch up to ``max_prefill_tokens`` prompt tokens and
    ``max_num_seqs`` running sequences) when SM units allow; (2) then, for LLMs in order of
    their oldest running request, a decode iteration starts when SM units allow. Jobs hold the
    units of ``prefill_pct`` / ``decode_pct`` (reference: 100 / 90 %, so with 10 units and an
    overload allowance of 2 only one job runs at a time) but run at the whole GPU's speed
    (their ``sm_pct`` is 100: without an MPS daemon a job is not confined to a share).

    KV wait: the batch takes waiting requests FIFO while their KV blocks can be allocated; when
    not even the first one finds blocks, the requests stay at the head of their queue and that
    LLM starts no prefill until some blocks are freed on the mesh (other LLMs may).

    Args (besides :class:`MeshScheduler`'s):
        prefill_pct, decode_pct: SM shares (%) whose units the jobs hold (reference 100, 90).
    """

    def __init__(self, llms, kv_blocks, prefill_pct: float = 100.0, decode_pct: float = 90.0, **kw):
        super().__init__(llms, kv_blocks, **kw)
        unit_pct = 100.0 / self.sm.units
        self._pf_units = units_for_share(prefill_pct, unit_pct)
        self._dec_units = units_for_share(decode_pct, unit_pct)
        self._prefill_running = False
        # per slot: the pool's freed-block count when its prefill last found no blocks
        self._kv_wait: list[int | None] = [None] * len(llms)

    def complete(self, job, now):
        if job.kind == PREFILL:
            self._prefill_running = False
        return MeshScheduler.complete(self, job, now)

    def _prefill_pick(self) -> tuple[LLMRuntime | None, list[int]]:
        """The LLM whose oldest waiting request came first among those that may start a prefill
        (sequence cap, and no KV wait since the pool last freed blocks), and the slots whose
        KV wait blocks were freed since (the wait ends: they may be picked)."""
        pick = None
        cleared = []
        freed = self.pool.freed
        for llm in self.llms:
            if not llm.waiting or llm.n_active >= self.max_num_seqs:
                continue
            w = self._kv_wait[llm.slot]
            if w is not None:
                if w == freed:
                    continue  # still waiting for blocks
                cleared.append(llm.slot)
            if pick is None or llm.waiting[0].arrival < pick.waiting[0].arrival:
                pick = llm
        return pick, cleared

    def decode_run(self, job):
        # As the other policies': at each completion of job.llm's decode the same LLM must come
        # first among those ready to decode (their oldest running requests do not change), and
        # no prefill may start or record a KV wait.
        llm = job.llm
        sm = self.sm
        free_units = sm.capacity - (sm.in_use - job.units)
        pool = self.pool
        if not self._prefill_running:
            pick, cleared = self._prefill_pick()
            if cleared:
                return 0, -math.inf  # the next call would clear a KV wait
            if pick is not None and self._pf_units <= free_units:
                return 0, -math.inf  # it would try a prefill
        first = (llm.oldest_running_arrival(), llm.slot)
        for x in self.llms:
            if x is llm or x.decode_busy or not (x.running or x.pending):
                continue
            if (x.oldest_running_arrival(), x.slot) < first:
                return 0, -math.inf  # it would be served first
            if 2 * self._dec_units <= free_units:
                return 0, -math.inf  # it would decode beside llm
        if self._dec_units > free_units:
            return 0, -math.inf
        return llm.decode_headroom(pool), math.inf

    def schedule(self, now: float) -> list[Job]:
        sm = self.sm
        pool = self.pool
        jobs: list[Job] = []
        if not self._prefill_running:
            pick, cleared = self._prefill_pick()
            for slot in cleared:
                self._kv_wait[slot] = None
            if pick is not None and sm.try_acquire(self._pf_units):
                batch = pick.admit(pool, self.max_prefill_tokens, self.max_num_seqs, now)
                if batch:
                    self._prefill_running = True
                    jobs.append(self._prefill_job(pick, batch, 100.0, self._pf_units))
                else:
                    sm.release(self._pf_units)
                    self._kv_wait[pick.slot] = pool.freed
        ready = [l for l in self.llms if not l.decode_busy and (l.running or l.pending)]
        if len(ready) > 1:
            ready.sort(key=_oldest_running_first)
        for llm in ready:
            if not sm.try_acquire(self._dec_units):
                break  # every decode holds the same units
            b = llm.start_decode(pool)
            if b == 0:
                sm.release(self._dec_units)
                continue
            jobs.append(self._decode_job(llm, b, 100.0, self._dec_units))
        return jobs
