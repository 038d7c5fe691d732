"""Analytic (roofline) latency model: the fallback for unprofiled models and GPUs.

Used for models without a measured profile (Llama-2, Llama-3, Mistral in
:mod:`muxsim.catalog`) and for GPUs without a calibration file (H100, H200). It is built
only from catalog facts (parameters, layers, hidden size, KV bytes per token, peak FLOP/s,
memory bandwidth) plus the efficiency and overhead constants of :class:`RooflineConstants`.

Form (all times in ms inside, returned in seconds; ``t`` = tensor-parallel degree = GPUs in the
mesh, ``x`` = SM share / 100):

* prefill over ``n`` prompt tokens in ``b`` sequences::

      flops   = 2 P n + 2 L d n^2 / b           # weights + causal attention (QK^T and AV)
      compute = flops / (t * peak * MFU_prefill * eff_c(x))
      memory  = (weight_bytes / t) / (bw * BW_UTIL * eff_m(x))
      T = max(compute, memory) + L * (layer_prefill + [t > 1] layer_tp) + allreduce(n)

* one decode iteration of ``B`` requests whose KV caches hold ``C`` tokens in all::

      memory  = (weight_bytes + kv_bytes_per_token * C) / t / (bw * BW_UTIL * eff_m(x))
      compute = 2 P B / (t * peak * MFU_decode * eff_c(x))
      T = max(memory, compute) + L * (layer_decode + [t > 1] layer_tp_decode) + allreduce(B)

* ``allreduce(m) = 2 L * 2 (t-1)/t * m * d * dtype_bytes / (AR_EFF * nvlink_bw)``: two ring
  all-reduces of the ``m x d`` activations per layer (Megatron-style tensor parallelism).
* ``eff_c(x) = x ** SM_COMPUTE_EXP`` (compute-bound work slows with fewer SMs);
  ``eff_m(x) = min(1, x / SM_BW_SATURATION) ** SM_BW_EXP`` (a fraction of the SMs already
  saturates HBM bandwidth).

All constants were eyeballed from (not fitted by least squares to) the MuxServe A100-80GB
profile (``../shared/data/profiles/muxserve_llama_a100_80g.json``, from
hao-ai-lab/MuxServe ``examples/placement/llama.json``); see the field comments of
:class:`RooflineConstants`. On that profile the roofline is within a factor ~1.5 of the
measurements at typical points (checked in ``tests/test_perf.py``). For other GPUs the same
efficiencies and per-layer overheads are assumed, which is a guess: software overheads in ms do
not shrink with a faster GPU, and MFU on H100/H200 may differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from muxsim.catalog import GPUSpec, ModelSpec
from muxsim.perf.base import LatencyCurve

__all__ = ["DEFAULT_CONSTANTS", "NVLINK_BW", "RooflineConstants", "RooflineCurve"]

#: Per-direction NVLink bandwidth per GPU in bytes/s (half the bidirectional datasheet figure:
#: A100 SXM4 600 GB/s, H100/H200 SXM 900 GB/s, NVIDIA datasheets). Unknown GPUs use the A100.
NVLINK_BW: dict[str, float] = {
    "a100-80gb": 300e9,
    "h100-80gb": 450e9,
    "h200-141gb": 450e9,
}


@dataclass(frozen=True)
class RooflineConstants:
    """Efficiencies and overheads of the roofline model (dimensionless unless stated).

    Every default was read off the MuxServe A100-80GB profile (LLaMA-7B..65B, 1..8 GPUs):

    Attributes:
        mfu_prefill: achieved / peak FLOP/s of large prefills. 7B on 1 GPU at 100 % SMs takes
            ~74 us per prompt token (2 x 6.74e9 FLOP / 74 us = 182 TFLOP/s = 0.58 of 312).
        mfu_decode: same for the batch-proportional part of decode. 7B on 1 GPU grows by
            ~20 ms from batch 1 to 256; 0.4 (rather than 0.55) also absorbs the sampling and
            layout work that the roofline does not model.
        bw_util: achieved / datasheet HBM bandwidth; typical for weight streaming on A100.
        layer_prefill_ms: fixed cost per layer of a prefill job (kernel launches, Python):
            7B / 13B 1-GPU prefills of 32 tokens take 14 / 21 ms, of which the weight read is
            6.6 / 12.8 ms; the rest over 32 / 40 layers is ~0.22 ms per layer.
        layer_decode_ms: same for one decode iteration: (11.3 - 7.8) ms / 32 layers for 7B.
        layer_tp_ms: extra fixed cost per layer of a prefill when t > 1 (two all-reduce launches
            and synchronisation): 7B prefill floors are 14 ms on 1 GPU and 19.5-20 ms on 2-8.
        layer_tp_decode_ms: same for decode: 7B batch-1 decode 11.3 ms on 1 GPU, 12.6 on 2;
            13B/65B on 8 GPUs imply 0.2-0.24 ms per layer.
        allreduce_eff: achieved all-reduce bus bandwidth / per-direction NVLink bandwidth.
            Large 7B prefills cost 74 / 41.5 / 24.8 / 16.2 us per token on 1 / 2 / 4 / 8 GPUs;
            the excess over 74/t is the all-reduce at ~120 GB/s, i.e. 0.4 x 300 GB/s.
        sm_compute_exp: compute throughput ~ (SM share)^exp. Large 7B prefills at 30 % SMs are
            2.67x slower than at 100 %: 0.3^0.8 = 1 / 2.62.
        sm_bw_saturation: SM share from which HBM bandwidth is saturated (7B batch-1 decode
            stops improving above ~50-60 % SMs).
        sm_bw_exp: below saturation, bandwidth ~ (share / saturation)^exp: 7B batch-1 decode is
            1.41x slower at 30 % SMs than at 100 %.
    """

    mfu_prefill: float = 0.58
    mfu_decode: float = 0.40
    bw_util: float = 0.85
    layer_prefill_ms: float = 0.22
    layer_decode_ms: float = 0.11
    layer_tp_ms: float = 0.30
    layer_tp_decode_ms: float = 0.18
    allreduce_eff: float = 0.40
    sm_compute_exp: float = 0.80
    sm_bw_saturation: float = 0.55
    sm_bw_exp: float = 0.75


#: Constants used unless a caller passes its own.
DEFAULT_CONSTANTS = RooflineConstants()


class RooflineCurve(LatencyCurve):
    """Roofline latency of ``model`` tensor-parallel over ``n_gpus`` GPUs of kind ``gpu``.

    ``source`` is ``"roofline"``. Evaluation is plain float arithmetic with a per-SM-share
    cache, so it suits the simulator's hot path.

    Args:
        model: catalog model (parameters, layers, hidden size, KV bytes per token).
        n_gpus: GPUs in the mesh (tensor-parallel degree), >= 1.
        gpu: catalog GPU (peak FP16 FLOP/s, HBM bandwidth).
        constants: efficiencies and overheads (defaults: :data:`DEFAULT_CONSTANTS`).

    Raises:
        ValueError: if ``n_gpus`` < 1.
    """

    def __init__(
        self,
        model: ModelSpec,
        n_gpus: int,
        gpu: GPUSpec,
        constants: RooflineConstants = DEFAULT_CONSTANTS,
    ) -> None:
        if n_gpus < 1:
            raise ValueError(f"n_gpus must be >= 1, got {n_gpus}")
        self.model = model.name
        self.n_gpus = int(n_gpus)
        self.gpu = gpu.name
        self.source = "roofline"
        self.constants = constants
        c = constants
        t = float(n_gpus)
        L = model.n_layers
        d = model.hidden_size
        ms = 1e3
        # ms per FLOP of prefill / decode work on one GPU at 100 % SMs.
        pf = ms / (t * gpu.fp16_flops * c.mfu_prefill)
        df = ms / (t * gpu.fp16_flops * c.mfu_decode)
        self._p_lin = 2.0 * model.n_params * pf
        self._p_attn = 2.0 * L * d * pf
        self._d_lin = 2.0 * model.n_params * df
        bw = gpu.mem_bandwidth * c.bw_util
        self._weights_ms = model.weight_bytes / t / bw * ms
        self._kv_ms = model.kv_bytes_per_token / t / bw * ms
        tp = 1.0 if n_gpus > 1 else 0.0
        self._p_fixed = L * (c.layer_prefill_ms + tp * c.layer_tp_ms)
        self._d_fixed = L * (c.layer_decode_ms + tp * c.layer_tp_decode_ms)
        nv = NVLINK_BW.get(gpu.name, NVLINK_BW["a100-80gb"]) * c.allreduce_eff
        # ms per token of activations all-reduced: 2 all-reduces per layer, ring traffic.
        self._ar = 2.0 * L * 2.0 * (t - 1.0) / t * d * model.dtype_bytes / nv * ms
        self._cache: dict[float, tuple[float, float]] = {}

    def _sm(self, sm_pct: float) -> tuple[float, float]:
        """(1 / eff_c, 1 / eff_m) at ``sm_pct`` percent; cached per value."""
        if not sm_pct > 0:
            raise ValueError(f"sm_pct must be in (0, 100], got {sm_pct!r}")
        c = self.constants
        x = min(float(sm_pct), 100.0) / 100.0
        inv_c = x ** (-c.sm_compute_exp)
        inv_m = min(1.0, x / c.sm_bw_saturation) ** (-c.sm_bw_exp)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[sm_pct] = r = (inv_c, inv_m)
        return r

    def prefill_s(self, n_tokens: int, n_seqs: int, sm_pct: float) -> float:
        """Seconds for a prefill of ``n_tokens`` prompt tokens in ``n_seqs`` sequences.

        Returns 0.0 when ``n_tokens`` <= 0 (no job); ``n_seqs`` < 1 is read as 1.

        Raises:
            ValueError: if ``sm_pct`` <= 0 (values above 100 are read as 100).
        """
        if n_tokens <= 0:
            return 0.0
        e = self._cache.get(sm_pct)
        if e is None:
            e = self._sm(sm_pct)
        n = float(n_tokens)
        # Conditionals, not min() / max(): this runs once per simulated job and a builtin call
        # costs more than the comparison.
        if n_seqs < 1:  # noqa: PLR1730
            n_seqs = 1
        comp = (self._p_lin * n + self._p_attn * n * n / n_seqs) * e[0]
        mem = self._weights_ms * e[1]
        return ((comp if comp > mem else mem) + self._p_fixed + self._ar * n) * 1e-3  # noqa: FURB136

    def decode_s(self, batch: int, ctx_tokens: int, sm_pct: float) -> float:
        """Seconds for one decode iteration of ``batch`` requests holding ``ctx_tokens`` KV
        tokens in all. Returns 0.0 when ``batch`` <= 0 (no job).

        Raises:
            ValueError: if ``sm_pct`` <= 0 (values above 100 are read as 100).
        """
        if batch <= 0:
            return 0.0
        e = self._cache.get(sm_pct)
        if e is None:
            e = self._sm(sm_pct)
        b = float(batch)
        ctx = float(ctx_tokens) if ctx_tokens > 0 else 0.0
        mem = (self._weights_ms + self._kv_ms * ctx) * e[1]
        comp = self._d_lin * b * e[0]
        # A conditional, not max(): once per simulated decode iteration (see prefill_s).
        return ((mem if mem > comp else comp) + self._d_fixed + self._ar * b) * 1e-3  # noqa: FURB136

    def prefill_ms_per_token(self) -> float:
        """Marginal prefill cost in ms per prompt token at 100 % SMs, compute-bound, without
        attention: weight FLOPs / (t x peak x MFU) plus the all-reduce traffic."""
        return self._p_lin + self._ar

    def decode_ms_per_seq(self) -> float:
        """Marginal decode cost in ms per request of the batch at 100 % SMs, compute-bound:
        weight FLOPs / (t x peak x MFU_decode) plus the all-reduce traffic."""
        return self._d_lin + self._ar

    def __repr__(self) -> str:
        return f"RooflineCurve({self.model!r}, n_gpus={self.n_gpus}, gpu={self.gpu!r})"
