"""Per-request and per-LLM runtime state shared by every scheduler.

The running batch of an LLM keeps counters instead of touching every request per decode
iteration, so one iteration costs O(1) Python work plus O(log n) per request that joins, finishes
or is preempted:

- ``iter``: decode iterations completed; a request that joined at ``join_iter`` with ``kv_join``
  tokens in its KV cache holds ``kv_join + iter - join_iter`` tokens now.
- ``ctx``: summed KV tokens of the running batch.
- ``buckets[r]``: running requests that need a new 32-token block step at every iteration I with
  I % 32 == r (a request needs one when the token it writes starts a new block).
- a heap of (finish iteration, request) with lazy deletion for preempted requests.

Token accounting (vLLM-style recompute): a prefill over L = prompt + generated tokens fills L
KV slots and emits one token; each decode iteration writes the KV of the latest token and emits
one more. A request is done when it has emitted ``output`` tokens. A preempted request keeps the
tokens it emitted and is prefilled again over prompt + emitted tokens.
"""

from __future__ import annotations

import heapq
from collections import deque

from muxsim.catalog import KV_BLOCK_TOKENS, ModelSpec

__all__ = ["Request", "LLMRuntime"]

_MASK = KV_BLOCK_TOKENS - 1  # 32 is a power of two: modulo by masking
_SHIFT = KV_BLOCK_TOKENS.bit_length() - 1
_BLOCK = KV_BLOCK_TOKENS  # a C constant where compiled (llm.pxd)


class Request:
    """One request and its timeline (times in simulated or wall-clock seconds).

    Attributes:
        idx: position in the workload (row index).
        llm: index of its LLM in the run's LLM list.
        arrival: arrival time (s).
        prompt, output: prompt tokens and output tokens to generate.
        done: tokens emitted so far.
        prefill_start, first_token, finish: times (s) of the first prefill start, the first
            token and the last token; None until reached.
        preemptions: times it was preempted and recomputed.
        last_tok: time (s) of the last token it emitted (kept only while its LLM records
            inter-token latencies, :attr:`LLMRuntime.itl`).
    """

    __slots__ = (
        "idx", "llm", "arrival", "prompt", "output", "done", "prefill_start", "first_token",
        "finish", "preemptions", "kv_join", "join_iter", "bucket", "epoch", "last_tok",
    )

    def __init__(self, idx: int, llm: int, arrival: float, prompt: int, output: int):
        self.idx = idx
        self.llm = llm
        self.arrival = arrival
        self.prompt = prompt
        self.output = output
        self.done = 0
        self.prefill_start = None
        self.first_token = None
        self.finish = None
        self.preemptions = 0
        self.kv_join = 0
        self.join_iter = 0
        self.bucket = 0
        self.epoch = 0
        self.last_tok = 0.0

    def total_steps(self) -> int:
        """32-token block steps of its whole sequence (prompt + output)."""
        return -(-(self.prompt + self.output) // _BLOCK)


class LLMRuntime:
    """One served LLM on one mesh: its queue, running batch and counters.

    Args:
        index: index in the run's LLM list.
        name: e.g. ``"llm-3"``.
        model: catalog architecture.
        tp: tensor-parallel degree (GPUs of its mesh).
        prefill_pct, decode_pct: SM shares (%) of its prefill and decode jobs.
        rate: expected arrival rate (req/s), used for KV quotas.
        slot: its index among the LLMs of its mesh (its slot in the mesh's KV pool).

    ``mesh`` is the index of its mesh, set by whoever builds the meshes (-1 until then).

    Inter-token latencies: a driver that sets ``itl`` (a :class:`muxsim.core.itl.ITLBuffer`)
    gets every token gap of this LLM's requests there. ``tok_end`` is the end (s) of its last
    decode iteration, ``join_tok`` the last-token times of the requests that joined the batch for
    the iteration running now, and ``chain_ends`` the ends of the iterations of the running
    decode that a driver ran on as one job (:meth:`skip_decodes`; the driver appends them).
    """

    def __init__(self, index: int, name: str, model: ModelSpec, tp: int, prefill_pct: float,
                 decode_pct: float, rate: float, slot: int = 0):
        self.index = index
        self.name = name
        self.model = model
        self.tp = tp
        self.prefill_pct = prefill_pct
        self.decode_pct = decode_pct
        self.rate = rate
        self.slot = slot
        self.bps = model.blocks_per_step(tp)
        self.waiting: deque[Request] = deque()
        self.running: dict[int, Request] = {}
        self.pending: list[Request] = []
        self.n_active = 0  # admitted: prefilling, pending or running
        self.iter = 0
        self.ctx = 0
        self.buckets = [0] * KV_BLOCK_TOKENS
        self._heap: list = []
        self.prefill_busy = False
        self.decode_busy = False
        self.quota_seqs = 1 << 30  # max admitted sequences (ADBS sets it)
        self.quota_blocks = 0
        self.mesh = -1
        self.curve = None  # a driver's latency handle; the policy never reads it
        # a live driver sets a list here to learn which requests to evict from its engine
        self.evicted: list[Request] | None = None
        self.itl = None
        self.tok_end = 0.0
        self.join_tok: list[float] = []
        self.chain_ends: list[float] = []

    # ---- queue ---------------------------------------------------------------------------
    def oldest_arrival(self) -> float:
        """Arrival time (s) of its oldest request: the head of its queue, the first request of
        its running batch and of its prefilled-but-not-joined list; inf when it has none.

        O(1): admission is FIFO, so the first joined request is the oldest running one, except
        a recomputed (preempted) request, which rejoins at the end of the batch.
        """
        t = self.waiting[0].arrival if self.waiting else float("inf")
        if self.running:
            a = next(iter(self.running.values())).arrival
            if a < t:
                t = a
        if self.pending and self.pending[0].arrival < t:
            t = self.pending[0].arrival
        return t

    def oldest_running_arrival(self) -> float:
        """Arrival time (s) of its oldest admitted request that decodes (running, or prefilled
        and about to join); inf when there is none. O(1), with the caveat of
        :meth:`oldest_arrival` for recomputed requests."""
        t = float("inf")
        if self.running:
            t = next(iter(self.running.values())).arrival
        if self.pending and self.pending[0].arrival < t:
            t = self.pending[0].arrival
        return t

    def has_decode_work(self) -> bool:
        """Whether a decode iteration would have requests to run."""
        return bool(self.running) or bool(self.pending)

    # ---- prefill ---------------------------------------------------------------------------
    def admit(self, pool, max_tokens: int, max_seqs: int, now: float) -> list[Request]:
        """Take waiting requests FIFO into a prefill batch and allocate their KV blocks.

        Stops at the first request that would push the batch over ``max_tokens`` prompt tokens
        (a lone request longer than that still runs alone), over ``max_seqs`` admitted
        sequences, or past the free blocks of ``pool``.

        Returns:
            The batch (possibly empty).
        """
        batch: list[Request] = []
        tokens = 0
        waiting = self.waiting
        while waiting and self.n_active < max_seqs:
            r = waiting[0]
            length = r.prompt + r.done
            if batch and tokens + length > max_tokens:
                break
            if not pool.allocate(self.slot, ((length + _MASK) >> _SHIFT) * self.bps):
                break
            waiting.popleft()
            tokens += length
            batch.append(r)
            self.n_active += 1
            if r.prefill_start is None:
                r.prefill_start = now
        return batch

    def complete_prefill(self, batch: list[Request], pool, now: float) -> list[Request]:
        """Account for a finished prefill: each request emits a token; finished ones free blocks.

        Returns:
            Requests that are now complete (their ``finish`` is set to ``now``).
        """
        done = []
        buf = self.itl
        for r in batch:
            if buf is not None:
                if r.done:  # a recompute prefill emits the token after the one before preemption
                    buf.g.append(now - r.last_tok)
                    buf.w.append(1)
                    buf.n += 1
                r.last_tok = now
            r.done += 1
            if r.first_token is None:
                r.first_token = now
            if r.done >= r.output:
                r.finish = now
                self.n_active -= 1
                length = r.prompt + r.done - 1
                pool.release(self.slot, ((length + _MASK) >> _SHIFT) * self.bps)
                done.append(r)
            else:
                self.pending.append(r)
        return done

    # ---- decode ----------------------------------------------------------------------------
    def _merge_pending(self) -> None:
        it = self.iter
        jt = self.join_tok if self.itl is not None else None
        for r in self.pending:
            if jt is not None:
                jt.append(r.last_tok)
            kv = r.prompt + r.done - 1
            r.kv_join = kv
            r.join_iter = it
            b = (it + 1 - kv) & _MASK
            r.bucket = b
            self.buckets[b] += 1
            self.ctx += kv
            self.running[r.idx] = r
            heapq.heappush(self._heap, (it + r.output - r.done, r.idx, r.epoch, r))
        self.pending.clear()

    def _release_running(self, r: Request, pool) -> int:
        """Remove ``r`` from the running batch, free its blocks; returns its KV tokens."""
        kv = r.kv_join + self.iter - r.join_iter
        del self.running[r.idx]
        self.buckets[r.bucket] -= 1
        self.ctx -= kv
        self.n_active -= 1
        pool.release(self.slot, ((kv + _MASK) >> _SHIFT) * self.bps)
        r.epoch += 1
        return kv

    def start_decode(self, pool) -> int:
        """Prepare one decode iteration: merge newly prefilled requests and take the blocks it
        needs, preempting the most recently joined requests while the pool is short.

        Returns:
            The batch size (0 when nothing is left to decode).
        """
        if self.pending:
            self._merge_pending()
        need_bucket = (self.iter + 1) & _MASK
        while self.running:
            if pool.allocate(self.slot, self.buckets[need_bucket] * self.bps):
                break
            r = self.running[next(reversed(self.running))]  # the most recently joined
            if self.itl is not None:
                if r.join_iter < self.iter:  # it decoded since it joined: its last token came then
                    r.last_tok = self.tok_end
                else:  # it joined for this iteration, the last to join: its entry is the last
                    self.join_tok.pop()
            self._release_running(r, pool)
            r.done = r.done + self.iter - r.join_iter
            r.preemptions += 1
            self.waiting.appendleft(r)
            if self.evicted is not None:
                self.evicted.append(r)
        return len(self.running)

    def complete_decode(self, pool, now: float) -> list[Request]:
        """Account for a finished decode iteration.

        Returns:
            Requests that emitted their last token in it (``finish`` set to ``now``).
        """
        n = len(self.running)
        buf = self.itl
        if buf is not None:
            self._record_gaps(buf, n, now)
        self.iter += 1
        self.ctx += n
        it = self.iter
        heap = self._heap
        done = []
        while heap and heap[0][0] <= it:
            _, _, epoch, r = heapq.heappop(heap)
            if epoch != r.epoch:
                continue  # preempted since it was pushed
            r.done = r.output
            r.finish = now
            self._release_running(r, pool)
            done.append(r)
        return done

    def end_itl(self) -> None:
        """At the end of a run: the gaps of the iterations of the decode still running that
        ended (those a driver ran on as one job, :attr:`chain_ends`), as their completions one
        by one would have recorded them."""
        ends = self.chain_ends
        if self.itl is None or not ends:
            return
        last = ends.pop()
        self._record_gaps(self.itl, len(self.running), last)

    def _record_gaps(self, buf, n: int, now: float) -> None:
        """Buffer the gaps of a decode of ``n`` requests that ends at ``now``: those of its first
        iteration (to each joiner's last token, to the previous iteration's end for the others)
        and, when iterations ran on as one job (:attr:`chain_ends`), those between them."""
        ends = self.chain_ends
        first = ends[0] if ends else now
        jt = self.join_tok
        if jt:
            k = len(jt)
            buf.jt.extend(jt)
            buf.jn.append(k)
            buf.ja.append(first)
            jt.clear()
            stay = n - k
            buf.n += k
        else:
            stay = n
        if stay > 0:
            buf.g.append(first - self.tok_end)
            buf.w.append(stay)
            buf.n += 1
        if ends:
            ends.append(now)
            buf.ce.extend(ends)
            buf.cn.append(len(ends))
            buf.cw.append(n)
            buf.n += len(ends)
            ends.clear()
        self.tok_end = now
        if buf.n >= buf.fold_at:
            buf.fold()

    # ---- several decode iterations at once -------------------------------------------------
    def decode_headroom(self, pool) -> int:
        """Decode iterations that can follow the one just started (iteration ``iter + 1``),
        each starting as the previous one ends, before state other than this LLM's counters
        changes: none of them may end with a request finishing (the iteration in which one
        finishes is the last one that may follow) and every one's KV blocks must be free in
        ``pool`` (no preemption).

        Returns:
            The number of such further iterations, >= 0 (0 without a running batch, with
            requests still to merge, or when the next iteration would finish a request).
        """
        if self.pending or not self.running:
            return 0
        heap = self._heap
        while heap[0][2] != heap[0][3].epoch:  # drop entries of requests preempted since
            heapq.heappop(heap)
        # completions of iterations iter+1 .. iter+k must finish nobody: k < first finish - iter
        cap = heap[0][0] - self.iter - 1
        if cap <= 0:
            return 0
        per_cycle = len(self.running) * self.bps  # every request takes one block per 32 iterations
        free = pool.free
        if free >= (cap // _BLOCK + 1) * per_cycle:
            return cap
        full = min(free // per_cycle, cap // _BLOCK)
        k = full * _BLOCK
        used = full * per_cycle
        b = self.buckets
        bps = self.bps
        j = self.iter + 2 + k
        while k < cap:
            need = b[j & _MASK] * bps
            if used + need > free:
                break
            used += need
            k += 1
            j += 1
        return k

    def skip_decodes(self, pool, k: int) -> None:
        """Account for ``k`` decode iterations that ended with nobody finishing, each followed
        by the start of the next (what :meth:`complete_decode` then :meth:`start_decode` do
        in that case), leaving the last one started. ``k`` must not exceed
        :meth:`decode_headroom`.

        Raises:
            ValueError: the pool cannot hold the blocks (``k`` beyond the headroom).
        """
        if k <= 0:
            return
        need = self.decode_blocks(k)
        if need and not pool.allocate(self.slot, need):
            raise ValueError(f"{self.name}: {k} decode iterations need {need} KV blocks, {pool.free} free")
        self.iter += k
        self.ctx += len(self.running) * k

    def decode_blocks(self, k: int) -> int:
        """KV blocks the ``k`` decode iterations after the one just started take (>= 0)."""
        it = self.iter
        b = self.buckets
        # iterations it+2 .. it+k+1: full 32-iteration cycles take one block per request
        full = k // _BLOCK
        rest = k % _BLOCK
        need = full * len(self.running)
        for j in range(it + 2, it + 2 + rest):
            need += b[j & _MASK]
        return need * self.bps

    def blocks_per_seq(self, seq_tokens: int) -> int:
        """Blocks one sequence of ``seq_tokens`` tokens holds at this LLM's tensor parallelism."""
        return -(-seq_tokens // _BLOCK) * self.bps
