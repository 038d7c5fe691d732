"""Shared checks of the bad-input corpus (tests/test_bad_*.py): a bad input ends with exactly
one ``error:`` line on stderr that names the problem, exit code 2, no traceback, nothing
written, and quickly."""

from __future__ import annotations

import time
from pathlib import Path

from typer.testing import CliRunner

from muxsim.cli import app

#: Longest a bad input may take to be refused (s).
MAX_SECONDS = 10.0

runner = CliRunner()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), hidden ones included."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def invoke(args: list[str], cwd: Path | None = None):
    """Run the CLI in-process with ``args``; returns (result, seconds)."""
    import os

    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        t0 = time.perf_counter()
        res = runner.invoke(app, [str(a) for a in args])
        return res, time.perf_counter() - t0
    finally:
        os.chdir(old)


def assert_refused(res, seconds: float, expected: str) -> None:
    """``res`` ended in one ``error:`` line containing ``expected`` (case-insensitive, rich's
    wrapping undone), exit 2, no traceback, within :data:`MAX_SECONDS`."""
    err = res.stderr
    assert res.exit_code == 2, (res.exit_code, res.output, err)
    assert "Traceback" not in res.output + err, res.output + err
    lines = [l for l in err.splitlines() if l.strip()]
    assert lines and lines[0].startswith("error:"), err
    assert sum(l.startswith("error:") for l in lines) == 1, err
    assert len(lines) <= 3, err  # one line, wrapped by the console at most twice
    text = " ".join(err.split())
    assert expected.lower() in text.lower(), (expected, text)
    assert seconds < MAX_SECONDS, seconds


def check_bad_input(args: list[str], expected: str, folder: Path, cwd: Path | None = None) -> None:
    """Run ``args``, assert it is refused (:func:`assert_refused`) and that nothing under
    ``folder`` changed (no file written, changed or deleted)."""
    before = snapshot(folder)
    res, seconds = invoke(args, cwd)
    assert_refused(res, seconds, expected)
    assert snapshot(folder) == before, "files under the test folder changed"
