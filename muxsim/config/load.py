"""Reading an experiment config file: YAML, command-line overrides, relative paths resolved
beside the config, and one-line errors.

Everything a config can be checked for without drawing a workload is checked here, in one
pass, before any command starts work: the schema (ranges, types, cross-field rules), and the
files it names (``workload.file``, ``overhead.file``, the trace's ``source.path`` and
``popularity.rates_file``) exist; an ``overhead.file`` is also read."""

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
        ConfigError: missing file, malformed YAML (or a key given twice), a schema violation,
            or a file the config names that is missing or unreadable; the one-line message
            names the file, the offending field, its value and the allowed range.
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
        raise ConfigError(f"{p}: {format_validation_error(e, ExperimentConfig)}") from None
    except ValueError as e:  # catalog lookups raised outside pydantic's wrapping
        raise ConfigError(f"{p}: {e}") from None
    for key, v in (("workload.file", cfg.workload.file), ("overhead.file", cfg.overhead.file)):
        if v is not None and not Path(v).expanduser().is_file():
            what = "is a folder, not a file" if Path(v).expanduser().is_dir() else "file not found"
            raise ConfigError(f"{p}: {key}: {what}: {v} (a relative path is looked up in the current "
                              f"folder, then beside the config)")
    if cfg.overhead.file is not None:
        try:  # small JSON; reading it now refuses a malformed one before any work
            cfg.overhead.model()
        except ConfigError as e:
            raise ConfigError(f"{p}: {(str(e).splitlines() or ['unreadable'])[0]}") from None
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
