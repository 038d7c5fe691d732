"""``muxsim validate``: the simulator against a live engine on the same workload and placement."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import common
from .app import app
from .common import Fail, guarded, load, reset_consoles


@app.command()
def validate(
    config: Path = typer.Argument(..., help="experiment YAML with a 'live' section"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default results/<name>-validate)"),
    recalibrate: bool = typer.Option(False, "--recalibrate", help="measure the calibration afresh"),
):
    """Calibrate, simulate and run live on the same workload and placement; compare them."""

    def go():
        import numpy as np
        from rich.table import Table

        from muxsim import metrics
        from muxsim.experiment import preflight
        from muxsim.experiment.validation import (
            compare,
            engine_factory,
            validate_experiment,
            write_validation,
        )
        from muxsim.files import check_output_folder, staged_folder

        reset_consoles()
        cfg = load(config, None)
        if cfg.cluster.swept:
            raise Fail(f"{config}: muxsim validate runs on one cluster (the machine it measures); give "
                       f"cluster.nodes, gpus_per_node and gpu one value each, not lists")
        preflight(cfg)
        if cfg.live is None:
            raise Fail(f"{config}: the config has no 'live' section (engine, device, threads, calibration); "
                       f"muxsim validate runs it live, see experiments/validate_cpu.yaml")
        engine_factory(cfg.live.engine)  # a missing extra is refused now, before any progress line
        out_dir = out if out is not None else Path("results") / f"{cfg.name}-validate"
        check_output_folder(out_dir)
        with staged_folder(out_dir) as staging:
            with common.step_progress(f"validating {cfg.name}") as say:
                res = validate_experiment(cfg, staging, recalibrate, progress=say)
            write_validation(res, cfg, staging)
        cmp_ = res.comparison
        t = Table(title=f"{cfg.name}: simulated vs measured (overall)")
        for col in ("cell", "strategy", "metric", "simulated", "measured", "abs error", "rel error"):
            t.add_column(col, justify="left" if col in ("cell", "strategy", "metric") else "right")
        shown = ["throughput_rps", "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms"] + \
            [metrics.attainment_column(s) for s in cfg.slo.scales]
        for (cell, strat), g in cmp_[cmp_.llm == "all"].groupby(["cell", "strategy"], sort=False):
            for row in g.set_index("metric").loc[shown].itertuples():
                att = row.Index.startswith("slo_attainment")
                fmt = (lambda v: f"{v:.1%}") if att else (lambda v: f"{v:.4g}")
                abs_e = f"{row.abs_error * 100:+.1f} pp" if att else f"{row.abs_error:+.4g}"
                t.add_row(cell, strat, row.Index, fmt(row.simulated), fmt(row.measured), abs_e,
                          "" if att or not np.isfinite(row.rel_error) else f"{row.rel_error:+.1%}")
            t.add_section()
        common.console.print(t)
        att = cmp_[cmp_.metric.str.startswith("slo_attainment") & (cmp_.llm == "all")]
        thr = cmp_[(cmp_.metric == "throughput_rps") & (cmp_.llm == "all")]
        for (c, strat), v in res.speeds.items():
            f = v["factors"]
            common.console.print(f"{c} {strat}: machine speed at the live run (measured / calibrated job time) "
                          + ", ".join(f"{n} prefill {f.prefill[n]:.2f} decode {f.decode[n]:.2f}" for n in f.prefill)
                          + f"; drift during the run {v['drift']:.0%} ({v['attempts']} attempt(s))"
                          + (f" [above live.max_drift {cfg.live.max_drift:.0%}: not a steady machine]"
                             if v["drift"] > cfg.live.max_drift else ""), markup=False)
        for other in [r for r in res.summary.run.unique() if r.startswith("simulated-")]:
            alt = compare(res.summary.assign(run=res.summary.run.replace({"simulated": "_", other: "simulated"})),
                          cfg.slo.scales)
            alt = alt[alt.metric.str.startswith("slo_attainment") & (alt.llm == "all")]
            common.console.print(f"{other} simulation (for reference): largest SLO-attainment gap "
                          f"{alt.abs_error.abs().max() * 100:.1f} pp")
        common.console.print(f"largest SLO-attainment gap {att.abs_error.abs().max() * 100:.1f} pp; "
                      f"largest throughput error {thr.rel_error.abs().max():.1%}; outputs: {out_dir}")

    guarded(go)
