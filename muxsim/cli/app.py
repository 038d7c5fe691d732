"""The typer applications every command module registers on."""

import typer

__all__ = ["app", "calibrate_app", "trace_app"]

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="muxsim: simulate MuxServe and its baselines on a GPU cluster.")
calibrate_app = typer.Typer(no_args_is_help=True, help="Measure and fit latency models and job overheads.")
trace_app = typer.Typer(no_args_is_help=True,
                        help="Convert, inspect and synthesize request traces (workload Parquet out).")
app.add_typer(calibrate_app, name="calibrate")
app.add_typer(trace_app, name="trace")
