"""Cluster sizing (``muxsim size``): simulations of one workload at several rates and on several
clusters, answering per strategy

a. what rate a cluster takes: the highest *rate scale* s (every LLM's rate multiplied by s;
   also reported as total req/s) at which SLO attainment >= a target (:func:`max_rate_scale`);
b. the smallest cluster that meets a rate: the first of a list of clusters, in increasing GPU
   count, whose attainment at that rate >= the target (:func:`smallest_cluster`).

Every point is an ordinary run of the experiment (plan, placement search, simulation,
summary: :func:`muxsim.experiment.run_experiment`) on a copy of the config with one strategy,
one cluster and the rates scaled (:func:`point_config`), so a point can be checked with
``muxsim run`` on that config. A strategy that cannot be placed at a point fails it.

SLO attainment is the summary's overall ``slo_attainment@<scale>`` (relative SLOs, the config's
``slo.base``) or ``slo_attainment_abs`` (absolute TTFT / TPOT / E2E limits, where the config
schema has them): :class:`SizingSLO`.

The search of (a) is a plain bisection, documented here because attainment is a step function
of the rate estimated by simulation (scipy's root finders want a continuous function): from s
= 1 (the config's own rates) the bracket is doubled while the target is met, or halved while it
is not, until [lo, hi] has lo meeting it and hi not; then the geometric mean of lo and hi
replaces whichever end it agrees with, until hi / lo <= 1 + tolerance. Attainment falls with the
rate in practice (more load, longer queues), not by construction: each scale draws its own
workload (seeded by the experiment seed and the cell's parameters, as ``muxsim run`` draws it),
so near the answer sampling noise can make it non-monotone; the answer is then *a* scale
meeting the target whose bracket's upper end does not. Same config and seed: same answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from muxsim.config import ClusterConfig, ConfigError, ExperimentConfig
from muxsim.config.sections import MAX_RATE
from muxsim.core.placement import PlacementError
from muxsim.metrics import ALL_LLMS, attainment_column

__all__ = ["ABS_ATTAINMENT", "ABS_FIELDS", "Point", "RateAnswer", "SizeAnswer", "SizingSLO",
           "evaluate_point", "max_rate_scale", "point_config", "size_clusters", "sizing_workload",
           "smallest_cluster"]

#: The summary column of attainment against absolute SLO limits (fraction of arrived requests
#: meeting every given limit), written when the config sets ``slo.ttft_ms`` / ``tpot_ms`` /
#: ``e2e_ms``.
ABS_ATTAINMENT = "slo_attainment_abs"
#: The absolute SLO fields of ``slo`` (ms), in ``--slo`` order.
ABS_FIELDS = ("ttft_ms", "tpot_ms", "e2e_ms")
#: Largest ``popularity.rate_scale`` the config schema takes.
_MAX_RATE_SCALE = 1000.0
#: Doublings / halvings of the bracket before giving up (a factor of 2**30 either way).
_MAX_STEPS = 30


@dataclass(frozen=True)
class SizingSLO:
    """What "meets the SLO" means for sizing: a relative SLO scale (``scale``, requests within
    scale x their base latency under the config's ``slo.base``) or absolute limits in ms
    (``limits``: a subset of :data:`ABS_FIELDS` -> ms), not both."""

    scale: float | None = None
    limits: dict[str, float] = field(default_factory=dict)

    @property
    def column(self) -> str:
        """The summary column holding the attainment."""
        return ABS_ATTAINMENT if self.limits else attainment_column(self.scale)

    def describe(self) -> str:
        """``scale=8`` or ``ttft_ms=500,tpot_ms=50``."""
        if self.limits:
            return ",".join(f"{k}={v:g}" for k, v in self.limits.items())
        return f"scale={self.scale:g}"

    def apply(self, cfg: ExperimentConfig) -> ExperimentConfig:
        """``cfg`` with this SLO: the scale as ``slo.goodput_scale`` (so its attainment column is
        written), or the absolute limits set in ``slo``.

        Raises:
            ConfigError: absolute limits with a config schema that has no such fields, or
                values the schema refuses.
        """
        from muxsim.config import SLOConfig

        if not self.limits:
            return cfg.model_copy(update={"slo": cfg.slo.model_copy(update={"goodput_scale": float(self.scale)})})
        missing = [k for k in self.limits if k not in SLOConfig.model_fields]
        if missing:
            raise ConfigError(f"--slo {self.describe()}: absolute SLO limits need slo.{missing[0]}, which this "
                              f"muxsim's config schema lacks; use a relative SLO, e.g. --slo scale=8")
        try:
            slo = SLOConfig.model_validate({**cfg.slo.model_dump(), **self.limits})
        except ValueError as e:
            raise ConfigError(f"--slo {self.describe()}: {(str(e).splitlines() or ['refused'])[-1].strip()}") from None
        return cfg.model_copy(update={"slo": slo})


@dataclass(frozen=True)
class Point:
    """One simulation of the search: strategy, cluster, rate scale s (every LLM's rate x s) and
    total offered rate (req/s), attainment (fraction; NaN when not simulated), whether it meets
    the target, ``status`` (``ok``, ``infeasible``: the strategy cannot be placed there,
    ``refused``: the run exceeds the size limits, ``empty``: the workload draws no request at
    this rate and duration), the one-line reason (``""`` when ok) and the requests simulated
    (0 when none: few requests make a noisy attainment)."""

    strategy: str
    nodes: int
    gpus_per_node: int
    gpu: str
    rate_scale: float
    total_rate_rps: float
    attainment: float
    met: bool
    status: str = "ok"
    reason: str = ""
    n_requests: int = 0

    @property
    def n_gpus(self) -> int:
        """GPUs of the point's cluster."""
        return self.nodes * self.gpus_per_node

    def cluster(self) -> str:
        """``2 x 8 h100-80gb``."""
        return f"{self.nodes} x {self.gpus_per_node} {self.gpu}"

    def record(self) -> dict:
        """The point as a flat dict (the columns of sizing.csv)."""
        d = asdict(self)
        d["n_gpus"] = self.n_gpus
        return {k: d[k] for k in ("strategy", "nodes", "gpus_per_node", "gpu", "n_gpus", "rate_scale",
                                  "total_rate_rps", "n_requests", "attainment", "met", "status", "reason")}


@dataclass(frozen=True)
class RateAnswer:
    """Question (a) for one strategy on one cluster: ``scale`` the highest rate scale found to
    meet the target (None: not even the smallest tried), ``total_rate_rps`` its total offered
    rate (req/s), ``attainment`` there; ``bracket`` (lo, hi): lo meets the target, hi does not
    (hi None: the largest scale tried, ``scale``, still met it: a lower bound, ``note`` says
    why); ``simulations``: points simulated for this answer."""

    strategy: str
    cluster: ClusterConfig
    scale: float | None
    total_rate_rps: float | None
    attainment: float | None
    bracket: tuple[float | None, float | None]
    simulations: int
    note: str = ""


@dataclass(frozen=True)
class SizeAnswer:
    """Question (b) for one strategy: the first cluster (in the order tried) whose attainment
    at ``rate_scale`` meets the target (None: none of the tried clusters), its attainment, and
    the points simulated for this answer."""

    strategy: str
    cluster: ClusterConfig | None
    attainment: float | None
    rate_scale: float
    total_rate_rps: float
    simulations: int


def sizing_workload(cfg: ExperimentConfig) -> None:
    """Check that ``cfg``'s workload can be sized: one workload cell whose rates a factor can
    scale (a power law, per-group rates or one rate set; not a trace or a replayed file, whose
    arrival times are their own).

    Raises:
        ConfigError: a trace, a replayed file, or a workload sweep of more than one cell.
    """
    from muxsim.config.sweep import workload_cells

    w = cfg.workload
    if w.trace is not None or w.file is not None:
        raise ConfigError("muxsim size scales the rates of a drawn workload (workload.popularity, llms rates or "
                          "workload.rate_sets); a trace or a replayed file brings its own arrival times")
    cells = workload_cells(cfg)
    if len(cells) > 1:
        raise ConfigError(f"muxsim size sizes one workload, the config sweeps {len(cells)} "
                          f"({', '.join(c.label for c in cells[:4])}{', ...' if len(cells) > 4 else ''}); "
                          f"give one alpha, max_rate and rate_scale (or one rate set)")


def _max_scale(cfg: ExperimentConfig) -> float:
    """The largest factor the config schema lets the rates be multiplied by."""
    top = math.inf
    pop = cfg.workload.popularity
    if pop is not None:
        top = min(top, _MAX_RATE_SCALE / max(pop.rate_scales()))
    fixed = [g.rate for g in cfg.llms if g.rate is not None]
    for rs in cfg.workload.rate_sets or []:
        fixed += list(rs.rates)
    if fixed:
        top = min(top, MAX_RATE / max(fixed))
    return top


def point_config(cfg: ExperimentConfig, strategy: str, cluster: ClusterConfig, scale: float,
                 duration_s: float | None = None) -> ExperimentConfig:
    """The experiment of one point: ``cfg`` with only ``strategy``, the scalar ``cluster``, every
    LLM's rate multiplied by ``scale`` (``popularity.rate_scale``, per-group ``rate`` and rate
    set rates), and, with ``duration_s``, that ``workload.duration_s`` (and, under the
    reference's request-count rule ``estimate``, ``requests.seconds``).

    Raises:
        ConfigError: a scaled value the schema refuses (validated as a loaded config is).
    """
    from pydantic import ValidationError

    from muxsim.schema import format_validation_error

    d = cfg.model_dump()
    d["strategies"] = [strategy]
    d["cluster"] = {"nodes": int(cluster.nodes), "gpus_per_node": int(cluster.gpus_per_node), "gpu": cluster.gpu}
    w = d["workload"]
    if w.get("popularity") is not None:
        rs = w["popularity"]["rate_scale"]  # one value, or a list of one (sizing_workload)
        w["popularity"]["rate_scale"] = [float(x) * scale for x in rs] if isinstance(rs, list) else float(rs) * scale
    for g in d["llms"]:
        if g.get("rate") is not None:
            g["rate"] = float(g["rate"]) * scale
    for rs in w.get("rate_sets") or []:
        rs["rates"] = [float(r) * scale for r in rs["rates"]]
    if duration_s is not None:
        w["duration_s"] = float(duration_s)
        if w.get("requests") is not None and w["requests"].get("rule") == "estimate":
            w["requests"]["seconds"] = float(duration_s)
    try:
        out = ExperimentConfig.model_validate(d)
    except ValidationError as e:
        raise ConfigError(f"sizing point (rate scale {scale:g}, cluster {cluster.nodes} x "
                          f"{cluster.gpus_per_node} {cluster.gpu}): {format_validation_error(e, ExperimentConfig)}") from None
    return out.model_copy(update={"limits": cfg.limits})


def evaluate_point(cfg: ExperimentConfig, strategy: str, cluster: ClusterConfig, scale: float,
                   slo: SizingSLO, target: float, duration_s: float | None = None) -> Point:
    """Simulate one point (:func:`point_config`, then :func:`muxsim.experiment.run_experiment`
    in this process) and read its overall attainment in ``slo.column``.

    Raises:
        ConfigError: as :func:`point_config`.
        KeyError: the summary lacks ``slo.column``.
    """
    from .guards import SizeError, check_size
    from .plan import EmptyWorkloadError
    from .results import experiment_results
    from .run import run_experiment

    pc = slo.apply(point_config(cfg, strategy, cluster, scale, duration_s))
    (cell,) = pc.cells()
    total = float(sum(cell.rates))
    facts = dict(strategy=strategy, nodes=int(cluster.nodes), gpus_per_node=int(cluster.gpus_per_node),
                 gpu=cluster.gpu, rate_scale=float(scale), total_rate_rps=total)
    try:
        check_size(pc)
        plans, runs = run_experiment(pc, jobs=1)
    except PlacementError as e:
        return Point(**facts, attainment=math.nan, met=False, status="infeasible", reason=str(e).splitlines()[0])
    except SizeError as e:
        return Point(**facts, attainment=math.nan, met=False, status="refused", reason=str(e))
    except EmptyWorkloadError as e:
        return Point(**facts, attainment=math.nan, met=False, status="empty", reason=str(e))
    summary = experiment_results(pc, plans, runs).summary
    row = summary[summary["llm"] == ALL_LLMS].iloc[0]
    att = float(row[slo.column])
    return Point(**facts, attainment=att, met=bool(att >= target), n_requests=int(row["n_requests"]))


def max_rate_scale(cfg: ExperimentConfig, strategy: str, cluster: ClusterConfig, slo: SizingSLO,
                   target: float, tolerance: float, duration_s: float | None = None,
                   on_point: Callable[[Point], None] = lambda p: None) -> tuple[RateAnswer, list[Point]]:
    """Question (a) for one strategy on one cluster: bracket and bisect the rate scale (see the
    module docstring) until hi / lo <= 1 + ``tolerance``.

    Args:
        target: attainment to meet (fraction in (0, 1]).
        tolerance: relative width of the final bracket (in (0, 1)).
        on_point: called with each point as it is simulated (progress).

    Returns:
        (the answer, every point simulated, in order).

    Raises:
        ConfigError: as :func:`point_config`.
    """
    points: list[Point] = []
    top = _max_scale(cfg)

    def met(s: float) -> Point:
        p = evaluate_point(cfg, strategy, cluster, s, slo, target, duration_s)
        points.append(p)
        on_point(p)
        return p

    def answer(lo: Point | None, hi: float | None, note: str = "") -> tuple[RateAnswer, list[Point]]:
        refused = [p for p in points if p.status == "infeasible"]
        if lo is None and refused and all(p.status in ("infeasible", "empty") for p in points):
            note = f"infeasible at every rate scale tried ({refused[-1].rate_scale:g} to {refused[0].rate_scale:g}): " \
                   f"{refused[0].reason}"
        return RateAnswer(strategy, cluster, lo.rate_scale if lo else None, lo.total_rate_rps if lo else None,
                          lo.attainment if lo else None, (lo.rate_scale if lo else None, hi), len(points),
                          note), points

    s = min(1.0, top)
    first = met(s)
    lo: Point | None = None
    hi: float | None = None
    if first.met:
        lo = first
        for _ in range(_MAX_STEPS):
            if lo.rate_scale >= top:
                return answer(lo, None, f"the largest rate scale the config schema allows ({top:g}) still meets it")
            p = met(min(lo.rate_scale * 2, top))
            if p.met:
                lo = p
                continue
            if p.status == "refused":
                return answer(lo, None, f"the next scale is refused by the size limits: {p.reason}")
            hi = p.rate_scale
            break
        else:
            return answer(lo, None, f"still met after {_MAX_STEPS} doublings")
    else:
        hi = s
        for _ in range(_MAX_STEPS):
            p = met(hi / 2)
            if p.met:
                lo = p
                break
            if p.status == "empty":
                return answer(None, hi, f"not met at rate scale {hi:g}; at {p.rate_scale:g} the workload draws "
                                        f"no request (lengthen --duration to size lower rates)")
            hi = p.rate_scale
        else:
            return answer(None, hi, f"not met even at rate scale {hi:g}")
    while hi / lo.rate_scale > 1 + tolerance:
        p = met(math.sqrt(lo.rate_scale * hi))
        if p.met:
            lo = p
        else:
            hi = p.rate_scale
    return answer(lo, hi)


def size_clusters(nodes: list[int], cfg: ExperimentConfig) -> list[ClusterConfig]:
    """The clusters question (b) tries: every ``nodes`` x the config's ``gpus_per_node`` x its
    ``gpu`` values, in increasing GPU count (ties in listed order)."""
    c = cfg.cluster
    gpns = c.gpus_per_node if isinstance(c.gpus_per_node, list) else [c.gpus_per_node]
    gpus = c.gpu if isinstance(c.gpu, list) else [c.gpu]
    combos = [ClusterConfig.model_construct(nodes=n, gpus_per_node=g, gpu=k) for n in nodes for g in gpns for k in gpus]
    return sorted(combos, key=lambda x: x.nodes * x.gpus_per_node)


def smallest_cluster(cfg: ExperimentConfig, strategy: str, clusters: list[ClusterConfig], scale: float,
                     slo: SizingSLO, target: float, duration_s: float | None = None,
                     on_point: Callable[[Point], None] = lambda p: None) -> tuple[SizeAnswer, list[Point]]:
    """Question (b) for one strategy: simulate ``clusters`` in order at rate scale ``scale`` and
    stop at the first whose attainment meets ``target``.

    Returns:
        (the answer, every point simulated, in order).

    Raises:
        ConfigError: as :func:`point_config`.
    """
    points: list[Point] = []
    for cl in clusters:
        p = evaluate_point(cfg, strategy, cl, scale, slo, target, duration_s)
        points.append(p)
        on_point(p)
        if p.met:
            return SizeAnswer(strategy, cl, p.attainment, scale, p.total_rate_rps, len(points)), points
    total = points[-1].total_rate_rps if points else math.nan
    return SizeAnswer(strategy, None, None, scale, total, len(points)), points
