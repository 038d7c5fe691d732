"""Latency models: fitted to measured profiles (calibrated) or a roofline fallback.

Modules: :mod:`~muxsim.perf.base` (the curve interface), :mod:`~muxsim.perf.curves` (fitted
curves and the model of one GPU kind), :mod:`~muxsim.perf.fitting` (least-squares fits),
:mod:`~muxsim.perf.calibration` (calibration files, the default model of a GPU kind),
:mod:`~muxsim.perf.table` (the ``muxsim calibrate run`` Parquet schema),
:mod:`~muxsim.perf.profile` (MuxServe's profile format), :mod:`~muxsim.perf.roofline`,
:mod:`~muxsim.perf.overhead` (job overheads), :mod:`~muxsim.perf.blas`.
"""

from muxsim.perf.base import LatencyCurve
from muxsim.perf.calibration import fit_and_save, get_latency_model, load_calibration
from muxsim.perf.curves import FittedLatencyModel
from muxsim.perf.profile import load_profile
from muxsim.perf.roofline import RooflineCurve

__all__ = [
           "FittedLatencyModel",
           "LatencyCurve",
           "RooflineCurve",
           "fit_and_save",
           "get_latency_model",
           "load_calibration",
           "load_profile",
]
