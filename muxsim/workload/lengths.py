"""Request length distributions: prompt (prefill) and output (decode) tokens per request.

Two samplers share one interface (:class:`LengthSampler`):

* :class:`EmpiricalLengths` -- ShareGPT first turns as used by the MuxServe paper
  (docs/muxserve.md §8), from the derived summary ``traces/sharegpt_first_turn_lengths.json``
  (see traces/README.md; the raw data is never shipped).
* :class:`FixedLengths` -- every request has the same lengths; for tests and calibration.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from scipy.special import ndtr

__all__ = ["LengthSampler", "EmpiricalLengths", "FixedLengths", "SHAREGPT_LENGTHS_PATH"]

#: Derived ShareGPT first-turn summary, written by traces/derive_sharegpt_lengths.py.
SHAREGPT_LENGTHS_PATH = (
    Path(__file__).resolve().parents[2] / "traces" / "sharegpt_first_turn_lengths.json"
)


@runtime_checkable
class LengthSampler(Protocol):
    """Anything that draws (prompt, output) token lengths for ``n`` requests."""

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(prompt, output)``: two int64 arrays of shape ``(n,)``, in tokens."""
        ...

    @property
    def mean_prompt(self) -> float:
        """Mean prompt length (tokens)."""
        ...

    @property
    def mean_output(self) -> float:
        """Mean output length (tokens)."""
        ...


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    return int(n)


class EmpiricalLengths:
    """Joint (prompt, output) lengths from a derived quantile-table + rank-correlation summary.

    Sampling is a Gaussian copula: a pair of standard normals with Pearson correlation
    ``copula_normal_rho`` (= 2 sin(pi rho_s / 6), which gives Spearman rank correlation
    ``rho_s`` for a bivariate normal) is mapped through the normal CDF to uniforms and then
    through each marginal's piecewise-linear quantile function, and rounded to whole tokens.
    This keeps each marginal to the table's 0.5 % resolution and the rank correlation exactly;
    it does not reproduce finer joint structure (the source's rank correlation is only 0.06,
    so there is little to lose). Pairs outside the summary's ``filters`` are redrawn, so every
    sample obeys them.

    Args:
        path: JSON written by ``traces/derive_sharegpt_lengths.py`` (keys ``quantile_table``
            {probs, prompt, output}, ``copula_normal_rho``, ``filters``, ``prompt.mean``,
            ``output.mean``, ``n``, ``source``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the JSON lacks a key or its tables are malformed.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"length distribution {self.path} not found; regenerate it with "
                "traces/derive_sharegpt_lengths.py"
            )
        with self.path.open() as f:
            spec = json.load(f)
        try:
            table = spec["quantile_table"]
            probs = np.asarray(table["probs"], dtype=float)
            q_prompt = np.asarray(table["prompt"], dtype=float)
            q_output = np.asarray(table["output"], dtype=float)
            rho = float(spec["copula_normal_rho"])
            filters = {k: int(v) for k, v in spec["filters"].items()}
            self._mean_prompt = float(spec["prompt"]["mean"])
            self._mean_output = float(spec["output"]["mean"])
            self.n_source = int(spec["n"])
            self.source = spec["source"]
        except (KeyError, TypeError) as e:
            raise ValueError(f"{self.path}: malformed length summary ({e!r})") from e
        if not (probs.ndim == 1 and len(probs) >= 2 and probs[0] == 0.0 and probs[-1] == 1.0
                and np.all(np.diff(probs) > 0)):
            raise ValueError(f"{self.path}: quantile_table.probs must rise from 0 to 1")
        for name, q in (("prompt", q_prompt), ("output", q_output)):
            if q.shape != probs.shape or np.any(np.diff(q) < 0) or q[0] < 1:
                raise ValueError(
                    f"{self.path}: quantile_table.{name} must be non-decreasing, >= 1 token, "
                    f"with one value per prob ({len(probs)})"
                )
        if not -1.0 < rho < 1.0:
            raise ValueError(f"{self.path}: copula_normal_rho must be in (-1, 1), got {rho}")
        missing = {"min_prompt_tokens", "min_output_tokens", "max_prompt_tokens",
                   "max_total_tokens"} - filters.keys()
        if missing:
            raise ValueError(f"{self.path}: filters lack {sorted(missing)}")
        self._probs, self._q_prompt, self._q_output = probs, q_prompt, q_output
        self.rho = rho
        self.filters = filters
        lo_p, lo_o = round(q_prompt[0]), round(q_output[0])
        if (lo_p < filters["min_prompt_tokens"] or lo_o < filters["min_output_tokens"]
                or lo_p > filters["max_prompt_tokens"]
                or lo_p + lo_o > filters["max_total_tokens"]):
            # Rejection sampling would never terminate if even the smallest pair is rejected.
            raise ValueError(f"{self.path}: quantile tables lie outside their own filters")

    @classmethod
    def sharegpt(cls) -> EmpiricalLengths:
        """ShareGPT first turns after the paper's filters (prompt and output >= 4 tokens,
        prompt <= 1024, prompt + output <= 2048): n = 5,316, mean prompt 136.2 and mean
        output 472.1 tokens (Llama-2 tokenizer; source and derivation in the JSON and
        traces/README.md). The paper reports means of about 161 / 338 for its own sample.
        """
        return cls(SHAREGPT_LENGTHS_PATH)

    @property
    def mean_prompt(self) -> float:
        """Empirical mean prompt length of the source sample (tokens); the sampler's mean is
        within 0.1 % of it (the quantile tables' own means are within 0.05 %)."""
        return self._mean_prompt

    @property
    def mean_output(self) -> float:
        """Empirical mean output length of the source sample (tokens); the sampler's mean is
        within 0.1 % of it (the quantile tables' own means are within 0.05 %)."""
        return self._mean_output

    def _draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        z = rng.standard_normal((2, n))
        z[1] = self.rho * z[0] + math.sqrt(1.0 - self.rho**2) * z[1]
        u = ndtr(z)
        prompt = np.rint(np.interp(u[0], self._probs, self._q_prompt)).astype(np.int64)
        output = np.rint(np.interp(u[1], self._probs, self._q_output)).astype(np.int64)
        return prompt, output

    def _ok(self, prompt: np.ndarray, output: np.ndarray) -> np.ndarray:
        f = self.filters
        return (
            (prompt >= f["min_prompt_tokens"])
            & (output >= f["min_output_tokens"])
            & (prompt <= f["max_prompt_tokens"])
            & (prompt + output <= f["max_total_tokens"])
        )

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw lengths for ``n`` requests.

        Args:
            rng: source of randomness; the result is a deterministic function of its state.
            n: number of requests (>= 0).

        Returns:
            ``(prompt, output)``: int64 arrays of shape ``(n,)``, in tokens, each pair
            satisfying ``filters``.

        Raises:
            ValueError: ``n`` is not a non-negative integer.
        """
        n = _check_n(n)
        prompt, output = self._draw(rng, n)
        bad = ~self._ok(prompt, output)
        # With the shipped ShareGPT tables nothing is rejected (both marginals stop at 1024);
        # the loop only matters for summaries whose marginals can jointly exceed the filters.
        while bad.any():
            idx = np.flatnonzero(bad)
            p, o = self._draw(rng, len(idx))
            prompt[idx], output[idx] = p, o
            bad[idx] = ~self._ok(p, o)
        return prompt, output

    def __repr__(self) -> str:
        return (f"EmpiricalLengths({str(self.path)!r}, mean_prompt={self.mean_prompt:.1f}, "
                f"mean_output={self.mean_output:.1f})")


class FixedLengths:
    """Every request has the same prompt and output length.

    Args:
        prompt: prompt (prefill) length, tokens, >= 1.
        output: output (decode) length, tokens, >= 1.

    Raises:
        ValueError: a length is not an integer >= 1.
    """

    def __init__(self, prompt: int, output: int) -> None:
        for name, v in (("prompt", prompt), ("output", output)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"FixedLengths {name} must be an integer >= 1 token, got {v!r}")
        self.prompt = int(prompt)
        self.output = int(output)

    @property
    def mean_prompt(self) -> float:
        """Prompt length (tokens)."""
        return float(self.prompt)

    @property
    def mean_output(self) -> float:
        """Output length (tokens)."""
        return float(self.output)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(prompt, output)``: int64 arrays of shape ``(n,)`` filled with the fixed
        lengths (tokens). ``rng`` is not consumed. Raises ValueError if ``n`` < 0."""
        n = _check_n(n)
        return np.full(n, self.prompt, np.int64), np.full(n, self.output, np.int64)

    def __repr__(self) -> str:
        return f"FixedLengths(prompt={self.prompt}, output={self.output})"


class ScaledLengths:
    """Another sampler's lengths multiplied by ``scale`` and rounded, at least ``minimum``
    tokens each: the shape of a real distribution at a size small models on a CPU can serve.

    Args:
        base: a length sampler (e.g. ``EmpiricalLengths.sharegpt()``).
        scale: factor > 0.
        minimum: smallest length after scaling, tokens >= 1.

    Raises:
        ValueError: ``scale`` <= 0 or ``minimum`` < 1.
    """

    def __init__(self, base: LengthSampler, scale: float, minimum: int = 4) -> None:
        if not scale > 0 or minimum < 1:
            raise ValueError(f"ScaledLengths needs scale > 0 and minimum >= 1, got {scale!r}, {minimum!r}")
        self.base = base
        self.scale = float(scale)
        self.minimum = int(minimum)
        # the mean of the scaled lengths, estimated once from a fixed large sample
        p, o = self.sample(np.random.default_rng(0), 200_000)
        self._means = (float(p.mean()), float(o.mean()))

    @property
    def mean_prompt(self) -> float:
        """Mean scaled prompt length (tokens)."""
        return self._means[0]

    @property
    def mean_output(self) -> float:
        """Mean scaled output length (tokens)."""
        return self._means[1]

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(prompt, output)`` int64 arrays of shape ``(n,)``: the base sample scaled."""
        p, o = self.base.sample(rng, n)
        f = lambda x: np.maximum(self.minimum, np.rint(x * self.scale)).astype(np.int64)
        return f(p), f(o)

    def __repr__(self) -> str:
        return f"ScaledLengths({self.base!r}, scale={self.scale}, minimum={self.minimum})"
