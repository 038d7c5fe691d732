"""muxsim: a discrete-event simulator of multi-LLM serving on shared GPUs.

It models MuxServe (Duan et al., ICML 2024) -- popularity-aware placement and adaptive batch
scheduling with prefill and decode jobs on their own SM shares -- and its baselines (spatial
partitioning, temporal multiplexing), driven by latency curves fitted to real A100 measurements.

The Python API (:mod:`muxsim.api`, imported on first use so that ``import muxsim`` stays
cheap):

- :func:`muxsim.load_config` -- read and validate an experiment YAML;
- :func:`muxsim.run` -- every cell under every strategy, as ``muxsim run``; a
  :class:`muxsim.Results` with ``summary``, ``requests``, ``placements``, ``ratios``;
- :func:`muxsim.simulate` -- one strategy of one cell; a :class:`muxsim.CellResult`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from muxsim import _native
from muxsim._version import __version__ as __version__

_native.install()  # before any compiled module loads: stale extensions give way to their .py

if TYPE_CHECKING:  # for type checkers and IDEs; at run time they come from __getattr__
    from muxsim.api import CellResult, Results, load_config, run, simulate  # noqa: F401

#: The API's names, loaded from :mod:`muxsim.api` on first access (PEP 562).
_API = ("CellResult", "Results", "load_config", "run", "simulate")

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from muxsim import api

        return getattr(api, name)
    raise AttributeError(f"module 'muxsim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
