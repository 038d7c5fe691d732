"""Command line: ``muxsim run | workload | place | size | validate | calibrate ... | trace ... | version``.

The commands only parse, call the experiment layer and print. Bad input ends with a one-line
``error: ...`` on stderr and exit code 2, never a traceback, and leaves no output folder that
looks complete: outputs are written to a staging folder that is renamed into place only when
every file is written (:mod:`muxsim.files`).

Modules: :mod:`.app` (the typer apps), :mod:`.common` (consoles, errors, config loading),
:mod:`.run`, :mod:`.size`, :mod:`.calibrate`, :mod:`.validate`, :mod:`.trace` (the commands).
"""

from __future__ import annotations

from muxsim._version import __version__

from . import calibrate, common, run, size, trace, validate  # noqa: F401  (they register their commands)
from .app import app

__all__ = ["app", "main"]


@app.command()
def version():
    """Print muxsim's version."""
    common.console.print(__version__)


def main() -> None:  # pragma: no cover - console-script shim
    """Entry point of the ``muxsim`` script and ``python -m muxsim``."""
    app()
