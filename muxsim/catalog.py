"""Model and GPU facts used by placement, memory accounting and the roofline model.

Every figure names its public source. Sizes are in bytes, rates in FLOP/s and bytes/s.

Sources (abbreviations used in the ``source`` fields):

- ``llama1-paper``: Touvron et al., "LLaMA: Open and Efficient Foundation Language Models",
  arXiv 2302.13971, Table 2 (layers, heads, dimension), and the ``huggyllama/llama-*``
  ``config.json`` files on the Hugging Face hub (intermediate size, vocabulary).
- ``llama2-paper``: Touvron et al., "Llama 2", arXiv 2307.09288, and the
  ``meta-llama/Llama-2-*-hf`` ``config.json`` files (GQA with 8 KV heads for 70B).
- ``llama3``: ``meta-llama/Meta-Llama-3-8B`` / ``-70B`` ``config.json`` files (128,256 vocab,
  8 KV heads).
- ``mistral``: Jiang et al., "Mistral 7B", arXiv 2310.06825, Table 1, and
  ``mistralai/Mistral-7B-v0.1`` ``config.json``.
- ``muxserve-ref``: MuxServe's public implementation (hao-ai-lab/MuxServe), placement
  constants: smallest mesh and compute weight per LLaMA size (see ../shared/docs/muxserve.md §4).
- ``muxsim-defined``: small models and a CPU "device" defined here for CPU validation runs.
- GPU figures: NVIDIA A100 datasheet (2021, SXM4 80GB), NVIDIA H100 datasheet (SXM5),
  NVIDIA H200 datasheet (SXM); dense (not sparse) tensor-core FP16/BF16 throughput.
- GPU-hour prices (:attr:`GPUSpec.usd_per_gpu_hour`, the cost columns of the summary): the
  on-demand list price of an 8-GPU HGX instance on CoreWeave's public pricing page
  (https://www.coreweave.com/pricing), divided by its 8 GPUs: the instance's CPU cores, memory
  and local disk come with the GPUs and cannot be booked apart from them, so their price is
  carried by the GPUs. One provider for every GPU kind, so that kinds compare on one price
  list. These are list prices as published in 2025 and recalled when this catalog was
  written, without access to the page then: they were not re-checked against it, list prices
  change (AWS, for one, cut its P4/P5 on-demand prices in June 2025) and negotiated, reserved
  or spot prices are lower. Set ``cluster.usd_per_gpu_hour`` to your own price.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ModelSpec",
    "GPUSpec",
    "MODELS",
    "GPUS",
    "UnknownNameError",
    "get_model",
    "get_gpu",
    "KV_BLOCK_TOKENS",
    "PROFILE_LENGTHS",
]

#: Tokens per head-wise KV block (MuxServe reference, ../shared/docs/muxserve.md §3).
KV_BLOCK_TOKENS = 32

#: Context lengths (tokens) the MuxServe latency profile measures (../shared/docs/muxserve.md
#: §7); the reference's placement estimator and SLO analysis average and interpolate over them.
PROFILE_LENGTHS = (32, 64, 128, 256, 512)

GIB = 1 << 30


class UnknownNameError(ValueError):
    """Raised when a model or GPU name is not in the catalog; the message lists allowed names."""


@dataclass(frozen=True)
class ModelSpec:
    """Architecture facts of one decoder-only transformer.

    Attributes:
        name: catalog key, e.g. ``"llama-7b"``.
        n_layers: transformer blocks.
        hidden_size: model dimension.
        n_heads: attention (query) heads.
        n_kv_heads: key/value heads (``< n_heads`` with grouped-query attention).
        head_dim: size of one head (hidden_size / n_heads).
        intermediate_size: MLP inner dimension (SwiGLU: three matrices of hidden x inter).
        vocab_size: tokens in the vocabulary.
        n_params: parameter count.
        min_gpus: smallest mesh (GPUs) MuxServe's placement lets the model run on.
        compute_weight: placement sort weight (MuxServe ref: 1, 2, 4, 8 for 7B..65B).
        profile_name: key of this architecture in the MuxServe latency profile, or None.
        source: where the figures come from (see module docstring).
        dtype_bytes: bytes per weight and per KV element (2: fp16/bf16).
    """

    name: str
    n_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    n_params: int
    min_gpus: int
    compute_weight: int
    profile_name: str | None
    source: str
    dtype_bytes: int = 2

    @property
    def weight_bytes(self) -> int:
        """Bytes of all weights at ``dtype_bytes`` per parameter."""
        return self.n_params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of K and V for one token over all layers and KV heads (fp16: 2 bytes each)."""
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * self.dtype_bytes

    def kv_block_bytes(self) -> int:
        """Bytes of one head-wise block: K and V of one head for ``KV_BLOCK_TOKENS`` tokens."""
        return 2 * KV_BLOCK_TOKENS * self.head_dim * self.dtype_bytes

    def blocks_per_step(self, tp: int) -> int:
        """Head-wise blocks one request needs per GPU for each 32-token step at tensor parallel ``tp``.

        Equals ceil(n_kv_heads / tp) x n_layers (1024 for LLaMA-7B at tp=1).

        Raises:
            ValueError: if ``tp`` < 1.
        """
        if tp < 1:
            raise ValueError(f"tensor parallel degree must be >= 1, got {tp}")
        return -(-self.n_kv_heads // tp) * self.n_layers


@dataclass(frozen=True)
class GPUSpec:
    """One GPU kind.

    Attributes:
        name: catalog key, e.g. ``"a100-80gb"``.
        n_sms: streaming multiprocessors.
        memory_bytes: device memory in bytes.
        fp16_flops: dense tensor-core FP16/BF16 FLOP/s.
        mem_bandwidth: memory bandwidth in bytes/s.
        source: datasheet the figures come from.
        usd_per_gpu_hour: on-demand list price of one GPU for an hour (USD), None when no
            public price applies (the CPU "device").
        price_source: where the price comes from (URL, instance, how per-GPU was derived).
        price_date: when the price was valid as published (``YYYY``: the year the listing was
            seen, recalled, not checked to the month).
    """

    name: str
    n_sms: int
    memory_bytes: int
    fp16_flops: float
    mem_bandwidth: float
    source: str
    usd_per_gpu_hour: float | None = None
    price_source: str = ""
    price_date: str = ""


def _m(name, layers, hidden, heads, kv, inter, vocab, params, min_gpus, weight, profile, source):
    return ModelSpec(
        name=name,
        n_layers=layers,
        hidden_size=hidden,
        n_heads=heads,
        n_kv_heads=kv,
        head_dim=hidden // heads,
        intermediate_size=inter,
        vocab_size=vocab,
        n_params=params,
        min_gpus=min_gpus,
        compute_weight=weight,
        profile_name=profile,
        source=source,
    )


# min_gpus / compute_weight for models outside the paper follow the same rule as the paper's:
# the LLaMA size class with the nearest parameter count (7-8B -> 7B, 13B -> 13B, 70B -> 65B).
MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in [
        _m("llama-7b", 32, 4096, 32, 32, 11008, 32000, 6_738_415_616, 1, 1, "llama-7b",
           "llama1-paper; muxserve-ref"),
        _m("llama-13b", 40, 5120, 40, 40, 13824, 32000, 13_015_864_320, 1, 2, "llama-13b",
           "llama1-paper; muxserve-ref"),
        _m("llama-30b", 60, 6656, 52, 52, 17920, 32000, 32_528_943_616, 2, 4, "llama-30b",
           "llama1-paper; muxserve-ref"),
        _m("llama-65b", 80, 8192, 64, 64, 22016, 32000, 65_285_660_672, 4, 8, "llama-65b",
           "llama1-paper; muxserve-ref"),
        # Llama-2 7B/13B have LLaMA-1's architecture (only the context grew), so they use its
        # measured latency profile.
        _m("llama-2-7b", 32, 4096, 32, 32, 11008, 32000, 6_738_415_616, 1, 1, "llama-7b",
           "llama2-paper"),
        _m("llama-2-13b", 40, 5120, 40, 40, 13824, 32000, 13_015_864_320, 1, 2, "llama-13b",
           "llama2-paper"),
        _m("llama-2-70b", 80, 8192, 64, 8, 28672, 32000, 68_976_648_192, 4, 8, None,
           "llama2-paper"),
        _m("llama-3-8b", 32, 4096, 32, 8, 14336, 128256, 8_030_261_248, 1, 1, None, "llama3"),
        _m("llama-3-70b", 80, 8192, 64, 8, 28672, 128256, 70_553_706_496, 4, 8, None, "llama3"),
        _m("mistral-7b", 32, 4096, 32, 8, 14336, 32000, 7_241_732_096, 1, 1, None, "mistral"),
        # Small Llama-architecture models for CPU validation runs (random weights); parameter
        # counts are those of transformers' LlamaForCausalLM with these sizes (untied embeddings).
        _m("llama-tiny-s", 4, 256, 4, 4, 688, 2048, 4_212_992, 1, 1, "llama-tiny-s", "muxsim-defined"),
        _m("llama-tiny-m", 8, 512, 8, 8, 1376, 2048, 27_402_752, 1, 1, "llama-tiny-m", "muxsim-defined"),
    ]
}

_COREWEAVE = "https://www.coreweave.com/pricing"

GPUS: dict[str, GPUSpec] = {
    g.name: g
    for g in [
        # 81,920 MiB as reported by nvidia-smi for the 80 GB part.
        # Prices: CoreWeave's 8-GPU HGX instance price / 8 (module docstring; not re-checked).
        GPUSpec("a100-80gb", 108, 80 * GIB, 312e12, 2.039e12,
                "NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB)",
                usd_per_gpu_hour=21.60 / 8, price_date="2025",
                price_source=_COREWEAVE + ": NVIDIA HGX A100 80GB, 8 GPUs, $21.60/h on demand; / 8"),
        GPUSpec("h100-80gb", 132, 80 * GIB, 989.4e12, 3.35e12,
                "NVIDIA H100 Tensor Core GPU datasheet (SXM5)",
                usd_per_gpu_hour=49.24 / 8, price_date="2025",
                price_source=_COREWEAVE + ": NVIDIA HGX H100, 8 GPUs, $49.24/h on demand; / 8"),
        GPUSpec("h200-141gb", 132, 141 * 10**9, 989.4e12, 4.8e12,
                "NVIDIA H200 Tensor Core GPU datasheet (SXM)",
                usd_per_gpu_hour=50.44 / 8, price_date="2025",
                price_source=_COREWEAVE + ": NVIDIA HGX H200, 8 GPUs, $50.44/h on demand; / 8"),
        # One CPU core holding single-thread partitions, for the CPU validation miniature: its
        # latency comes from calibration; the FLOP/s and bandwidth are nominal (an AVX2 core
        # at fp32, one DDR4 channel) and only feed the roofline fallback.
        GPUSpec("cpu-core", 1, 4 * GIB, 50e9, 10e9, "nominal x86-64 core (muxsim-defined)"),
    ]
}


def get_model(name: str) -> ModelSpec:
    """Return the catalog entry for ``name`` (case-insensitive).

    Raises:
        UnknownNameError: if the name is not in the catalog; the message lists the allowed names.
    """
    key = name.strip().lower()
    if key not in MODELS:
        raise UnknownNameError(f"unknown model {name!r}; allowed: {', '.join(MODELS)}")
    return MODELS[key]


def get_gpu(name: str) -> GPUSpec:
    """Return the catalog entry for GPU ``name`` (case-insensitive).

    Raises:
        UnknownNameError: if the name is not in the catalog; the message lists the allowed names.
    """
    key = name.strip().lower()
    if key not in GPUS:
        raise UnknownNameError(f"unknown GPU {name!r}; allowed: {', '.join(GPUS)}")
    return GPUS[key]
