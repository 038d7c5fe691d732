"""The vLLM engine's job logic in a worker: :class:`StepRunner` over a :class:`Backend`.

A prefill job adds its requests and steps until each has its first token (one step unless the
prompts exceed vLLM's token budget per step); a decode job is one step that gives each of its
requests one token. ``duration_s`` is the wall time of those ``step()`` calls
(``time.perf_counter``; a step returns once its sampled tokens are on the host, so the GPU work
is included; adding the requests is not).

vLLM's own scheduler would put every running request into every step and mix new prompts into
decode steps. Before each step the runner names the job's requests in :data:`STEP_FILTER`, which
the worker's scheduler (:data:`PHASE_SCHEDULER`, :mod:`muxsim.live.vllm.scheduler`) obeys, so a
job is exactly the prefill batch or decode batch the policy asked for. The runner checks every
step: a request outside the job that got a token, or a scheduler that was not consulted, is an
error, never silently a mixed batch.

No vLLM import here: the backend is passed in (vLLM's ``LLMEngine``, or a stand-in in tests).
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Protocol

from muxsim.live.transformers.model import prompt_tokens

__all__ = ["PHASE_SCHEDULER", "STEP_FILTER", "Backend", "StepFilter", "StepRunner"]

#: Qualified name of the scheduler the workers give vLLM (``EngineArgs.scheduler_cls``).
PHASE_SCHEDULER = "muxsim.live.vllm.scheduler.PhaseScheduler"


@dataclass
class StepFilter:
    """Which requests the next vLLM step may schedule (read by ``PhaseScheduler``, in-process).

    Attributes:
        allowed: scheduler request ids of the current job, or None for vLLM's own choice.
        consulted: schedule() calls seen (shows the scheduler is installed and in-process).
    """

    allowed: frozenset[str] | None = None
    consulted: int = 0


#: The worker's step filter (one engine per worker process, so one filter).
STEP_FILTER = StepFilter()


class Backend(Protocol):
    """What :class:`StepRunner` needs from an engine (vLLM's ``LLMEngine``, or a stand-in)."""

    max_model_len: int

    def add(self, ext_id: str, token_ids: list[int], max_tokens: int) -> str:
        """Queue a request; returns the id its scheduler knows it by."""

    def step(self) -> list[tuple[str, int, bool]]:
        """One engine step: (external id, new tokens, finished) per request that produced
        output."""

    def abort(self, ext_ids: list[str]) -> None:
        """Drop requests and free their KV cache."""

    def info(self) -> dict:
        """Facts for :meth:`VLLMEngine.worker_info`."""


@dataclass
class _Live:
    ext: str
    sid: str  # scheduler id
    tokens: int  # prompt + generated tokens
    ended: bool = False  # finished by the engine (max_model_len)


def _ext_id(rid: Hashable) -> str:
    return repr(rid)


class StepRunner:
    """One LLM's jobs on a :class:`Backend` (what a worker runs; usable in-process).

    Every method restricts the engine step(s) it runs to its own requests through
    :data:`STEP_FILTER`, and checks afterwards that exactly those requests advanced.

    Args:
        backend: the engine.
        vocab_size: prompt token ids are drawn below it.
        seed: prompt seed (:func:`muxsim.live.transformers.prompt_tokens`).
        max_num_seqs: requests held at most (vLLM's ``max_num_seqs``).
        max_prefill_steps: steps a prefill job may take before it is declared stuck.
    """

    def __init__(self, backend: Backend, vocab_size: int, seed: int = 0, max_num_seqs: int = 256,
                 max_prefill_steps: int = 64):
        self.backend = backend
        self.vocab_size = vocab_size
        self.seed = seed
        self.max_num_seqs = max_num_seqs
        self.max_prefill_steps = max_prefill_steps
        self._live: dict[Hashable, _Live] = {}

    def __contains__(self, rid: Hashable) -> bool:
        return rid in self._live

    def __len__(self) -> int:
        return len(self._live)

    def context_tokens(self, rid: Hashable) -> int:
        """Prompt plus generated tokens of ``rid`` (the last one not yet in the KV cache).

        Raises:
            KeyError: ``rid`` is not prefilled (or was released).
        """
        return self._get(rid).tokens

    def _get(self, rid: Hashable) -> _Live:
        try:
            return self._live[rid]
        except KeyError:
            raise KeyError(f"unknown request id {rid!r} (not prefilled, or released)") from None

    @staticmethod
    def _check_unique(rids) -> None:
        if len(set(rids)) != len(rids):
            raise ValueError(f"request ids repeat within one job: {list(rids)}")

    # -- jobs ---------------------------------------------------------------------------------

    def prefill(self, requests: list[tuple[Hashable, int]]) -> tuple[float, float, float]:
        """Add ``requests`` = [(request id, prompt tokens), ...] and step until each has its
        first token. Returns (started, ended) ``time.monotonic()`` and the steps' duration (s).
        On failure the job's requests are dropped again.

        Raises:
            ValueError: empty batch, a repeated or already held id, fewer than 1 token, a prompt
                that leaves no room under ``max_model_len``, or more than ``max_num_seqs``
                requests held.
            RuntimeError: the engine could not run them (KV cache full, stuck, or the phase
                scheduler is not active).
        """
        if not requests:
            raise ValueError("a prefill needs at least one request")
        rids = [rid for rid, _ in requests]
        self._check_unique(rids)
        limit = self.backend.max_model_len
        for rid, n in requests:
            if rid in self._live:
                raise ValueError(f"request id {rid!r} is already prefilled (release it first)")
            if int(n) < 1:
                raise ValueError(f"request {rid!r}: prefill of {n} tokens (need >= 1)")
            if int(n) >= limit:
                raise ValueError(f"request {rid!r}: a prompt of {n} tokens leaves no room under "
                                 f"max_model_len {limit}")
        if len(self._live) + len(requests) > self.max_num_seqs:
            raise ValueError(f"{len(self._live)} requests held + {len(requests)} new exceed "
                             f"max_num_seqs {self.max_num_seqs}")
        added: list[tuple[Hashable, str, str, int]] = []
        try:
            for rid, n in requests:
                n = int(n)
                ext = _ext_id(rid)
                sid = self.backend.add(ext, prompt_tokens(rid, n, self.vocab_size, self.seed), limit - n)
                added.append((rid, ext, sid, n))
            got, timing = self._steps({ext: sid for _, ext, sid, _ in added}, prefill=True)
        except BaseException:
            self.backend.abort([ext for _, ext, _, _ in added])
            raise
        for rid, ext, sid, n in added:
            self._live[rid] = _Live(ext, sid, n + got[ext][0], ended=got[ext][1])
        return timing

    def decode(self, rids: list[Hashable]) -> tuple[float, float, float]:
        """One step giving each of ``rids`` one token; other held requests wait. Returns
        (started, ended) ``time.monotonic()`` and the step's duration (s).

        Raises:
            KeyError: an id is not prefilled (or was released).
            ValueError: empty batch, a repeated id, or a request the engine already ended
                (it reached ``max_model_len``).
            RuntimeError: the engine did not advance every request (e.g. it preempted one for
                lack of KV cache: that request is dropped), or advanced others.
        """
        if not rids:
            raise ValueError("a decode needs at least one request")
        self._check_unique(rids)
        reqs = [self._get(rid) for rid in rids]
        for rid, r in zip(rids, reqs):
            if r.ended:
                raise ValueError(f"request {rid!r} was ended by vLLM at max_model_len "
                                 f"{self.backend.max_model_len} ({r.tokens} tokens)")
        try:
            got, timing = self._steps({r.ext: r.sid for r in reqs}, prefill=False)
        except _Unserved as exc:
            # vLLM moved them back to its waiting queue without their KV cache: a later step
            # would silently prefill them again. Drop them; the policy's state is lost anyway.
            lost = [rid for rid, r in zip(rids, reqs) if r.ext in exc.exts]
            self.release(lost)
            raise RuntimeError(f"{exc} (requests {lost} dropped)") from None
        for r in reqs:
            n, ended = got[r.ext]
            r.tokens += n
            r.ended = r.ended or ended
        return timing

    def release(self, rids) -> None:
        """Drop ``rids`` and free their KV cache; ids not held are ignored."""
        exts = []
        for rid in rids:
            r = self._live.pop(rid, None)
            if r is not None:
                exts.append(r.ext)
        if exts:
            self.backend.abort(exts)

    # -- stepping -----------------------------------------------------------------------------

    def _steps(self, sids: dict[str, str], prefill: bool):
        """Step until every request of ``sids`` ({external id: scheduler id}) produced a token,
        with only those still waiting for their token schedulable (so a prefill that takes
        several steps does not also decode the requests it admitted first); a decode is exactly
        one step. Returns ({ext: (tokens, finished)}, (started, ended, duration))."""
        exts = set(sids)
        got: dict[str, tuple[int, bool]] = {}
        pending = set(exts)
        steps = idle = 0
        duration = 0.0
        try:
            started = time.monotonic()
            while pending:
                asked = set(pending)
                STEP_FILTER.allowed = frozenset(sids[ext] for ext in asked)
                consulted = STEP_FILTER.consulted
                t0 = time.perf_counter()
                outs = self.backend.step()
                duration += time.perf_counter() - t0
                steps += 1
                if STEP_FILTER.consulted == consulted:
                    raise RuntimeError("vLLM did not consult the phase scheduler "
                                       f"({PHASE_SCHEDULER}): it must run in this process")
                stray = sorted(ext for ext, n, _ in outs if ext not in asked and n > 0)
                if stray:
                    raise RuntimeError(f"vLLM advanced requests outside the step ({', '.join(stray[:5])}): "
                                       "the phase scheduler is not in effect")
                progressed = False
                for ext, n, finished in outs:
                    if ext in asked:
                        got[ext] = (n, finished)
                        if n > 0:
                            pending.discard(ext)
                            progressed = True
                if not prefill and pending:
                    raise _Unserved(pending, "vLLM did not schedule every request of the decode "
                                    "(its KV cache is full: give the LLM a larger memory fraction)")
                idle = 0 if progressed else idle + 1
                if pending and (idle >= 2 or steps >= self.max_prefill_steps):
                    raise RuntimeError(f"vLLM admitted {len(exts) - len(pending)} of {len(exts)} "
                                       f"prompts in {steps} steps (its KV cache is full or the "
                                       "prompts exceed its token budget per step: give the LLM a "
                                       "larger memory fraction)")
            ended = time.monotonic()
        finally:
            STEP_FILTER.allowed = None
        return got, (started, ended, duration)


class _Unserved(RuntimeError):
    def __init__(self, exts: set[str], message: str):
        super().__init__(message)
        self.exts = set(exts)
