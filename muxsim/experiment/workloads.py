"""Each cell's workload: lengths, seeds, request counts, and the workload facts placement and
ADBS quotas read (mean lengths, batch-weighted context, tokens per sequence)."""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import pandas as pd

from muxsim.config import Cell, ExperimentConfig, LengthsConfig, trace_workload
from muxsim.core.placement import Placement
from muxsim.workload import (
    EmpiricalLengths,
    FixedLengths,
    ScaledLengths,
    generate_workload,
    load_workload,
)

__all__ = ["cell_seed", "cell_workload", "lengths_sampler", "request_counts", "seq_tokens",
           "workload_context", "workload_means"]


def _empirical(kind: str) -> EmpiricalLengths:
    return EmpiricalLengths.sharegpt_v3() if kind == "sharegpt_v3" else EmpiricalLengths.sharegpt()


@lru_cache(maxsize=8)
def _matching(kind: str, mean_prompt: float, mean_output: float) -> ScaledLengths:
    # the factor search samples the base distribution; cells and strategies share its result
    return ScaledLengths.matching_means(_empirical(kind), mean_prompt, mean_output)


def lengths_sampler(cfg: ExperimentConfig):
    """The config's length sampler (an empirical ShareGPT distribution, scaled by one factor or
    to given mean prompt/output lengths, or fixed)."""
    return _sampler(cfg.workload.lengths.model_dump_json())


@lru_cache(maxsize=8)
def _sampler(lengths_json: str):
    lc = LengthsConfig.model_validate_json(lengths_json)
    if lc.kind == "fixed":
        return FixedLengths(lc.prompt, lc.output)
    if lc.mean_prompt is not None:
        return _matching(lc.kind, float(lc.mean_prompt), float(lc.mean_output))
    if lc.scale != 1.0:
        return ScaledLengths(_empirical(lc.kind), lc.scale)
    return _empirical(lc.kind)


def cell_seed(cfg: ExperimentConfig, cell: Cell) -> int:
    """Seed of a cell's workload: the experiment seed and a hash of the cell's ``key`` (its full
    parameter values), so the same cell draws the same workload wherever it sits in a sweep."""
    digest = hashlib.sha256(cell.key.encode()).digest()
    words = np.frombuffer(digest[:16], dtype="<u4").tolist()
    return int(np.random.SeedSequence([cfg.seed, *words]).generate_state(1)[0])


def request_counts(cfg: ExperimentConfig, estimate: Placement | None) -> list[int] | None:
    """Per-LLM request counts of a drawn workload (``workload.requests``), or None for every
    arrival within ``duration_s``.

    Rule ``estimate``: int(factor x seconds x T_i), T_i the estimated throughput (req/s) of LLM
    i in ``estimate`` (the cell's MuxServe placement); an LLM it lacks gets 0.

    Raises:
        ValueError: rule ``estimate`` without a placement.
    """
    req = cfg.workload.requests
    if req is None:
        return None
    names = cfg.llm_names()
    if req.rule == "fixed":
        c = req.counts
        return [int(x) for x in c] if isinstance(c, list) else [int(c)] * len(names)
    if estimate is None:
        raise ValueError("workload.requests.rule 'estimate' needs the cell's MuxServe placement")
    est = estimate.est_throughput
    return [int(req.factor * req.seconds * est.get(n, 0.0)) if np.isfinite(est.get(n, 0.0)) else 0
            for n in names]


def cell_workload(cfg: ExperimentConfig, cell: Cell, cell_index: int,
                  counts: list[int] | None = None) -> pd.DataFrame:
    """Draw the cell's workload (see :func:`muxsim.workload.generate_workload`) with the given
    per-LLM ``counts`` (each LLM's first ``counts[i]`` arrivals), read the replayed file, or
    synthesize it from the trace (:func:`muxsim.config.trace_workload`, by ``cell_index``, its index
    in ``cfg.cells()``)."""
    w = cfg.workload
    if w.file is not None:
        return load_workload(w.file, allow_empty=False)
    if w.trace is not None:
        # a cluster sweep repeats the trace's cells once per cluster (clusters outermost)
        return trace_workload(cfg, cell_index % len(w.trace.alphas()))
    caps = counts
    if w.max_requests_per_llm is not None:
        caps = [min(c, w.max_requests_per_llm) for c in caps] if caps is not None else \
            [w.max_requests_per_llm] * len(cell.rates)
    return generate_workload(cfg.llm_names(), cell.rates, w.duration_s, lengths_sampler(cfg),
                             seed=cell_seed(cfg, cell), process=w.arrival, cv=w.cv,
                             max_requests_per_llm=caps)


@lru_cache(maxsize=8)
def _file_means(path: str) -> tuple[float, float]:
    wl = load_workload(path, allow_empty=False)
    return float(wl["prompt_tokens"].mean()), float(wl["output_tokens"].mean())


def workload_means(cfg: ExperimentConfig) -> tuple[float, float]:
    """Mean prompt and output tokens of the config's workload (the replayed file's, or the
    synthesized trace's, when given: a split keeps every request, so all cells share them)."""
    if cfg.workload.file is not None:
        return _file_means(cfg.workload.file)
    if cfg.workload.trace is not None:
        wl = trace_workload(cfg, 0)
        return float(wl["prompt_tokens"].mean()), float(wl["output_tokens"].mean())
    lengths = lengths_sampler(cfg)
    return lengths.mean_prompt, lengths.mean_output


def _batch_context(prompt: np.ndarray, output: np.ndarray) -> float:
    # a request decodes for `output` iterations holding prompt + output / 2 tokens on average,
    # so the running batch's mean context weights requests by their output length
    p = np.asarray(prompt, dtype=float)
    o = np.asarray(output, dtype=float)
    return float((o * (p + o / 2)).sum() / o.sum())


@lru_cache(maxsize=8)
def _sampler_context(lengths_json: str) -> float:
    p, o = _sampler(lengths_json).sample(np.random.default_rng(0), 200_000)
    return _batch_context(p, o)


def workload_context(cfg: ExperimentConfig) -> float:
    """Mean KV tokens a running sequence holds (tokens): the batch-weighted context
    sum_r o_r (p_r + o_r / 2) / sum_r o_r of the workload's lengths (200,000 draws of the
    length sampler, seed 0; the replayed file's or synthesized trace's own requests)."""
    w = cfg.workload
    if w.file is not None:
        wl = load_workload(w.file, allow_empty=False)
        return _batch_context(wl["prompt_tokens"], wl["output_tokens"])
    if w.trace is not None:
        wl = trace_workload(cfg, 0)
        return _batch_context(wl["prompt_tokens"], wl["output_tokens"])
    return _sampler_context(w.lengths.model_dump_json())


def seq_tokens(cfg: ExperimentConfig) -> int:
    """Tokens per sequence ADBS quotas assume: the config's, else mean prompt + output."""
    if cfg.scheduler.quota_seq_tokens is not None:
        return cfg.scheduler.quota_seq_tokens
    return int(round(sum(workload_means(cfg))))
