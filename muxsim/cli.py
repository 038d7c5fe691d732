"""Command line: ``muxsim run | place | calibrate fit``.

Bad input ends with a one-line ``error: ...`` on stderr and exit code 2, never a traceback, and
leaves no output folder that looks complete: outputs are written to a staging folder that is
renamed into place only when every file is written.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

import numpy as np

from muxsim import __version__
from muxsim.trace_cli import trace_app

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="muxsim: simulate MuxServe and its baselines on a GPU cluster.")
calibrate_app = typer.Typer(no_args_is_help=True, help="Measure and fit latency models and job overheads.")
app.add_typer(calibrate_app, name="calibrate")
app.add_typer(trace_app, name="trace")


def _consoles() -> tuple[Console, Console]:
    """Consoles for results and for progress/errors; wide when output is not a terminal, so
    tables in logs and CI are not wrapped."""
    out = Console()
    width = None if out.is_terminal else 160
    return Console(width=width), Console(stderr=True, width=width)


console, err_console = _consoles()


class _Fail(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _fail(msg: str) -> None:
    from rich.markup import escape

    # escaped: messages quote things like pip install -e '.[vllm]', which is not markup
    err_console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _guarded(fn):
    """Turn the errors bad input can raise into one line and exit code 2."""
    from muxsim.catalog import UnknownNameError
    from muxsim.config import ConfigError
    from muxsim.core.placement import PlacementError
    from muxsim.live.engine import EngineError

    try:
        return fn()
    except (ConfigError, PlacementError, UnknownNameError, EngineError, _Fail) as e:
        _fail(str(e))
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as e:
        _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)


def _load(config: Path, seed: Optional[int]):
    from muxsim.config import load_config

    overrides = {"seed": seed} if seed is not None else None
    return load_config(config, overrides)


@app.command()
def run(
    config: Path = typer.Argument(..., help="experiment YAML, e.g. experiments/zipf_alpha.yaml"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default results/<name>)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="override the config's seed"),
    jobs: int = typer.Option(os.cpu_count() or 1, "--jobs", min=1, help="worker processes"),
):
    """Simulate every cell of an experiment under every strategy and write tables and plots."""

    def go():
        import time

        global console, err_console
        console, err_console = _consoles()
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from muxsim import metrics, report
        from muxsim.catalog import get_model
        from muxsim.runner import placement_kinds, preflight, run_experiment

        cfg = _load(config, seed)
        preflight(cfg)
        out_dir = out if out is not None else Path("results") / cfg.name
        cells = cfg.cells()
        total = len(cells) * (len(placement_kinds(cfg)) + len(cfg.strategies))
        t0 = time.perf_counter()
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err_console, transient=False) as bar:
            task = bar.add_task(f"{cfg.name}: {len(cells)} cells x {len(cfg.strategies)} strategies", total=total)
            plans, runs = run_experiment(cfg, jobs=jobs,
                                         progress=lambda label: bar.update(task, advance=1, description=label))
        wall = time.perf_counter() - t0
        import pandas as pd

        requests = pd.concat([r.requests for r in runs], ignore_index=True)
        summary = experiment_summary(cfg, plans, runs, requests)
        summary["latency_source"] = _latency_source_column(summary, requests)
        ratios = None
        if "muxserve" in cfg.strategies and len(cfg.strategies) > 1:
            ratios = pd.concat([metrics.ratios(summary, reference="muxserve", on=m)
                                for m in ("total_throughput_rps", "throughput_rps", "goodput_rps")],
                               ignore_index=True)
        roofline = sorted({m for r in runs for m, s in r.latency_sources.items() if s == "roofline"})
        scaled = sorted({m for r in runs for m, s in r.latency_sources.items() if s == "fitted-scaled"})
        n_req = len(requests)
        sim_s = sum(r.sim_time_s for r in runs)
        cpu_s = sum(r.wall_s for r in runs)
        models = [get_model(m) for m in dict.fromkeys(cfg.llm_models())]
        facts = {
            "latency_model": {m: s for r in runs for m, s in r.latency_sources.items()},
            "roofline_models": roofline,
            "fitted_scaled_models": scaled,
            "job_overhead": cfg.overhead.model().as_dict(models),
            "slo_base": cfg.slo.base,
            "placements": {f"{r.cell} | {r.strategy}": _placement_facts(r.placement) for r in runs},
            "request_counts": {p.cell.label: dict(zip(cfg.llm_names(), p.counts))
                               for p in plans if p.counts is not None},
            "workloads": {p.cell.label: f"workload_{p.index}.parquet" for p in plans},
        }
        staging = out_dir.parent / f".{out_dir.name}.staging-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        try:
            report.write_outputs(requests, summary, ratios, staging, cfg.model_dump(mode="json"),
                                 cfg.seed, __version__, extra=facts)
            _save_workloads(plans, staging)
            _swap_into_place(staging, out_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        report.print_report(summary, ratios, console=console)
        if roofline:
            console.print(f"[yellow]note:[/] roofline latency (not calibrated) used for: {', '.join(roofline)}")
        if scaled:
            console.print(f"[yellow]note:[/] latency scaled from a fitted GPU count (mesh size not profiled) "
                          f"used for: {', '.join(scaled)}")
        console.print(
            f"{n_req:,} requests in {wall:.1f} s wall ({jobs} jobs): {n_req / max(cpu_s, 1e-9):,.0f} "
            f"simulated requests per CPU second, {sim_s / max(cpu_s, 1e-9):,.0f} simulated s per CPU second")
        console.print(f"outputs: {out_dir}")

    _guarded(go)


def experiment_summary(cfg, plans, runs, requests):
    """The run's summary: :func:`muxsim.metrics.summarize` per cell and strategy, with each LLM's
    rate, its placement's estimate and MuxServe's throughput figures
    (:func:`muxsim.metrics.add_serving_columns`)."""
    import pandas as pd

    from muxsim import metrics

    summary = metrics.summarize(requests, cfg.slo.scales, cfg.slo.goodput_scale, group_cols=("cell", "strategy"))
    rates = {p.cell.label: dict(zip(cfg.llm_names(), p.cell.rates)) for p in plans}
    facts = pd.DataFrame([(r.cell, r.strategy, n, rates[r.cell][n], r.placement.est_throughput.get(n, float("nan")))
                          for r in runs for n in cfg.llm_names()],
                         columns=["cell", "strategy", "llm", "rate_rps", "estimated_throughput_rps"])
    return metrics.add_serving_columns(summary, facts, len(cfg.llm_names()), cfg.slo.base)


def _placement_facts(p) -> dict:
    """A placement for run.json: its meshes, how it was made and its per-LLM estimate (req/s)."""
    out = {"method": p.method, "meshes": p.to_dict(),
           "estimated_throughput_rps": {k: round(float(v), 6) for k, v in p.est_throughput.items()}}
    if p.method in ("analytic", "simulated"):
        out.update(score=round(float(p.score), 6), layouts_searched=p.layouts_searched,
                   candidates_simulated=int(p.search.get("candidates_simulated", 0)))
    if p.search:
        # wall time varies between runs; everything else in run.json is deterministic
        out["search"] = {k: v for k, v in p.search.items() if k != "wall_s"}
    return out


def _latency_source_column(summary, requests):
    """Per summary row, the latency model behind it: fitted, fitted-scaled or roofline (joined
    with '+' on overall rows that mix them)."""
    keys = ["cell", "strategy", "llm"]
    per_llm = requests.groupby(keys, sort=False)["latency_source"].first()
    per_group = requests.groupby(["cell", "strategy"], sort=False)["latency_source"].agg(
        lambda s: "+".join(sorted(set(s))))
    return [per_group[(c, s)] if llm == "all" else per_llm[(c, s, llm)]
            for c, s, llm in zip(summary["cell"], summary["strategy"], summary["llm"])]


def _save_workloads(plans, folder: Path) -> list[Path]:
    """Write each planned cell's workload as ``workload_<cell index>.parquet`` (replay it with
    ``workload.file``)."""
    from muxsim.workload import save_workload

    return [save_workload(p.workload, folder / f"workload_{p.index}.parquet") for p in plans]


@app.command()
def workload(
    config: Path = typer.Argument(..., help="experiment YAML"),
    out: Path = typer.Option(..., "--out", help="folder for workload_<cell index>.parquet files"),
    seed: Optional[int] = typer.Option(None, "--seed", help="override the config's seed"),
):
    """Draw every cell's workload and save it as Parquet, without simulating."""

    def go():
        from muxsim.runner import plan_experiment, preflight

        cfg = _load(config, seed)
        preflight(cfg)
        plans = plan_experiment(cfg, simulated=False)
        out.mkdir(parents=True, exist_ok=True)
        for path, p in zip(_save_workloads(plans, out), plans):
            console.print(f"{p.cell.label}: {path} ({len(p.workload):,} requests)")

    _guarded(go)


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    """Rename the finished staging folder to ``out_dir``, replacing an older run's folder."""
    old = None
    if out_dir.exists():
        if not out_dir.is_dir():
            raise _Fail(f"--out {out_dir} exists and is not a folder")
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@app.command()
def place(
    config: Path = typer.Argument(..., help="experiment YAML"),
    strategy: str = typer.Option("muxserve", "--strategy", help="a strategy of the registry (its placement is shown)"),
    check: bool = typer.Option(False, "--check", help="also simulate the placement on the cell's workload and "
                               "print what it served next to the estimate"),
    cell: Optional[str] = typer.Option(None, "--cell", help="only the cell with this label"),
):
    """Print the placement of every cell and its estimated throughput (with --check, the
    simulated throughput beside it, per LLM and mesh)."""

    def go():
        import time

        from rich.table import Table

        from muxsim import metrics
        from muxsim.core.strategies import STRATEGIES
        from muxsim.runner import plan_experiment, placement_for, preflight, simulate_cell, strategy_placement

        if strategy not in STRATEGIES:
            raise _Fail(f"--strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
        cfg = _load(config, None)
        if strategy not in cfg.strategies:
            cfg = cfg.model_copy(update={"strategies": [*cfg.strategies, strategy]})
        kind = strategy_placement(cfg, strategy)
        preflight(cfg)
        cells = cfg.cells()
        if cell is not None:
            cells = [c for c in cells if c.label == cell]
            if not cells:
                raise _Fail(f"--cell {cell!r} is not a cell of {config}; cells: "
                            + ", ".join(c.label for c in cfg.cells()))
        for c in cells:
            t0 = time.perf_counter()
            served = {}
            if check or kind == "simulated":
                (plan,) = plan_experiment(cfg.model_copy(update={"strategies": [strategy]}), cells=[c])
                p = plan.placements[kind]
            if check:
                res = simulate_cell(cfg, c, strategy, p, plan.workload)
                summ = metrics.summarize(res.requests.assign(cell=c.label, strategy=strategy), cfg.slo.scales,
                                         cfg.slo.goodput_scale)
                served = summ.set_index("llm").to_dict("index")
            elif kind != "simulated":
                p = placement_for(cfg, c, kind)
            dt = time.perf_counter() - t0
            rate = dict(zip(cfg.llm_names(), c.rates))
            model = dict(zip(cfg.llm_names(), cfg.llm_models()))
            att = metrics.attainment_column(cfg.slo.goodput_scale)
            how = (f"{p.search.get('candidates_simulated', 0)} candidates simulated, score {p.score:.2f}"
                   if p.method == "simulated" else f"{p.layouts_searched} layouts, score {p.score:.2f}"
                   if p.method == "analytic" else "")
            t = Table(title=f"{cfg.name} {c.label}: {strategy} ({p.method} placement"
                            + (f", {how}" if how else "") + f"{'; simulated' if check else ''}, {dt:.2f} s)")
            cols = ["node", "GPUs", "LLM", "model", "rate req/s", "SM prefill/decode %", "est. req/s"]
            if check:
                cols += ["requests", "sim. req/s", "sim./est.", "TTFT p50 (s)", f"SLO @{cfg.slo.goodput_scale:g}"]
            for col in cols:
                t.add_column(col, justify="right" if col not in ("LLM", "model") else "left")

            def sim_cells(names):
                rows = [served[n] for n in names if n in served]
                thr = sum(r["throughput_rps"] for r in rows)
                est = sum(p.est_throughput.get(n, 0.0) for n in names)
                n = sum(r["n_requests"] for r in rows)
                return [f"{n:,}", f"{thr:.2f}", f"{thr / est:.2f}" if est > 0 else "n/a"]

            for m in p.meshes:
                for k, name in enumerate(m.llms):
                    pf, dec = m.sm[name]
                    gpus = f"{m.first_gpu}-{m.first_gpu + m.gpus - 1}" if m.gpus > 1 else f"{m.first_gpu}"
                    row = [str(m.node) if k == 0 else "", gpus if k == 0 else "", name, model[name],
                           f"{rate[name]:.2f}", f"{pf:g}/{dec:g}", f"{p.est_throughput.get(name, float('nan')):.2f}"]
                    if check:
                        r = served.get(name)
                        row += sim_cells([name]) + ([f"{r['ttft_p50_s']:.2f}", f"{r[att]:.0%}"]
                                                    if r is not None else ["", ""])
                    t.add_row(*row)
                if check and len(m.llms) > 1:
                    est = sum(p.est_throughput.get(n, 0.0) for n in m.llms)
                    t.add_row("", "", "mesh", "", f"{sum(rate[n] for n in m.llms):.2f}", "", f"{est:.2f}",
                              *sim_cells(m.llms), "", "", style="italic")
                t.add_section()
            console.print(t)
            line = (f"estimated throughput {p.total_est_throughput:.2f} req/s of {sum(c.rates):.2f} req/s offered")
            if check:
                thr = sum(r["throughput_rps"] for n, r in served.items() if n != "all")
                line += (f"; simulated {thr:.2f} req/s (sum of per-LLM throughputs, "
                         f"{thr / p.total_est_throughput:.2f}x the estimate)")
            console.print(line)

    _guarded(go)


@calibrate_app.command("fit")
def calibrate_fit(
    profile: Path = typer.Argument(..., help="profile JSON in MuxServe's format, or a `calibrate run` Parquet"),
    out: Optional[Path] = typer.Option(None, "--out", help="where to write the fitted coefficients (JSON)"),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="GPU kind the measurements are of (catalog name)"),
):
    """Fit the latency model to a profile and print the fit error per model and GPU count."""

    def go():
        from rich.table import Table

        from muxsim.perf.fitted import fit_and_save

        if not profile.is_file():
            raise _Fail(f"profile not found: {profile}")
        target = out if out is not None else Path("calibration") / "fitted.json"
        kw = {"gpu": gpu} if gpu is not None else {}
        report = fit_and_save(profile, target, **kw)
        t = Table(title=f"fit of {profile.name}: absolute relative error")
        for col in report.columns:
            t.add_column(str(col))
        for row in report.itertuples(index=False):
            t.add_row(*[f"{v:.3%}" if isinstance(v, float) and "err" in c else str(v)
                        for c, v in zip(report.columns, row)])
        console.print(t)
        console.print(f"coefficients written to {target}")

    _guarded(go)


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

        if not jobs.is_file():
            raise _Fail(f"job table not found: {jobs}")
        try:
            table = pd.read_parquet(jobs)
        except Exception as e:  # pyarrow raises several types for a file that is not Parquet
            raise _Fail(f"{jobs}: not a readable Parquet job table ({type(e).__name__})") from None
        fitted, report = fit_overhead(table)
        t = Table(title=f"job overhead fitted to {len(table):,} live jobs of {jobs.name}")
        for col in ("term", "model", "figure", "95 % interval", "from"):
            t.add_column(col)
        d = report[report.model == "dispatch"].iloc[0]
        t.add_row("dispatch gap per job", "all", f"{d.dispatch_ms:.3f} ms", "", f"{int(d.n_gaps):,} back-to-back gaps")
        for r in report[report.model != "dispatch"].itertuples():
            t.add_row("per sequence per decode", str(r.model), f"{r.per_seq_ms:.4f} ms",
                      f"{r.per_seq_ms_lo:.4f} .. {r.per_seq_ms_hi:.4f}",
                      f"{int(r.decode_jobs):,} decode jobs (median residual {r.residual_ms_median:.3f} ms)")
        console.print(t)
        if out is not None:
            save_overhead(fitted, out)
            console.print(f"written to {out} (negative slopes are stored as 0); use it with overhead.file")

    _guarded(go)


def _int_list(text: str, what: str) -> list[int]:
    try:
        vals = [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise _Fail(f"{what} must be whole numbers separated by commas, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise _Fail(f"{what} must be positive whole numbers, got {text!r}")
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
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from muxsim.live.calibrate import run_calibration
        from muxsim.validate import engine_factory

        if engine not in ("transformers", "vllm"):
            raise _Fail(f"--engine must be transformers or vllm, got {engine!r}")
        try:
            sms = [float(x) for x in sm.replace(",", " ").split()]
        except ValueError:
            raise _Fail(f"--sm must be percentages separated by commas, got {sm!r}") from None
        batches, seqs = _int_list(batch, "--batch"), _int_list(seq, "--seq")
        factory = engine_factory(engine)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err_console) as bar:
            task = bar.add_task("calibration", total=None)
            table = run_calibration(factory, model, gpus, sms, batches, seqs, out, warmup=warmup,
                                    repeats=repeats, engine_name=engine, device=device, threads=threads,
                                    progress=lambda d, t, label: bar.update(task, completed=d, total=t,
                                                                            description=label))
        console.print(f"{len(table)} rows in {out}; fit them with: muxsim calibrate fit {out} --gpu GPU")

    _guarded(go)


@app.command()
def validate(
    config: Path = typer.Argument(..., help="experiment YAML with a 'live' section"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default results/<name>-validate)"),
    recalibrate: bool = typer.Option(False, "--recalibrate", help="measure the calibration afresh"),
):
    """Calibrate, simulate and run live on the same workload and placement; compare them."""

    def go():
        import json

        import yaml
        from rich.table import Table

        from muxsim import metrics
        from muxsim.runner import preflight
        from muxsim.validate import compare, plot_attainment, validate_experiment

        global console, err_console
        console, err_console = _consoles()
        cfg = _load(config, None)
        preflight(cfg)
        out_dir = out if out is not None else Path("results") / f"{cfg.name}-validate"
        staging = out_dir.parent / f".{out_dir.name}.staging-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        try:
            with err_console.status("validating") as status:
                res = validate_experiment(cfg, staging, recalibrate, progress=lambda m: status.update(m))
            res.requests.to_parquet(staging / "requests.parquet", index=False)
            res.summary.to_parquet(staging / "summary.parquet", index=False)
            res.jobs.to_parquet(staging / "jobs.parquet", index=False)
            res.comparison.to_csv(staging / "comparison.csv", index=False, float_format="%.6g")
            plot_attainment(res.summary, staging / "slo_attainment.png")
            (staging / "config.resolved.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
            (staging / "run.json").write_text(json.dumps({
                "seed": cfg.seed, "version": __version__,
                "job_overhead_s": {f"{c} | {s}": v for (c, s), v in res.overheads_s.items()},
                "speed": {f"{c} | {s}": {"factors": v["factors"].as_dict(), "before": v["before"].as_dict(),
                                         "after": v["after"].as_dict(), "drift": v["drift"],
                                         "attempts": v["attempts"], "replay": v["replay"]}
                          for (c, s), v in res.speeds.items()}}, indent=1))
            _swap_into_place(staging, out_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        cmp_ = res.comparison
        t = Table(title=f"{cfg.name}: simulated vs measured (overall)")
        for col in ("cell", "strategy", "metric", "simulated", "measured", "abs error", "rel error"):
            t.add_column(col, justify="left" if col in ("cell", "strategy", "metric") else "right")
        shown = ["throughput_rps", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s"] + \
            [metrics.attainment_column(s) for s in cfg.slo.scales]
        for (cell, strat), g in cmp_[cmp_.llm == "all"].groupby(["cell", "strategy"], sort=False):
            for row in g.set_index("metric").loc[shown].itertuples():
                att = row.Index.startswith("slo_attainment")
                fmt = (lambda v: f"{v:.1%}") if att else (lambda v: f"{v:.4g}")
                abs_e = f"{row.abs_error * 100:+.1f} pp" if att else f"{row.abs_error:+.4g}"
                t.add_row(cell, strat, row.Index, fmt(row.simulated), fmt(row.measured), abs_e,
                          "" if att or not np.isfinite(row.rel_error) else f"{row.rel_error:+.1%}")
            t.add_section()
        console.print(t)
        att = cmp_[cmp_.metric.str.startswith("slo_attainment") & (cmp_.llm == "all")]
        thr = cmp_[(cmp_.metric == "throughput_rps") & (cmp_.llm == "all")]
        for (c, strat), v in res.speeds.items():
            f = v["factors"]
            console.print(f"{c} {strat}: machine speed at the live run (measured / calibrated job time) "
                          + ", ".join(f"{n} prefill {f.prefill[n]:.2f} decode {f.decode[n]:.2f}" for n in f.prefill)
                          + f"; drift during the run {v['drift']:.0%} ({v['attempts']} attempt(s))"
                          + (f" [above live.max_drift {cfg.live.max_drift:.0%}: not a steady machine]"
                             if v["drift"] > cfg.live.max_drift else ""), markup=False)
        for other in [r for r in res.summary.run.unique() if r.startswith("simulated-")]:
            alt = compare(res.summary.assign(run=res.summary.run.replace({"simulated": "_", other: "simulated"})),
                          cfg.slo.scales)
            alt = alt[alt.metric.str.startswith("slo_attainment") & (alt.llm == "all")]
            console.print(f"{other} simulation (for reference): largest SLO-attainment gap "
                          f"{alt.abs_error.abs().max() * 100:.1f} pp")
        console.print(f"largest SLO-attainment gap {att.abs_error.abs().max() * 100:.1f} pp; "
                      f"largest throughput error {thr.rel_error.abs().max():.1%}; outputs: {out_dir}")

    _guarded(go)


@app.command()
def version():
    """Print muxsim's version."""
    console.print(__version__)


def main() -> None:  # pragma: no cover - console-script shim
    """Entry point for ``python -m muxsim``."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
