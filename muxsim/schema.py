"""YAML reading and one-line validation errors, shared by every file muxsim reads a schema from
(experiment configs, trace synthesis specs): the bottom layer, importing nothing of muxsim.

What every schema refuses, before any work starts (:class:`Strict`, :func:`read_yaml`):

* a key the schema lacks, or a key given twice in one YAML mapping (YAML itself would keep
  the last one silently);
* ``inf`` / ``nan`` in any number (``.inf``, ``.nan`` in YAML);
* a boolean where a number is meant (``nodes: true`` is not 1);
* numbers outside each field's documented range.

:func:`format_validation_error` turns pydantic's error into one line,
``<dotted.field>: <problem>, got <value>``, with the field's allowed range where it has one.
"""

from __future__ import annotations

import math
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic_core import PydanticCustomError

__all__ = ["FieldProblem", "Strict", "format_validation_error", "read_yaml"]


class FieldProblem(ValueError):
    """A problem a model validator finds with one of the model's fields (or a field below it):
    ``field`` is its dotted path relative to that model, so :func:`format_validation_error`
    names it instead of the model as a whole."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _admits(annotation, kinds: tuple[type, ...]) -> bool:
    """Whether ``annotation`` (through unions, Optional, lists, dicts, tuples, Annotated, but not
    into nested models) names one of ``kinds``."""
    if annotation in kinds:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return False
    return any(_admits(a, kinds) for a in typing.get_args(annotation) if not isinstance(a, (str, int, float)))


def _has_dict(annotation) -> bool:
    if typing.get_origin(annotation) is dict or annotation is dict:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return False
    return any(_has_dict(a) for a in typing.get_args(annotation))


def _boolean_in(v, into_dicts: bool) -> bool:
    if isinstance(v, bool):
        return True
    if isinstance(v, (list, tuple)):
        return any(_boolean_in(x, into_dicts) for x in v)
    if into_dicts and isinstance(v, dict):
        return any(_boolean_in(x, into_dicts) for x in v.values())
    return False


class Strict(BaseModel):
    """Base of every schema section: unknown keys are refused (so a typo names its field), a
    validated section is immutable, every number must be finite (``inf`` and ``nan`` are
    refused: no field means "unbounded" by them) and a boolean is refused where a number is
    meant (pydantic would read ``true`` as 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, v, info):
        if info.field_name is None or not _boolean_in(v, into_dicts=True):
            return v
        ann = cls.model_fields[info.field_name].annotation
        if _admits(ann, (int, float)) and not _admits(ann, (bool,)) and _boolean_in(v, _has_dict(ann)):
            raise PydanticCustomError("bool_not_number", "must be a number, not a boolean")
        return v


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key repeated in one mapping (``<<`` merges may still
    override merged keys, as YAML means them to)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # the base constructor reports unhashable keys
                line = key_node.start_mark.line + 1
                if key in first:
                    raise _DuplicateKey(key, line, first[key])
                first[key] = line
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    def __init__(self, key, line: int, first_line: int):
        super().__init__(key)
        self.key, self.line, self.first_line = key, line, first_line


def read_yaml(p: Path, error: type[Exception], what: str):
    """The parsed YAML document of file ``p`` (a key repeated in one mapping is refused).

    Raises:
        ``error``: one line -- ``<what> not found: <p>``, ``<what> <p> is a folder, not a file``,
            ``<p>: malformed YAML at line N: ...``, ``<p>: duplicate key 'k' at line N (first
            at line M) ...`` or ``<p>: cannot read: ...``.
    """
    if p.is_dir():
        raise error(f"{what} {p} is a folder, not a file")
    if not p.is_file():
        raise error(f"{what} not found: {p}")
    try:
        text = p.read_text()
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: plain data only
    except _DuplicateKey as e:
        raise error(f"{p}: duplicate key {e.key!r} at line {e.line} (first at line {e.first_line}); "
                    f"give each key once per mapping") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or getattr(e, "reason", None) or str(e)
        problem = (str(problem).splitlines() or ["unreadable"])[0]  # one line, whatever yaml says
        if isinstance(e, yaml.reader.ReaderError):  # a control character: binary, not YAML text
            problem = f"{problem} (character #x{e.character:04x} at position {e.position}; a binary file?)"
        raise error(f"{p}: malformed YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{p}: cannot read: {(str(e).splitlines() or [type(e).__name__])[0]}") from None


# ---------------------------------------------------------------------------------------------
# one-line errors

#: Parts of a pydantic error location that name a member of a union, not a field.
_TYPE_TAGS = {"int", "float", "str", "bool", "list", "dict", "tuple", "none", "is-instance",
              "constrained-int", "constrained-float", "constrained-str"}


def _is_tag(part) -> bool:
    return isinstance(part, str) and (part in _TYPE_TAGS or any(c in part for c in "[]()"))


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models_in(a)]


def _walk(model: type[BaseModel] | None, loc: tuple):
    """Follow ``loc`` down ``model``'s fields: the model reached (None past the last one) and
    the FieldInfo of the last field named (None where ``loc`` does not end at a field)."""
    info = None
    cur = model
    for part in loc:
        if cur is None or not isinstance(part, str):
            continue  # list index, dict key or past the last model
        if part in cur.model_fields:
            info = cur.model_fields[part]
            models = _models_in(info.annotation)
            cur = models[0] if models else None
        elif not _is_tag(part):
            info, cur = None, None
    return cur, info


def _bounds(info) -> dict[str, float]:
    """``gt``/``ge``/``lt``/``le`` of a field, from its own metadata or an Annotated type it
    wraps (``Annotated[float, Field(gt=0)] | None``)."""
    found: dict[str, float] = {}

    def take(meta):
        for m in meta:
            for k in ("gt", "ge", "lt", "le"):
                if getattr(m, k, None) is not None:
                    found.setdefault(k, getattr(m, k))
            take(getattr(m, "metadata", []) or [])

    def scan(ann):
        take(getattr(ann, "__metadata__", ()) or ())
        for a in typing.get_args(ann):
            if not isinstance(a, (str, int, float)):
                scan(a)

    take(info.metadata)
    scan(info.annotation)
    return found


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _range(info) -> str:
    """The allowed range of a numeric field, e.g. ``in (0, 1e+07]`` or ``>= 0``; '' if none."""
    if info is None:
        return ""
    b = _bounds(info)
    lo = ("(", b["gt"]) if "gt" in b else ("[", b["ge"]) if "ge" in b else None
    hi = (")", b["lt"]) if "lt" in b else ("]", b["le"]) if "le" in b else None
    if lo and hi:
        return f"in {lo[0]}{_num(lo[1])}, {_num(hi[1])}{hi[0]}"
    if lo:
        return f"{'>' if lo[0] == '(' else '>='} {_num(lo[1])}"
    if hi:
        return f"{'<' if hi[0] == ')' else '<='} {_num(hi[1])}"
    return ""


def _shown(v) -> str:
    """A value as the user wrote it in YAML (``true``, ``inf``, ``'text'``), cut to 80 chars."""
    if isinstance(v, bool):
        s = "true" if v else "false"
    elif isinstance(v, float):
        s = ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")) if not math.isfinite(v) else f"{v:.12g}"
    elif isinstance(v, (list, tuple)):
        s = "[" + ", ".join(_shown(x) for x in v) + "]"
    elif isinstance(v, dict):
        s = "{" + ", ".join(f"{k}: {_shown(x)}" for k, x in v.items()) + "}"
    else:
        s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


#: pydantic error types about a number, reworded so the field's range can follow.
_NUMBER_PROBLEMS = {
    "finite_number": "must be a finite number",
    "greater_than": "must be", "greater_than_equal": "must be",
    "less_than": "must be", "less_than_equal": "must be",
    "int_parsing": "must be a whole number", "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number", "float_type": "must be a number",
    "bool_not_number": "must be a number",
}


def _pick(errors: list[dict]) -> dict:
    """The error to report: the first, or, where the first is one member of a union, the
    deepest error under that union (the member whose shape the value had)."""
    e0 = errors[0]
    loc = tuple(e0["loc"])
    cut = next((i for i, part in enumerate(loc) if _is_tag(part)), None)
    if cut is None:
        return e0
    prefix = loc[:cut]
    same = [e for e in errors if tuple(e["loc"])[:cut] == prefix and len(e["loc"]) > cut and _is_tag(e["loc"][cut])]
    return max(same, key=lambda e: len(e["loc"]))  # max keeps the first of equals


def format_validation_error(err: ValidationError, model: type[BaseModel] | None = None) -> str:
    """The first error of a pydantic ValidationError as one line,
    ``<dotted.field>: <problem>, got <value>``: ``unknown key`` (with the allowed keys when
    ``model``, the validated class, is given) for a key the schema lacks, ``required field is
    missing``, and for numbers the field's allowed range (from ``model``), e.g.
    ``workload.duration_s: must be a finite number in (0, 1e+07], got inf``."""
    e = _pick(err.errors())
    loc = tuple(e["loc"])
    problem = (e.get("ctx") or {}).get("error")
    if isinstance(problem, FieldProblem):
        loc = loc + tuple(int(p) if p.isdigit() else p for p in problem.field.split("."))
    shown = tuple(p for p in loc if not _is_tag(p))
    where = ".".join(str(p) for p in shown) or "(top level)"
    info = _walk(model, shown)[1] if model is not None else None
    kind = e["type"]
    msg = e["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    inp = e.get("input")
    if kind == "extra_forbidden":
        holder = _walk(model, shown[:-1])[0] if model is not None else None
        keys = f"; allowed: {', '.join(holder.model_fields)}" if holder is not None else ""
        return f"{where}: unknown key{keys}"
    if kind == "missing":
        if shown and isinstance(shown[-1], int):  # an item of a fixed-length list
            return f"{'.'.join(str(p) for p in shown[:-1])}: too few values (item {shown[-1]} is missing)"
        return f"{where}: required field is missing"
    if kind in _NUMBER_PROBLEMS:
        # pydantic names the one bound broken; the field's whole range says what to write
        rng = _range(info) or (msg.removeprefix("Input should be ") if kind.startswith(("greater", "less")) else "")
        msg = " ".join(x for x in (_NUMBER_PROBLEMS[kind], rng) if x)
        if kind == "bool_not_number":
            msg += ", not a boolean"
    # muxsim's own messages (value_error) quote the value themselves where it helps
    if kind != "value_error" and isinstance(inp, (bool, int, float, str, list, tuple, dict, type(None))):
        msg = f"{msg}, got {_shown(inp)}"
    return f"{where}: {msg}"

