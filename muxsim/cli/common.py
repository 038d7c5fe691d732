"""What every command shares: the consoles, the one-line error, the guard that turns expected
errors into it, and loading a config.

Bad input ends with a one-line ``error: ...`` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import typer
from rich.console import Console

__all__ = ["Fail", "is_calibration_file", "is_calibration_table", "is_overhead_file", "is_workload_file", "console", "err_console", "fail", "guarded", "load", "progress_bar", "reset_consoles", "say_error", "step_progress"]


def _consoles() -> tuple[Console, Console]:
    """Consoles for results and for progress/errors; wide when output is not a terminal, so
    tables in logs and CI are not wrapped."""
    out = Console()
    width = None if out.is_terminal else 160
    return Console(width=width), Console(stderr=True, width=width)


console, err_console = _consoles()


def reset_consoles() -> None:
    """Make the consoles afresh (a command run in-process by a test runner gets its streams)."""
    global console, err_console
    console, err_console = _consoles()


class Fail(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def say_error(msg: str) -> None:
    """Print ``error: <msg>`` on the error console, as one line (not wrapped by rich)."""
    from rich.markup import escape

    # escaped: messages quote things like pip install -e '.[vllm]', which is not markup
    err_console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)


def fail(msg: str) -> None:
    """Print ``error: <msg>`` on stderr and exit with code 2.

    Raises:
        typer.Exit: always.
    """
    say_error(msg)
    raise typer.Exit(code=2)


def guarded(fn):
    """Call ``fn()``, turning the errors bad input can raise into one line and exit code 2."""
    from muxsim.catalog import UnknownNameError
    from muxsim.config import ConfigError
    from muxsim.core.placement import PlacementError
    from muxsim.live.engine import EngineError

    try:
        return fn()
    except (ConfigError, PlacementError, UnknownNameError, EngineError, Fail) as e:
        fail(str(e))
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)


def load(config: Path, seed: int | None):
    """The validated experiment config of file ``config``, its seed replaced by ``seed`` when
    given.

    Raises:
        muxsim.config.ConfigError: a bad config (one line).
    """
    from muxsim.config import load_config

    overrides = {"seed": seed} if seed is not None else None
    return load_config(config, overrides)


def progress_bar():
    """A progress bar on the error console (description, bar, done/total, elapsed time); it
    clears itself when done, so an error that stops the work is the only line left."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err_console, transient=True)


class _StepLines:
    """Progress as plain lines on the error console (see :func:`step_progress`)."""

    _COUNTED = re.compile(r"^(?P<what>[A-Za-z_-]+) (?P<done>\d+)/(?P<total>\d+)\b")

    def __init__(self, con: Console):
        self.con = con
        self.t0 = time.perf_counter()
        self.shown: dict[str, int] = {}

    def __call__(self, msg: str) -> None:
        m = self._COUNTED.match(msg)
        if m is not None:
            # a long counted series ("calibration 7/40 ...") gets about ten lines, not one per
            # item: its first, its last and one per tenth done
            what, done, total = m["what"], int(m["done"]), max(int(m["total"]), 1)
            tenth = done * 10 // total
            if done not in (1, total) and self.shown.get(what) == tenth:
                return
            self.shown[what] = tenth
        self.con.print(f"[{time.perf_counter() - self.t0:7.1f} s] {msg}", markup=False, highlight=False,
                       soft_wrap=True)
        self.con.file.flush()


@contextlib.contextmanager
def step_progress(title: str):
    """A block that reports the steps of a long command; yields ``say(msg)``.

    On a terminal: a rich status line (spinner) showing the latest step, cleared at the end.
    Otherwise (a log, CI, a pipe): one line per step on stderr, prefixed with the elapsed time
    and flushed at once, so the log shows where the command is; a counted series of steps
    (``"<word> <done>/<total> ..."``, e.g. calibration points) is thinned to its first, last and every tenth."""
    con = err_console
    if con.is_terminal:
        with con.status(title) as status:
            yield lambda msg: status.update(f"{title}: {msg}")
        return
    say = _StepLines(con)
    say(f"{title}: started")
    yield say


# What kind of file an existing --out is: muxsim replaces a file only when it is of the kind the
# command writes (muxsim.files.check_output_file), never a user's other file.

def _parquet_columns(path: Path) -> set[str]:
    import pyarrow.parquet as pq

    try:
        return set(pq.read_schema(path).names)
    except Exception:  # pyarrow raises several types for a file that is not Parquet
        return set()


def is_workload_file(path: Path) -> bool:
    """Whether ``path`` is a workload Parquet file (:data:`muxsim.workload.WORKLOAD_COLUMNS`)."""
    from muxsim.workload import WORKLOAD_COLUMNS

    return set(WORKLOAD_COLUMNS) <= _parquet_columns(path)


def is_calibration_table(path: Path) -> bool:
    """Whether ``path`` is a ``muxsim calibrate run`` Parquet table."""
    from muxsim.perf.table import CALIBRATION_COLUMNS

    return set(CALIBRATION_COLUMNS) <= _parquet_columns(path)


def _json(path: Path):
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_calibration_file(path: Path) -> bool:
    """Whether ``path`` is a fitted-latency calibration JSON (:data:`muxsim.perf.calibration.FORMAT`)."""
    from muxsim.perf.calibration import FORMAT

    doc = _json(path)
    return isinstance(doc, dict) and doc.get("format") == FORMAT


def is_overhead_file(path: Path) -> bool:
    """Whether ``path`` is a fitted job-overhead JSON (``dispatch_s``, ``decode_per_seq_s``)."""
    doc = _json(path)
    return isinstance(doc, dict) and {"dispatch_s", "decode_per_seq_s"} <= set(doc)
