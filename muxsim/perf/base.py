"""Latency-model interface shared by the fitted and roofline models.

A :class:`LatencyCurve` answers, for one model on one mesh (``n_gpus`` GPUs of one kind, tensor
parallel over all of them), how long one prefill job or one decode iteration takes at a given SM
share. Calls are on the simulator's hot path: implementations use plain float arithmetic.
"""

from __future__ import annotations


class LatencyCurve:
    """Latency of one model on one mesh.

    Attributes:
        model: catalog model name, e.g. ``"llama-7b"``.
        n_gpus: GPUs in the mesh (tensor-parallel degree).
        gpu: catalog GPU name, e.g. ``"a100-80gb"``.
        source: ``"fitted"`` (calibrated from measurements of this model on this many GPUs),
            ``"fitted-scaled"`` (a fitted curve of the same model on another GPU count, its work
            terms scaled by the roofline's ratio) or ``"roofline"`` (analytic fallback).
    """

    model: str
    n_gpus: int
    gpu: str
    source: str

    def prefill_s(self, n_tokens: int, n_seqs: int, sm_pct: float) -> float:
        """Seconds for one prefill job over ``n_seqs`` prompts holding ``n_tokens`` tokens in all.

        ``sm_pct`` is the SM share in percent (1..100) of every GPU of the mesh.

        Raises:
            NotImplementedError: on the base class (every curve defines it).
        """
        raise NotImplementedError(f"{type(self).__name__} does not define prefill_s()")

    def decode_s(self, batch: int, ctx_tokens: int, sm_pct: float) -> float:
        """Seconds for one decode iteration of ``batch`` requests whose KV caches hold
        ``ctx_tokens`` tokens in all, at SM share ``sm_pct`` percent.

        Raises:
            NotImplementedError: on the base class (every curve defines it).
        """
        raise NotImplementedError(f"{type(self).__name__} does not define decode_s()")

    def decode_steps(self, batch: int, ctx_tokens: int, sm_pct: float, k: int, last: float, end: float,
                     bound: float, ends: list | None = None) -> tuple[int, float, float]:
        """Chain decode iterations of a fixed batch: the iteration running now started at
        ``last`` (s), ends at ``end`` (s) and read ``ctx_tokens`` tokens; while fewer than ``k``
        were added and the latest ends before ``bound`` (s), the next one starts at its end and
        reads ``batch`` more tokens.

        ``ends``, when given, gets the end (s) of every iteration that was followed by another:
        the one running now and each added but the last (``added`` values).

        Returns:
            ``(added, start of the last iteration, its end)`` (s). Times are sums of
            :meth:`decode_s` in iteration order, the same floats one job at a time gives.
        """
        push = ends.append if ends is not None else (lambda x: None)
        j = 0
        while j < k and end < bound:
            push(end)
            last = end
            ctx_tokens += batch
            end = last + self.decode_s(batch, ctx_tokens, sm_pct)
            j += 1
        return j, last, end

