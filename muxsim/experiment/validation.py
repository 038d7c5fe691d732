"""Validation: the simulator against a real engine on the same workload and placement.

``validate_experiment`` calibrates the engine (or reuses a calibration), fits the latency model
to it, then for every cell and strategy runs live and simulates with the same policy objects,
and compares per LLM and overall: throughput, TTFT and TPOT percentiles, and SLO attainment at
each SLO scale (both runs judge a request against the same SLO: scale x its latency served
alone, from the calibrated model).

Each live run sits between two speed probes (:mod:`muxsim.live.speed`): reference jobs that
measure how fast the machine runs then, relative to the calibration, and how much that moved
during the run. A second simulation uses the calibrated curves scaled by that speed; with
``live.speed_correction`` it is the one compared (run ``simulated``, the other kept as
``simulated-uncorrected``), else it is kept as ``simulated-corrected``. A run during which the
speed moved by more than ``live.max_drift`` is repeated up to ``live.retries`` times.

A third simulation, ``simulated-replayed``, replays the speed the live run's own jobs met, per
LLM and ``live.replay_window_s`` window (:class:`muxsim.live.speed.SpeedTrace`). It is fed the
measurement, so it predicts nothing; what gap it leaves is the simulator's own (scheduling,
batching, curve shape), what it closes was the machine's speed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from muxsim import metrics
from muxsim.catalog import get_model
from muxsim.config import ConfigError, ExperimentConfig
from muxsim.core.strategies import get_strategy
from muxsim.files import atomic_file
from muxsim.live.speed import ScaledLatency, SpeedTrace, probe_speed

from .placements import strategy_placement
from .plan import plan_experiment
from .simulation import run_spec, simulate_cell

__all__ = ["ValidationResult", "engine_factory", "pinned_cores", "calibrate_for", "compare", "validate_experiment", "plot_attainment", "write_validation",
           "COMPARED_METRICS"]

#: Metrics compared besides SLO attainment (summary column names).
COMPARED_METRICS = ("throughput_rps", "median_ttft_ms", "p90_ttft_ms", "p99_ttft_ms", "median_tpot_ms",
                    "p90_tpot_ms", "p99_tpot_ms", "median_itl_ms", "p99_itl_ms")


@dataclass
class ValidationResult:
    """Both runs and their comparison.

    Attributes:
        requests: per-request records of both runs, column ``run`` = ``simulated`` | ``measured``.
        summary: :func:`muxsim.metrics.summarize` of both, grouped by cell, strategy and run.
        comparison: long table, one row per (cell, strategy, llm, metric): simulated, measured,
            abs_error = simulated - measured, rel_error = abs_error / measured.
        calibration: path of the fitted latency JSON used.
        overheads_s: per (cell, strategy), the median driver/engine overhead per live job (s).
        jobs: every live job with its measured and predicted duration (see
            :class:`muxsim.live.driver.LiveResult`), plus cell and strategy.
        speeds: per (cell, strategy), the machine's speed at the live run (see
            :func:`_steady_live_run`): speed factors, both probes, drift and attempts.
    """

    requests: pd.DataFrame
    summary: pd.DataFrame
    comparison: pd.DataFrame
    calibration: Path
    overheads_s: dict
    jobs: pd.DataFrame
    speeds: dict


def engine_factory(name: str) -> Callable:
    """The engine class for ``name``, called with no arguments to make an engine:
    ``transformers`` (:class:`muxsim.live.transformers.TransformersEngine`, CPU or CUDA) or ``vllm``
    (:class:`muxsim.live.vllm.VLLMEngine`, CUDA GPUs only).

    Raises:
        ConfigError: the engine's extra is not installed, or an unknown engine name.
    """
    if name == "transformers":
        import importlib.util

        # the engine imports torch only in its worker processes: check here, in one line
        missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(f"live.engine 'transformers' needs the 'live' extra: {', '.join(missing)} "
                              "not installed (pip install -e '.[live]')")
        from muxsim.live.transformers import TransformersEngine

        return TransformersEngine
    if name == "vllm":
        import importlib.util

        # vllm is imported only in the worker processes: check here, in one line
        if importlib.util.find_spec("vllm") is None:
            raise ConfigError("live.engine 'vllm' needs the 'vllm' extra: vllm not installed "
                              "(pip install -e '.[vllm]'); vLLM runs on CUDA GPUs only, not on CPU")
        from muxsim.live.vllm import VLLMEngine

        return VLLMEngine
    raise ConfigError(f"unknown live.engine {name!r}; allowed: transformers, vllm")


def pinned_cores(n_llms: int, threads: int, device: str, pin: bool) -> list[tuple[int, ...] | None]:
    """CPU cores for each LLM's worker: consecutive blocks of ``threads`` cores from the ones
    this process may use, wrapping around when there are more workers than cores. None for
    each when ``pin`` is off, the device is not the CPU, or the OS cannot pin
    (``os.sched_getaffinity`` missing)."""
    if not pin or device != "cpu" or not hasattr(os, "sched_getaffinity"):
        return [None] * n_llms
    allowed = sorted(os.sched_getaffinity(0))
    return [tuple(allowed[(i * threads + k) % len(allowed)] for k in range(threads)) for i in range(n_llms)]


def calibrate_for(cfg: ExperimentConfig, out_dir: Path, recalibrate: bool = False,
                  progress: Callable[[int, int, str], None] | None = None):
    """Calibrate the config's models on its live engine and fit the latency model.

    The sweep goes to ``live.calibration.file`` when given (resumed, reused as far as it
    reaches), else to ``out_dir/calibration.parquet``; ``recalibrate`` starts it afresh.

    Returns:
        (fitted latency model, path of its JSON, path of the calibration Parquet).

    Raises:
        ConfigError: no ``live`` section, or the engine's extra is not installed.
    """
    from muxsim.live.calibrate import run_calibration
    from muxsim.perf.calibration import fit_and_save, load_calibration

    if cfg.live is None:
        raise ConfigError("the config has no 'live' section (engine, device, threads, calibration)")
    grid = cfg.live.calibration
    table = Path(grid.file) if grid.file else out_dir / "calibration.parquet"
    if recalibrate and table.exists():
        table.unlink()
    table.parent.mkdir(parents=True, exist_ok=True)
    models = sorted(set(cfg.llm_models()))
    # single-thread CPU partitions run at the same speed whatever SM share the policy gives a
    # job, so one share is measured there; on CUDA the shares the policy uses are swept
    sm_pcts = [100.0] if cfg.live.device == "cpu" else sorted({30.0, 50.0, 70.0, 100.0})
    run_calibration(engine_factory(cfg.live.engine), models, 1, sm_pcts, grid.batches, grid.seqs, table,
                    warmup=grid.warmup, repeats=grid.repeats, engine_name=cfg.live.engine,
                    device=cfg.live.device, threads=cfg.live.threads, progress=progress,
                    timing="round-trip")
    fitted = out_dir / f"{cfg.cluster.gpu}.json"
    to_fit = table
    if cfg.live.device == "cpu":
        # A CPU job runs on one partition of fixed threads whatever the mesh's size (there is
        # no tensor parallelism), so the curve measured on one device is the curve of every
        # mesh size the placements may use; fitting it under each size keeps the latency model
        # from scaling it as if the work were split over the mesh.
        from muxsim.perf.table import read_calibration

        df = read_calibration(table)
        sizes = [g for g in (1, 2, 4, 8, 16) if g <= cfg.cluster.gpus_per_node]
        to_fit = out_dir / "calibration.per-mesh-size.parquet"
        pd.concat([df.assign(n_gpus=g) for g in sizes], ignore_index=True).to_parquet(to_fit, index=False)
    fit_and_save(to_fit, fitted, gpu=cfg.cluster.gpu)
    return load_calibration(fitted), fitted, table


def compare(summary: pd.DataFrame, slo_scales) -> pd.DataFrame:
    """Simulated vs measured, per (cell, strategy, llm) and metric.

    Args:
        summary: :func:`muxsim.metrics.summarize` output grouped by (cell, strategy, run).

    Returns:
        Long table: cell, strategy, llm, metric, simulated, measured, abs_error, rel_error
        (rel_error is NaN where the measured value is 0).
    """
    cols = list(COMPARED_METRICS) + [metrics.attainment_column(s) for s in slo_scales]
    keys = ["cell", "strategy", "llm"]
    sim = summary[summary.run == "simulated"].set_index(keys)[cols]
    live = summary[summary.run == "measured"].set_index(keys)[cols]
    sim, live = sim.align(live, join="inner")
    rows = []
    for key in sim.index:
        for c in cols:
            s, m = float(sim.at[key, c]), float(live.at[key, c])
            rows.append((*key, c, s, m, s - m, (s - m) / m if m else np.nan))
    return pd.DataFrame(rows, columns=keys + ["metric", "simulated", "measured", "abs_error", "rel_error"])


def validate_experiment(cfg: ExperimentConfig, out_dir: Path, recalibrate: bool = False,
                        progress: Callable[[str], None] | None = None) -> ValidationResult:
    """Calibrate, simulate and run live every cell and strategy of ``cfg``; compare.

    Args:
        progress: called with a short line at each step: each calibration point
            (``"calibration <done>/<total> <point>"``), the fit, loading the models, and per
            (cell, strategy) the start of its live run, its end and its simulations.

    Raises:
        ConfigError: no ``live`` section or missing extras.
        muxsim.core.placement.PlacementError: infeasible placement.
        muxsim.live.engine.EngineError: the engine failed.
    """
    from muxsim.live.driver import load_models
    from muxsim.live.engine import Partition

    say = progress or (lambda label: None)
    say("calibration: measuring the models on the live engine (points already in the table are reused)")
    latency, fitted, _ = calibrate_for(cfg, out_dir, recalibrate,
                                       lambda done, total, label: say(f"calibration {done}/{total} {label}"))
    say(f"calibration: fitted {fitted.name}")
    names = cfg.llm_names()
    models = [get_model(m) for m in cfg.llm_models()]
    live = cfg.live
    parts = {n: Partition(device=live.device, threads=live.threads, cores=c)
             for n, c in zip(names, pinned_cores(len(names), live.threads, live.device, live.pin_cores))}
    ckpt = {n: live.checkpoints[m] for n, m in zip(names, cfg.llm_models())
            if live.checkpoints and m in live.checkpoints}
    frames = []
    itl = {}  # (cell, strategy, run, llm) -> ITL histogram, simulated and measured
    jobs = []
    overheads = {}
    speeds = {}
    model_of = dict(zip(names, cfg.llm_models()))
    with engine_factory(cfg.live.engine)() as engine:
        say(f"loading {len(names)} LLM(s) on the {cfg.live.engine} engine")
        load_models(engine, names, models, parts, cfg.seed, ckpt)
        plans = plan_experiment(cfg, latency=latency, strict=True)
        n_runs, k = len(plans) * len(cfg.strategies), 0
        for plan in plans:
            cell, wl = plan.cell, plan.workload
            for strategy in cfg.strategies:
                k += 1
                say(f"{cell.label} {strategy} ({k}/{n_runs}): live run of {len(wl):,} requests")
                placement = plan.placements[strategy_placement(cfg, strategy)]
                spec = run_spec(cfg, cell, strategy, placement, wl, latency)
                res, speed = _steady_live_run(engine, spec, cfg, say, f"{cell.label} {strategy}")
                speeds[(cell.label, strategy)] = speed
                scaled = ScaledLatency(latency, ScaledLatency.per_model(speed["factors"], model_of))
                # "simulated" is the one compared; the other is kept to show what the speed
                # correction changes
                sims = ({"simulated": scaled, "simulated-uncorrected": latency} if live.speed_correction
                        else {"simulated": latency, "simulated-corrected": scaled})
                overheads[(cell.label, strategy)] = res.job_overhead_s
                jobs.append(res.jobs.assign(cell=cell.label, strategy=strategy))
                runs = {run: simulate_cell(cfg, cell, strategy, placement, wl, lat, slo_latency=latency)
                        for run, lat in sims.items()}
                trace = SpeedTrace(res.jobs, live.replay_window_s)
                speed["replay"] = trace.as_dict()
                # the replayed factors already hold the run's dispatch gap: no overheads on top
                runs["simulated-replayed"] = simulate_cell(cfg, cell, strategy, placement, wl, latency,
                                                           overheads=False, speed=trace)
                runs["measured"] = res
                say(f"{cell.label} {strategy} ({k}/{n_runs}): simulated")
                for run, out in runs.items():
                    itl.update({(cell.label, strategy, run, n): h for n, h in out.itl.items()})
                    df = out.requests.copy()
                    df.insert(0, "run", run)
                    df.insert(0, "strategy", strategy)
                    df.insert(0, "cell", cell.label)
                    for k, v in cell.params.items():
                        df[k] = v
                    frames.append(df)
    requests = pd.concat(frames, ignore_index=True)
    summary = metrics.summarize(requests, cfg.slo.scales, cfg.slo.goodput_scale,
                                group_cols=("cell", "strategy", "run"), itl=itl, abs_slo=cfg.slo.absolute())
    return ValidationResult(requests, summary, compare(summary, cfg.slo.scales), fitted, overheads,
                            pd.concat(jobs, ignore_index=True), speeds)


def _steady_live_run(engine, spec, cfg: ExperimentConfig, say, label: str):
    """One live run between two speed probes, repeated (up to ``live.retries`` more times) while
    the machine's speed moved by more than ``live.max_drift`` between them.

    The repeat decision reads only the reference jobs, never the run's outcome, so it cannot
    pick a run that happens to match the simulation.

    Returns:
        (the :class:`~muxsim.live.driver.LiveResult` of the last attempt, a dict with its
        ``factors`` (geometric mean of both probes), ``before``, ``after``, ``drift`` and the
        number of ``attempts``).
    """
    from muxsim.core.replay import placement_curves
    from muxsim.live.driver import run_live

    placement, strategy = spec.placement, spec.strategy
    curves = placement_curves(placement, spec.names, spec.models, spec.latency, spec.gpu)
    live = cfg.live
    # measure the speed under the concurrency the run will have: jobs of several LLMs at once
    # unless one mesh runs one job at a time
    concurrent = not get_strategy(strategy).serial or len(placement.meshes) > 1
    for attempt in range(1, live.retries + 2):
        before = probe_speed(engine, curves, repeats=2, concurrent=concurrent)
        res = run_live(spec, engine)
        after = probe_speed(engine, curves, repeats=2, concurrent=concurrent)
        drift = before.drift(after)
        say(f"{label}: measured ({res.wall_s:.1f} s, speed drift {drift:.0%})")
        if drift <= live.max_drift:
            break
    return res, {"factors": before.combined(after), "before": before, "after": after, "drift": drift,
                 "attempts": attempt, "concurrent": concurrent}


def plot_attainment(summary: pd.DataFrame, path: Path) -> Path:
    """SLO attainment vs SLO scale per strategy, one panel per cell, one line style per run:
    measured, the compared simulation, and the probe-scaled (or unscaled) and speed-replayed
    simulations kept for reference; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    att = [c for c in summary.columns if c.startswith("slo_attainment@")]
    rows = summary[summary.llm == "all"].melt(id_vars=["cell", "strategy", "run"], value_vars=att,
                                              var_name="scale", value_name="attainment")
    rows["scale"] = rows["scale"].str.split("@").str[1].astype(float)
    order = [r for r in ("measured", "simulated", "simulated-uncorrected", "simulated-corrected",
                         "simulated-replayed")
             if r in set(rows["run"])]
    g = sns.relplot(data=rows, x="scale", y="attainment", hue="strategy", style="run",
                    style_order=order, col="cell", kind="line", marker="o",
                    height=3.6, aspect=1.3, facet_kws={"sharey": True})
    g.set(xscale="log", ylim=(-0.02, 1.02), xlabel="SLO scale", ylabel="SLO attainment")
    g.figure.suptitle("SLO attainment: simulated vs measured", y=1.03)
    with atomic_file(path) as tmp:
        g.figure.savefig(tmp, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(g.figure)
    return path


def write_validation(res: ValidationResult, cfg: ExperimentConfig, folder: Path) -> list[Path]:
    """Write a validation's outputs into ``folder`` (a staging folder: the caller renames it into
    place): ``requests.parquet``, ``summary.parquet``, ``jobs.parquet``, ``comparison.csv``,
    ``slo_attainment.png`` (:func:`plot_attainment`), ``config.resolved.yaml`` and ``run.json``
    (seed, version, each live run's job overhead and machine speed)."""
    import json

    import yaml

    from muxsim._version import __version__

    folder = Path(folder)
    res.requests.to_parquet(folder / "requests.parquet", index=False)
    res.summary.to_parquet(folder / "summary.parquet", index=False)
    res.jobs.to_parquet(folder / "jobs.parquet", index=False)
    res.comparison.to_csv(folder / "comparison.csv", index=False, float_format="%.6g")
    plot_attainment(res.summary, folder / "slo_attainment.png")
    (folder / "config.resolved.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    (folder / "run.json").write_text(json.dumps({
        "seed": cfg.seed, "version": __version__,
        "job_overhead_s": {f"{c} | {s}": v for (c, s), v in res.overheads_s.items()},
        "speed": {f"{c} | {s}": {"factors": v["factors"].as_dict(), "before": v["before"].as_dict(),
                                 "after": v["after"].as_dict(), "drift": v["drift"],
                                 "attempts": v["attempts"], "replay": v["replay"]}
                  for (c, s), v in res.speeds.items()}}, indent=1))
    return sorted(folder.iterdir())
