"""An experiment's results, gathered from its plan and runs: the request table, the summary
with MuxServe's throughput figures and each row's latency source, the ratios against MuxServe,
the run facts of ``run.json``, and writing them all as one output folder.

The request table is never held whole: a :class:`RequestStore` takes each run's table as it
arrives (:func:`~muxsim.experiment.run.run_experiment`'s ``on_run``), writes it as Parquet and
keeps only what the summary needs of it (the run's own :func:`muxsim.metrics.summarize` rows,
its latency sources, one row for the dtypes); ``requests.parquet`` is then streamed from those
files, one run at a time. The outputs are the ones the whole table gave (see
:meth:`RequestStore.summary` for why the per-run summaries join into the same summary).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from muxsim import metrics, report
from muxsim._version import __version__
from muxsim.catalog import get_model
from muxsim.config import Cell, ExperimentConfig
from muxsim.core.placement import Placement
from muxsim.files import atomic_file, staged_folder
from muxsim.workload import save_workload

from .placements import placement_for, strategy_placement
from .plan import CellPlan, plan_experiment
from .run import infeasible_runs
from .simulation import CellRun, simulate_cell

__all__ = ["ExperimentResults", "PlacementCheck", "RequestStore", "check_placement", "experiment_results",
           "experiment_summary", "itl_of", "placement_facts", "request_store", "save_workloads", "summarize_runs",
           "with_infeasible_rows"]

#: The columns a run's request table is summarised by; every run is one group of them.
_GROUP = ("cell", "strategy")


@dataclass(frozen=True)
class _RunPart:
    """What a :class:`RequestStore` keeps of one run's request table (a few kB).

    Attributes:
        key: its (cell, strategy).
        n: rows (requests).
        data: where the table is: a Parquet file, or its bytes (a store without a folder).
        schema: its Arrow schema, pandas metadata included.
        head: its first row (no row when empty), for the dtypes of the joined table.
        summary: :func:`summarize_runs` of the table alone (with the run's ITL histograms).
        sweep: the columns ``summary`` carries as sweep parameters (constant in this run).
        latency: per LLM and ``"all"``, the latency source of this run's summary rows.
    """

    key: tuple[str, str]
    n: int
    data: Path | bytes
    schema: pa.Schema
    head: pd.DataFrame
    summary: pd.DataFrame
    sweep: tuple[str, ...]
    latency: dict[str, str]


class RequestStore:
    """Every run's request table, kept out of memory for the output: each is written to a
    Parquet file as it arrives (:meth:`add`), the summary is joined from the runs' own
    summaries (:meth:`summary`) and ``requests.parquet`` streamed from the files
    (:meth:`write_parquet`), one run in memory at a time.

    Args:
        cfg: the experiment (its SLO scales for the summaries).
        folder: an existing folder for the runs' files (``run_<k>.parquet``), owned by the
            store's user (:func:`request_store` makes and removes one); None keeps each run's
            Parquet bytes in memory instead (compressed, a fraction of the DataFrame), for
            small experiments and callers that hold every run anyway.
    """

    def __init__(self, cfg: ExperimentConfig, folder: str | Path | None = None):
        self.cfg = cfg
        self.folder = None if folder is None else Path(folder)
        self._parts: dict[int, _RunPart] = {}
        self._seen: dict[tuple[str, str], int] = {}

    def __len__(self) -> int:
        return len(self._parts)

    @property
    def n_requests(self) -> int:
        """Requests (rows) over every run added so far."""
        return sum(p.n for p in self._parts.values())

    def add(self, k: int, run: CellRun) -> CellRun:
        """Take run ``k``'s request table: write it (Parquet, as ``DataFrame.to_parquet`` writes
        it, no index), summarise it, and return the run without it (``requests=None``), so that
        the caller need not keep it. Fits :func:`~muxsim.experiment.run.run_experiment`'s
        ``on_run``.

        Raises:
            ValueError: ``k`` was added already; the run has no table (added before); its table
                is not one (cell, strategy) or shares its (cell, strategy) with another run
                (the joined summary would then differ from the whole table's); as
                :func:`muxsim.metrics.summarize`.
        """
        df = run.requests
        if k in self._parts:
            raise ValueError(f"RequestStore.add: run {k} was added already")
        if df is None:
            raise ValueError(f"RequestStore.add: run {k} ({run.cell} | {run.strategy}) has no request table")
        key = (run.cell, run.strategy)
        groups = df[list(_GROUP)].drop_duplicates()
        if len(groups) > 1 or (len(groups) == 1 and tuple(groups.iloc[0]) != key):
            raise ValueError(f"RequestStore.add: run {k}'s table is not all ({run.cell} | {run.strategy})")
        if key in self._seen:
            raise ValueError(f"RequestStore.add: runs {self._seen[key]} and {k} are both ({run.cell} | {run.strategy})")
        summary = summarize_runs(self.cfg, df, [run])
        if self.folder is not None:
            data = self.folder / f"run_{k:05d}.parquet"
            df.to_parquet(data, index=False, engine="pyarrow")
            schema = pq.read_schema(data)
        else:
            buf = io.BytesIO()
            df.to_parquet(buf, index=False, engine="pyarrow")
            data = buf.getvalue()
            schema = pq.read_schema(pa.BufferReader(data))
        # take, not a slice: a slice (copied or not) of a pyarrow-backed column shares the
        # whole column's buffers, and would keep every run's text columns alive
        head = df.iloc[[0] if len(df) else []]
        self._parts[k] = _RunPart(key, len(df), data, schema, head, summary,
                                  tuple(metrics.sweep_columns(summary)), _latency_sources(df))
        self._seen[key] = k
        # the Arrow buffers of the write are free now; without this the allocator keeps them
        pa.default_memory_pool().release_unused()
        return dataclasses.replace(run, requests=None)

    def _ordered(self) -> list[_RunPart]:
        """The parts in run order.

        Raises:
            ValueError: no run was added, or runs 0 to n-1 are not all there.
        """
        n = len(self._parts)
        if n == 0 or sorted(self._parts) != list(range(n)):
            raise ValueError(f"RequestStore: runs 0 to {n - 1} expected, have {sorted(self._parts)}")
        return [self._parts[k] for k in range(n)]

    def _template(self) -> pd.DataFrame:
        """The runs' first rows joined (``pd.concat`` in run order): the columns, in order,
        and the dtypes of the whole joined table (concat settles both from the pieces'
        columns and dtypes, not from their length)."""
        return pd.concat([p.head for p in self._ordered()], ignore_index=True)

    def summary(self) -> pd.DataFrame:
        """:func:`summarize_runs` of every run's table joined in run order (with every run's
        ITL histograms), computed from the runs' own summaries; equal to it (values, dtypes,
        columns, row order).

        Why that holds: every run is one (cell, strategy) group (checked by :meth:`add`) and
        ``summarize`` computes each group from its own rows alone, emitting groups in their
        order of first appearance, that is run order. The one thing that depends on all runs
        is which extra columns (sweep parameters) are carried: those constant within every
        group. In the joined table a column a run lacks is all-NaN in that run's rows, so it is
        carried exactly when every run that has it has it constant (each run's own summary
        carries it then); its dtype is the joined table's.

        Raises:
            ValueError: no runs, or runs missing (:meth:`add` not called for every run); the
                runs' summaries differ in their metric columns (their tables differ in the
                columns ``summarize`` reads, e.g. one lacks ``slo_base_alone_s``).
        """
        parts = self._ordered()
        template = self._template()
        sweep = [c for c in template.columns
                 if any(c in p.sweep for p in parts) and all(c in p.sweep for p in parts if c in p.head.columns)]
        fixed = [[c for c in p.summary.columns if c not in p.sweep] for p in parts]
        if any(f != fixed[0] for f in fixed):
            raise ValueError("RequestStore.summary: the runs' tables differ in the columns summarize reads")
        at = fixed[0].index("model" if "model" in fixed[0] else "llm") + 1
        order = fixed[0][:at] + sweep + fixed[0][at:]
        # an empty run has no summary rows (nor rows in the joined table); its empty summary is
        # left out, as its columns' dtypes would otherwise weigh in the join
        out = pd.concat([p.summary for p in parts if len(p.summary)] or [parts[0].summary], ignore_index=True)
        for c in sweep:
            if c not in out.columns:  # only empty runs had it: all-NaN in the joined table
                out[c] = template[c].iloc[:0].reindex(range(len(out)))
            out[c] = out[c].astype(template[c].dtype)
        return out[order]

    def latency_source(self, summary: pd.DataFrame) -> list[str]:
        """Per row of ``summary`` (one of :meth:`summary`'s rows, or a frame merged from it),
        the latency model behind it: fitted, fitted-scaled or roofline (joined with '+' on
        overall rows that mix them).

        Raises:
            KeyError: a row of a (cell, strategy) or LLM no run had.
        """
        by_run = {p.key: p.latency for p in self._parts.values()}
        return [by_run[(c, s)][llm] for c, s, llm in zip(summary["cell"], summary["strategy"], summary["llm"])]

    def _writer_schema(self) -> tuple[pa.Schema, bool]:
        """The schema of the joined table and whether every run's file has it already (else
        each run is converted to it as it is streamed)."""
        parts = self._ordered()
        first = parts[0].schema
        if all(p.schema.equals(first, check_metadata=True) for p in parts):
            return first, True
        return pa.Schema.from_pandas(self._template(), preserve_index=False), False

    def tables(self) -> Iterator[pa.Table]:
        """Every run's table in run order, one at a time, in the joined table's schema."""
        schema, same = self._writer_schema()
        template = None if same else self._template().iloc[:0]
        for p in self._ordered():
            # no local name for the table: the caller's is then the only reference to it
            yield self._table(p, None if same else (schema, template))

    @staticmethod
    def _table(p: _RunPart, convert: tuple[pa.Schema, pd.DataFrame] | None) -> pa.Table:
        """Run ``p``'s table, converted to the joined table's (schema, empty frame) when given."""
        # one thread: Arrow's decoding threads each keep their own allocator pages, which cost
        # more resident memory than one run's table
        t = pq.read_table(p.data if isinstance(p.data, Path) else pa.BufferReader(p.data), use_threads=False)
        if convert is None:
            return t
        schema, template = convert
        # what pd.concat makes of this run's rows in the joined table: its columns in the
        # joined order (NaN where it has none) and the joined dtypes
        df = pd.concat([template, t.to_pandas()], ignore_index=True).astype(template.dtypes.to_dict())
        return pa.Table.from_pandas(df, schema=schema, preserve_index=False)

    def write_parquet(self, where: str | Path | BinaryIO) -> None:
        """Write every run's table, joined in run order, as one Parquet file at ``where`` (a
        path or a binary file object): the table ``pd.concat(tables, ignore_index=True)
        .to_parquet(where, index=False)`` writes (same columns, dtypes, values, row order and
        pandas metadata), streamed with one or more row groups per run, never holding more
        than one run's table.

        Raises:
            ValueError: no runs, or runs missing. OSError: ``where`` cannot be written.
        """
        schema, _ = self._writer_schema()
        pool = pa.default_memory_pool()
        with pq.ParquetWriter(where, schema) as w:
            for t in self.tables():
                w.write_table(t)
                del t
                # hand this run's buffers back to the system before the next run's are read
                pool.release_unused()

    def read_requests(self) -> pd.DataFrame:
        """Every run's table joined in run order, in memory: what ``requests.parquet`` reads
        back as (for tests and small experiments; it holds everything)."""
        buf = io.BytesIO()
        self.write_parquet(buf)
        return pd.read_parquet(io.BytesIO(buf.getvalue()))


@contextlib.contextmanager
def request_store(cfg: ExperimentConfig, folder: str | Path) -> Iterator[RequestStore]:
    """A :class:`RequestStore` whose runs' files go in ``folder``, made now (it must not
    exist) and removed with them when the block ends, however it ends (an exception,
    KeyboardInterrupt, SIGTERM turned into one). Put it inside the output's staging folder
    (:func:`muxsim.files.staged_folder`): on the output's file system, and removed with the
    staging folder by the next run to the same output should this process be killed outright.

    Raises:
        FileExistsError: ``folder`` exists.
    """
    folder = Path(folder)
    folder.mkdir()
    try:
        yield RequestStore(cfg, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def itl_of(runs) -> dict[tuple[str, str, str], object]:
    """The ITL histograms of ``runs`` (:class:`~muxsim.experiment.simulation.CellRun` or
    anything with ``cell``, ``strategy`` and ``itl``: LLM name -> histogram) keyed as
    :func:`muxsim.metrics.summarize` takes them: (cell, strategy, llm). A run without
    histograms (``itl`` empty) adds none."""
    return {(r.cell, r.strategy, llm): h for r in runs for llm, h in r.itl.items()}


def summarize_runs(cfg: ExperimentConfig, df: pd.DataFrame, runs) -> pd.DataFrame:
    """:func:`muxsim.metrics.summarize` of ``df`` (request tables of ``runs``, by cell and
    strategy) at the config's SLO scales, goodput scale and absolute SLOs, with the runs' ITL
    histograms (:func:`itl_of`).

    Raises:
        ValueError: as :func:`muxsim.metrics.summarize`.
    """
    return metrics.summarize(df, cfg.slo.scales, cfg.slo.goodput_scale, group_cols=_GROUP,
                             itl=itl_of(runs), abs_slo=cfg.slo.absolute())


def _latency_sources(df: pd.DataFrame) -> dict[str, str]:
    """Of one run's table: per LLM its (first) latency source, and under ``"all"`` the sources
    of every LLM, sorted and joined with '+'."""
    per_llm = df.groupby("llm", sort=False)["latency_source"].first()
    out = {str(k): v for k, v in per_llm.items()}
    out[metrics.ALL_LLMS] = "+".join(sorted(set(df["latency_source"])))
    return out


@dataclass(frozen=True)
class ExperimentResults:
    """Everything a run writes and prints.

    Attributes:
        cfg: the experiment.
        plans, runs: as :func:`muxsim.experiment.run_experiment` returned them (the runs
            without their request tables, which are in ``store``).
        store: every run's request table (:meth:`read_requests` joins them in memory).
        n_requests: simulated requests, over every cell and strategy.
        summary: :func:`experiment_summary` plus a ``latency_source`` column; when some
            strategy could not be placed on some cell, also its rows and the ``status`` /
            ``reason`` columns (:func:`with_infeasible_rows`).
        ratios: each strategy against MuxServe on total throughput, throughput and goodput
            (:func:`muxsim.metrics.ratios`), or None without MuxServe or another strategy.
        facts: the run facts ``run.json`` holds besides seed, version and files (all
            deterministic: no wall times); ``infeasible`` ("<cell> | <strategy>" -> reason)
            when some strategy could not be placed.
        roofline, fitted_scaled: models whose latency came from the roofline model (not
            calibrated) or from a fitted curve scaled to an unprofiled mesh size.
    """

    cfg: ExperimentConfig
    plans: list[CellPlan]
    runs: list[CellRun]
    store: RequestStore
    n_requests: int
    summary: pd.DataFrame
    ratios: pd.DataFrame | None
    facts: dict
    roofline: list[str]
    fitted_scaled: list[str]

    def read_requests(self) -> pd.DataFrame:
        """Every run's per-request table, concatenated in run order, as ``requests.parquet``
        holds it: all in memory, for tests and small experiments (:meth:`RequestStore.read_requests`).

        Raises:
            FileNotFoundError: the store's folder was removed (its :func:`request_store` block
                ended); read ``requests.parquet`` from the output folder instead.
        """
        return self.store.read_requests()

    @property
    def sim_time_s(self) -> float:
        """Simulated time, summed over every run (s)."""
        return sum(r.sim_time_s for r in self.runs)

    @property
    def worker_s(self) -> float:
        """Wall time the simulations took in their workers, summed (s)."""
        return sum(r.wall_s for r in self.runs)

    @property
    def worker_cpu_s(self) -> float:
        """CPU time the simulations took in their workers, summed (s): the denominator of
        "simulated requests per CPU second" (:attr:`CellRun.cpu_s`)."""
        return sum(r.cpu_s for r in self.runs)

    def write(self, out_dir: str | Path) -> Path:
        """Write every output (:meth:`write_into`) into a staging folder beside ``out_dir`` and
        rename it into place (:func:`muxsim.files.staged_folder`).

        Raises:
            muxsim.files.OutputPathError: ``out_dir`` may not be written (a file, a folder of
                files muxsim did not write, ...).
        """
        out_dir = Path(out_dir)
        with staged_folder(out_dir) as staging:
            self.write_into(staging)
        return out_dir

    def write_into(self, folder: str | Path) -> list[Path]:
        """Write every output into the existing (staging) ``folder``: the files of
        :func:`muxsim.report.write_outputs`, ``requests.parquet`` streamed from the store one run
        at a time (:meth:`RequestStore.write_parquet`), plus each cell's workload as
        ``workload_<cell index>.parquet``. Returns the paths written.

        Raises:
            as :func:`muxsim.report.write_outputs`.
        """
        folder = Path(folder)
        written = report.write_outputs(self.store.write_parquet, self.summary, self.ratios, folder,
                                       self.cfg.model_dump(mode="json"), self.cfg.seed, __version__,
                                       extra=self.facts)
        return written + save_workloads(self.plans, folder) + self.write_job_log(folder)

    def job_log(self) -> pd.DataFrame | None:
        """The job log of every run that kept one (``timeline`` in the config), in run order
        (:data:`muxsim.sim.driver.JOB_COLUMNS` after ``cell`` and ``strategy``); None without."""
        parts = [r.jobs for r in self.runs if r.jobs is not None]
        return pd.concat(parts, ignore_index=True) if parts else None

    def write_job_log(self, folder: str | Path) -> list[Path]:
        """Write :meth:`job_log` as ``jobs.parquet`` and its Perfetto trace as ``timeline.json``
        (:func:`muxsim.timeline.write_perfetto_trace`) into ``folder``; nothing without a log."""
        from muxsim.timeline import write_perfetto_trace

        jobs = self.job_log()
        if jobs is None:
            return []
        path = Path(folder) / "jobs.parquet"
        with atomic_file(path) as tmp:
            jobs.to_parquet(tmp, index=False, engine="pyarrow")
        trace = Path(folder) / "timeline.json"
        write_perfetto_trace(jobs, trace)
        return [path, trace]


def experiment_results(cfg: ExperimentConfig, plans: list[CellPlan], runs: list[CellRun],
                       store: RequestStore | None = None) -> ExperimentResults:
    """Gather an experiment's results (see :class:`ExperimentResults`).

    Args:
        cfg, plans, runs: as :func:`~muxsim.experiment.run_experiment` returned them.
        store: the store every run was added to (``run_experiment(..., on_run=store.add)``);
            None: the runs still hold their tables, and they go to a new in-memory store.

    Raises:
        ValueError: ``store`` does not hold one table per run; the runs' tables are not one
            (cell, strategy) each; as :func:`muxsim.metrics.summarize`.
    """
    if store is None:
        store = RequestStore(cfg)
        runs = [store.add(k, r) for k, r in enumerate(runs)]
    elif len(store) != len(runs):
        raise ValueError(f"experiment_results: the store holds {len(store)} runs' tables, not {len(runs)}")
    summary = experiment_summary(cfg, plans, runs, store.summary())
    summary["latency_source"] = store.latency_source(summary)
    ratios = None
    if ("muxserve" in cfg.strategies and len(cfg.strategies) > 1
            and (summary["strategy"] == "muxserve").any()):
        ratios = pd.concat([metrics.ratios(summary, reference="muxserve", on=m)
                            for m in ("total_throughput_rps", "throughput_rps", "goodput_rps")],
                           ignore_index=True)
    refused = infeasible_runs(cfg, plans)
    # status and reason on every summary, so that its columns do not depend on the outcome
    summary = with_infeasible_rows(cfg, plans, summary, refused)
    if len({c.gpu for c in cfg.cluster.clusters()}) > 1:
        # a GPU sweep: a model's latency source depends on the GPU, so name both
        gpu_of = {p.cell.label: cfg.for_cell(p.cell).cluster.gpu for p in plans}
        sources = [{f"{m} on {gpu_of[r.cell]}": s for m, s in r.latency_sources.items()} for r in runs]
    else:
        sources = [r.latency_sources for r in runs]
    roofline = sorted({m for src in sources for m, s in src.items() if s == "roofline"})
    scaled = sorted({m for src in sources for m, s in src.items() if s == "fitted-scaled"})
    models = [get_model(m) for m in dict.fromkeys(cfg.llm_models())]
    facts = {
        "latency_model": {m: s for src in sources for m, s in src.items()},
        "roofline_models": roofline,
        "fitted_scaled_models": scaled,
        "job_overhead": cfg.overhead.model().as_dict(models),
        "slo_base": cfg.slo.base,
        "placements": {f"{r.cell} | {r.strategy}": placement_facts(r.placement) for r in runs},
        "request_counts": {p.cell.label: dict(zip(cfg.llm_names(), p.counts))
                           for p in plans if p.counts is not None},
        "workloads": {p.cell.label: f"workload_{p.index}.parquet" for p in plans if p.workload is not None},
    }
    if cfg.timeline is not None:
        facts["timeline"] = {"window_s": list(cfg.timeline.window_s), "job_log": "jobs.parquet",
                             "perfetto_trace": "timeline.json",
                             "runs": [f"{r.cell} | {r.strategy}" for r in runs if r.jobs is not None]}
    if refused:
        facts["infeasible"] = {f"{p.cell.label} | {s}": why for p, s, why in refused}
    return ExperimentResults(cfg, plans, runs, store, store.n_requests, summary, ratios, facts, roofline, scaled)


def with_infeasible_rows(cfg: ExperimentConfig, plans: list[CellPlan], summary: pd.DataFrame,
                         refused: list[tuple[CellPlan, str, str]]) -> pd.DataFrame:
    """``summary`` with rows for the (cell, strategy) pairs that could not be placed, each in
    its cell and strategy place, and two columns added last: ``status`` (``"ok"`` or
    ``"infeasible"``) and ``reason`` (the one-line PlacementError; ``""`` on ok rows).

    Infeasible rows (one per LLM and the overall ``"all"`` row, as a simulated pair has) carry
    the cell's sweep parameters, its offered rate (``offered_rate_rps``, req/s) and the SLO settings;
    request counts are 0 and every metric NaN (there are no requests).
    """
    models = dict(zip(cfg.llm_names(), cfg.llm_models()))
    rows = []
    for p, s, why in refused:
        rates = dict(zip(cfg.llm_names(), p.cell.rates))
        for llm in [*cfg.llm_names(), metrics.ALL_LLMS]:
            rows.append({"cell": p.cell.label, "strategy": s, "llm": llm,
                         "model": models.get(llm, metrics.ALL_LLMS), **p.cell.params,
                         "goodput_scale": float(cfg.slo.goodput_scale), "slo_base": cfg.slo.base,
                         "offered_rate_rps": rates[llm] if llm in rates else float(sum(p.cell.rates)),
                         "n_requests": 0, "n_finished": 0, "n_unfinished": 0, "preemptions": 0,
                         "status": "infeasible", "reason": why})
    out = summary.assign(status="ok", reason="")
    if not rows:
        return out
    bad = pd.DataFrame(rows)
    cols = list(out.columns)
    bad = bad.reindex(columns=cols)
    for c in cols:
        # ints stay ints (counts are 0), the rest takes NaN / None where an infeasible row has no value
        if pd.api.types.is_integer_dtype(out[c]) and not bad[c].isna().any():
            bad[c] = bad[c].astype(out[c].dtype)
        elif pd.api.types.is_float_dtype(out[c]):
            bad[c] = pd.to_numeric(bad[c], errors="coerce").astype(out[c].dtype)
        else:
            bad[c] = bad[c].astype(object)
    joined = pd.concat([out.astype({c: object for c in cols if out[c].dtype == object}), bad], ignore_index=True)
    cell_at = {p.cell.label: p.index for p in plans}
    strategy_at = {s: k for k, s in enumerate(cfg.strategies)}
    order = sorted(range(len(joined)), key=lambda i: (cell_at[joined["cell"].iat[i]],
                                                      strategy_at[joined["strategy"].iat[i]]))
    return joined.iloc[order].reset_index(drop=True)


def experiment_summary(cfg: ExperimentConfig, plans: list[CellPlan], runs: list[CellRun],
                       summary: pd.DataFrame) -> pd.DataFrame:
    """The run's summary: ``summary`` (:func:`summarize_runs` of the request table, or
    :meth:`RequestStore.summary`, the same) with each LLM's offered rate (its configured rate in
    the cell), its placement's estimate and MuxServe's throughput figures
    (:func:`muxsim.metrics.add_serving_columns`), then the cost of each (cell, strategy)
    (:func:`muxsim.metrics.add_cost_columns`: the GPUs its placement uses; the cluster's GPUs
    at ``cluster.usd_per_gpu_hour`` or the catalog's price, NaN when neither is known)."""
    rates = {p.cell.label: dict(zip(cfg.llm_names(), p.cell.rates)) for p in plans}
    facts = pd.DataFrame([(r.cell, r.strategy, n, rates[r.cell][n], r.placement.est_throughput.get(n, float("nan")))
                          for r in runs for n in cfg.llm_names()],
                         columns=["cell", "strategy", "llm", "offered_rate_rps", "estimated_throughput_rps"])
    out = metrics.add_serving_columns(summary, facts, len(cfg.llm_names()), cfg.slo.base)
    # each cell's own cluster (a cluster sweep gives every cell its own size and GPU kind)
    cluster = {p.cell.label: cfg.for_cell(p.cell).cluster for p in plans}
    price = {k: c.price_per_gpu_hour() for k, c in cluster.items()}
    costs = pd.DataFrame([(r.cell, r.strategy, sum(m.gpus for m in r.placement.meshes), cluster[r.cell].n_gpus,
                           float("nan") if price[r.cell] is None else price[r.cell]) for r in runs],
                         columns=["cell", "strategy", "gpus", "cluster_gpus", "usd_per_gpu_hour"])
    return metrics.add_cost_columns(out, costs)


def placement_facts(p: Placement) -> dict:
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


def save_workloads(plans: list[CellPlan], folder: Path) -> list[Path]:
    """Write each planned cell's workload as ``workload_<cell index>.parquet`` (replay it with
    ``workload.file``); a cell whose workload could not be drawn (:attr:`CellPlan.workload`
    None) has none."""
    return [save_workload(p.workload, Path(folder) / f"workload_{p.index}.parquet") for p in plans
            if p.workload is not None]


@dataclass(frozen=True)
class PlacementCheck:
    """One cell's placement for a strategy (``muxsim place``) and, when simulated, what it
    served.

    Attributes:
        placement: the placement.
        served: per LLM name and ``"all"``, the :func:`muxsim.metrics.summarize` row of the
            simulation (column -> value); empty when not simulated.
        seconds: wall time of the search (and simulation), s.
    """

    placement: Placement
    served: dict
    seconds: float


def check_placement(cfg: ExperimentConfig, cell: Cell, strategy: str, simulate: bool = False) -> PlacementCheck:
    """Place ``cell`` for ``strategy`` and, with ``simulate``, simulate it on the cell's
    workload (the simulation-guided search always needs the workload, so it is drawn then).

    Raises:
        muxsim.core.placement.PlacementError, ValueError: infeasible placement or bad input.
    """
    t0 = time.perf_counter()
    kind = strategy_placement(cfg, strategy)
    served: dict = {}
    if simulate or kind == "simulated":
        (plan,) = plan_experiment(cfg.model_copy(update={"strategies": [strategy]}), cells=[cell], strict=True)
        p = plan.placements[kind]
        if simulate:
            res = simulate_cell(cfg, cell, strategy, p, plan.workload)
            summ = metrics.summarize(res.requests.assign(cell=cell.label, strategy=strategy), cfg.slo.scales,
                                     cfg.slo.goodput_scale, abs_slo=cfg.slo.absolute(),
                                     itl={(cell.label, strategy, n): h for n, h in res.itl.items()})
            served = summ.set_index("llm").to_dict("index")
    else:
        p = placement_for(cfg, cell, kind)
    return PlacementCheck(p, served, time.perf_counter() - t0)
