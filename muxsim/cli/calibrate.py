"""``muxsim calibrate fit | overhead | run``: latency models and job overheads."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from muxsim.files import check_output_file

from . import common
from .app import calibrate_app
from .common import Fail, guarded


@calibrate_app.command("fit")
def calibrate_fit(
    profile: Path = typer.Argument(..., help="profile JSON in MuxServe's format, or a `calibrate run` Parquet"),
    out: Optional[Path] = typer.Option(None, "--out", help="where to write the fitted coefficients (JSON)"),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="GPU kind the measurements are of (catalog name)"),
):
    """Fit the latency model to a profile and print the fit error per model and GPU count."""

    def go():
        from rich.table import Table

        from muxsim.perf.calibration import fit_and_save

        if not profile.is_file():
            raise Fail(f"profile not found: {profile}")
        target = out if out is not None else Path("calibration") / "fitted.json"
        check_output_file(target, common.is_calibration_file, kind="calibration JSON")
        kw = {"gpu": gpu} if gpu is not None else {}
        report = fit_and_save(profile, target, **kw)
        t = Table(title=f"fit of {profile.name}: absolute relative error")
        for col in report.columns:
            t.add_column(str(col))
        for row in report.itertuples(index=False):
            t.add_row(*[f"{v:.3%}" if isinstance(v, float) and "err" in c else str(v)
                        for c, v in zip(report.columns, row)])
        common.console.print(t)
        common.console.print(f"coefficients written to {target}")

    guarded(go)


@calibrate_app.command("overhead")
def calibrate_overhead(
    jobs: Path = typer.Argument(..., help="jobs.parquet of a `muxsim validate` run (every live job, measured "
                                "and predicted)"),
    out: Optional[Path] = typer.Option(None, "--out", help="where to write the fitted overhead (JSON); give it to "
                                       "an experiment as overhead.file"),
):
    """Fit the job-overhead model (dispatch gap per job, per-sequence cost per decode iteration)
    to a live run's jobs and print it."""

    def go():
        import pandas as pd
        from rich.table import Table

        from muxsim.perf.overhead import fit_overhead, save_overhead

        if out is not None:
            check_output_file(out, common.is_overhead_file, kind="job-overhead JSON")
        if not jobs.is_file():
            raise Fail(f"job table not found: {jobs}")
        try:
            table = pd.read_parquet(jobs)
        except Exception as e:  # pyarrow raises several types for a file that is not Parquet
            raise Fail(f"{jobs}: not a readable Parquet job table ({type(e).__name__})") from None
        fitted, report = fit_overhead(table, origin=str(jobs))
        t = Table(title=f"job overhead fitted to {len(table):,} live jobs of {jobs.name}")
        for col in ("term", "model", "figure", "95 % interval", "from"):
            t.add_column(col)
        d = report[report.model == "dispatch"].iloc[0]
        t.add_row("dispatch gap per job", "all", f"{d.dispatch_ms:.3f} ms", "", f"{int(d.n_gaps):,} back-to-back gaps")
        for r in report[report.model != "dispatch"].itertuples():
            t.add_row("per sequence per decode", str(r.model), f"{r.per_seq_ms:.4f} ms",
                      f"{r.per_seq_ms_lo:.4f} .. {r.per_seq_ms_hi:.4f}",
                      f"{int(r.decode_jobs):,} decode jobs (median residual {r.residual_ms_median:.3f} ms)")
        common.console.print(t)
        if out is not None:
            save_overhead(fitted, out)
            common.console.print(f"written to {out} (negative slopes are stored as 0); use it with overhead.file")

    guarded(go)


def _int_list(text: str, what: str) -> list[int]:
    try:
        vals = [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise Fail(f"{what} must be whole numbers separated by commas, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise Fail(f"{what} must be positive whole numbers, got {text!r}")
    return vals


@calibrate_app.command("run")
def calibrate_run(
    engine: str = typer.Option("transformers", "--engine", help="transformers or vllm"),
    model: list[str] = typer.Option(..., "--model", help="catalog model (repeat for several)"),
    gpus: int = typer.Option(1, "--gpus", min=1, help="GPUs of the mesh the runs stand for"),
    sm: str = typer.Option("100", "--sm", help="SM shares in %, comma separated"),
    batch: str = typer.Option("1,2,4,8,16", "--batch", help="batch sizes, comma separated"),
    seq: str = typer.Option("32,64,128,256", "--seq", help="prompt/context tokens, comma separated"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]"),
    threads: int = typer.Option(1, "--threads", min=1, help="CPU threads per partition"),
    warmup: int = typer.Option(2, "--warmup", min=0),
    repeats: int = typer.Option(5, "--repeats", min=1),
    out: Path = typer.Option(..., "--out", help="calibration Parquet (resumed when it exists)"),
):
    """Sweep prefill and decode latency on a real engine; feed the result to `calibrate fit`."""

    def go():
        from muxsim.experiment.validation import engine_factory
        from muxsim.live.calibrate import run_calibration

        if engine not in ("transformers", "vllm"):
            raise Fail(f"--engine must be transformers or vllm, got {engine!r}")
        # an existing table is resumed, so it must be one
        check_output_file(out, common.is_calibration_table, kind="calibration Parquet table")
        try:
            sms = [float(x) for x in sm.replace(",", " ").split()]
        except ValueError:
            raise Fail(f"--sm must be percentages separated by commas, got {sm!r}") from None
        batches, seqs = _int_list(batch, "--batch"), _int_list(seq, "--seq")
        factory = engine_factory(engine)
        with common.progress_bar() as bar:
            task = bar.add_task("calibration", total=None)
            table = run_calibration(factory, model, gpus, sms, batches, seqs, out, warmup=warmup,
                                    repeats=repeats, engine_name=engine, device=device, threads=threads,
                                    progress=lambda d, t, label: bar.update(task, completed=d, total=t,
                                                                            description=label))
        common.console.print(f"{len(table)} rows in {out}; fit them with: muxsim calibrate fit {out} --gpu GPU")

    guarded(go)
