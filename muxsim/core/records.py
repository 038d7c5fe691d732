"""Per-request records: the table both the simulator and the live driver write.

Times are seconds from the start of the run (simulated or wall clock).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from muxsim.catalog import PROFILE_LENGTHS
from muxsim.core.llm import Request

__all__ = ["REQUEST_COLUMNS", "REJECTED", "DRAINED", "STALLED", "REASONS", "SLO_BASES", "RequestLog",
           "log_table", "slo_base_latency", "reference_gpus", "reference_slo_base", "request_table"]

#: Columns of the per-request table. ``mesh`` is the index of the request's mesh in its run's
#: placement (``placement.meshes``, as run.json lists them). ``slo_base_s`` is the base of the run's ``slo.base``;
#: ``slo_base_alone_s`` and ``slo_base_reference_s`` are both bases, always written.
REQUEST_COLUMNS = (
    "request_id", "llm", "model", "mesh", "arrival_s", "prefill_start_s", "first_token_s", "finish_s",
    "prompt_tokens", "output_tokens", "preemptions", "finished", "reason", "slo_base_s",
    "slo_base_alone_s", "slo_base_reference_s",
)

#: SLO bases (``slo.base``): ``alone`` -- muxsim's, the request served alone on its model's
#: smallest mesh (:func:`slo_base_latency`); ``reference`` -- the reference analysis' batch-1
#: latencies on the baseline GPU counts (:func:`reference_slo_base`).
SLO_BASES = ("alone", "reference")


REJECTED = "needs more KV blocks than its mesh holds"
DRAINED = "drain limit reached"
STALLED = "stalled: no job could run"


def slo_base_latency(curve, prompt: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Latency (s) of each request served alone: one prefill plus ``output`` decode iterations at
    batch 1 and 100 % SMs, each reading the mean context prompt + output / 2 (MuxServe §9)."""
    prompt = np.asarray(prompt, dtype=np.int64)
    output = np.asarray(output, dtype=np.int64)
    # the curves are scalar functions: evaluate them once per distinct prompt and context
    up, pi = np.unique(prompt, return_inverse=True)
    prefill = np.array([curve.prefill_s(int(p), 1, 100.0) for p in up.tolist()])
    uc, ci = np.unique(prompt + output // 2, return_inverse=True)
    decode = np.array([curve.decode_s(1, int(c), 100.0) for c in uc.tolist()])
    return prefill[pi] + output * decode[ci]


def reference_gpus(model) -> int:
    """GPUs of the reference analysis' baseline for ``model``'s size class: 1 / 1 / 4 / 8 for
    compute weight 1 / 2 / 4 / 8 (7B / 13B / 30B / 65B; the spatial baseline's mesh sizes,
    ../shared/docs/muxserve.md §9)."""
    return 1 if model.compute_weight <= 2 else int(model.compute_weight)


def reference_slo_base(curve, prompt: np.ndarray, output: np.ndarray) -> np.ndarray:
    """The reference analysis' SLO base (s) of each request (../shared/docs/muxserve.md §9):
    prefill + output x decode, both at batch 1 and 100 % SMs on the baseline GPU count.

    ``decode`` is the mean batch-1 decode latency over context lengths 32..512
    (:data:`muxsim.catalog.PROFILE_LENGTHS`); ``prefill`` is the batch-1 prefill latency interpolated linearly
    between those lengths (held at its 32-token value below 32 tokens) and scaled linearly
    beyond 512. muxsim evaluates both on ``curve`` (fitted to the same profile) rather than on
    the raw profile, which is not shipped.

    Args:
        curve: latency curve of the model on :func:`reference_gpus` GPUs.
        prompt, output: tokens per request, shape (n,).
    """
    prompt = np.asarray(prompt, dtype=float)
    output = np.asarray(output, dtype=float)
    lengths = np.asarray(PROFILE_LENGTHS, dtype=float)
    decode = float(np.mean([curve.decode_s(1, int(n), 100.0) for n in PROFILE_LENGTHS]))
    table = np.asarray([curve.prefill_s(int(n), 1, 100.0) for n in PROFILE_LENGTHS])
    prefill = np.where(prompt > lengths[-1], table[-1] * prompt / lengths[-1], np.interp(prompt, lengths, table))
    return prefill + output * decode


#: Reasons a request did not finish, by code (0: it finished, or nothing known yet).
REASONS = ("", REJECTED, DRAINED, STALLED)
_REASON_CODE = {r: i for i, r in enumerate(REASONS)}


class RequestLog:
    """What happened to each request of a run, in arrays (one entry per workload row), so that a
    run keeps no Python object per request once it is done.

    Attributes:
        prefill_start, first_token, finish: times (s; NaN until reached), float64, shape (n,).
        preemptions: times preempted, int64, shape (n,).
        reason: code into :data:`REASONS`, uint8, shape (n,).
    """

    __slots__ = ("first_token", "finish", "prefill_start", "preemptions", "reason")

    def __init__(self, n: int):
        self.prefill_start = np.full(n, np.nan)
        self.first_token = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.reason = np.zeros(n, dtype=np.uint8)

    def record(self, r: Request) -> None:
        """Copy ``r``'s timeline into row ``r.idx``."""
        k = r.idx
        if r.prefill_start is not None:
            self.prefill_start[k] = r.prefill_start
        if r.first_token is not None:
            self.first_token[k] = r.first_token
        if r.finish is not None:
            self.finish[k] = r.finish
        self.preemptions[k] = r.preemptions

    def set_reason(self, k: int, reason: str) -> None:
        """Row ``k`` did not finish because of ``reason`` (one of :data:`REASONS`).

        Raises:
            KeyError: an unknown reason.
        """
        self.reason[k] = _REASON_CODE[reason]

    @classmethod
    def of(cls, reqs: list[Request], reasons: list[str]) -> RequestLog:
        """The log of ``reqs`` (every request of a workload, in workload order) and their
        ``reasons`` ("" when none)."""
        log = cls(len(reqs))
        for r in reqs:
            log.record(r)
        for k, why in enumerate(reasons):
            if why:
                log.set_reason(k, why)
        return log


def request_table(reqs: list[Request], reasons: list[str], names, models, latency, gpu,
                  unfinished_reason: str, slo_base: str = "alone", meshes=None) -> pd.DataFrame:
    """The per-request table (:data:`REQUEST_COLUMNS`) of a run from its :class:`Request`
    objects (every request of the workload, in workload order) and ``reasons`` ("" when none):
    :func:`log_table` of their :class:`RequestLog`, with the workload's columns taken from them.
    """
    n = len(reqs)
    llm_idx = np.fromiter((r.llm for r in reqs), dtype=np.int64, count=n)
    arrivals = np.fromiter((r.arrival for r in reqs), dtype=float, count=n)
    prompts = np.fromiter((r.prompt for r in reqs), dtype=np.int64, count=n)
    outputs = np.fromiter((r.output for r in reqs), dtype=np.int64, count=n)
    return log_table(RequestLog.of(reqs, reasons), llm_idx, arrivals, prompts, outputs, names, models, latency,
                     gpu, unfinished_reason, slo_base, meshes)


def log_table(log: RequestLog, llm_idx: np.ndarray, arrivals: np.ndarray, prompts: np.ndarray,
              outputs: np.ndarray, names, models, latency, gpu, unfinished_reason: str,
              slo_base: str = "alone", meshes=None) -> pd.DataFrame:
    """Build the per-request table (:data:`REQUEST_COLUMNS`) of a run.

    Args:
        log: what happened to each request; rows without a finish time and without a reason
            get ``unfinished_reason``.
        llm_idx, arrivals, prompts, outputs: the workload's LLM index, arrival time (s), prompt
            and output tokens per row, shape (n,).
        names, models: per LLM index.
        latency, gpu: the latency model and GPU kind for the SLO base latencies (without job
            overheads: an SLO is a fixed target, not a property of the system judged).
        slo_base: which base ``slo_base_s`` holds (:data:`SLO_BASES`).
        meshes: per LLM index, the index of its mesh in the placement (None: -1 for all).

    Raises:
        ValueError: unknown ``slo_base``.
    """
    if slo_base not in SLO_BASES:
        raise ValueError(f"slo.base must be one of {', '.join(SLO_BASES)}; got {slo_base!r}")
    n = len(llm_idx)
    finished = ~np.isnan(log.finish)
    code = log.reason.copy()
    code[(code == 0) & ~finished] = _REASON_CODE[unfinished_reason]
    name_arr = np.asarray(names, dtype=object)
    model_arr = np.asarray([m.name for m in models], dtype=object)
    df = pd.DataFrame({
        "request_id": np.arange(n, dtype=np.int64),
        "llm": name_arr[llm_idx] if n else np.asarray([], dtype=object),
        "model": model_arr[llm_idx] if n else np.asarray([], dtype=object),
        "mesh": (np.asarray(meshes, dtype=np.int64)[llm_idx] if meshes is not None and n
                 else np.full(n, -1, dtype=np.int64)),
        "arrival_s": np.asarray(arrivals, dtype=float),
        "prefill_start_s": log.prefill_start,
        "first_token_s": log.first_token,
        "finish_s": log.finish,
        "prompt_tokens": np.asarray(prompts, dtype=np.int64),
        "output_tokens": np.asarray(outputs, dtype=np.int64),
        "preemptions": log.preemptions,
        "finished": finished,
        "reason": np.asarray(REASONS, dtype=object)[code],
    })
    alone = np.empty(n)
    ref = np.empty(n)
    for i, m in enumerate(models):
        sel = llm_idx == i
        if sel.any():
            alone[sel] = slo_base_latency(latency.curve(m, m.min_gpus, gpu), prompts[sel], outputs[sel])
            ref[sel] = reference_slo_base(latency.curve(m, reference_gpus(m), gpu), prompts[sel], outputs[sel])
    df["slo_base_s"] = alone if slo_base == "alone" else ref
    df["slo_base_alone_s"] = alone
    df["slo_base_reference_s"] = ref
    return df
