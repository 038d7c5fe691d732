"""Which of muxsim's compiled modules run, and a guard against stale ones.

``setup.py`` compiles the simulation core (:data:`COMPILED`) with Cython when it can and records
the SHA-256 of each source it compiled in ``muxsim/_compiled.json``. Python would import an
extension module in preference to its ``.py`` even after the ``.py`` changed, so at import
:func:`install` puts a finder first on :data:`sys.meta_path` that loads the ``.py`` of any
module whose extension is stale (its source changed since the build, or it is not recorded),
with a warning, or of every module when the environment variable ``MUXSIM_PURE_PYTHON`` is set
to anything but ``""`` or ``"0"``. Both paths give identical results (tests/test_compiled.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from importlib.machinery import EXTENSION_SUFFIXES, SourceFileLoader
from importlib.util import spec_from_file_location
from pathlib import Path

__all__ = ["COMPILED", "decide", "install", "status"]

#: modules setup.py compiles (it reads this list)
COMPILED = (
    "muxsim.perf.base",
    "muxsim.core.resources",
    "muxsim.core.itl",
    "muxsim.core.llm",
    "muxsim.core.schedulers",
    "muxsim.sim.driver",
    "muxsim.perf.curves",
    "muxsim.perf.overhead",
)
_ROOT = Path(__file__).resolve().parent.parent
_STATUS: dict[str, str] = {}


def _paths(mod: str, root: Path = _ROOT) -> tuple[Path, list[Path]]:
    base = root / mod.replace(".", "/")
    return base.with_suffix(".py"), [base.parent / (base.name + s) for s in EXTENSION_SUFFIXES]


class _SourceFirst:
    """Meta-path finder: the ``.py`` of the modules named, whatever extension sits beside it."""

    def __init__(self, names: set[str]):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.names:
            return None
        src = _paths(fullname)[0]
        return spec_from_file_location(fullname, src, loader=SourceFileLoader(fullname, str(src)))


def decide(root: Path, built: dict[str, str], pure: bool) -> tuple[dict[str, str], set[str], list[str]]:
    """For each module of :data:`COMPILED` under ``root`` (the folder holding ``muxsim/``), given
    the recorded source hashes ``built`` and whether pure Python is asked for: its status
    (``"compiled"`` or ``"python (<why>)"``), the modules whose ``.py`` must load although an
    extension sits beside it, and those among them that are stale."""
    status: dict[str, str] = {}
    force: set[str] = set()
    stale: list[str] = []
    for mod in COMPILED:
        src, exts = _paths(mod, root)
        if not any(e.exists() for e in exts):
            status[mod] = "python (not compiled)"
            continue
        if pure:
            force.add(mod)
            status[mod] = "python (MUXSIM_PURE_PYTHON)"
            continue
        digest = hashlib.sha256(src.read_bytes()).hexdigest() if src.exists() else None
        if digest is None or built.get(mod) != digest:
            force.add(mod)
            stale.append(mod)
            status[mod] = "python (extension older than its source)"
        else:
            status[mod] = "compiled"
    return status, force, stale


def install() -> None:
    """Decide, once per process, which compiled modules may load (see the module docstring)."""
    if _STATUS:
        return
    try:
        built = json.loads((_ROOT / "muxsim" / "_compiled.json").read_text())
    except (OSError, ValueError):
        built = {}
    pure = os.environ.get("MUXSIM_PURE_PYTHON", "") not in ("", "0")
    status, force, stale = decide(_ROOT, built, pure)
    _STATUS.update(status)
    if force:
        sys.meta_path.insert(0, _SourceFirst(force))
    if stale:
        warnings.warn(f"muxsim: {', '.join(stale)} changed since they were compiled; running their .py "
                      "(slower). Rebuild with: pip install -e .", RuntimeWarning, stacklevel=2)


def status() -> dict[str, str]:
    """Per module of :data:`COMPILED`: ``"compiled"`` or ``"python (<why>)"``."""
    install()
    return dict(_STATUS)
