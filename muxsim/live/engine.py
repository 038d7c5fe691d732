"""Engine interface: what a live backend must do for the live driver and for calibration.

An engine owns the LLMs of a run, each loaded onto a partition (a share of a device). The live
driver submits jobs -- one prefill batch or one decode iteration of one LLM -- and collects their
results; the engine executes each job for real (forward passes with a KV cache) and reports its
measured duration. Jobs of different LLMs may run concurrently; the policy core decides which.

Times are ``time.monotonic()`` seconds (CLOCK_MONOTONIC: comparable across processes on Linux).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from muxsim.catalog import ModelSpec

__all__ = ["Engine", "EngineError", "JobResult", "Partition"]


class EngineError(RuntimeError):
    """An engine could not load a model or run a job; the message says which and why."""


@dataclass(frozen=True)
class Partition:
    """A share of a device that one LLM's jobs run on.

    Attributes:
        device: ``"cpu"`` or a CUDA device such as ``"cuda:0"``.
        threads: CPU threads of the partition's worker (CPU only; 1 keeps its speed steady on a
            shared machine).
        sm_pct: SM share (%) on CUDA (an MPS active-thread percentage); None on CPU.
        memory_fraction: share of device memory the engine may use (vLLM), None for no limit.
        cores: CPU cores (ids as in ``os.sched_getaffinity``) the worker is pinned to; None
            leaves placement to the OS. Pinning each partition to its own core keeps two
            partitions from sharing one core while another sits idle, and keeps each one's
            caches warm (on this project's 2-core VM it cut the spread of a small model's job
            time beside a busy neighbour from 1.3-2.6x to 1.0-1.3x of its time alone).
    """

    device: str = "cpu"
    threads: int = 1
    sm_pct: float | None = None
    memory_fraction: float | None = None
    cores: tuple[int, ...] | None = None


@dataclass(frozen=True)
class JobResult:
    """A finished job.

    Attributes:
        job_id: the id :meth:`Engine.submit_prefill` / :meth:`Engine.submit_decode` returned.
        llm: the LLM it ran for.
        kind: ``"prefill"`` or ``"decode"``.
        started_s, ended_s: ``time.monotonic()`` when the engine started and finished it.
        duration_s: measured compute time (s) of the job itself.
    """

    job_id: int
    llm: str
    kind: str
    started_s: float
    ended_s: float
    duration_s: float


class Engine(ABC):
    """A live backend. Implementations: ``muxsim.live.transformers.TransformersEngine``
    (transformers, CPU or CUDA) and ``muxsim.live.vllm.VLLMEngine`` (vLLM, CUDA GPUs only), both
    on ``muxsim.live.workers.ProcessEngine`` (one worker process per LLM)."""

    @abstractmethod
    def load(self, llm: str, model: ModelSpec, partition: Partition, checkpoint: str | None = None,
             seed: int = 0) -> None:
        """Load ``model`` as LLM ``llm`` onto ``partition``: random weights drawn from ``seed``,
        or a local checkpoint folder. Blocks until the model is ready.

        Raises:
            EngineError: the model cannot be built or the partition cannot be set up.
        """

    @abstractmethod
    def submit_prefill(self, llm: str, requests: list[tuple[int, int]]) -> int:
        """Start one prefill job over ``requests`` = [(request id, tokens to prefill), ...];
        each request's KV cache is kept for its later decode iterations. Returns a job id."""

    @abstractmethod
    def submit_decode(self, llm: str, request_ids: list[int]) -> int:
        """Start one decode iteration (one new token each) for the given prefilled requests.
        Returns a job id."""

    @abstractmethod
    def release(self, llm: str, request_ids: list[int]) -> None:
        """Free the KV caches of finished or preempted requests (applied before later jobs of
        the same LLM)."""

    @abstractmethod
    def wait(self, timeout: float | None = None) -> list[JobResult]:
        """Results of jobs finished since the last call; blocks up to ``timeout`` seconds for at
        least one (None: until one finishes). Returns an empty list on timeout.

        Raises:
            EngineError: a job failed in the engine.
        """

    @abstractmethod
    def measure(self, llm: str, batch: int, seq: int, warmup: int, repeats: int) -> tuple[list[float], list[float]]:
        """Calibration point: prefill ``batch`` prompts of ``seq`` tokens, then time decode
        iterations of that batch (context ``seq`` tokens each). Returns the measured prefill
        and decode durations in seconds, ``repeats`` of each after ``warmup`` discarded runs."""

    @abstractmethod
    def close(self) -> None:
        """Stop workers and free memory. Idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
