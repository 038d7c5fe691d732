"""A real-engine backend on vLLM (extra ``vllm``): one vLLM engine per LLM, CUDA GPUs only.

Modules:

- :mod:`~muxsim.live.vllm.engine`: :class:`VLLMEngine` (the parent side), the worker process
  and what it is set up with (environment, ``EngineArgs`` keywords, dummy config, checkpoint
  shape check, the vLLM backend);
- :mod:`~muxsim.live.vllm.steps`: :class:`StepRunner`, a worker's job logic over a
  :class:`Backend`, and the step filter the scheduler obeys;
- :mod:`~muxsim.live.vllm.scheduler`: ``PhaseScheduler``, vLLM's scheduler restricted to the
  current job. It imports vLLM, so only vLLM imports it (in a worker); this package does not.

Importing this package does not import vLLM or torch.
"""

from muxsim.live.vllm.engine import (
    DEFAULT_MAX_MODEL_LEN,
    DEFAULT_MEMORY_FRACTION,
    VLLM_VERSION_READ,
    VLLMEngine,
    check_checkpoint_shape,
    cuda_index,
    engine_args,
    worker_env,
    write_dummy_config,
)
from muxsim.live.vllm.steps import (
    PHASE_SCHEDULER,
    STEP_FILTER,
    Backend,
    StepFilter,
    StepRunner,
)

__all__ = [
    "DEFAULT_MAX_MODEL_LEN",
    "DEFAULT_MEMORY_FRACTION",
    "PHASE_SCHEDULER",
    "STEP_FILTER",
    "VLLM_VERSION_READ",
    "Backend",
    "StepFilter",
    "StepRunner",
    "VLLMEngine",
    "check_checkpoint_shape",
    "cuda_index",
    "engine_args",
    "worker_env",
    "write_dummy_config",
]
