"""muxsim: a discrete-event simulator of multi-LLM serving on shared GPUs.

It models MuxServe (Duan et al., ICML 2024) -- popularity-aware placement and adaptive batch
scheduling with prefill and decode jobs on their own SM shares -- and its baselines (spatial
partitioning, temporal multiplexing), driven by latency curves fitted to real A100 measurements.
"""

from muxsim._version import __version__ as __version__
