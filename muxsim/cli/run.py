"""``muxsim run | workload | place``: an experiment's simulation, its workloads, its placements."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from muxsim.core.strategies import STRATEGIES
from muxsim.files import check_output_folder, staged_folder

from . import common
from .app import app
from .common import Fail, guarded, load, reset_consoles


class Executor(str, Enum):
    """Where ``muxsim run`` runs its tasks (``--executor``): a local process pool, or Ray."""

    process = "process"
    ray = "ray"


#: The one line ``--executor ray`` ends in when ray is not installed.
RAY_MISSING = "--executor ray needs the ray extra: pip install 'muxsim[ray]'"


def _check_ray() -> None:
    """Import ray now, so that a missing extra is refused before any work.

    Raises:
        Fail: ray is not installed (:data:`RAY_MISSING`) or fails to import.
    """
    from muxsim.experiment.ray_executor import require_ray

    try:
        require_ray()
    except ModuleNotFoundError as e:
        if e.name not in (None, "ray"):  # a dependency of ray is missing: say which
            raise Fail(f"--executor ray: ray failed to import: {e}") from None
        raise Fail(RAY_MISSING) from None
    except ImportError as e:
        raise Fail(f"--executor ray: ray failed to import: {e}") from None


def speed_line(n_requests: int, sim_time_s: float, wall_s: float, cpu_s: float, worker_wall_s: float,
               where: str) -> str:
    """The console's speed line of a run: its wall time, and simulated requests and simulated
    seconds per CPU second of the simulations (their workers' CPU time, summed: ``cpu_s``,
    :attr:`muxsim.experiment.ExperimentResults.worker_cpu_s`), with the simulations' summed
    worker wall time beside it (above ``cpu_s`` when workers waited for a core)."""
    cpu = max(cpu_s, 1e-9)
    return (f"{n_requests:,} requests in {wall_s:.1f} s wall ({where}); simulations {cpu_s:.2f} CPU s "
            f"({worker_wall_s:.2f} s worker wall): {n_requests / cpu:,.0f} simulated requests per CPU second, "
            f"{sim_time_s / cpu:,.0f} simulated s per CPU second")


@app.command()
def run(
    config: Path = typer.Argument(..., help="experiment YAML, e.g. experiments/zipf_alpha.yaml"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default results/<name>)"),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="override the config's seed (>= 0)"),
    jobs: int = typer.Option(os.cpu_count() or 1, "--jobs", min=1,
                             help="worker processes (with --executor ray and no --address: the local Ray "
                                  "instance's CPUs)"),
    executor: Executor = typer.Option(Executor.process, "--executor", case_sensitive=False,
                                      help="where the tasks run: a local process pool, or Ray remote tasks "
                                           "(the ray extra: pip install 'muxsim[ray]'); outputs are the same"),
    address: Optional[str] = typer.Option(None, "--address",
                                          help="with --executor ray: an existing Ray cluster (auto, HOST:6379, "
                                               "ray://HOST:10001) instead of a local instance started for the run"),
):
    """Simulate every cell of an experiment under every strategy and write tables and plots."""

    def go():
        import time

        from muxsim import report
        from muxsim.experiment import (
            experiment_results,
            placement_kinds,
            preflight,
            run_experiment,
        )
        from muxsim.experiment.ray_executor import ExecutorError
        from muxsim.experiment.results import request_store

        reset_consoles()
        if address is not None and executor is not Executor.ray:
            raise Fail("--address needs --executor ray")
        if executor is Executor.ray:
            _check_ray()
        cfg = load(config, seed)
        preflight(cfg)
        out_dir = out if out is not None else Path("results") / cfg.name
        check_output_folder(out_dir)
        cells = cfg.cells()
        total = len(cells) * (len(placement_kinds(cfg)) + len(cfg.strategies))
        t0 = time.perf_counter()
        # Each run's request table goes to a Parquet file as it arrives and is dropped, so this
        # process holds one run's table at a time, not the whole experiment's; the files sit in
        # the output's staging folder (removed however this ends, and by the next run to the
        # same output if this process is killed) and requests.parquet is streamed from them.
        with staged_folder(out_dir) as staging, request_store(cfg, staging / ".runs") as store:
            with common.progress_bar() as bar:
                task = bar.add_task(f"{cfg.name}: {len(cells)} cells x {len(cfg.strategies)} strategies", total=total)
                try:
                    plans, runs = run_experiment(cfg, jobs=jobs, executor=executor.value, address=address,
                                                 progress=lambda label: bar.update(task, advance=1, description=label),
                                                 on_run=store.add)
                except ExecutorError as e:
                    raise Fail(f"--executor ray: {e}") from None
            wall = time.perf_counter() - t0
            res = experiment_results(cfg, plans, runs, store)
            res.write_into(staging)
        con = common.console
        report.print_report(res.summary, res.ratios, console=con)
        if res.roofline:
            con.print(f"[yellow]note:[/] roofline latency (not calibrated) used for: {', '.join(res.roofline)}")
        if res.fitted_scaled:
            con.print(f"[yellow]note:[/] latency scaled from a fitted GPU count (mesh size not profiled) "
                      f"used for: {', '.join(res.fitted_scaled)}")
        con.print(speed_line(res.n_requests, res.sim_time_s, wall, res.worker_cpu_s, res.worker_s,
                             f"{jobs} jobs" if executor is Executor.process
                             else f"Ray at {address}" if address is not None else f"local Ray, {jobs} CPUs"))
        con.print(f"outputs: {out_dir}")

    guarded(go)


@app.command()
def workload(
    config: Path = typer.Argument(..., help="experiment YAML"),
    out: Path = typer.Option(..., "--out", help="folder for workload_<cell index>.parquet files"),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="override the config's seed (>= 0)"),
):
    """Draw every cell's workload and save it as Parquet, without simulating."""

    def go():
        from muxsim.experiment import plan_experiment, preflight, save_workloads

        cfg = load(config, seed)
        check_output_folder(out)
        preflight(cfg)
        plans = plan_experiment(cfg, simulated=False)
        with staged_folder(out) as staging:
            names = iter([p.name for p in save_workloads(plans, staging)])
        for p in plans:
            if p.workload is None:
                common.console.print(f"{p.cell.label}: no workload: {p.infeasible.get('muxserve', '')}")
            else:
                common.console.print(f"{p.cell.label}: {out / next(names)} ({len(p.workload):,} requests)")

    guarded(go)


@app.command()
def place(
    config: Path = typer.Argument(..., help="experiment YAML"),
    strategy: str = typer.Option("muxserve", "--strategy", help="the strategy whose placement is shown: "
                                 + ", ".join(STRATEGIES) + " (see `muxsim strategies`)"),
    check: bool = typer.Option(False, "--check", help="also simulate the placement on the cell's workload and "
                               "print what it served next to the estimate"),
    cell: Optional[str] = typer.Option(None, "--cell", help="only the cell with this label"),
):
    """Print the placement of every cell and its estimated throughput (with --check, the
    simulated throughput beside it, per LLM and mesh)."""

    def go():
        from rich.table import Table

        from muxsim import metrics
        from muxsim.catalog import get_gpu, get_model
        from muxsim.core.placement import PlacementError
        from muxsim.experiment import check_placement, preflight
        from muxsim.perf import get_latency_model

        if strategy not in STRATEGIES:
            raise Fail(f"--strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
        cfg = load(config, None)
        if strategy not in cfg.strategies:
            cfg = cfg.model_copy(update={"strategies": [*cfg.strategies, strategy]})
        preflight(cfg)
        cells = cfg.cells()
        if cell is not None:
            cells = [c for c in cells if c.label == cell]
            if not cells:
                raise Fail(f"--cell {cell!r} is not a cell of {config}; cells: "
                            + ", ".join(c.label for c in cfg.cells()))
        placed = 0
        for c in cells:
            try:
                pc = check_placement(cfg, c, strategy, simulate=check)
            except PlacementError as e:
                if len(cells) == 1:
                    raise
                # a cell of a cluster sweep too small for this strategy: say so, show the others
                common.console.print(f"{cfg.name} {c.label}: {strategy}: infeasible: {e}")
                continue
            placed += 1
            p, served, dt = pc.placement, pc.served, pc.seconds
            rate = dict(zip(cfg.llm_names(), c.rates))
            model = dict(zip(cfg.llm_names(), cfg.llm_models()))
            att = metrics.attainment_column(cfg.slo.goodput_scale)
            how = (f"{p.search.get('candidates_simulated', 0)} candidates simulated, score {p.score:.2f}"
                   if p.method == "simulated" else f"{p.layouts_searched} layouts, score {p.score:.2f}"
                   if p.method == "analytic" else "")
            t = Table(title=f"{cfg.name} {c.label}: {strategy} ({p.method} placement"
                            + (f", {how}" if how else "") + f"{'; simulated' if check else ''}, {dt:.2f} s)")
            cols = ["node", "GPUs", "LLM", "model", "latency", "rate req/s", "SM prefill/decode %", "est. req/s"]
            # each LLM's latency source on its mesh, so an uncalibrated (roofline) estimate shows
            cell_cfg = cfg.for_cell(c)
            lat = get_latency_model(cell_cfg.cluster.gpu)
            gpu = get_gpu(cell_cfg.cluster.gpu)
            if check:
                cols += ["requests", "sim. req/s", "sim./est.", "TTFT median (ms)", f"SLO @{cfg.slo.goodput_scale:g}"]
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
                    source = lat.curve(get_model(model[name]), m.gpus, gpu).source
                    row = [str(m.node) if k == 0 else "", gpus if k == 0 else "", name, model[name],
                           f"[yellow]{source}[/]" if source == "roofline" else source,
                           f"{rate[name]:.2f}", f"{pf:g}/{dec:g}", f"{p.est_throughput.get(name, float('nan')):.2f}"]
                    if check:
                        r = served.get(name)
                        row += sim_cells([name]) + ([f"{r['median_ttft_ms']:.0f}", f"{r[att]:.0%}"]
                                                    if r is not None else ["", ""])
                    t.add_row(*row)
                if check and len(m.llms) > 1:
                    est = sum(p.est_throughput.get(n, 0.0) for n in m.llms)
                    t.add_row("", "", "mesh", "", "", f"{sum(rate[n] for n in m.llms):.2f}", "", f"{est:.2f}",
                              *sim_cells(m.llms), "", "", style="italic")
                t.add_section()
            common.console.print(t)
            line = (f"estimated throughput {p.total_est_throughput:.2f} req/s of {sum(c.rates):.2f} req/s offered")
            if check:
                thr = sum(r["throughput_rps"] for n, r in served.items() if n != "all")
                line += (f"; simulated {thr:.2f} req/s (sum of per-LLM throughputs, "
                         f"{thr / p.total_est_throughput:.2f}x the estimate)")
            common.console.print(line)
        if not placed:
            raise Fail(f"{strategy} cannot be placed on any cell of {config}")

    guarded(go)


@app.command()
def strategies():
    """List the strategies an experiment may name (the registry, muxsim.core.strategies)."""
    from rich.table import Table

    t = Table(title="strategies (config key `strategies`)")
    for col in ("name", "placement", "description"):
        t.add_column(col, overflow="fold")
    for s in STRATEGIES.values():
        t.add_row(s.name, s.placement, s.description)
    common.console.print(t)
