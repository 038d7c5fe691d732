"""Running tasks in worker processes: results in task order, whatever order they finish in, so
an experiment's outputs do not depend on the number of workers."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed

__all__ = ["map_tasks", "process_pool"]


def process_pool(jobs: int) -> ProcessPoolExecutor | None:
    """A pool of ``min(jobs, CPUs)`` worker processes, or None for one (run in this process)."""
    workers = min(jobs, os.cpu_count() or 1)
    return ProcessPoolExecutor(max_workers=workers) if workers > 1 else None


def map_tasks(ex: Executor | None, fn: Callable, tasks: Sequence, tick: Callable[[str], None],
              label: Callable[[object], str]) -> list:
    """``fn`` over ``tasks`` in ``ex`` (or in this process when None), results in task order;
    ``tick(label(task))`` after each task ends."""
    if ex is None:
        out = []
        for t in tasks:
            out.append(fn(t))
            tick(label(t))
        return out
    futs = {ex.submit(fn, t): k for k, t in enumerate(tasks)}
    out = [None] * len(tasks)
    for f in as_completed(futs):
        k = futs[f]
        out[k] = f.result()
        tick(label(tasks[k]))
    return out
