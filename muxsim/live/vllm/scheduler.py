"""vLLM scheduler that runs only the requests of the current job (imported by vLLM, in a worker).

vLLM's V1 scheduler has no prefill or decode phase: every engine step decodes every running
request and admits waiting ones in the same batch. MuxServe's jobs are one phase of one LLM
(a prefill batch, or one decode iteration of a chosen batch), so the vLLM engine's workers
(:mod:`muxsim.live.vllm.engine`) install this subclass through ``EngineArgs(scheduler_cls=...)``
(vLLM's documented hook for a custom scheduler; the class it extends is vLLM's, so this module
imports vLLM and is only ever imported inside a worker).

Before each step the worker puts the scheduler ids of the job's requests in
:data:`muxsim.live.vllm.steps.STEP_FILTER` ``.allowed``; running requests outside that set are
left out of the step's batch (they keep their KV cache and state, exactly as when vLLM runs out
of token budget for them), and are put back in their old order afterwards. ``allowed = None``
schedules as vLLM does.

Written against vLLM 0.33.0 (``vllm.v1.core.sched.scheduler.Scheduler``: the ``running`` list
and ``Request.request_id``). The engine must run in-process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``) and without async scheduling, so this scheduler sees the
worker's filter and one ``LLMEngine.step()`` is one model step.
"""

from __future__ import annotations

from vllm.v1.core.sched.scheduler import Scheduler

from muxsim.live.vllm.steps import STEP_FILTER

__all__ = ["PhaseScheduler"]


class PhaseScheduler(Scheduler):
    """vLLM's scheduler restricted, per step, to the running requests named by ``STEP_FILTER``.

    Waiting requests are not filtered: the worker only adds requests right before the prefill
    job that runs them, so the waiting queue holds exactly that job's requests.
    """

    def schedule(self, *args, **kwargs):
        STEP_FILTER.consulted += 1
        allowed = STEP_FILTER.allowed
        if allowed is None:
            return super().schedule(*args, **kwargs)
        before = self.running
        held = [r for r in before if r.request_id not in allowed]
        if not held:
            return super().schedule(*args, **kwargs)
        self.running = [r for r in before if r.request_id in allowed]
        try:
            return super().schedule(*args, **kwargs)
        finally:
            # Held requests go back where they were; requests admitted by this step follow.
            after = self.running
            keep = {id(r) for r in held} | {id(r) for r in after}
            old = {id(r) for r in before}
            self.running = ([r for r in before if id(r) in keep]
                            + [r for r in after if id(r) not in old])
