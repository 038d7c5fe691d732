"""``muxsim size``: the two cluster-sizing questions, per strategy, answered by simulation
(:mod:`muxsim.experiment.sizing`): the highest rate a cluster takes at an SLO attainment, or
(``--rate`` / ``--nodes`` / ``--smallest``) the smallest cluster that meets a rate."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from . import common
from .app import app
from .common import Fail, guarded, load, reset_consoles

#: Files ``muxsim size`` writes in its output folder.
SIZE_FILES = ("sizing.csv", "sizing.json")


def parse_slo(text: str):
    """``--slo``: ``scale=S`` (a relative SLO scale > 0) or absolute limits in ms, any subset of
    ``ttft_ms=..,tpot_ms=..,e2e_ms=..`` (each > 0), comma-separated.

    Raises:
        Fail: anything else (one line naming the allowed forms).
    """
    from muxsim.experiment.sizing import ABS_FIELDS, SizingSLO

    allowed = f"scale=S, or any of {', '.join(f'{k}=MS' for k in ABS_FIELDS)} (comma-separated)"
    got: dict[str, float] = {}
    for part in text.split(","):
        key, eq, val = part.strip().partition("=")
        key = key.strip().lower()
        if not eq or key not in ("scale", *ABS_FIELDS):
            raise Fail(f"--slo {text!r}: {part.strip()!r} is not one of {allowed}")
        if key in got:
            raise Fail(f"--slo {text!r}: {key} is given twice")
        try:
            v = float(val)
        except ValueError:
            raise Fail(f"--slo {text!r}: {key} must be a number > 0, got {val.strip()!r}") from None
        if not (math.isfinite(v) and v > 0):
            raise Fail(f"--slo {text!r}: {key} must be a finite number > 0, got {val.strip()}")
        got[key] = v
    if "scale" in got and len(got) > 1:
        raise Fail(f"--slo {text!r}: give a relative scale=S or absolute limits ({', '.join(ABS_FIELDS)}), not both")
    if "scale" in got:
        return SizingSLO(scale=got["scale"])
    return SizingSLO(limits={k: got[k] for k in ABS_FIELDS if k in got})


def _nodes(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        vals = []
    if not vals or any(not 1 <= v <= 1024 for v in vals) or len(set(vals)) != len(vals):
        raise Fail(f"--nodes must be distinct whole numbers in [1, 1024], comma-separated (e.g. 1,2,4,8); got {text!r}")
    return vals


def _json_safe(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def _cluster(c) -> dict:
    return {"nodes": int(c.nodes), "gpus_per_node": int(c.gpus_per_node), "gpu": c.gpu,
            "n_gpus": int(c.nodes * c.gpus_per_node)}


@app.command()
def size(
    config: Path = typer.Argument(..., help="experiment YAML (one workload cell; its strategies are sized)"),
    slo: Optional[str] = typer.Option(None, "--slo", help="what meets the SLO: scale=S (relative SLO scale under "
                                      "the config's slo.base; default the config's slo.goodput_scale) or absolute "
                                      "limits ttft_ms=..,tpot_ms=..,e2e_ms=.. (any subset)"),
    attainment: float = typer.Option(0.99, "--attainment", help="SLO attainment to meet, a fraction in (0, 1]"),
    tolerance: float = typer.Option(0.02, "--tolerance", help="relative width of the final rate bracket, in (0, 1)"),
    duration: Optional[float] = typer.Option(None, "--duration", help="simulated seconds of arrivals per point "
                                             "(default the config's workload.duration_s); short keeps sizing quick"),
    rate: Optional[float] = typer.Option(None, "--rate", help="smallest cluster for this total rate (req/s, the "
                                         "config's split among LLMs kept)"),
    nodes: Optional[str] = typer.Option(None, "--nodes", help="node counts the smallest-cluster search tries "
                                        "(default the config's cluster.nodes list, else 1,2,4,8)"),
    smallest: bool = typer.Option(False, "--smallest", help="smallest cluster for the config's own rates "
                                  "(implied by --rate or --nodes)"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default results/<name>-size)"),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="override the config's seed (>= 0)"),
):
    """Per strategy: the highest rate (scale of every LLM's rate, and total req/s) the cluster
    takes at the SLO attainment, found by bisection over simulations; with --rate, --nodes or
    --smallest, the smallest cluster (in GPUs) that meets the rate instead."""

    def go():
        import json
        import time

        import pandas as pd
        from rich.table import Table

        from muxsim._version import __version__
        from muxsim.config.sweep import workload_cells
        from muxsim.experiment.sizing import (
            max_rate_scale,
            size_clusters,
            sizing_workload,
            smallest_cluster,
        )
        from muxsim.files import check_output_folder, staged_folder

        reset_consoles()
        if not (math.isfinite(attainment) and 0 < attainment <= 1):
            raise Fail(f"--attainment must be a fraction in (0, 1], got {attainment:g}")
        if not (math.isfinite(tolerance) and 0 < tolerance < 1):
            raise Fail(f"--tolerance must be a fraction in (0, 1), got {tolerance:g}")
        if duration is not None and not (math.isfinite(duration) and 0 < duration <= 1e7):
            raise Fail(f"--duration must be seconds in (0, 1e7], got {duration:g}")
        if rate is not None and not (math.isfinite(rate) and 0 < rate <= 1e6):
            raise Fail(f"--rate must be a total rate in (0, 1e6] req/s, got {rate:g}")
        node_list = _nodes(nodes) if nodes is not None else None
        cfg = load(config, seed)
        want = parse_slo(slo) if slo is not None else parse_slo(f"scale={cfg.slo.goodput_scale:g}")
        sizing_workload(cfg)
        want.apply(cfg)  # refuses absolute limits the schema lacks before any simulation
        out_dir = out if out is not None else Path("results") / f"{cfg.name}-size"
        check_output_folder(out_dir)
        question_b = smallest or rate is not None or node_list is not None
        con = common.console
        points = []
        answers = []
        t0 = time.perf_counter()
        with common.progress_bar() as bar:
            task = bar.add_task(f"{cfg.name}: sizing", total=None)

            def tick(p):
                bar.update(task, advance=1, description=(
                    f"{p.strategy} {p.cluster()} x{p.rate_scale:.4g} ({p.total_rate_rps:.1f} req/s): "
                    + (f"{p.attainment:.1%}" if p.status == "ok" else p.status)))

            if question_b:
                if node_list is None:
                    node_list = cfg.cluster.nodes if isinstance(cfg.cluster.nodes, list) else [1, 2, 4, 8]
                clusters = size_clusters(node_list, cfg)
                base_total = float(sum(workload_cells(cfg)[0].rates))
                scale = rate / base_total if rate is not None else 1.0
                for s in cfg.strategies:
                    ans, pts = smallest_cluster(cfg, s, clusters, scale, want, attainment, duration, tick)
                    answers.append(ans)
                    points += pts
            else:
                for cl in cfg.cluster.clusters():
                    for s in cfg.strategies:
                        ans, pts = max_rate_scale(cfg, s, cl, want, attainment, tolerance, duration, tick)
                        answers.append(ans)
                        points += pts
        wall = time.perf_counter() - t0

        if question_b:
            tried = ", ".join(f"{c.nodes} x {c.gpus_per_node} {c.gpu}" for c in clusters)
            t = Table(title=f"{cfg.name}: smallest cluster for {answers[0].total_rate_rps:.2f} req/s "
                            f"(rate scale {answers[0].rate_scale:.4g}) at SLO attainment >= {attainment:.1%} "
                            f"({want.describe()})")
            for col in ("strategy", "smallest cluster", "GPUs", "attainment", "simulations"):
                t.add_column(col, justify="left" if col in ("strategy", "smallest cluster") else "right")
            for a in answers:
                if a.cluster is None:
                    t.add_row(a.strategy, "none of the tried clusters", "", "", str(a.simulations))
                else:
                    t.add_row(a.strategy, f"{a.cluster.nodes} x {a.cluster.gpus_per_node} {a.cluster.gpu}",
                              str(a.cluster.nodes * a.cluster.gpus_per_node), f"{a.attainment:.1%}", str(a.simulations))
            t.caption = f"tried, in this order: {tried}"
            doc_answers = [{"strategy": a.strategy, "cluster": _cluster(a.cluster) if a.cluster else None,
                            "attainment": a.attainment, "rate_scale": a.rate_scale,
                            "total_rate_rps": a.total_rate_rps, "simulations": a.simulations} for a in answers]
            question = {"question": "smallest_cluster", "clusters_tried": [_cluster(c) for c in clusters]}
        else:
            t = Table(title=f"{cfg.name}: highest rate at SLO attainment >= {attainment:.1%} ({want.describe()}; "
                            f"bisection to {tolerance:.0%})")
            for col in ("strategy", "cluster", "rate scale", "total req/s", "attainment", "bracket (lo, hi)",
                        "simulations"):
                t.add_column(col, justify="left" if col in ("strategy", "cluster") else "right")
            notes = []
            for a in answers:
                cl = f"{a.cluster.nodes} x {a.cluster.gpus_per_node} {a.cluster.gpu}"
                lo, hi = a.bracket
                br = f"{'none' if lo is None else f'{lo:.4g}'}, {'n/a' if hi is None else f'{hi:.4g}'}"
                if a.scale is None:
                    t.add_row(a.strategy, cl, "none", "", "", br, str(a.simulations))
                else:
                    t.add_row(a.strategy, cl, f"{a.scale:.4g}" + (" (lower bound)" if hi is None else ""),
                              f"{a.total_rate_rps:.2f}", f"{a.attainment:.1%}", br, str(a.simulations))
                if a.note:
                    notes.append(f"{a.strategy} on {cl}: {a.note}")
            if notes:
                t.caption = "\n".join(notes)
                t.caption_justify = "left"
            doc_answers = [{"strategy": a.strategy, "cluster": _cluster(a.cluster), "rate_scale": a.scale,
                            "total_rate_rps": a.total_rate_rps, "attainment": a.attainment,
                            "bracket": list(a.bracket), "simulations": a.simulations, "note": a.note}
                           for a in answers]
            question = {"question": "max_rate", "tolerance": tolerance}
        records = [p.record() for p in points]
        doc = _json_safe({"config": cfg.name, "seed": cfg.seed, "version": __version__,
                          **question, "slo": want.describe(), "attainment_column": want.column,
                          "slo_base": cfg.slo.base, "attainment_target": attainment,
                          "duration_s": duration if duration is not None else cfg.workload.duration_s,
                          "answers": doc_answers, "simulations": records})
        table = pd.DataFrame(records, columns=list(points[0].record()) if points else None)
        with staged_folder(out_dir) as staging:
            table.to_csv(staging / "sizing.csv", index=False, lineterminator="\n")
            (staging / "sizing.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        con.print(t)
        con.print(f"{len(points)} simulations in {wall:.1f} s wall")
        con.print(f"outputs: {out_dir}")

    guarded(go)
