"""Reading an experiment config file: YAML, command-line overrides, relative paths resolved
beside the config, and one-line errors."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from muxsim.catalog import GPUS, MODELS
from muxsim.schema import format_validation_error, read_yaml

from .errors import ConfigError
from .experiment import ExperimentConfig

__all__ = ["allowed_names", "load_config"]


def load_config(path: str | Path, overrides: dict | None = None) -> ExperimentConfig:
    """Read and validate an experiment YAML file.

    Args:
        path: YAML file.
        overrides: top-level keys replacing the file's (e.g. ``{"seed": 3}``).

    Raises:
        ConfigError: missing file, malformed YAML, or a schema violation; the one-line message
            names the file and the offending field.
    """
    p = Path(path)
    raw = read_yaml(p, ConfigError, "config file")
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of experiment keys at the top level")
    if overrides:
        raw = {**raw, **overrides}
    wl = raw.get("workload")
    if isinstance(wl, dict) and isinstance(wl.get("file"), str):
        f = Path(wl["file"])
        if not f.is_absolute() and not f.exists() and (p.parent / f).exists():
            raw = {**raw, "workload": {**wl, "file": str(p.parent / f)}}
    oh = raw.get("overhead")
    if isinstance(oh, dict) and isinstance(oh.get("file"), str):
        f = Path(oh["file"])
        if not f.is_absolute() and not f.exists() and (p.parent / f).exists():
            raw = {**raw, "overhead": {**oh, "file": str(p.parent / f)}}
    if isinstance(wl, dict) and isinstance(wl.get("trace"), dict):
        raw = {**raw, "workload": {**wl, "trace": _resolve_trace_paths(wl["trace"], p)}}
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{p}: {format_validation_error(e)}") from None
    except ValueError as e:  # catalog lookups raised outside pydantic's wrapping
        raise ConfigError(f"{p}: {e}") from None
    tr = cfg.workload.trace
    if tr is not None:
        for key, v in (("source.path", tr.source.path),
                       ("popularity.rates_file", tr.popularity.rates_file if tr.popularity else None)):
            if v is not None and not Path(v).expanduser().exists():
                raise ConfigError(f"{p}: workload.trace.{key}: file not found: {v} (a relative path is "
                                  f"looked up in the current folder, then beside the config)")
    return cfg


def _resolve_trace_paths(trace: dict, config_path: Path) -> dict:
    """``workload.trace`` with its relative file paths (``source.path``, ``source.tokenizer``,
    ``popularity.rates_file``) made to point beside the config when they are not found in the
    current folder but are there (as for ``workload.file``)."""

    def fix(v):
        if not isinstance(v, str):
            return v
        f = Path(v).expanduser()
        if not f.is_absolute() and not f.exists() and (config_path.parent / f).exists():
            return str(config_path.parent / f)
        return v

    out = dict(trace)
    for key, field in (("source", "path"), ("source", "tokenizer"), ("popularity", "rates_file")):
        sub = out.get(key)
        if isinstance(sub, dict) and field in sub:
            out[key] = {**sub, field: fix(sub[field])}
    return out


def allowed_names() -> str:
    """Catalog names, for error messages."""
    return f"models: {', '.join(MODELS)}; GPUs: {', '.join(GPUS)}"
