"""YAML reading and one-line validation errors, shared by every file muxsim reads a schema from
(experiment configs, trace synthesis specs): the bottom layer, importing nothing of muxsim."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["Strict", "read_yaml", "format_validation_error"]


class Strict(BaseModel):
    """Base of every schema section: unknown keys are refused (so a typo names its field) and
    a validated section is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_yaml(p: Path, error: type[Exception], what: str):
    """The parsed YAML document of file ``p``.

    Raises:
        ``error``: one line -- ``<what> not found: <p>``, ``<p>: malformed YAML at line N: ...``
            or ``<p>: cannot read: ...``.
    """
    if not p.is_file():
        raise error(f"{what} not found: {p}")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise error(f"{p}: malformed YAML{where}: {getattr(e, 'problem', e)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{p}: cannot read: {e}") from None


def format_validation_error(err: ValidationError) -> str:
    """The first error of a pydantic ValidationError as one line, ``<dotted.field>: <what>``
    (``unknown key`` for a key the schema lacks, ``required field is missing``)."""
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    elif e["type"] == "missing":
        msg = "required field is missing"
    msg = msg.removeprefix("Value error, ")
    return f"{loc}: {msg}"
