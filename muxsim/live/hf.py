"""A real-engine backend on Hugging Face transformers: Llama models, one worker process per LLM.

Each LLM runs in its own worker process (``spawn`` context) pinned to its partition: on CPU a
fixed number of torch threads, on CUDA an MPS active-thread percentage. The parent only sends
commands and collects results, so it never imports torch or transformers (importing this module
is cheap, and the worker can set CUDA's environment before torch first touches the device).

KV cache and batching (:class:`KVRunner`: what a worker runs per job; usable in-process):

- One token-slot pool per worker: ``pool[layer, k|v]`` of shape ``[capacity x kv_heads,
  head_dim]``; row ``slot * kv_heads + h`` holds head ``h`` of one token. A request owns a list
  of slots (its context, in order), like vLLM's paged KV with one-token blocks. Slot 0 is never
  handed out: it stays zero and pads. Appending a token is one slot write, releasing returns the
  slots; a request's cached K/V is never copied again.
- Prefill is one forward pass over the batch's prompts; each prompt's K/V is scattered into new
  slots and logits are computed at its last token only.
- Decode is one forward pass for the whole batch, one new token per request at position id =
  its context length. The batch's K/V is gathered from the pool (one ``index_select`` per layer
  and K/V) into a buffer with a free position per request, which receives the new token's K/V
  during the pass (so the cache is never concatenated); it then goes to one new slot per request.

Two ways to batch requests of different lengths (``batching=``):

- ``"ragged"`` (default): requests packed back to back -- prefill as one sequence whose position
  ids restart per request, decode over K/V ``[kv_heads, sum(context + 1), head_dim]`` -- with
  the projections and MLP batched and attention run per request over its own tokens (one SDPA
  call each, causal in prefill). Cost follows the summed prompt tokens (plus sum of squares for
  attention) and the decode batch and *summed* context: the quantities the simulator's latency
  model takes, whatever the mix of lengths.
- ``"padded"``: right-padded prefill (no mask needed: causal attention never lets a real token
  see a later pad) and left-padded decode K/V ``[batch, kv_heads, longest + 1, head_dim]`` with
  a boolean mask over the pads; one SDPA call per layer. Cost follows batch x *longest*, so a
  batch with one long request costs as if all were long.

With equal lengths (as :meth:`TransformersEngine.measure` uses) the two cost about the same. The
pool doubles when it runs out of slots: a one-off copy inside that job (measure's warm-up runs
absorb it).

CUDA (untested here): bf16 weights and ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE = sm_pct`` in the
worker's environment before torch initialises CUDA. That share is only enforced when an MPS
control daemon runs for the device; without one the LLMs share the GPU by time slicing. Green
contexts are not used.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import multiprocessing as mp
import os
import signal
import statistics
import time
import weakref
import zlib
from dataclasses import dataclass, field
from multiprocessing.connection import wait as _wait_ready
from typing import Any, Hashable

from muxsim.catalog import ModelSpec
from muxsim.live.engine import Engine, EngineError, JobResult, Partition

__all__ = [
    "TransformersEngine",
    "KVRunner",
    "llama_config",
    "build_model",
    "prompt_tokens",
    "check_checkpoint",
    "BATCHING_KINDS",
]

#: glibc ``mallopt`` parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MALLOC_PIN_BYTES = 1 << 30

#: Slots the pool starts with (it doubles on demand).
_INITIAL_SLOTS = 1024

#: How a job's requests are batched (see the module docstring).
BATCHING_KINDS = ("ragged", "padded")


# --------------------------------------------------------------------------------------------
# Model construction (pure functions: the test process and the workers build identical models)
# --------------------------------------------------------------------------------------------

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

_CACHE_LAYERS: dict[str, type] = {}


def _ragged_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
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


def _cache_layers() -> dict[str, type]:
    """transformers cache layers that let the runner own the K/V.

    ``"prefill"`` keeps the pass's K/V as computed (no copy). The decode layers wrap K/V gathered
    from the pool with a free position per request (``"ragged"``: packed ``[H, tokens, D]``;
    ``"padded"``: left-padded ``[B, H, L + 1, D]``) where the new token is written in place, so
    a step never concatenates (copies) the cache; the new K/V is kept in ``new_keys`` /
    ``new_values`` for the pool. Also registers the ragged attention with transformers.
    """
    if not _CACHE_LAYERS:
        from transformers import AttentionInterface
        from transformers.cache_utils import DynamicLayer

        class _PrefillLayer(DynamicLayer):
            def update(self, key_states, value_states, *args, **kwargs):
                if self.is_initialized:
                    raise RuntimeError("a prefill cache layer takes one forward pass")
                self.dtype, self.device = key_states.dtype, key_states.device
                self.keys, self.values = key_states, value_states
                self.is_initialized = True
                return self.keys, self.values

        class _DecodeLayer(DynamicLayer):
            def __init__(self, keys, values):
                super().__init__()
                self.buf_keys, self.buf_values = keys, values
                self.keys, self.values = keys, values
                self.dtype, self.device = keys.dtype, keys.device
                self.is_initialized = True
                self.new_keys = self.new_values = None

            def update(self, key_states, value_states, *args, **kwargs):
                if key_states.shape[-2] != 1:
                    raise RuntimeError("decode cache layers take exactly one new token per request")
                self.new_keys, self.new_values = key_states, value_states
                self._write(self.buf_keys, key_states)
                self._write(self.buf_values, value_states)
                self.keys, self.values = self.buf_keys, self.buf_values
                return self.keys, self.values

        class _PackedLayer(_DecodeLayer):
            def __init__(self, keys, values, new_positions):
                super().__init__(keys, values)
                self.new_positions = new_positions

            def _write(self, buf, states):  # states [B, H, 1, D] -> buf[H, new_positions[b], D]
                buf[:, self.new_positions] = states[:, :, 0].transpose(0, 1)

        class _PaddedLayer(_DecodeLayer):
            def _write(self, buf, states):  # the spare last column
                buf[:, :, -1:] = states

        AttentionInterface.register(RAGGED_ATTENTION, _ragged_attention)
        _CACHE_LAYERS.update(prefill=_PrefillLayer, ragged=_PackedLayer, padded=_PaddedLayer)
    return _CACHE_LAYERS


@contextlib.contextmanager
def _attention(model, ragged: bool):
    """Route ``model``'s attention through :func:`_ragged_attention` for the duration."""
    config = model.config
    previous = config._attn_implementation
    if ragged:
        _cache_layers()  # registers it
        config._attn_implementation = RAGGED_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = previous


# --------------------------------------------------------------------------------------------
# Batching and KV bookkeeping (runs inside a worker; also usable in-process)
# --------------------------------------------------------------------------------------------

@dataclass
class _Request:
    slots: Any  # LongTensor (CPU) of this request's pool slots, in context order
    tokens: list[int]  # tokens whose K/V is cached (prompt, then each decoded input)
    next_token: int  # greedy pick of the last step: the input of the next decode


class KVRunner:
    """One LLM's model, KV slot pool and per-request state: runs prefill and decode batches.

    This is exactly what an engine worker executes for each job; it has no process or timing
    logic, so tests can run it in-process. Request ids are any hashable values. Methods return
    the logits of each request's last position (``[batch, vocab]``, in the order given).

    Args:
        model: a ``LlamaForCausalLM`` (see :func:`build_model`).
        seed: seeds the random prompt tokens (per request id).
        initial_slots: token slots the KV pool starts with; it doubles on demand.
        batching: ``"ragged"`` (requests packed back to back, attention per request: cost follows
            the summed tokens) or ``"padded"`` (padded to the batch's longest, with masks: cost
            follows batch x longest); see the module docstring.

    Raises:
        ValueError: unknown ``batching``.
    """

    def __init__(self, model, seed: int = 0, initial_slots: int = _INITIAL_SLOTS,
                 batching: str = "ragged"):
        import torch

        if batching not in BATCHING_KINDS:
            raise ValueError(f"batching must be one of {BATCHING_KINDS}, got {batching!r}")
        self.batching = batching
        self.model = model
        self.seed = seed
        cfg = model.config
        self.n_layers = cfg.num_hidden_layers
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.vocab_size = cfg.vocab_size
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self._requests: dict[Hashable, _Request] = {}
        self._capacity = 0
        self._free: list[int] = []
        self._pool = None
        self._head_offsets = torch.arange(self.kv_heads)
        self._grow(max(2, initial_slots))

    # -- pool ---------------------------------------------------------------------------------

    @property
    def capacity_slots(self) -> int:
        """Token slots the pool holds (including the reserved padding slot 0)."""
        return self._capacity

    @property
    def used_slots(self) -> int:
        """Token slots held by live requests."""
        return self._capacity - 1 - len(self._free)

    def _grow(self, needed_free: int) -> None:
        import torch

        new_cap = max(self._capacity * 2, 2)
        while new_cap - self._capacity + len(self._free) < needed_free:
            new_cap *= 2
        with torch.inference_mode():
            pool = torch.zeros(self.n_layers, 2, new_cap * self.kv_heads, self.head_dim,
                               dtype=self.dtype, device=self.device)
            if self._pool is not None:
                pool[:, :, : self._pool.shape[2]] = self._pool
        first_new = max(self._capacity, 1)  # slot 0 is the zero padding slot, never handed out
        # Popped from the end: lower slots first, so a request's context stays mostly contiguous.
        self._free = list(range(new_cap - 1, first_new - 1, -1)) + self._free
        self._pool, self._capacity = pool, new_cap

    def _alloc(self, n: int):
        import torch

        if len(self._free) < n:
            self._grow(n)
        taken = self._free[-n:]
        del self._free[-n:]
        taken.reverse()
        return torch.tensor(taken, dtype=torch.long)

    def _rows(self, slots):
        """Pool rows of ``slots`` (any shape ``S``) for every KV head: shape ``S + (kv_heads,)``."""
        return slots.unsqueeze(-1) * self.kv_heads + self._head_offsets

    # -- requests -----------------------------------------------------------------------------

    def __contains__(self, rid: Hashable) -> bool:
        return rid in self._requests

    def __len__(self) -> int:
        return len(self._requests)

    def context_tokens(self, rid: Hashable) -> int:
        """Tokens of ``rid`` held in the KV cache.

        Raises:
            KeyError: ``rid`` is not prefilled (or was released).
        """
        return len(self._get(rid).tokens)

    def sequence(self, rid: Hashable) -> list[int]:
        """Token ids whose K/V is cached for ``rid`` (prompt, then each decoded input).

        Raises:
            KeyError: ``rid`` is not prefilled (or was released).
        """
        return list(self._get(rid).tokens)

    def next_token(self, rid: Hashable) -> int:
        """The greedy token picked by ``rid``'s last step (the input of its next decode).

        Raises:
            KeyError: ``rid`` is not prefilled (or was released).
        """
        return self._get(rid).next_token

    def _get(self, rid):
        try:
            return self._requests[rid]
        except KeyError:
            raise KeyError(f"unknown request id {rid!r} (not prefilled, or released)") from None

    @staticmethod
    def _check_unique(rids) -> None:
        if len(set(rids)) != len(rids):
            raise ValueError(f"request ids repeat within one job: {list(rids)}")

    def release(self, rids) -> None:
        """Free the KV slots of ``rids``; ids not held are ignored (releasing is idempotent)."""
        for rid in rids:
            req = self._requests.pop(rid, None)
            if req is not None:
                self._free.extend(req.slots.tolist())

    def prefill(self, requests: list[tuple[Hashable, int]], prompts: dict | None = None):
        """Prefill ``requests`` = [(request id, tokens), ...] in one batched forward pass and keep
        each request's K/V; ``prompts`` optionally gives token ids per request id (default: random
        tokens from :func:`prompt_tokens`). Returns the logits at each prompt's last token.

        Raises:
            ValueError: empty batch, a repeated or already prefilled id, or fewer than 1 token.
        """
        if not requests:
            raise ValueError("a prefill needs at least one request")
        rids = [rid for rid, _ in requests]
        self._check_unique(rids)
        lens = []
        for rid, n in requests:
            if rid in self._requests:
                raise ValueError(f"request id {rid!r} is already prefilled (release it first)")
            if int(n) < 1:
                raise ValueError(f"request {rid!r}: prefill of {n} tokens (need >= 1)")
            lens.append(int(n))
        toks = [list(prompts[rid]) if prompts and rid in prompts
                else prompt_tokens(rid, n, self.vocab_size, self.seed) for rid, n in zip(rids, lens)]
        for rid, t, n in zip(rids, toks, lens):
            if len(t) != n:
                raise ValueError(f"request {rid!r}: {len(t)} prompt tokens for a prefill of {n}")
        slots = self._alloc(sum(lens))
        try:
            logits, picks = self._prefill_step(toks, lens, slots)
        except BaseException:
            self._free.extend(slots.tolist())
            raise
        offset = 0
        for rid, t, n, pick in zip(rids, toks, lens, picks):
            self._requests[rid] = _Request(slots=slots[offset: offset + n], tokens=t, next_token=pick)
            offset += n
        return logits

    def _prefill_step(self, toks: list[list[int]], lens: list[int], slots):
        import torch
        from transformers.cache_utils import Cache

        batch, D = len(lens), self.head_dim
        ragged = self.batching == "ragged"
        layers = [_cache_layers()["prefill"]() for _ in range(self.n_layers)]
        with torch.inference_mode(), _attention(self.model, ragged):
            if ragged:
                # One packed sequence, positions restarting at 0 per request: the matmuls see
                # exactly the prompt tokens, attention stays within each request.
                ids = torch.tensor([t for ts in toks for t in ts], dtype=torch.long).unsqueeze(0)
                positions = torch.cat([torch.arange(n) for n in lens]).unsqueeze(0)
                out = self.model.model(input_ids=ids.to(self.device),
                                       position_ids=positions.to(self.device),
                                       past_key_values=Cache(layers=layers), use_cache=True,
                                       muxsim_segments=lens)
                last = torch.cumsum(torch.tensor(lens), 0) - 1
                hidden = out.last_hidden_state[0, last.to(self.device)]
            else:
                longest = max(lens)
                ids = torch.zeros(batch, longest, dtype=torch.long)
                for i, t in enumerate(toks):
                    ids[i, : len(t)] = torch.tensor(t, dtype=torch.long)
                out = self.model.model(input_ids=ids.to(self.device),
                                       past_key_values=Cache(layers=layers), use_cache=True)
                lens_t = torch.tensor(lens, dtype=torch.long)
                hidden = out.last_hidden_state[torch.arange(batch, device=self.device),
                                               (lens_t - 1).to(self.device)]
                real = (torch.arange(longest) < lens_t.unsqueeze(1)).to(self.device)  # [B, L]
            # Logits only at each prompt's last token (what a serving engine computes).
            logits = self.model.lm_head(hidden)
            picks = logits.argmax(-1).tolist()
            # Every real token's K/V, request by request, as [tokens, H, D] rows into its slots.
            dst = self._rows(slots).reshape(-1).to(self.device)
            for layer, cached in enumerate(layers):
                for kv, t in ((0, cached.keys), (1, cached.values)):
                    rows = t[0].transpose(0, 1) if ragged else t.transpose(1, 2)[real]
                    self._pool[layer, kv].index_copy_(0, dst, rows.reshape(-1, D))
        return logits, picks

    def decode(self, rids: list[Hashable]):
        """One decode iteration for ``rids`` as one batch: feeds each request's pending token,
        appends its K/V and picks the next one greedily. Returns the logits of the fed tokens.

        Raises:
            KeyError: an id is not prefilled (or was released).
            ValueError: empty batch or a repeated id.
        """
        import torch

        if not rids:
            raise ValueError("a decode needs at least one request")
        self._check_unique(rids)
        reqs = [self._get(rid) for rid in rids]
        batch = len(reqs)
        lens = [len(r.tokens) for r in reqs]
        new_slots = self._alloc(batch)
        try:
            logits, picks = self._decode_step(reqs, lens, new_slots)
        except BaseException:
            self._free.extend(new_slots.tolist())  # the requests keep their state: nothing leaks
            raise
        for i, (r, pick) in enumerate(zip(reqs, picks)):
            r.slots = torch.cat([r.slots, new_slots[i: i + 1]])
            r.tokens.append(r.next_token)
            r.next_token = pick
        return logits

    def _decode_step(self, reqs: list[_Request], lens: list[int], new_slots):
        import torch
        from transformers.cache_utils import Cache

        D = self.head_dim
        with torch.inference_mode():
            if self.batching == "ragged":
                layers, kwargs = self._gather_packed(reqs, lens)
            else:
                layers, kwargs = self._gather_padded(reqs, lens)
            inputs = torch.tensor([[r.next_token] for r in reqs], dtype=torch.long, device=self.device)
            positions = torch.tensor(lens, dtype=torch.long, device=self.device).unsqueeze(1)
            with _attention(self.model, self.batching == "ragged"):
                out = self.model.model(input_ids=inputs, position_ids=positions,
                                       past_key_values=Cache(layers=layers), use_cache=True, **kwargs)
            logits = self.model.lm_head(out.last_hidden_state[:, -1])
            picks = logits.argmax(-1).tolist()
            dst = self._rows(new_slots).reshape(-1).to(self.device)
            for layer, cached in enumerate(layers):
                self._pool[layer, 0].index_copy_(0, dst, cached.new_keys.reshape(-1, D))
                self._pool[layer, 1].index_copy_(0, dst, cached.new_values.reshape(-1, D))
        return logits, picks

    def _gather_packed(self, reqs: list[_Request], lens: list[int]):
        """Contexts back to back, each followed by a free position: ``[H, sum(len + 1), D]``."""
        import torch

        H, D = self.kv_heads, self.head_dim
        spare = torch.zeros(1, dtype=torch.long)  # slot 0, overwritten by the new token
        packed = torch.cat([t for r in reqs for t in (r.slots, spare)])
        total = packed.shape[0]
        rows = (packed.unsqueeze(0) * H + self._head_offsets.unsqueeze(1)).reshape(-1)
        rows = rows.to(self.device)
        segments = [n + 1 for n in lens]
        new_positions = torch.cumsum(torch.tensor(segments, dtype=torch.long), 0) - 1
        new_positions = new_positions.to(self.device)
        cls = _cache_layers()["ragged"]
        layers = [cls(self._pool[layer, 0].index_select(0, rows).view(H, total, D),
                      self._pool[layer, 1].index_select(0, rows).view(H, total, D), new_positions)
                  for layer in range(self.n_layers)]
        return layers, {"muxsim_segments": segments}

    def _gather_padded(self, reqs: list[_Request], lens: list[int]):
        """Contexts left-padded to the longest plus a free last column: ``[B, H, L + 1, D]``, and
        the boolean mask that hides the pads."""
        import torch

        batch, longest = len(reqs), max(lens)
        H, D = self.kv_heads, self.head_dim
        table = torch.zeros(batch, longest + 1, dtype=torch.long)  # slot 0 pads
        for i, r in enumerate(reqs):
            table[i, longest - lens[i]: longest] = r.slots
        rows = self._rows(table).transpose(1, 2).reshape(-1).to(self.device)  # [B, H, L+1]
        lens_t = torch.tensor(lens, dtype=torch.long)
        visible = torch.arange(longest + 1) >= (longest - lens_t).unsqueeze(1)
        cls = _cache_layers()["padded"]
        layers = [cls(self._pool[layer, 0].index_select(0, rows).view(batch, H, longest + 1, D),
                      self._pool[layer, 1].index_select(0, rows).view(batch, H, longest + 1, D))
                  for layer in range(self.n_layers)]
        return layers, {"attention_mask": visible[:, None, None, :].to(self.device)}

    def synchronize(self) -> None:
        """Wait for queued device work (CUDA), so a timer stopped after it measures the job."""
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)


# --------------------------------------------------------------------------------------------
# Worker process
# --------------------------------------------------------------------------------------------

def _pin_malloc() -> bool:
    """Pin glibc malloc's thresholds; returns whether both took effect (False off glibc).

    glibc serves blocks above M_MMAP_THRESHOLD (128 KiB, raised dynamically up to 32 MiB as
    large blocks are freed) with a fresh mmap and returns them with munmap on free. The K/V
    tensors a job allocates are often above it, so each job would page-fault its buffers in
    anew (the kernel zeroes every page), and whether it does depends on the allocation history
    that moved the dynamic threshold: job cost would jump with batch and context instead of
    growing smoothly (measured here: a llama-tiny-s decode of 8 requests took 2-3x longer from
    about 500 tokens of context on). A fixed threshold (which also ends the dynamic adjustment)
    keeps those blocks in the heap for reuse, and a high M_TRIM_THRESHOLD stops free() from
    handing the heap top back to the OS after a large job.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # Older glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit).
    ok_mmap = (mallopt(_M_MMAP_THRESHOLD, _MALLOC_PIN_BYTES) == 1
               or mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1)
    ok_trim = mallopt(_M_TRIM_THRESHOLD, _MALLOC_PIN_BYTES) == 1
    return ok_mmap and ok_trim


def _one_line(exc: BaseException) -> str:
    # str(KeyError) quotes its message; show the message itself.
    detail = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    text = f"{type(exc).__name__}: {detail}"
    return " ".join(text.split())


def _timed(runner: KVRunner, fn, arg) -> tuple[float, float, float]:
    started = time.monotonic()
    t0 = time.perf_counter()
    fn(arg)
    runner.synchronize()
    duration = time.perf_counter() - t0
    return started, time.monotonic(), duration


#: Decode iterations timed per calibration repeat (their median is the repeat's sample).
_DECODE_STEPS = 4


def _measure(runner: KVRunner, batch: int, seq: int, warmup: int, repeats: int):
    prefill_s, decode_s = [], []
    for rep in range(warmup + repeats):
        # Ids of their own kind cannot collide with the live requests' (ints).
        rids = [("measure", rep, i) for i in range(batch)]
        try:
            *_, p = _timed(runner, runner.prefill, [(rid, seq) for rid in rids])
            # a served batch decodes many iterations in a row: time a few and keep their
            # median, so one-off costs of the first step after a prefill do not bias the curve
            steps = [_timed(runner, runner.decode, rids)[2] for _ in range(_DECODE_STEPS)]
            d = statistics.median(steps)
        finally:
            runner.release(rids)
        if rep >= warmup:
            prefill_s.append(p)
            decode_s.append(d)
    return prefill_s, decode_s


def _worker_main(llm: str, spec: ModelSpec, partition: Partition, checkpoint: str | None,
                 seed: int, batching: str, conn) -> None:
    """Entry point of one LLM's worker process: load, then execute commands in order."""
    # The parent decides when workers stop; a Ctrl-C in the terminal must not kill them mid-job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    malloc_pinned = _pin_malloc()
    cuda = partition.device.startswith("cuda")
    if cuda and partition.sm_pct is not None:
        # Read by the CUDA driver when this process creates its context. Nothing has touched
        # CUDA in this fresh process yet (importing torch does not initialise it).
        os.environ["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(int(round(partition.sm_pct)))
    try:
        if partition.cores:
            try:
                os.sched_setaffinity(0, set(partition.cores))
            except (AttributeError, OSError) as exc:
                raise RuntimeError(f"cannot pin the worker to cores {list(partition.cores)}: {exc}; "
                                   f"allowed: {sorted(os.sched_getaffinity(0))}") from None
        if checkpoint is not None:
            check_checkpoint(checkpoint)  # before the slow imports: fail in a fraction of a second
        import torch

        torch.set_num_threads(max(1, int(partition.threads)))
        torch.set_num_interop_threads(1)
        if cuda:
            index = torch.device(partition.device).index
            if index is not None:
                torch.cuda.set_device(index)
            if partition.memory_fraction is not None:
                torch.cuda.set_per_process_memory_fraction(partition.memory_fraction,
                                                           torch.cuda.current_device())
        model = build_model(spec, seed, partition.device, checkpoint)
        runner = KVRunner(model, seed, batching=batching)
        # Warm the kernels and allocator once so the first real job is not an outlier.
        _measure(runner, 1, 8, 1, 0)
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
        conn.send(("load_error", _one_line(exc)))
        return
    # Everything allocated so far lives as long as the worker: keep the cyclic GC off it.
    gc.collect()
    gc.freeze()
    conn.send(("ready", {"pid": os.getpid(), "threads": torch.get_num_threads(),
                         "batching": batching,
                         "dtype": str(runner.dtype), "device": str(runner.device),
                         "malloc_pinned": malloc_pinned}))
    serve_commands(conn, {"prefill": lambda arg: _timed(runner, runner.prefill, arg),
                          "decode": lambda arg: _timed(runner, runner.decode, arg)},
                   runner.release, lambda *point: _measure(runner, *point), _one_line)


def serve_commands(conn, jobs: dict, release, measure, one_line) -> None:
    """A worker's command loop, until ``("stop",)`` or the parent goes away.

    Commands (tuples from ``conn``) and replies: ``("prefill" | "decode", job_id, arg)`` ->
    ``("done", job_id, kind, started, ended, duration_s)`` from ``jobs[kind](arg)``;
    ``("release", request_ids)`` -> ``release(request_ids)``, no reply;
    ``("measure", job_id, batch, seq, warmup, repeats)`` -> ``("measured", job_id, prefill_s,
    decode_s)`` from ``measure(batch, seq, warmup, repeats)``; a failing job or measurement ->
    ``("error", job_id, kind, one_line(exc))``, and the loop goes on.
    """
    while True:
        try:
            cmd = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone: nobody will read results
        op = cmd[0]
        if op == "stop":
            return
        try:
            if op == "release":
                release(cmd[1])
            elif op in jobs:
                _, job_id, arg = cmd
                try:
                    conn.send(("done", job_id, op, *jobs[op](arg)))
                except Exception as exc:  # noqa: BLE001
                    conn.send(("error", job_id, op, one_line(exc)))
            elif op == "measure":
                _, job_id, batch, seq, warmup, repeats = cmd
                try:
                    conn.send(("measured", job_id, *measure(batch, seq, warmup, repeats)))
                except Exception as exc:  # noqa: BLE001
                    conn.send(("error", job_id, op, one_line(exc)))
            else:
                conn.send(("error", None, op, f"unknown command {op!r}"))
        except (BrokenPipeError, EOFError, OSError):
            return


# --------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------

@dataclass
class _Worker:
    llm: str
    process: Any
    conn: Any
    in_flight: dict[int, str] = field(default_factory=dict)  # job id -> kind
    info: dict = field(default_factory=dict)
    dead: bool = False


def _stop_workers(workers: dict[str, _Worker], timeout_s: float = 5.0) -> None:
    """Stop every worker: ask, wait up to ``timeout_s`` in all, then terminate and kill."""
    for w in workers.values():
        try:
            w.conn.send(("stop",))
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + timeout_s
    for w in workers.values():
        w.process.join(max(0.0, deadline - time.monotonic()))
    for w in workers.values():
        if w.process.is_alive():
            w.process.terminate()
            w.process.join(2.0)
        if w.process.is_alive():
            w.process.kill()
            w.process.join(2.0)
        try:
            w.conn.close()
        except OSError:
            pass
        w.dead = True
    workers.clear()


class TransformersEngine(Engine):
    """Live engine on transformers: one ``spawn``-ed worker process per LLM.

    Jobs of one LLM run in submission order in its worker; jobs of different LLMs run
    concurrently. Each job is one real batched forward pass with a KV cache (see the module
    docstring); ``duration_s`` is its compute time measured in the worker with
    ``time.perf_counter()``, ``started_s``/``ended_s`` are ``time.monotonic()`` around it.
    Workers stop on :meth:`close`, on leaving a ``with`` block, when the engine is garbage
    collected and at interpreter exit.

    Not thread-safe: drive it from one thread.

    Args:
        batching: how every worker batches a job's requests, ``"ragged"`` or ``"padded"`` (see
            the module docstring).
        load_timeout_s: how long :meth:`load` waits for a worker to build its model (s).
        stop_timeout_s: how long :meth:`close` waits for workers to exit before terminating them (s).

    Raises:
        ValueError: unknown ``batching``.
    """

    def __init__(self, batching: str = "ragged", load_timeout_s: float = 600.0,
                 stop_timeout_s: float = 5.0):
        if batching not in BATCHING_KINDS:
            raise ValueError(f"batching must be one of {BATCHING_KINDS}, got {batching!r}")
        self._batching = batching
        self._ctx = mp.get_context("spawn")
        self._workers: dict[str, _Worker] = {}
        self._next_job = 0
        # Results and job failures in arrival order: wait() hands out results up to the first
        # failure, which the next call raises.
        self._events: list[JobResult | EngineError] = []
        self._closed = False
        self._load_timeout_s = load_timeout_s
        self._stop_timeout_s = stop_timeout_s
        # Holds only the worker table, not the engine, so an engine dropped without close()
        # still stops its workers (on collection or at interpreter exit).
        self._finalizer = weakref.finalize(self, _stop_workers, self._workers, stop_timeout_s)

    # -- lifecycle ----------------------------------------------------------------------------

    def load(self, llm: str, model: ModelSpec, partition: Partition, checkpoint: str | None = None,
             seed: int = 0) -> None:
        """Start ``llm``'s worker on ``partition`` and build ``model`` there (random weights from
        ``seed``, or the local ``checkpoint`` folder). Blocks until it is ready (at most
        ``load_timeout_s``).

        Raises:
            EngineError: the engine is closed, ``llm`` is already loaded, the partition is not
                ``cpu``/``cuda[:n]``, or the worker failed or timed out building the model.
        """
        self._check_open()
        if llm in self._workers:
            raise EngineError(f"{llm}: already loaded")
        if not (partition.device == "cpu" or partition.device.startswith("cuda")):
            raise EngineError(f"{llm}: unsupported device {partition.device!r} (cpu or cuda[:n])")
        if partition.threads < 1:
            raise EngineError(f"{llm}: partition needs >= 1 thread, got {partition.threads}")
        self._spawn_worker(llm, model, partition, _worker_main,
                           (llm, model, partition, checkpoint, seed, self._batching),
                           name=f"muxsim-hf-{llm}", daemon=True, how="")

    def _spawn_worker(self, llm: str, model: ModelSpec, partition: Partition, target, args: tuple,
                      name: str, daemon: bool, how: str) -> None:
        """Start ``target(*args, conn)`` in a new process as ``llm``'s worker and wait (at most
        ``load_timeout_s``) for its ``("ready", info)`` message.

        Raises:
            EngineError: the worker reported a load error, exited, or timed out (it is stopped
                first); ``how`` (e.g. ``" with vLLM"``) completes the message.
        """
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=target, name=name, daemon=daemon, args=(*args, child_conn))
        proc.start()
        child_conn.close()  # so the parent sees EOF when the worker dies
        worker = _Worker(llm, proc, parent_conn)
        self._workers[llm] = worker
        ready = _wait_ready([parent_conn, proc.sentinel], timeout=self._load_timeout_s)
        msg = None
        if parent_conn in ready:
            try:
                msg = parent_conn.recv()
            except (EOFError, OSError):
                msg = None
        if msg is not None and msg[0] == "ready":
            worker.info = msg[1]
            return
        del self._workers[llm]
        _stop_workers({llm: worker}, self._stop_timeout_s)
        if msg is not None:
            raise EngineError(f"{llm}: cannot load {model.name}{how} on {partition.device}: {msg[1]}")
        if not ready:
            raise EngineError(f"{llm}: loading {model.name}{how} took over {self._load_timeout_s:g} s")
        raise EngineError(f"{llm}: worker exited while loading {model.name}{how} "
                          f"(exit code {proc.exitcode})")

    def close(self) -> None:
        """Stop all workers (ask, wait ``stop_timeout_s``, then terminate) and drop their KV
        caches. Idempotent; results not yet collected are lost."""
        if self._closed:
            return
        self._closed = True
        self._finalizer()

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("engine is closed")

    def worker_info(self, llm: str) -> dict:
        """What ``llm``'s worker reported when ready: pid, threads, dtype, device, malloc_pinned.

        Raises:
            EngineError: ``llm`` is not loaded.
        """
        return dict(self._worker(llm).info)

    def worker_pids(self) -> list[int]:
        """Process ids of the running workers."""
        return [w.process.pid for w in self._workers.values() if not w.dead]

    # -- jobs ---------------------------------------------------------------------------------

    def _worker(self, llm: str) -> _Worker:
        self._check_open()
        try:
            w = self._workers[llm]
        except KeyError:
            loaded = ", ".join(self._workers) or "none"
            raise EngineError(f"{llm}: not loaded (loaded: {loaded})") from None
        if w.dead:
            raise EngineError(f"{llm}: worker is no longer running")
        return w

    def _send(self, w: _Worker, msg: tuple) -> None:
        # Collect finished results first: a worker blocked on a full result pipe would stop
        # reading commands, and a long run of submits without wait() would then deadlock.
        self._drain()
        if w.dead:
            raise EngineError(f"{w.llm}: worker is no longer running "
                              f"(exit code {w.process.exitcode})")
        try:
            w.conn.send(msg)
        except (BrokenPipeError, OSError) as exc:
            self._mark_dead(w)
            raise EngineError(f"{w.llm}: worker is no longer running ({_one_line(exc)})") from None

    def _submit(self, llm: str, kind: str, arg: list) -> int:
        w = self._worker(llm)
        job_id = self._next_job
        self._next_job += 1
        self._send(w, (kind, job_id, arg))
        w.in_flight[job_id] = kind
        return job_id

    def submit_prefill(self, llm: str, requests: list[tuple[int, int]]) -> int:
        """Queue one prefill job of ``llm`` over ``requests`` = [(request id, tokens), ...];
        returns its job id. A request must not hold a KV cache already (release it first, e.g.
        to recompute after preemption). Problems with the requests surface from :meth:`wait`.

        Raises:
            EngineError: the engine is closed or ``llm`` is not loaded / its worker died.
            ValueError: empty ``requests`` or a request of fewer than 1 token.
        """
        reqs = [(rid, int(n)) for rid, n in requests]
        if not reqs or any(n < 1 for _, n in reqs):
            raise ValueError(f"{llm}: a prefill needs >= 1 request of >= 1 token, got {requests!r}")
        return self._submit(llm, "prefill", reqs)

    def submit_decode(self, llm: str, request_ids: list[int]) -> int:
        """Queue one decode iteration of ``llm`` for ``request_ids`` (one batch); returns its job
        id. Unknown ids surface as an :class:`EngineError` from :meth:`wait`.

        Raises:
            EngineError: the engine is closed or ``llm`` is not loaded / its worker died.
            ValueError: empty ``request_ids``.
        """
        rids = list(request_ids)
        if not rids:
            raise ValueError(f"{llm}: a decode needs >= 1 request")
        return self._submit(llm, "decode", rids)

    def release(self, llm: str, request_ids: list[int]) -> None:
        """Free the KV caches of ``request_ids`` in ``llm``'s worker, after the jobs already
        submitted and before later ones. Ids without a cache are ignored.

        Raises:
            EngineError: the engine is closed or ``llm`` is not loaded / its worker died.
        """
        rids = list(request_ids)
        if rids:
            self._send(self._worker(llm), ("release", rids))

    def measure(self, llm: str, batch: int, seq: int, warmup: int,
                repeats: int) -> tuple[list[float], list[float]]:
        """Calibration point measured in ``llm``'s worker (after its queued jobs): ``warmup +
        repeats`` times, prefill ``batch`` prompts of ``seq`` tokens (timed), decode them once
        (timed, context ``seq``), release. Returns the last ``repeats`` prefill and decode
        durations (s). Blocks; results of other jobs arriving meanwhile are kept for :meth:`wait`.

        Raises:
            EngineError: the measurement failed (e.g. out of memory) or the worker died.
            ValueError: ``batch``, ``seq`` or ``repeats`` below 1, or ``warmup`` below 0.
        """
        if batch < 1 or seq < 1 or repeats < 1 or warmup < 0:
            raise ValueError(f"{llm}: measure needs batch, seq, repeats >= 1 and warmup >= 0, "
                             f"got {batch}, {seq}, {repeats}, {warmup}")
        w = self._worker(llm)
        job_id = self._next_job
        self._next_job += 1
        self._send(w, ("measure", job_id, int(batch), int(seq), int(warmup), int(repeats)))
        w.in_flight[job_id] = "measure"
        while True:
            _wait_ready([w.conn, w.process.sentinel])
            for msg in self._drain_worker(w):
                if msg[0] == "measured" and msg[1] == job_id:
                    return list(msg[2]), list(msg[3])
                if msg[0] == "error" and msg[1] == job_id:
                    raise EngineError(f"{llm}: measure (batch {batch}, seq {seq}) failed: {msg[3]}")
            if w.dead:
                raise EngineError(f"{llm}: worker exited during measure (batch {batch}, seq {seq}), "
                                  f"exit code {w.process.exitcode}")

    def wait(self, timeout: float | None = None) -> list[JobResult]:
        """Results of the jobs finished since the last call, in completion order per LLM; blocks
        up to ``timeout`` s for at least one (None: until one finishes). Returns an empty list on
        timeout, or at once when no job is in flight.

        Raises:
            EngineError: a job failed (message: LLM, job id, kind, cause) or a worker died with
                jobs in flight. Results that arrived before the failure are returned first (the
                failure is raised by the next call); those after it by the calls after that.
        """
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            self._drain()
            if self._events:
                if isinstance(self._events[0], EngineError):
                    raise self._events.pop(0)
                n = next((i for i, ev in enumerate(self._events) if isinstance(ev, EngineError)),
                         len(self._events))
                out, self._events = self._events[:n], self._events[n:]
                return out
            live = [w for w in self._workers.values() if not w.dead and w.in_flight]
            if not live:
                return []
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return []
            handles = [w.conn for w in live] + [w.process.sentinel for w in live]
            _wait_ready(handles, timeout=remaining)

    # -- result plumbing ----------------------------------------------------------------------

    def _drain(self) -> None:
        for w in list(self._workers.values()):
            if not w.dead:
                self._drain_worker(w)

    def _drain_worker(self, w: _Worker) -> list[tuple]:
        """Read every message ``w`` has sent; turn job messages into results or errors and return
        all messages read. Detects a dead worker."""
        msgs, eof = self._read_all(w)
        if not eof and not w.process.is_alive():
            # It may have sent its last messages after our poll: read up to the EOF.
            more, _ = self._read_all(w)
            msgs, eof = msgs + more, True
        for msg in msgs:
            tag = msg[0]
            if tag == "done":
                _, job_id, kind, started, ended, duration = msg
                w.in_flight.pop(job_id, None)
                self._events.append(JobResult(job_id, w.llm, kind, started, ended, duration))
            elif tag == "measured":
                w.in_flight.pop(msg[1], None)
            elif tag == "error":
                _, job_id, kind, text = msg
                w.in_flight.pop(job_id, None)
                if kind != "measure":
                    self._events.append(EngineError(f"{w.llm}: job {job_id} ({kind}) failed: {text}"))
        if eof:
            self._mark_dead(w)
        return msgs

    @staticmethod
    def _read_all(w: _Worker) -> tuple[list[tuple], bool]:
        msgs = []
        try:
            while w.conn.poll():
                msgs.append(w.conn.recv())
        except (EOFError, OSError):
            return msgs, True
        return msgs, False

    def _mark_dead(self, w: _Worker) -> None:
        if w.dead:
            return
        w.dead = True
        w.process.join(1.0)
        lost = sorted(j for j, k in w.in_flight.items() if k != "measure")
        if lost:
            self._events.append(EngineError(
                f"{w.llm}: worker exited (exit code {w.process.exitcode}) with jobs {lost} in flight"))
        w.in_flight.clear()

