"""A stand-in for vLLM's ``LLMEngine``, to test :mod:`muxsim.live.vllm` without vLLM or a GPU.

It runs no model: it only keeps the books the way vLLM 0.33's V1 scheduler does as far as the
engine's :class:`~muxsim.live.vllm.steps.StepRunner` can see (one token per scheduled request
per step, a prompt admitted whole, KV tokens counted, recompute preemption of the newest running
request when the KV cache is full, requests ended at ``max_model_len``), and it honours
:data:`~muxsim.live.vllm.steps.STEP_FILTER` as ``PhaseScheduler`` does. Whether real vLLM
behaves like this is checked only by ``tests/test_vllm_engine_gpu.py``, on a GPU.

Factories (``"_fake_vllm:NAME"`` for ``VLLMEngine(backend=...)``) take the EngineArgs keywords.
"""

from __future__ import annotations

import os
import time

from muxsim.live.vllm.steps import STEP_FILTER

ENV_KEYS = ("CUDA_VISIBLE_DEVICES", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE",
            "VLLM_ENABLE_V1_MULTIPROCESSING")


class FakeBackend:
    """Books of a vLLM engine; see the module docstring.

    Args:
        kwargs: EngineArgs keywords (``max_model_len`` is used; all are kept).
        kv_tokens: KV cache capacity in tokens (None: unlimited).
        obey_filter: schedule only ``STEP_FILTER.allowed`` (False: like vLLM's own scheduler,
            every running request every step).
        consult: count scheduler calls in ``STEP_FILTER.consulted`` (False: as if the phase
            scheduler were not installed).
        budget: tokens one step computes at most (vLLM's ``max_num_batched_tokens``; a prompt
            is admitted whole or waits, as without chunked prefill).
    """

    def __init__(self, kwargs, kv_tokens=None, obey_filter=True, consult=True, budget=None):
        self.kwargs = dict(kwargs)
        self.max_model_len = int(kwargs.get("max_model_len") or 2048)
        self.kv_tokens = kv_tokens
        self.obey = obey_filter
        self.consult = consult
        self.budget = budget
        self.reqs: dict[str, dict] = {}  # in arrival order
        self.log: list[dict[str, int]] = []  # per step: ext id -> tokens computed

    def add(self, ext_id, token_ids, max_tokens):
        assert ext_id not in self.reqs, f"duplicate request id {ext_id}"
        assert 1 <= len(token_ids) < self.max_model_len and max_tokens >= 1
        assert len(token_ids) + max_tokens <= self.max_model_len
        assert all(isinstance(t, int) for t in token_ids)
        self.reqs[ext_id] = {"sid": f"{ext_id}-fake", "prompt": len(token_ids), "out": 0,
                             "max": max_tokens, "kv": 0, "running": False}
        return self.reqs[ext_id]["sid"]

    def _used(self):
        return sum(r["kv"] for r in self.reqs.values())

    def step(self):
        if self.consult:
            STEP_FILTER.consulted += 1
        allowed = STEP_FILTER.allowed if self.obey else None
        chosen = {}
        outs = []
        running = [e for e, r in self.reqs.items() if r["running"]
                   and (allowed is None or r["sid"] in allowed)]
        waiting = [e for e, r in self.reqs.items() if not r["running"]]
        preempted = False
        i = 0
        while i < len(running):
            ext = running[i]
            if self.kv_tokens is not None and self._used() + 1 > self.kv_tokens:
                victim = running.pop()  # the newest scheduled request, as vLLM's FCFS policy
                v = self.reqs[victim]
                v["running"], v["kv"] = False, 0  # recompute preemption: back to waiting
                preempted = True
                continue
            self.reqs[ext]["kv"] += 1
            chosen[ext] = 1
            i += 1
        for ext in [] if preempted else waiting:
            r = self.reqs[ext]
            if allowed is not None and r["sid"] not in allowed:
                continue
            need = r["prompt"] + r["out"]
            if self.kv_tokens is not None and self._used() + need > self.kv_tokens:
                break
            if self.budget is not None and sum(chosen.values()) + need > self.budget:
                break
            r["running"], r["kv"] = True, need
            chosen[ext] = need
        for ext in chosen:
            r = self.reqs[ext]
            r["out"] += 1
            finished = r["out"] >= r["max"]
            outs.append((ext, 1, finished))
            if finished:
                del self.reqs[ext]
        self.log.append(chosen)
        time.sleep(1e-3)  # a job takes time, so the driver overlaps jobs
        return outs

    def abort(self, ext_ids):
        for ext in ext_ids:
            self.reqs.pop(ext, None)

    def info(self):
        return {"fake": True, "max_model_len": self.max_model_len,
                "env": {k: os.environ.get(k) for k in ENV_KEYS}, "kwargs": self.kwargs}


def make(kwargs):
    return FakeBackend(kwargs)


def make_failing(kwargs):
    raise RuntimeError("no CUDA GPU here\n(second line of the cause)")
