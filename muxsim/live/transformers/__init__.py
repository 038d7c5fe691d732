"""A real-engine backend on Hugging Face transformers: Llama models, one worker process per LLM.

Each LLM runs in its own worker process (``spawn`` context) pinned to its partition: on CPU a
fixed number of torch threads, on CUDA an MPS active-thread percentage. Importing this package is
cheap: torch and transformers are imported only inside functions and in the workers.

Modules:

- :mod:`~muxsim.live.transformers.model`: model configs and weights, checkpoints, prompt
  tokens, the ragged (per-request) attention;
- :mod:`~muxsim.live.transformers.kv_runner`: :class:`KVRunner`, one LLM's KV slot pool and
  its ragged or padded prefill and decode batches (what a worker runs; usable in-process);
- :mod:`~muxsim.live.transformers.worker`: the worker process;
- :mod:`~muxsim.live.transformers.engine`: :class:`TransformersEngine`, the parent side.
"""

from muxsim.live.transformers.engine import TransformersEngine
from muxsim.live.transformers.kv_runner import BATCHING_KINDS, KVRunner
from muxsim.live.transformers.model import (
    RAGGED_ATTENTION,
    build_model,
    check_checkpoint,
    llama_config,
    prompt_tokens,
)

__all__ = [
    "BATCHING_KINDS",
    "RAGGED_ATTENTION",
    "KVRunner",
    "TransformersEngine",
    "build_model",
    "check_checkpoint",
    "llama_config",
    "prompt_tokens",
]
