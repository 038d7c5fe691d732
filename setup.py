"""Build script: compiles muxsim's simulation core with Cython where it can.

The modules in ``COMPILED`` are plain Python (``.py``) with Cython declarations beside them
(``.pxd``: C types for their classes and hot locals). With Cython and a C compiler at install
time (``pip install -e .`` or a wheel build), each becomes an extension module that runs the
same code 2-3x faster; without them, or if compiling fails, the install goes on and the ``.py``
files run as they are. Results are identical either way (tests/test_compiled.py).

Next to the extensions the build writes ``muxsim/_compiled.json``: the SHA-256 of each source it
compiled. :mod:`muxsim._native` reads it at import and loads the ``.py`` instead of any
extension whose source has changed since (an edit without a rebuild never runs stale code).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _compiled_modules() -> list[str]:
    """The simulation core's source files, from the one list muxsim/_native.py keeps (loaded by
    path: importing the package at build time would need its dependencies)."""
    spec = importlib.util.spec_from_file_location("_muxsim_native", ROOT / "muxsim" / "_native.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return [m.replace(".", "/") + ".py" for m in mod.COMPILED]


#: the simulation core: modules whose per-job code runs millions of times per run
COMPILED = _compiled_modules()


def _extensions():
    if os.environ.get("MUXSIM_NO_COMPILE"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    try:
        exts = cythonize(COMPILED, quiet=True, compiler_directives={
            "language_level": 3,
            # the .py files carry PEP 484 hints for readers; C types come from the .pxd files only
            "annotation_typing": False,
            # x ** y on C doubles as C's pow(), the function CPython's float ** calls (Cython's
            # default goes through complex pow for a negative base, which rounds differently)
            "cpow": True,
            "binding": True,  # introspection (inspect.signature, docs) as for plain functions
            "embedsignature": True,
        })
    except Exception as e:  # noqa: BLE001 - any failure: install the pure-Python modules
        print(f"muxsim: not compiling the simulation core ({e}); it runs as plain Python")
        return []
    for e in exts:
        e.optional = True  # a failed compile leaves that module in pure Python
        # no fused multiply-add: every float operation rounds as CPython's does, so compiled
        # and pure-Python runs give the same times to the bit (on compilers that know the flag)
        e.extra_compile_args = ["-ffp-contract=off"] if os.name == "posix" else []
    return exts


class BuildExt(build_ext):
    """build_ext that records the hash of every source it compiled (muxsim/_compiled.json)."""

    def run(self):
        super().run()
        built = {}
        for src in COMPILED:
            mod = src[:-3].replace("/", ".")
            try:
                out = Path(self.get_ext_fullpath(mod))
            except Exception:  # noqa: BLE001 - not one of ours
                continue
            if self.inplace and not out.is_absolute():
                out = ROOT / out
            if out.exists():
                built[mod] = hashlib.sha256((ROOT / src).read_bytes()).hexdigest()
        # beside the extensions only: the source tree's record speaks for its own extensions
        base = ROOT if self.inplace else Path(self.build_lib)
        target = base / "muxsim" / "_compiled.json"
        if target.parent.is_dir():
            target.write_text(json.dumps(built, indent=1, sort_keys=True) + "\n")


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
