"""Llama models for the transformers engine: configs, weights, prompt tokens, ragged attention.

Pure functions: the test process and the engine's workers build identical models from the same
:class:`~muxsim.catalog.ModelSpec` and seed. torch and transformers are imported inside the
functions, so importing this module is cheap (the engine's parent process never imports them).

The ragged attention (:func:`ragged_attention`, registered with transformers as
:data:`RAGGED_ATTENTION`) runs attention per request over packed batches; the
:class:`~muxsim.live.transformers.kv_runner.KVRunner` switches a model to it with
:func:`attention_mode` for the duration of a forward pass.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Hashable

from muxsim.catalog import ModelSpec

__all__ = [
    "RAGGED_ATTENTION",
    "attention_mode",
    "build_model",
    "check_checkpoint",
    "llama_config",
    "prompt_tokens",
    "ragged_attention",
    "register_ragged_attention",
]


def llama_config(spec: ModelSpec):
    """A ``transformers.LlamaConfig`` with ``spec``'s shape: layers, hidden size, heads, KV heads,
    intermediate size and vocabulary; untied embeddings (as the catalog's parameter counts
    assume) and SDPA attention."""
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        num_hidden_layers=spec.n_layers,
        hidden_size=spec.hidden_size,
        num_attention_heads=spec.n_heads,
        num_key_value_heads=spec.n_kv_heads,
        head_dim=spec.head_dim,
        intermediate_size=spec.intermediate_size,
        vocab_size=spec.vocab_size,
        tie_word_embeddings=False,
    )
    cfg._attn_implementation = "sdpa"
    return cfg


def build_model(spec: ModelSpec, seed: int = 0, device: str = "cpu", checkpoint: str | None = None):
    """Build ``spec`` as a ``LlamaForCausalLM`` in eval mode on ``device``.

    Random weights are drawn from ``seed`` (same seed and device: identical weights; the caller's
    global RNG state is left untouched); with ``checkpoint`` (a local folder) the weights are read
    from it instead, without network access. CPU uses float32, CUDA bfloat16.

    Raises:
        FileNotFoundError: ``checkpoint`` is not a folder with a ``config.json``.
        OSError: the checkpoint's weights cannot be read.
        ValueError: the checkpoint's architecture is not ``spec``'s.
        RuntimeError: the device cannot hold the model.
    """
    if checkpoint is not None:
        check_checkpoint(checkpoint)
    import torch
    from transformers import LlamaForCausalLM

    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    if checkpoint is not None:
        model = LlamaForCausalLM.from_pretrained(checkpoint, local_files_only=True, dtype=dtype,
                                                 attn_implementation="sdpa")
        cfg, want = model.config, llama_config(spec)
        keys = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size")
        diff = [f"{k} {getattr(cfg, k)} != {getattr(want, k)}" for k in keys
                if getattr(cfg, k) != getattr(want, k)]
        if diff:
            # The simulator's memory and latency figures come from the spec: they must agree.
            raise ValueError(f"checkpoint {checkpoint} is not {spec.name}: {', '.join(diff)}")
        return model.to(dev).eval()
    if dev.type == "cuda":
        devices = [dev.index if dev.index is not None else torch.cuda.current_device()]
    else:
        devices = []
    previous_dtype = torch.get_default_dtype()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        try:
            # Built directly on the device in its dtype: a 7B model in fp32 on the host would
            # need 4x its serving memory just to be created.
            torch.set_default_dtype(dtype)
            with dev:
                model = LlamaForCausalLM(llama_config(spec))
        finally:
            torch.set_default_dtype(previous_dtype)
    return model.eval()


def check_checkpoint(checkpoint: str) -> None:
    """Cheap check that ``checkpoint`` looks like a transformers model folder.

    Raises:
        FileNotFoundError: it is not a folder holding a ``config.json``.
    """
    if not os.path.isfile(os.path.join(checkpoint, "config.json")):
        raise FileNotFoundError(f"checkpoint {checkpoint!r} is not a folder with a config.json")


def _token_seed(rid: Hashable, seed: int) -> int:
    key = rid if isinstance(rid, int) else zlib.crc32(repr(rid).encode())
    return (seed * 1_000_003 + key) % (1 << 62)


def prompt_tokens(rid: Hashable, n_tokens: int, vocab_size: int, seed: int = 0) -> list[int]:
    """``n_tokens`` random token ids for request ``rid`` (deterministic in ``rid`` and ``seed``;
    a longer prompt of the same request extends the shorter one)."""
    import torch

    gen = torch.Generator().manual_seed(_token_seed(rid, seed))
    return torch.randint(0, vocab_size, (n_tokens,), generator=gen).tolist()


#: Name under which the ragged attention is registered with transformers.
RAGGED_ATTENTION = "muxsim_ragged"

_registered = False  # transformers' attention registry is process-wide: register once


def ragged_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                     muxsim_segments=None, **kwargs):
    """Attention of each request over its own tokens only, for ragged (packed) batches.

    ``muxsim_segments`` lists each request's token count in the packed K/V, in batch order.
    Prefill: one packed sequence, ``query``/``key``/``value`` ``[1, heads, tokens, head_dim]``,
    causal within each request. Decode: one query per request (``[batch, heads, 1, head_dim]``)
    over packed ``[kv_heads, tokens, head_dim]`` K/V. Without segments (any other forward pass)
    this is transformers' SDPA attention.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if muxsim_segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    import torch
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    gqa = query.shape[1] != key.shape[-3]
    # One call per request, so the work follows each request's own length, never the batch's
    # longest. Operands stay 4-D: SDPA's CPU kernels take a slower path for 3-D ones.
    if key.dim() == 3:  # decode
        keys = key.unsqueeze(0).split(muxsim_segments, dim=2)
        values = value.unsqueeze(0).split(muxsim_segments, dim=2)
        out = torch.cat([sdpa(q, k, v, scale=scaling, enable_gqa=gqa)
                         for q, k, v in zip(query.split(1), keys, values)])
    else:  # prefill
        parts = zip(query.split(muxsim_segments, dim=2), key.split(muxsim_segments, dim=2),
                    value.split(muxsim_segments, dim=2))
        out = torch.cat([sdpa(q, k, v, scale=scaling, is_causal=True, enable_gqa=gqa)
                         for q, k, v in parts], dim=2)
    return out.transpose(1, 2).contiguous(), None


def register_ragged_attention() -> None:
    """Register :func:`ragged_attention` with transformers as :data:`RAGGED_ATTENTION`
    (idempotent)."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(RAGGED_ATTENTION, ragged_attention)
        _registered = True


@contextlib.contextmanager
def attention_mode(model, ragged: bool):
    """Route ``model``'s attention through :func:`ragged_attention` for the duration when
    ``ragged`` (else leave it as it is); the previous implementation is restored on exit."""
    config = model.config
    previous = config._attn_implementation
    if ragged:
        register_ragged_attention()
        config._attn_implementation = RAGGED_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = previous
