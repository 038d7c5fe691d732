"""KV cache and batching of one LLM (:class:`KVRunner`): what a transformers worker runs per job.

Usable in-process (no process or timing logic); torch and transformers are imported lazily.

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
  call each, causal in prefill; :func:`muxsim.live.transformers.model.ragged_attention`). Cost
  follows the summed prompt tokens (plus sum of squares for attention) and the decode batch and
  *summed* context: the quantities the simulator's latency model takes, whatever the mix of
  lengths.
- ``"padded"``: right-padded prefill (no mask needed: causal attention never lets a real token
  see a later pad) and left-padded decode K/V ``[batch, kv_heads, longest + 1, head_dim]`` with
  a boolean mask over the pads; one SDPA call per layer. Cost follows batch x *longest*, so a
  batch with one long request costs as if all were long.

With equal lengths (as calibration uses) the two cost about the same. The pool doubles when it
runs out of slots: a one-off copy inside that job (calibration's warm-up runs absorb it).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from muxsim.live.transformers.model import attention_mode, prompt_tokens

__all__ = ["BATCHING_KINDS", "KVRunner"]

#: Slots the pool starts with (it doubles on demand).
_INITIAL_SLOTS = 1024

#: How a job's requests are batched (see the module docstring).
BATCHING_KINDS = ("ragged", "padded")

_CACHE_LAYERS: dict[str, type] = {}


def _cache_layers() -> dict[str, type]:
    """transformers cache layers that let the runner own the K/V.

    ``"prefill"`` keeps the pass's K/V as computed (no copy). The decode layers wrap K/V gathered
    from the pool with a free position per request (``"ragged"``: packed ``[H, tokens, D]``;
    ``"padded"``: left-padded ``[B, H, L + 1, D]``) where the new token is written in place, so
    a step never concatenates (copies) the cache; the new K/V is kept in ``new_keys`` /
    ``new_values`` for the pool.
    """
    if not _CACHE_LAYERS:
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

        _CACHE_LAYERS.update(prefill=_PrefillLayer, ragged=_PackedLayer, padded=_PaddedLayer)
    return _CACHE_LAYERS


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
        with torch.inference_mode(), attention_mode(self.model, ragged):
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
            with attention_mode(self.model, self.batching == "ragged"):
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
