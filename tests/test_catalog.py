"""Catalog facts against the figures MuxServe's memory model and the model cards state."""

import pytest

from muxsim.catalog import GPUS, MODELS, UnknownNameError, get_gpu, get_model


@pytest.mark.parametrize("name,tp,blocks", [("llama-7b", 1, 1024), ("llama-13b", 1, 1600),
                                            ("llama-30b", 2, 1560), ("llama-30b", 4, 780),
                                            ("llama-65b", 4, 1280), ("llama-65b", 8, 640)])
def test_head_wise_blocks_per_32_token_step(name, tp, blocks):
    # ../shared/docs/muxserve.md §3: (heads / tp) x layers
    assert get_model(name).blocks_per_step(tp) == blocks


def test_kv_bytes_and_block_size():
    m7 = get_model("llama-7b")
    assert m7.kv_bytes_per_token == 2 * 32 * 32 * 128 * 2 == 524_288  # 0.5 MiB per token
    assert m7.kv_block_bytes() == 16 * 1024  # one head, 32 tokens, K and V, fp16
    # grouped-query attention: 8 KV heads make Llama-3-70B's KV 8x smaller per layer
    assert get_model("llama-3-70b").kv_bytes_per_token == 2 * 80 * 8 * 128 * 2
    assert get_model("llama-2-70b").blocks_per_step(8) == 80


def test_every_entry_is_consistent_and_sourced():
    for m in MODELS.values():
        assert m.head_dim * m.n_heads == m.hidden_size
        assert m.n_heads % m.n_kv_heads == 0
        assert m.source and m.min_gpus in (1, 2, 4, 8)
        # parameters roughly 12 x layers x hidden^2 (+ embeddings): a typo guard, within 25 %
        approx = m.n_layers * (4 * m.hidden_size**2 * (1 + m.n_kv_heads / m.n_heads) / 2
                               + 3 * m.hidden_size * m.intermediate_size) + 2 * m.vocab_size * m.hidden_size
        assert 0.75 < m.n_params / approx < 1.25, m.name
    for g in GPUS.values():
        assert g.source and g.n_sms >= 1 and g.memory_bytes > 0
        if g.name != "cpu-core":
            assert g.n_sms > 100 and g.memory_bytes >= 80 * 2**30 * 0.99


def test_unknown_names_list_the_allowed_ones():
    with pytest.raises(UnknownNameError, match="allowed: llama-7b, llama-13b"):
        get_model("gpt-4")
    with pytest.raises(UnknownNameError, match="allowed: a100-80gb, h100-80gb, h200-141gb, cpu-core"):
        get_gpu("v100")
    assert get_model(" LLaMA-7B ").name == "llama-7b"
