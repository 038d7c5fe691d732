"""Placement search, spatial partitioning and explicit placements."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from muxsim.catalog import get_gpu, get_model
from muxsim.core.memory import kv_blocks_per_gpu
from muxsim.core.placement import (
    LLMDemand,
    PlacementContext,
    PlacementError,
    explicit_placement,
    muxserve_placement,
    node_splits,
    spatial_placement,
)
from muxsim.perf import get_latency_model
from muxsim.workload import popularity_rates

GPU = get_gpu("a100-80gb")
LAT = get_latency_model("a100-80gb")
PAPER = ["llama-7b"] * 12 + ["llama-13b"] * 4 + ["llama-30b"] * 2 + ["llama-65b"]


def _ctx(models, rates):
    demands = [LLMDemand(f"llm-{i}", get_model(m), r) for i, (m, r) in enumerate(zip(models, rates))]
    return PlacementContext(demands, GPU, LAT, mean_prompt=161, mean_output=337)


def test_node_splits_and_layout_count_match_the_reference():
    splits = node_splits(8)
    assert len(splits) == 10
    assert (8,) in splits and (4, 2, 1, 1) in splits and (1,) * 8 in splits
    assert all(sum(s) == 8 for s in splits)
    assert sum(1 for _ in itertools.combinations_with_replacement(splits, 4)) == 715


@pytest.mark.parametrize("alpha", [0.7, 2.1])
def test_paper_setup_placement_is_feasible(alpha):
    ctx = _ctx(PAPER, popularity_rates(19, alpha, 40.0))
    p = muxserve_placement(ctx, 4, 8)
    placed = [n for m in p.meshes for n in m.llms]
    assert sorted(placed) == sorted(f"llm-{i}" for i in range(19))
    used = {}
    for m in p.meshes:
        used[m.node] = used.get(m.node, 0) + m.gpus
        models = [ctx.llms[int(n.split("-")[1])].model for n in m.llms]
        assert all(mod.min_gpus <= m.gpus for mod in models)
        assert kv_blocks_per_gpu(models, m.gpus, GPU) > 0
        assert sum(dec for _, dec in m.sm.values()) <= 120
        for name, (pf, dec) in m.sm.items():
            assert 30 <= dec <= 90 and pf in (80.0, 90.0, 100.0)
    assert all(v <= 8 for v in used.values())
    assert 0 < p.total_est_throughput <= sum(l.rate for l in ctx.llms) + 1e-9
    assert p.layouts_searched > 100


def test_popular_llm_gets_more_gpus_than_an_unpopular_one():
    ctx = _ctx(["llama-7b"] * 4, [30.0, 0.2, 0.2, 0.2])
    p = muxserve_placement(ctx, 1, 8)
    size = {n: m.gpus for m in p.meshes for n in m.llms}
    assert size["llm-0"] >= max(size.values()) and size["llm-0"] >= 2
    # the unpopular ones are colocated rather than each given GPUs of their own
    assert len(p.meshes) <= 2
    # 30 req/s is above what any mesh serves: llm-0 gets the most any mesh of the node gives it
    best_alone = max(ctx.mesh_capacity(m, (0,))[0] for m in (1, 2, 4, 8))
    assert p.est_throughput["llm-0"] < 30.0
    assert p.est_throughput["llm-0"] >= 0.95 * max(ctx.mesh_capacity(m, (0,))[0] for m in (1, 2, 4))
    assert p.est_throughput["llm-0"] <= best_alone + 1e-9


def test_spatial_matches_the_paper_partition():
    ctx = _ctx(PAPER, popularity_rates(19, 0.9, 40.0))
    p = spatial_placement(ctx, 4, 8)
    size = {n: m.gpus for m in p.meshes for n in m.llms}
    assert [size[f"llm-{i}"] for i in range(19)] == [1] * 16 + [4, 4, 8]
    assert all(len(m.llms) == 1 for m in p.meshes)


def test_llm_that_fits_nowhere_is_named():
    ctx = _ctx(["llama-7b", "llama-65b"], [1.0, 1.0])
    with pytest.raises(PlacementError, match=r"llm-1 \(llama-65b\) fits on no mesh"):
        muxserve_placement(ctx, 4, 2)
    with pytest.raises(PlacementError, match="spatial partitioning needs"):
        spatial_placement(_ctx(["llama-7b"] * 3, [1.0] * 3), 1, 2)


def test_explicit_placement_is_checked():
    ctx = _ctx(["llama-7b", "llama-7b", "llama-13b"], [2.0, 1.0, 1.0])
    mesh = lambda node, gpus, llms, sm=None: SimpleNamespace(node=node, gpus=gpus, llms=llms, sm=sm)
    p = explicit_placement(ctx, [mesh(0, 2, ["llm-0", "llm-1"], {"llm-0": (80, 50)}), mesh(0, 1, ["llm-2"])], 1, 4)
    assert p.meshes[0].sm["llm-0"] == (80.0, 50.0)
    assert p.meshes[1].first_gpu == 2 and p.meshes[1].sm["llm-2"][0] == 90.0
    with pytest.raises(PlacementError, match="node 0 is given 5 GPUs"):
        explicit_placement(ctx, [mesh(0, 4, ["llm-0"]), mesh(0, 1, ["llm-1", "llm-2"])], 1, 4)
    with pytest.raises(PlacementError, match="decode SM shares sum to 130"):
        explicit_placement(ctx, [mesh(0, 2, ["llm-0", "llm-1"], {"llm-0": (80, 70), "llm-1": (80, 60)}),
                                 mesh(0, 1, ["llm-2"])], 1, 4)
    with pytest.raises(PlacementError, match="do not fit in the memory"):
        explicit_placement(_ctx(["llama-30b"] * 3, [1.0] * 3), [mesh(0, 2, ["llm-0", "llm-1", "llm-2"])], 1, 4)
