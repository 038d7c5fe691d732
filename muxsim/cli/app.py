"""The typer applications every command module registers on, and the top-level error policy:
every usage error (unknown option, missing argument, bad value) ends in one ``error:`` line and
exit code 2 instead of typer's box; Ctrl-C ends in ``error: interrupted`` and exit 130, SIGTERM
in ``error: terminated`` and exit 143, never a traceback (outputs are staged, so an interrupted
run leaves nothing that looks complete)."""

from __future__ import annotations

import signal
import sys
import threading

import typer
from typer.core import TyperGroup

try:  # typer >= 0.20 vendors click as typer._click; earlier typer runs on click itself
    from typer._click import exceptions as _x
    from typer._click.utils import echo as _echo
except ImportError:  # pragma: no cover - older typer
    from click import echo as _echo
    from click import exceptions as _x

__all__ = ["app", "calibrate_app", "trace_app"]

#: Exit codes of a run stopped by SIGINT (Ctrl-C) and by SIGTERM (128 + the signal number).
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class _Terminated:
    """Whether the SIGTERM handler fired during the current command."""

    seen = False


def _on_sigterm(signum, frame):
    _Terminated.seen = True
    # unwinds like Ctrl-C: staging folders and worker pools are cleaned up on the way out
    raise KeyboardInterrupt


def _say(msg: str) -> None:
    from . import common

    common.say_error(msg)


class OneLineErrors(TyperGroup):
    """The top-level group: runs a command in non-standalone mode and turns what click would
    print as a usage box or a traceback into one ``error:`` line (see the module docstring)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Run the command line; always exits (``SystemExit``) with the command's code."""
        prog_name = prog_name or "muxsim"  # a test runner would name the program after itself
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
        _Terminated.seen = False
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except _x.NoArgsIsHelpError as e:
            _echo(e.ctx.get_help())
            sys.exit(e.exit_code)
        except _x.UsageError as e:
            where = f"{e.ctx.command_path}: " if e.ctx is not None else ""
            hint = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
            _say(f"{where}{e.format_message()}{hint}")
            sys.exit(2)
        except _x.ClickException as e:
            _say(e.format_message())
            sys.exit(e.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            rv = EXIT_INTERRUPTED
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)
        if rv == EXIT_INTERRUPTED:
            if _Terminated.seen:
                _say("terminated (SIGTERM); nothing was written")
                sys.exit(EXIT_TERMINATED)
            _say("interrupted; nothing was written")
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True,
                  help="muxsim: simulate MuxServe and its baselines on a GPU cluster.")
calibrate_app = typer.Typer(no_args_is_help=True, help="Measure and fit latency models and job overheads.")
trace_app = typer.Typer(no_args_is_help=True,
                        help="Convert, inspect and synthesize request traces (workload Parquet out).")
app.add_typer(calibrate_app, name="calibrate")
app.add_typer(trace_app, name="trace")
