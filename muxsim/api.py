"""muxsim's Python API: load an experiment config, run it, or simulate one cell of it.

The three functions are what ``muxsim run`` does, without the console::

    import muxsim

    cfg = muxsim.load_config("experiments/quickstart_h100.yaml")
    res = muxsim.run(cfg, jobs=2)              # every cell x strategy; nothing written
    res.summary                                # pandas DataFrame, as summary.parquet
    res.requests                               # pandas DataFrame, as requests.parquet
    res.placements[("alpha=0.9", "muxserve")]  # a muxsim.core.placement.Placement
    res.write("results/quickstart")            # the output folder, as `muxsim run --out`

    one = muxsim.simulate(cfg, cell=0, strategy="spatial")   # one (cell, strategy)
    one.summary, one.requests

Same config and seed give the same tables as ``muxsim run`` (whatever ``jobs``): the API runs
the same plan (:func:`muxsim.experiment.run_experiment`) and gathers the same results
(:func:`muxsim.experiment.experiment_results`); ``tests/test_api.py`` checks the API's output
folder against the command line's, file by file.

Errors are the one-line exceptions the command line turns into ``error: ...`` and exit code 2:
:class:`muxsim.config.ConfigError` (a bad config, an unknown cell or strategy),
:class:`muxsim.core.placement.PlacementError` (nothing feasible), and ``ValueError``
subclasses (:class:`muxsim.experiment.guards.SizeError` for a run above ``limits``,
:class:`muxsim.files.OutputPathError` for an ``out`` folder muxsim may not write).

Column definitions and units of the tables: :mod:`muxsim.metrics` and the README's Outputs
section.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from muxsim.config import ConfigError, ExperimentConfig
from muxsim.config import load_config as _load_config
from muxsim.core.placement import Placement
from muxsim.core.strategies import STRATEGIES
from muxsim.experiment import (
    ExperimentResults,
    experiment_results,
    plan_experiment,
    preflight,
    run_cell,
    run_experiment,
    strategy_placement,
)
from muxsim.experiment.results import RequestStore
from muxsim.experiment.simulation import CellTask
from muxsim.files import check_output_folder

__all__ = ["CellResult", "Results", "load_config", "run", "simulate"]


def load_config(path: str | Path, *, seed: int | None = None) -> ExperimentConfig:
    """Read and validate an experiment YAML file (the format of ``experiments/*.yaml``; every
    key and default in the README's Configuration section).

    Relative file paths in the config (``workload.file``, ``overhead.file``, a trace's
    ``source.path``) are looked up in the current folder, then beside the config.

    Args:
        path: the YAML file.
        seed: replaces the config's ``seed`` (an integer >= 0), as ``muxsim run --seed``.

    Returns:
        The validated config (a pydantic model; ``cfg.cells()`` lists the sweep's cells,
        ``cfg.model_dump()`` gives it as plain data).

    Raises:
        muxsim.config.ConfigError: missing file, malformed YAML, a key given twice, an unknown
            key, a value out of range (the one-line message names the file, the field, the
            value and the allowed range), or a file the config names that does not exist.
    """
    return _load_config(path, None if seed is None else {"seed": seed})


def _config(config: ExperimentConfig | str | Path, seed: int | None) -> ExperimentConfig:
    """``config`` as a validated config (read from a file when a path), seed replaced."""
    if isinstance(config, ExperimentConfig):
        if seed is None:
            return config
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed: must be an integer >= 0; got {seed!r}")
        return config.model_copy(update={"seed": seed})
    if isinstance(config, (str, Path)):
        return load_config(config, seed=seed)
    raise ConfigError(f"config: expected an ExperimentConfig or the path of a YAML file; got {type(config).__name__}")


def _check_jobs(jobs) -> int:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1; got {jobs!r}")
    return jobs


def placements_table(placements: dict[tuple[str, str], Placement], cfg: ExperimentConfig) -> pd.DataFrame:
    """Placements as a tidy table, one row per (cell, strategy, mesh, LLM).

    Columns: ``cell``, ``strategy``, ``method`` (``analytic``, ``simulated``, ``spatial``,
    ``explicit``), ``mesh`` (index within the placement), ``node``, ``first_gpu`` (local GPU
    index on the node), ``gpus`` (mesh size), ``llm``, ``model``, ``sm_prefill_pct`` and
    ``sm_decode_pct`` (the LLM's SM shares on its mesh, %), ``estimated_throughput_rps`` (the
    placement's estimate for the LLM, req/s).
    """
    model = dict(zip(cfg.llm_names(), cfg.llm_models()))
    rows = []
    for (cell, strategy), p in placements.items():
        for k, m in enumerate(p.meshes):
            for name in m.llms:
                pf, dec = m.sm[name]
                rows.append((cell, strategy, p.method, k, m.node, m.first_gpu, m.gpus, name, model[name],
                             float(pf), float(dec), float(p.est_throughput.get(name, float("nan")))))
    return pd.DataFrame(rows, columns=["cell", "strategy", "method", "mesh", "node", "first_gpu", "gpus", "llm",
                                       "model", "sm_prefill_pct", "sm_decode_pct", "estimated_throughput_rps"])


class Results:
    """What :func:`run` returns: an experiment's tables, placements and run facts.

    Attributes:
        config: the validated config the run used (seed included).
        summary: per cell, strategy and LLM (plus ``llm == "all"`` rows) the metrics of
            ``summary.parquet``: offered rate and throughputs (req/s), goodput, SLO attainment
            per scale (fraction 0..1), latency percentiles, the latency source.
        ratios: MuxServe's total throughput, throughput and goodput over each other
            strategy's, per cell (column ``metric``), as ``ratios.csv``; None when the config
            has no ``muxserve`` or no other strategy.
        placements: per (cell label, strategy), the :class:`~muxsim.core.placement.Placement`
            it ran on (meshes, SM shares, per-LLM estimate in req/s, how it was searched);
            :meth:`placements_table` gives them as one DataFrame.
        cells: the cell labels, in sweep order.
        n_requests: simulated requests over every cell and strategy.
        wall_s: wall time of the run (s).
        cpu_s: CPU time the simulations took in their workers, summed (s).
        latency_sources: per model, where its latency came from (``fitted``,
            ``fitted-scaled``, ``roofline``: not calibrated).
        out: the output folder written (None when ``out`` was not given and :meth:`write`
            not called).
        experiment: the underlying :class:`muxsim.experiment.ExperimentResults` (run facts of
            ``run.json`` in ``.facts``).
    """

    def __init__(self, experiment: ExperimentResults, wall_s: float, out: Path | None = None):
        self.experiment = experiment
        self.config: ExperimentConfig = experiment.cfg
        self.summary: pd.DataFrame = experiment.summary
        self.ratios: pd.DataFrame | None = experiment.ratios
        self.placements: dict[tuple[str, str], Placement] = {(r.cell, r.strategy): r.placement
                                                             for r in experiment.runs}
        self.cells: list[str] = [p.cell.label for p in experiment.plans]
        self.n_requests: int = experiment.n_requests
        self.wall_s = wall_s
        self.cpu_s: float = experiment.worker_cpu_s
        self.latency_sources: dict[str, str] = dict(experiment.facts["latency_model"])
        self.out = out

    @cached_property
    def requests(self) -> pd.DataFrame:
        """One row per simulated request, cell and strategy, as ``requests.parquet`` holds it
        (times in s from the cell's start, token counts, whether and why it finished, its SLO
        bases, the sweep parameters, its latency source). Read on first access and kept; the
        runs' tables are held compressed until then."""
        return self.experiment.read_requests()

    def placements_table(self) -> pd.DataFrame:
        """The placements as one tidy DataFrame (see :func:`placements_table`)."""
        return placements_table(self.placements, self.config)

    def write(self, out: str | Path) -> Path:
        """Write the output folder ``muxsim run --out OUT`` writes (requests and summary
        Parquet, CSVs, plots, ``config.resolved.yaml``, ``run.json``, workloads), staged and
        renamed into place.

        Raises:
            muxsim.files.OutputPathError: ``out`` is a file, the current folder or one above
                it, or a folder of files muxsim did not write.
        """
        check_output_folder(out)
        self.out = self.experiment.write(out)
        return self.out

    def __repr__(self) -> str:
        strategies = ", ".join(self.config.strategies)
        return (f"<muxsim.Results {self.config.name!r}: {len(self.cells)} cell(s) x [{strategies}], "
                f"{self.n_requests:,} requests{f', written to {self.out}' if self.out else ''}>")


def run(config: ExperimentConfig | str | Path, *, jobs: int = 1, seed: int | None = None,
        out: str | Path | None = None, executor: str = "process", address: str | None = None,
        progress: Callable[[str], None] | None = None) -> Results:
    """Run an experiment: every cell of its sweep under every strategy, as ``muxsim run``.

    Args:
        config: a config from :func:`load_config`, or the path of its YAML file.
        jobs: worker processes (1: in this process). Results do not depend on it.
        seed: replaces the config's seed (integer >= 0).
        out: when given, the output folder is written there (as ``muxsim run --out``; checked
            before any work); None writes nothing (:meth:`Results.write` can later).
        executor: ``"process"`` (a local process pool) or ``"ray"`` (Ray tasks; the ``ray``
            extra), as ``muxsim run --executor``.
        address: with ``executor="ray"``, an existing cluster's address.
        progress: called with a short label after each placement search and simulation.

    Returns:
        :class:`Results` (summary, requests, placements, ratios, config).

    Raises:
        muxsim.config.ConfigError: a bad config or seed.
        muxsim.core.placement.PlacementError: a cell that cannot be placed.
        muxsim.experiment.guards.SizeError: the run is larger than ``limits`` allow.
        muxsim.files.OutputPathError: ``out`` may not be written.
        ValueError: ``jobs`` not an integer >= 1, an unknown ``executor``, or a cell whose
            workload is empty.
        ModuleNotFoundError: ``executor="ray"`` without ray installed.
    """
    cfg = _config(config, seed)
    jobs = _check_jobs(jobs)
    preflight(cfg)
    if out is not None:
        check_output_folder(out)
    t0 = time.perf_counter()
    store = RequestStore(cfg)  # each run's table kept as compressed Parquet bytes, not frames
    plans, runs = run_experiment(cfg, jobs=jobs, progress=progress, executor=executor, address=address,
                                 on_run=store.add)
    res = experiment_results(cfg, plans, runs, store)
    wall = time.perf_counter() - t0
    written = res.write(out) if out is not None else None
    return Results(res, wall, written)


@dataclass(frozen=True)
class CellResult:
    """What :func:`simulate` returns: one strategy of one cell.

    Attributes:
        cell: the cell's label.
        strategy: the strategy.
        requests: its rows of ``requests.parquet`` (one per request).
        summary: its rows of ``summary.parquet`` (per LLM and ``llm == "all"``).
        placement: the placement it ran on.
        workload: the cell's workload (``request_id, llm, arrival_s, prompt_tokens,
            output_tokens``), the one every strategy of the cell is served.
        latency_sources: per model, ``fitted``, ``fitted-scaled`` or ``roofline``.
        sim_time_s: simulated time at the end (s).
        n_jobs: jobs (prefill batches and decode runs) the simulator ran.
        wall_s, cpu_s: wall and CPU time of the simulation (s).
    """

    cell: str
    strategy: str
    requests: pd.DataFrame
    summary: pd.DataFrame
    placement: Placement
    workload: pd.DataFrame = field(repr=False)
    latency_sources: dict[str, str]
    sim_time_s: float
    n_jobs: int
    wall_s: float
    cpu_s: float

    def placements_table(self, config: ExperimentConfig) -> pd.DataFrame:
        """The placement as a tidy DataFrame (see :func:`placements_table`)."""
        return placements_table({(self.cell, self.strategy): self.placement}, config)


def simulate(config: ExperimentConfig | str | Path, cell: int | str = 0, strategy: str = "muxserve", *,
             seed: int | None = None) -> CellResult:
    """Simulate one strategy of one cell, in this process: the rows ``muxsim run`` would give
    that (cell, strategy).

    The cell's workload and placement are the ones of the whole run (a cell's workload seed is
    keyed by its parameters, not its place in the sweep), so ``simulate(cfg, k, s).summary``
    equals the run's summary rows of (cell k, s).

    Args:
        config: a config from :func:`load_config`, or the path of its YAML file.
        cell: the cell's index in ``config.cells()`` or its label (e.g. ``"alpha=0.9"``).
        strategy: one of the strategy registry (``muxsim strategies``); need not be among the
            config's strategies.
        seed: replaces the config's seed (integer >= 0).

    Returns:
        :class:`CellResult` (requests, summary, placement, workload, run facts).

    Raises:
        muxsim.config.ConfigError: a bad config or seed, an unknown cell or strategy (the
            message lists the allowed ones).
        muxsim.core.placement.PlacementError: the cell cannot be placed for ``strategy``.
        muxsim.experiment.guards.SizeError: larger than ``limits`` allow.
    """
    cfg = _config(config, seed)
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    cells = cfg.cells()
    labels = [c.label for c in cells]
    if isinstance(cell, bool) or not isinstance(cell, (int, str)):
        raise ConfigError(f"cell: expected an index or a label; got {type(cell).__name__}")
    if isinstance(cell, int):
        if not -len(cells) <= cell < len(cells):
            raise ConfigError(f"cell {cell} is out of range: the config has {len(cells)} cell(s) (0..{len(cells) - 1})")
        chosen = cells[cell]
    elif cell in labels:
        chosen = cells[labels.index(cell)]
    else:
        raise ConfigError(f"cell {cell!r} is not a cell of the config; cells: {', '.join(labels)}")
    one = cfg.model_copy(update={"strategies": [strategy]})
    preflight(one)
    (plan,) = plan_experiment(one, cells=[chosen])
    task = CellTask(one, plan.cell, strategy, plan.placements[strategy_placement(one, strategy)], plan.workload)
    r = run_cell(task)
    res = experiment_results(one, [plan], [r])
    return CellResult(chosen.label, strategy, res.read_requests(), res.summary, r.placement, plan.workload,
                      dict(r.latency_sources), r.sim_time_s, r.n_jobs, r.wall_s, r.cpu_s)
