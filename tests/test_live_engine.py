"""The transformers live engine: real KV-cached forward passes in per-LLM worker processes.

The batching logic is checked in-process (``KVRunner``) against full forward passes; the engine
(worker processes, pipes, errors, shutdown) on small Llama models on 1-thread CPU partitions.
"""

import itertools
import multiprocessing
import os
import signal
import statistics
import time
from dataclasses import replace

import pytest

pytest.importorskip("torch", reason="the live transformers engine needs torch")
pytest.importorskip("transformers", reason="the live transformers engine needs transformers")

import torch

from muxsim.catalog import get_model
from muxsim.live.engine import EngineError, Partition
from muxsim.live.transformers import (
    KVRunner,
    TransformersEngine,
    build_model,
    prompt_tokens,
)

TINY = get_model("llama-tiny-s")
# Grouped-query attention (2 KV heads for 4 query heads), as in Llama-3 / Mistral.
TINY_GQA = replace(TINY, name="llama-tiny-gqa", n_kv_heads=2)
CPU1 = Partition(device="cpu", threads=1)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # In-process checks run on one thread like the workers; more would only contend for the
    # machine's cores with the worker processes.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_model():
    return build_model(TINY, seed=0)


def full_forward_logits(model, tokens):
    with torch.inference_mode():
        return model(input_ids=torch.tensor([tokens])).logits[0, -1]


# ---------------------------------------------------------------- batching logic, in-process


def test_same_seed_gives_the_same_weights_and_prompts():
    a, b, c = build_model(TINY, seed=3), build_model(TINY, seed=3), build_model(TINY, seed=4)
    assert sum(p.numel() for p in a.parameters()) == TINY.n_params
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    assert prompt_tokens(7, 20, TINY.vocab_size) == prompt_tokens(7, 20, TINY.vocab_size)
    assert prompt_tokens(7, 20, TINY.vocab_size) != prompt_tokens(8, 20, TINY.vocab_size)


BATCHINGS = pytest.mark.parametrize("batching", ["ragged", "padded"])


@BATCHINGS
@pytest.mark.parametrize("spec", [TINY, TINY_GQA], ids=["mha", "gqa"])
def test_decode_uses_the_kv_cache_like_a_full_forward(spec, batching):
    model = build_model(spec, seed=1)
    # A small pool forces it to grow (and move every cached K/V) in the middle of the run.
    runner = KVRunner(model, seed=1, initial_slots=8, batching=batching)
    runner.prefill([(1, 5), (2, 17), (3, 9)])
    checked = 0
    for rids in ([1, 2, 3], [2, 3], [3, 1], "swap", [4, 1, 2], [2], [4, 2]):
        if rids == "swap":
            runner.release([3])  # its slots are reused by request 4
            runner.prefill([(4, 11)])
            continue
        logits = runner.decode(rids)
        for i, rid in enumerate(rids):
            ref = full_forward_logits(model, runner.sequence(rid))
            torch.testing.assert_close(logits[i], ref, atol=1e-4, rtol=1e-4)
            assert runner.next_token(rid) == int(ref.argmax())
            checked += 1
    assert checked == 13
    assert runner.context_tokens(1) == 5 + 3 and runner.context_tokens(2) == 17 + 5
    assert runner.context_tokens(4) == 11 + 2 and 3 not in runner
    assert runner.capacity_slots > 8


@BATCHINGS
def test_batched_decode_with_unequal_contexts_matches_unbatched(tiny_model, batching):
    batched = KVRunner(tiny_model, seed=0, batching=batching)
    single = KVRunner(tiny_model, seed=0, batching=batching)
    lengths = {10: 3, 11: 40, 12: 17, 13: 1}
    batched.prefill(list(lengths.items()))
    for rid, n in lengths.items():
        single.prefill([(rid, n)])
    for _ in range(4):
        logits = batched.decode(list(lengths))
        for i, rid in enumerate(lengths):
            alone = single.decode([rid])[0]
            torch.testing.assert_close(logits[i], alone, atol=1e-4, rtol=1e-4)
            assert batched.next_token(rid) == single.next_token(rid)
            assert batched.sequence(rid) == single.sequence(rid)


@BATCHINGS
def test_batched_prefill_of_unequal_prompts_matches_unbatched(tiny_model, batching):
    batched = KVRunner(tiny_model, seed=0, batching=batching)
    logits = batched.prefill([(1, 6), (2, 30), (3, 1)])
    for i, (rid, n) in enumerate([(1, 6), (2, 30), (3, 1)]):
        tokens = prompt_tokens(rid, n, TINY.vocab_size, seed=0)
        assert batched.sequence(rid) == tokens
        torch.testing.assert_close(logits[i], full_forward_logits(tiny_model, tokens),
                                   atol=1e-4, rtol=1e-4)
    # The stored K/V is each prompt's own: the next step agrees with a full forward too.
    logits = batched.decode([3, 1, 2])
    for i, rid in enumerate([3, 1, 2]):
        torch.testing.assert_close(logits[i], full_forward_logits(tiny_model, batched.sequence(rid)),
                                   atol=1e-4, rtol=1e-4)
    assert tiny_model.config._attn_implementation == "sdpa"  # restored after every job


def test_runner_bookkeeping_and_errors(tiny_model):
    runner = KVRunner(tiny_model, seed=0, initial_slots=64)
    runner.prefill([(1, 10), (2, 20)])
    runner.decode([1, 2])
    assert runner.used_slots == 32 and len(runner) == 2
    with pytest.raises(KeyError, match="unknown request id 9"):
        runner.decode([1, 9])
    assert runner.used_slots == 32 and runner.context_tokens(1) == 11  # a failed job changes nothing
    with pytest.raises(ValueError, match="already prefilled"):
        runner.prefill([(1, 4)])
    with pytest.raises(ValueError, match="repeat"):
        runner.decode([2, 2])
    runner.release([1, 2, 1, 77])  # idempotent, unknown ids ignored
    assert runner.used_slots == 0 and len(runner) == 0
    with pytest.raises(ValueError, match="batching"):
        KVRunner(tiny_model, batching="nested")
    with pytest.raises(ValueError, match="batching"):
        TransformersEngine(batching="nested")


# ---------------------------------------------------------------- the engine, worker processes


@pytest.fixture(scope="module")
def engine():
    eng = TransformersEngine(load_timeout_s=120)
    eng.load("tiny", TINY, CPU1, seed=0)
    yield eng
    eng.close()


def collect(eng, n, timeout_s=30.0):
    results, deadline = [], time.monotonic() + timeout_s
    while len(results) < n and time.monotonic() < deadline:
        results += eng.wait(timeout=deadline - time.monotonic())
    return results


def test_worker_runs_on_its_partition(engine):
    info = engine.worker_info("tiny")
    assert info["threads"] == 1 and info["device"] == "cpu" and info["dtype"] == "torch.float32"
    assert info["batching"] == "ragged"
    assert info["malloc_pinned"] in (True, False)
    assert info["pid"] in engine.worker_pids() and info["pid"] != os.getpid()


def test_jobs_come_back_once_each_in_order(engine):
    submitted = {engine.submit_prefill("tiny", [(1, 12), (2, 40), (3, 5)]): "prefill"}
    for rids in ([1, 2, 3], [2, 3], [1, 3], [1, 2, 3]):
        submitted[engine.submit_decode("tiny", rids)] = "decode"
    engine.release("tiny", [2])
    for rids in ([1, 3], [3]):
        submitted[engine.submit_decode("tiny", rids)] = "decode"
    engine.release("tiny", [1, 3])
    submitted[engine.submit_prefill("tiny", [(2, 8)])] = "prefill"  # id 2 was released: allowed
    submitted[engine.submit_decode("tiny", [2])] = "decode"
    engine.release("tiny", [2])

    results = collect(engine, len(submitted))
    assert sorted(r.job_id for r in results) == sorted(submitted)
    assert engine.wait(timeout=0.05) == []  # nothing comes back twice
    for r in results:
        assert r.llm == "tiny" and r.kind == submitted[r.job_id]
        assert r.duration_s > 0 and r.started_s <= r.ended_s
        assert r.duration_s <= r.ended_s - r.started_s + 1e-3
    # One worker runs its LLM's jobs one after another, in submission order.
    by_id = sorted(results, key=lambda r: r.job_id)
    assert all(a.ended_s <= b.started_s for a, b in itertools.pairwise(by_id))


def test_measure_times_prefill_and_decode(engine):
    prefill_1, decode_1 = engine.measure("tiny", batch=1, seq=64, warmup=1, repeats=5)
    prefill_16, decode_16 = engine.measure("tiny", batch=16, seq=64, warmup=1, repeats=5)
    for xs in (prefill_1, decode_1, prefill_16, decode_16):
        assert len(xs) == 5 and all(x > 0 for x in xs)
    assert statistics.median(decode_16) > statistics.median(decode_1)
    assert statistics.median(prefill_16) > statistics.median(prefill_1)
    with pytest.raises(ValueError):
        engine.measure("tiny", batch=0, seq=64, warmup=0, repeats=1)


def test_unknown_request_fails_its_job_only(engine):
    ok = engine.submit_prefill("tiny", [(50, 4)])
    bad = engine.submit_decode("tiny", [50, 999])
    after = engine.submit_decode("tiny", [50])
    engine.release("tiny", [50])
    # In arrival order: the job before the failure, the failure, then the worker keeps serving.
    assert [r.job_id for r in collect(engine, 1)] == [ok]
    with pytest.raises(EngineError) as err:
        collect(engine, 1)
    message = str(err.value)
    assert "\n" not in message and "tiny" in message and f"job {bad}" in message and "999" in message
    assert [r.job_id for r in collect(engine, 1)] == [after]
    with pytest.raises(EngineError, match="not loaded"):
        engine.submit_decode("nope", [1])


def test_load_failure_is_an_engine_error(tmp_path):
    with TransformersEngine(load_timeout_s=120) as eng:
        # The worker rejects the folder before its slow imports, so this costs little.
        with pytest.raises(EngineError, match="tiny: cannot load llama-tiny-s.*config.json"):
            eng.load("tiny", TINY, CPU1, checkpoint=str(tmp_path))
        assert eng.worker_pids() == []
        with pytest.raises(EngineError, match="unsupported device"):
            eng.load("x", TINY, Partition(device="tpu"))


def test_two_llms_a_dead_worker_and_close():
    eng = TransformersEngine(load_timeout_s=120)
    try:
        eng.load("a", TINY, CPU1, seed=0)
        eng.load("b", TINY, CPU1, seed=1)
        jobs = [eng.submit_prefill("a", [(1, 30)]), eng.submit_prefill("b", [(1, 30)]),
                eng.submit_decode("a", [1]), eng.submit_decode("b", [1])]
        results = collect(eng, 4)
        assert sorted(r.job_id for r in results) == sorted(jobs)
        assert {r.llm for r in results} == {"a", "b"}

        # A worker that dies with a job in flight is reported, naming its LLM; the other lives on.
        long_job = eng.submit_prefill("b", [(i, 256) for i in range(2, 10)])
        os.kill(eng.worker_info("b")["pid"], signal.SIGKILL)
        with pytest.raises(EngineError, match=rf"b: worker exited .*\[{long_job}\]"):
            collect(eng, 1)
        with pytest.raises(EngineError, match="b: worker is no longer running"):
            eng.submit_decode("b", [1])
        done = eng.submit_decode("a", [1])
        assert [r.job_id for r in collect(eng, 1)] == [done]

        eng.submit_decode("a", [1])  # still queued or running when close() is called
        pids = eng.worker_pids()
    finally:
        eng.close()
    eng.close()  # idempotent
    assert len(pids) == 1
    assert not [p for p in multiprocessing.active_children() if p.pid in pids]
    assert not [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
    with pytest.raises(EngineError, match="closed"):
        eng.wait(0)
