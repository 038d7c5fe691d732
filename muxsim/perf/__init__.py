"""Latency models: fitted to measured profiles (calibrated) or a roofline fallback."""

from muxsim.perf.base import LatencyCurve
from muxsim.perf.fitted import FittedLatencyModel, fit_and_save, get_latency_model, load_calibration
from muxsim.perf.profile import load_profile
from muxsim.perf.roofline import RooflineCurve

__all__ = ["LatencyCurve", "FittedLatencyModel", "RooflineCurve", "fit_and_save",
           "get_latency_model", "load_calibration", "load_profile"]
