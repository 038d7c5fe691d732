"""A multi-LLM workload synthesized from a trace as a YAML spec describes it (``muxsim trace
synth``): the spec's schema, :func:`synthesize` and :func:`load_synth_spec`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from muxsim.schema import Strict, format_validation_error, read_yaml

from .transforms import (
    check_llms,
    condense,
    cut_window,
    drifting_split,
    load_source,
    power_law_weights,
    rates_file_weights,
    renumbered,
    rescale_to_rate,
    sorted_by_arrival,
    source_formats,
)

__all__ = [
    "DriftWindowSpec", "PopularitySpec", "SourceSpec", "SynthSpec", "SynthSpecError",
    "WindowSpec", "load_synth_spec", "synthesize",
]


class SynthSpecError(ValueError):
    """A bad synthesis spec, with a one-line message that names the field."""


class _Strict(Strict):
    """Base of the spec's sections (:class:`muxsim.schema.Strict`: unknown keys, ``inf``/``nan``
    and booleans where numbers are meant are refused)."""


_PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
#: A rate (req/s) or a time compression factor: finite, in (0, 1e6] (beyond is a typo).
_Rate = Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)]
#: Largest seed: the 32-bit range numpy's generators take as is.
_MAX_SEED = 2**32 - 1


class SourceSpec(_Strict):
    """The trace to start from (:func:`load_source`; ``format`` detected when omitted, ``llm``
    names single-stream traces, ``tokenizer``/``sharegpt_turns`` for ShareGPT,
    ``infer_sessions`` for multi-turn ``lengths`` files). ``rate``/``arrival``/``cv`` draw
    arrival times for length-only formats (lengths, sharegpt), which carry none: a renewal
    process of mean ``rate`` req/s (in (0, 1e6]), Poisson or Gamma with gap CV ``cv`` (in
    [0.001, 1000], the range the arrival sampler takes)."""

    path: str
    format: str | None = None
    llm: str = Field(default="llm-0", min_length=1)
    tokenizer: str | None = None
    rate: _Rate | None = None
    arrival: Literal["poisson", "gamma"] = "poisson"
    cv: float = Field(default=1.0, ge=0.001, le=1000)
    sharegpt_turns: Literal["first", "all"] = "first"
    infer_sessions: bool = False

    @field_validator("format")
    @classmethod
    def _known_format(cls, v):
        if v is None:
            return v
        try:
            allowed = source_formats()
        except ImportError:  # loaders not installed: load_source reports it
            return v
        if v not in allowed:
            raise ValueError(f"unknown trace format {v!r}; allowed: {', '.join(allowed)}")
        return v

    @model_validator(mode="after")
    def _cv_needs_gamma(self):
        if self.arrival == "poisson" and self.cv != 1.0:
            raise ValueError(f"cv={self.cv!r} only applies to arrival: gamma; poisson has cv 1")
        return self


class WindowSpec(_Strict):
    """Part of the source to keep, in the source's time (s): ``[start_s, end_s)``."""

    start_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    end_s: _PosFloat | None = None

    @model_validator(mode="after")
    def _ordered(self):
        if self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s:g}) must be > start_s ({self.start_s:g})")
        return self


def _check_weight_list(v):
    if v is not None:
        if any(not math.isfinite(x) or x < 0 for x in v):
            raise ValueError(f"weights must be finite and >= 0, got {v}")
        if not sum(v) > 0:
            raise ValueError(f"weights must have a positive sum, got {v}")
    return v


class _Shares(_Strict):
    """A share law's common fields: a power law ``alpha`` (MuxServe §5.1; in [0, 10], beyond
    which every LLM but the first gets a vanishing share) or explicit ``weights`` (checked by
    :func:`_check_weight_list`)."""

    alpha: float | None = Field(default=None, ge=0, le=10, allow_inf_nan=False)
    weights: list[float] | None = Field(default=None, min_length=1)

    @field_validator("weights")
    @classmethod
    def _weights_ok(cls, v):
        return _check_weight_list(v)


class DriftWindowSpec(_Shares):
    """One window of a drifting popularity: shares until ``until_s`` (s, output time axis;
    omit on the last window), as a power law ``alpha`` or explicit ``weights``."""

    until_s: _PosFloat | None = None

    @model_validator(mode="after")
    def _one_law(self):
        if (self.alpha is None) == (self.weights is None):
            raise ValueError("give exactly one of alpha, weights")
        return self


class PopularitySpec(_Shares):
    """How requests are shared among the LLMs: exactly one of a power law ``alpha`` (MuxServe
    §5.1), explicit ``weights``, a MuxServe ``rates_file`` (shares proportional to its rates,
    LLM names from the file unless ``llms`` lists names, which replace them in file order) or
    a ``drift`` list of time windows."""

    rates_file: str | None = None
    drift: list[DriftWindowSpec] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_law(self):
        given = [k for k in ("alpha", "weights", "rates_file", "drift") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of alpha, weights, rates_file, drift; got {given or 'none'}")
        if self.drift is not None:
            prev = None
            for k, w in enumerate(self.drift):
                if w.until_s is None and k < len(self.drift) - 1:
                    raise ValueError(f"drift.{k}.until_s is required (only the last window may omit it)")
                if w.until_s is not None and prev is not None and w.until_s <= prev:
                    raise ValueError(f"drift.{k}.until_s must be > {prev:g} (windows in time order)")
                prev = w.until_s if w.until_s is not None else prev
            sizes = {len(w.weights) for w in self.drift if w.weights is not None}
            if len(sizes) > 1:
                raise ValueError(f"drift windows give weights for different numbers of LLMs: {sorted(sizes)}")
        return self

    def count(self) -> int | None:
        """Number of LLMs the law itself fixes (weights lengths), or None."""
        if self.weights is not None:
            return len(self.weights)
        if self.drift is not None:
            for w in self.drift:
                if w.weights is not None:
                    return len(w.weights)
        return None


class SynthSpec(_Strict):
    """A multi-LLM workload synthesized from one trace (YAML of ``muxsim trace synth``).

    Steps, in this order:

    1. **load** ``source`` (:func:`load_source`); a length-only source gets arrival times from
       ``source.rate`` / ``arrival`` / ``cv``;
    2. **window**: keep ``[start_s, end_s)`` of the source's time and re-zero
       (:func:`cut_window`);
    3. **condense**: divide times by ``condense`` (:func:`condense`), *or*
    4. **target_rate**: rescale time to a mean of ``target_rate`` req/s
       (:func:`rescale_to_rate`); the two are exclusive, as the second would undo the first;
    5. **split** among ``llms`` by ``popularity`` (:func:`split_among_llms`,
       :func:`drifting_split`; drift ``until_s`` are in the time after steps 2-4, and a drift
       window that starts after the last arrival kept (step 6 included) is refused, as no
       request would follow it). With neither
       ``llms`` nor ``popularity`` the source's own ``llm`` labels are kept; with ``llms`` but no
       ``popularity`` the shares are equal;
    6. **cap**: keep the first ``max_requests`` arrivals.

    ``llms`` is a count (names ``llm-0``, ``llm-1``, ...) or a list of names; it may be omitted
    when the popularity fixes the count (``weights``, ``rates_file``, ``drift`` with weights).
    Ranges: ``condense`` and ``target_rate`` in (0, 1e6], ``seed`` in [0, 2**32 - 1],
    ``max_requests`` in [1, 1e9]; a count ``llms`` in [1, 1024].
    Relative paths (``source.path``, ``popularity.rates_file``) are looked up in the current
    directory first, then beside the spec file.
    """

    source: SourceSpec
    window: WindowSpec | None = None
    condense: _Rate | None = None
    target_rate: _Rate | None = None
    llms: int | list[str] | None = None
    popularity: PopularitySpec | None = None
    seed: int = Field(default=0, ge=0, le=_MAX_SEED)
    max_requests: int | None = Field(default=None, ge=1, le=10**9)

    @field_validator("target_rate")
    @classmethod
    def _not_both(cls, v, info):
        if v is not None and info.data.get("condense") is not None:
            raise ValueError("give condense or target_rate, not both (the second would undo the first)")
        return v

    @field_validator("llms", mode="before")
    @classmethod
    def _names(cls, v):
        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, (int, list)):
            # pydantic turns ValueError, not TypeError, into a field's validation error.
            raise ValueError(  # noqa: TRY004
                f"must be a count >= 1 or a list of LLM names, got {v!r}")
        if isinstance(v, int) and not 1 <= v <= 1024:
            raise ValueError(f"must be a count >= 1 and <= 1024, got {v}")
        if isinstance(v, list):
            try:
                check_llms(v)
            except ValueError as e:
                raise ValueError(str(e).removeprefix("llms ")) from None
        return v

    @field_validator("popularity")
    @classmethod
    def _count_agrees(cls, v, info):
        llms = info.data.get("llms")
        n = llms if isinstance(llms, int) else (len(llms) if isinstance(llms, list) else None)
        if v is None:
            return v
        fixed = v.count()
        if fixed is not None and n is not None and fixed != n:
            raise ValueError(f"weights are for {fixed} LLMs but llms gives {n}")
        if fixed is None and n is None and v.rates_file is None:
            raise ValueError("the number of LLMs is unknown: set llms (a count or a list of names)")
        return v

    def llm_names(self, count: int | None = None) -> list[str] | None:
        """Names of the LLMs to split among (None: keep the source's labels). ``count`` is the
        number a rates file gives, when there is one."""
        if isinstance(self.llms, list):
            return list(self.llms)
        n = self.llms if self.llms is not None else (self.popularity.count() if self.popularity else None)
        n = n if n is not None else count
        return None if n is None else [f"llm-{i}" for i in range(n)]


def _resolve(p: str, base_dir: Path | None) -> Path:
    """``p`` as given if absolute or present in the cwd, else beside ``base_dir`` if there."""
    path = Path(p).expanduser()
    if path.is_absolute() or path.exists() or base_dir is None:
        return path
    alt = Path(base_dir) / path
    return alt if alt.exists() else path


def _child_seeds(seed: int, n: int) -> list[int]:
    return [int(s.generate_state(1, dtype=np.uint32)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


def synthesize(spec: SynthSpec, base_dir: str | Path | None = None) -> pd.DataFrame:
    """Build the workload a :class:`SynthSpec` describes (steps in its docstring).

    Seeding: ``SeedSequence(spec.seed).spawn(2)`` gives one stream for the arrival times of a
    length-only source and one for the split, so the same spec gives the same frame.

    Args:
        spec: a validated spec (:func:`load_synth_spec`).
        base_dir: folder to resolve relative paths against when they are not found in the
            current directory (normally the spec file's folder).

    Returns:
        Workload frame: ``request_id`` int64 0 .. N-1 in arrival order, ``llm`` str,
        ``arrival_s`` float64 s, ``prompt_tokens`` / ``output_tokens`` int64 >= 1, plus any
        extra columns of the source (``session_id``, ``prefix_ids``). Ready for
        :func:`muxsim.workload.save_workload`.

    Raises:
        FileNotFoundError: a missing source or rates file.
        ValueError: a malformed source, a length-only source without ``source.rate`` (or a
            timed source with one), a window that keeps fewer requests than a step needs, or
            a rates file whose LLM count disagrees with ``llms``; the message names the field.
    """
    from ..generate import checked_workload

    base = Path(base_dir) if base_dir is not None else None
    src = spec.source
    arr_seed, split_seed = _child_seeds(spec.seed, 2)
    path = _resolve(src.path, base)
    tok = src.tokenizer
    if tok is not None and base is not None and not Path(tok).exists() and (base / tok).exists():
        tok = str(base / tok)
    if not path.exists():
        raise FileNotFoundError(f"source.path: trace file not found: {path}")
    df = load_source(path, src.format, llm=src.llm, tokenizer=tok,
                     sharegpt_turns=src.sharegpt_turns, infer_sessions=src.infer_sessions)

    timed = "arrival_s" in df.columns
    if not timed:
        if src.rate is None:
            raise ValueError(f"source.rate: required: {path} is a length-only trace with no arrival "
                             "times; give a mean rate in req/s (and arrival/cv)")
        from ..arrivals import assign_arrivals

        df = assign_arrivals(df, src.rate, arr_seed, process=src.arrival, cv=src.cv)
    elif src.rate is not None or src.arrival != "poisson":
        raise ValueError(f"source.rate: {path} has its own arrival times; rate/arrival/cv apply only "
                         "to length-only traces (use target_rate or condense to change the rate)")
    df = sorted_by_arrival(df)
    if len(df) == 0:
        raise ValueError(f"source.path: {path} holds no requests")

    if spec.window is not None:
        t = df["arrival_s"].to_numpy()
        df = cut_window(df, spec.window.start_s, spec.window.end_s)
        if len(df) == 0:
            raise ValueError(f"window: [{spec.window.start_s:g}, {spec.window.end_s or math.inf:g}) s keeps no "
                             f"requests; the source spans {t.min():g} .. {t.max():g} s")
    if spec.condense is not None:
        df = condense(df, spec.condense)
    if spec.target_rate is not None:
        try:
            df = rescale_to_rate(df, spec.target_rate)
        except ValueError as e:
            raise ValueError(f"target_rate: {e}") from None

    pop = spec.popularity
    file_names = file_w = None
    if pop is not None and pop.rates_file is not None:
        rates_path = _resolve(pop.rates_file, base)
        if not rates_path.exists():
            raise FileNotFoundError(f"popularity.rates_file: file not found: {rates_path}")
        file_names, file_w = rates_file_weights(rates_path)
        n = spec.llms if isinstance(spec.llms, int) else (len(spec.llms) if spec.llms else None)
        if n is not None and n != len(file_names):
            raise ValueError(f"popularity.rates_file: lists {len(file_names)} LLMs but llms gives {n}")
    names = file_names if (file_names is not None and not isinstance(spec.llms, list)) else spec.llm_names()

    if names is not None:
        if pop is None:
            windows = [(None, np.ones(len(names)))]
        elif file_w is not None:
            windows = [(None, file_w)]
        elif pop.alpha is not None:
            windows = [(None, power_law_weights(len(names), pop.alpha))]
        elif pop.weights is not None:
            windows = [(None, pop.weights)]
        else:
            windows = [(w.until_s, w.weights if w.weights is not None else power_law_weights(len(names), w.alpha))
                       for w in pop.drift]
        df = drifting_split(df, names, windows, split_seed)
    elif "llm" not in df.columns:  # a source without LLM labels and no split asked for
        df = df.assign(llm=src.llm)

    if spec.max_requests is not None:
        df = df.iloc[: spec.max_requests]
    if names is not None and pop is not None and pop.drift is not None and len(df):
        _check_drift_reached(pop.drift, float(df["arrival_s"].max()))
    df = renumbered(df)
    cols = ["request_id", "llm", "arrival_s", "prompt_tokens", "output_tokens"]
    df = df[[c for c in cols if c in df.columns] + [c for c in df.columns if c not in cols]]
    return checked_workload(df, "synthesized workload")


def _check_drift_reached(drift: list[DriftWindowSpec], last_s: float) -> None:
    """Refuse a drift window that starts after the workload's last arrival: no request would
    follow its law, and the workload would silently be the earlier windows' alone.

    Raises:
        ValueError: naming the first such window, where it starts, the last arrival and why
            (drift times are on the output time axis).
    """
    for k in range(1, len(drift)):
        start = drift[k - 1].until_s
        if start > last_s:
            raise ValueError(
                f"popularity.drift.{k}: starts at {start:g} s (drift.{k - 1}.until_s), after the workload's last "
                f"arrival at {last_s:.1f} s, so no request would follow it; drift times are on the output time "
                f"axis (after window, condense or target_rate, and max_requests): give until_s values below "
                f"{last_s:.1f} s")


def load_synth_spec(path: str | Path) -> SynthSpec:
    """Read and validate a synthesis spec YAML (see :class:`SynthSpec`).

    Raises:
        SynthSpecError (a ValueError): missing file, malformed YAML, not a mapping, or a
            schema violation; the one-line message names the file and the field, e.g.
            ``spec.yaml: popularity.alpha: Input should be greater than or equal to 0``.
    """
    p = Path(path)
    raw = read_yaml(p, SynthSpecError, "synth spec")
    if not isinstance(raw, dict):
        raise SynthSpecError(f"{p}: expected a mapping of synth keys (source, llms, popularity, ...) at the top level")
    try:
        return SynthSpec.model_validate(raw)
    except ValidationError as e:
        raise SynthSpecError(f"{p}: {format_validation_error(e, SynthSpec)}") from None
