"""Running tasks on Ray (``muxsim run --executor ray``): a local Ray instance started for the
run, or an existing Ray cluster, behind the one method :func:`muxsim.experiment.tasks.map_tasks`
uses, ``submit(fn, *args)`` returning a :class:`concurrent.futures.Future`. The results are
gathered in task order as from the process pool, and the worker functions are pure given their
task objects, so an experiment's outputs are the same bytes under either executor.

Ray is the optional extra ``muxsim[ray]``: it is imported only here, only when this executor is
asked for (:func:`require_ray`). :func:`muxsim.experiment.tasks.worker_pool` is the way to get
one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import threading
from concurrent.futures import Future
from pathlib import Path

__all__ = ["ExecutorError", "RayExecutor", "require_ray"]

#: Task fields of these types go with each task; anything else is put into Ray's object store
#: once and shared by every task that holds the same object (the config, workloads, cells,
#: placements).
_INLINE = (str, int, float, bool, type(None))

#: Environment variables muxsim's workers read; forwarded to the workers of an existing
#: cluster, which do not inherit this process's environment (a local instance's do).
_FORWARDED_ENV = ("MUXSIM_CALIBRATION_DIR",)


class ExecutorError(RuntimeError):
    """The executor could not be started (Ray failed to start or to connect); one line."""


def require_ray():
    """The ``ray`` module, imported now.

    Raises:
        ModuleNotFoundError: ray is not installed (``e.name == "ray"``).
        ImportError: ray is installed but fails to import.
    """
    import ray

    return ray


def _run_task(fn, cls, names, *values):
    """A Ray worker's entry point: ``fn(cls(**dict(zip(names, values))))``, or ``fn(*values)``
    when ``cls`` is None. Ray resolves the object-store references among ``values`` before the
    call (they are top-level arguments), so ``fn`` gets the task object it was submitted with.
    """
    if cls is None:
        return fn(*values)
    return fn(cls(**dict(zip(names, values))))


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Connect to ``address`` when it is ``HOST:PORT`` (a cluster's GCS), to refuse a wrong one
    at once: Ray itself retries an unreachable GCS for many minutes, logging on stderr.
    ``"auto"`` and ``ray://`` addresses are left to Ray (they fail fast on their own).

    Raises:
        ExecutorError: nothing accepts connections there within ``timeout_s`` s.
    """
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ExecutorError(f"cannot reach Ray at {address}: {e.strerror or e}") from None


class _RayFuture(Future):
    """A future whose :meth:`cancel` also cancels its Ray task (``map_tasks`` cancels the rest
    of its futures when one fails)."""

    def __init__(self, ray, ref):
        super().__init__()
        self._ray, self._ref = ray, ref

    def cancel(self) -> bool:
        """Cancel the future and its Ray task (killing the worker when it has started: the
        worker functions hold no state worth keeping). Returns whether the future was
        cancelled (False once its result is being set)."""
        done = super().cancel()
        if done:
            with contextlib.suppress(Exception):
                self._ray.cancel(self._ref, force=True)
        return done


class RayExecutor:
    """Ray remote tasks behind ``submit``, for :func:`muxsim.experiment.tasks.map_tasks`.

    Made by :meth:`start`; :meth:`close` (after the tasks) or :meth:`stop` (at once) ends it.
    A failing task's future raises the task's own exception (not Ray's wrapper, whose message
    holds the remote traceback), so the CLI's one-line errors are the same as with the process
    pool.
    """

    def __init__(self, ray, owns_ray: bool):
        self._ray = ray
        self._owns = owns_ray
        self._remote = ray.remote(_run_task)
        self._shared: dict[int, tuple[object, object]] = {}  # id(value) -> (value, its ref)
        self._futures: list[_RayFuture] = []

    @classmethod
    def start(cls, jobs: int, address: str | None = None) -> RayExecutor:
        """Connect to Ray: to the cluster at ``address`` (``"auto"``, ``"HOST:6379"``,
        ``"ray://HOST:10001"``) when given, else to a local instance started now with ``jobs``
        CPUs (one task per CPU), no dashboard and no worker logs on this console. When Ray is
        already initialised in this process and ``address`` is None, that instance is used and
        left running by :meth:`close`.

        Raises:
            ModuleNotFoundError, ImportError: ray is not installed or fails to import.
            ExecutorError: Ray failed to start or to connect (one line).
        """
        ray = require_ray()
        if address is None and ray.is_initialized():
            return cls(ray, owns_ray=False)
        # ERROR: ray.init's INFO lines ("Started a local Ray instance") and warnings would
        # otherwise break into the progress bar; the workers' stdout/stderr stay on the workers.
        kw: dict = {"log_to_driver": False, "logging_level": logging.ERROR}
        env = {k: str(Path(os.environ[k]).resolve()) for k in _FORWARDED_ENV if os.environ.get(k)}
        if address is not None:
            _check_reachable(address)
            if env:
                kw["runtime_env"] = {"env_vars": env}
            where = f"Ray at {address}"
        else:
            kw.update(num_cpus=max(1, jobs), include_dashboard=False)
            where = "a local Ray instance"
        # ray.init replaces the SIGTERM handler: in Python by one that exits (SystemExit(15)),
        # in C by a crash report then abort. The caller's handlers are put back when it returns
        # (SIGTERM then unwinds like Ctrl-C, as the CLI arranges), and a SIGTERM that Ray's
        # handler turned into SystemExit meanwhile is handed to the caller's.
        main = threading.current_thread() is threading.main_thread()
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}

        def restore():
            for sig, handler in handlers.items():
                if handler is not None:  # None: a handler not set from Python, left as it is
                    signal.signal(sig, handler)

        try:
            # "local": a new instance even where `ray start` runs a cluster on this machine,
            # which ray.init(address=None) would join instead
            ray.init(address=address if address is not None else "local", **kw)
        except BaseException as e:
            # stopped half-way (an error, Ctrl-C, SIGTERM): end what Ray started so far
            with contextlib.suppress(Exception):
                ray.shutdown()
            restore()
            theirs = handlers.get(signal.SIGTERM)
            if isinstance(e, SystemExit) and e.code == signal.SIGTERM and callable(theirs):
                theirs(signal.SIGTERM, None)
            if not isinstance(e, Exception):
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExecutorError(f"could not start {where}: {msg}") from e
        restore()
        return cls(ray, owns_ray=True)

    def _ref(self, value):
        """``value`` itself when small and simple, else its object-store reference, put once
        per distinct object."""
        if isinstance(value, _INLINE):
            return value
        hit = self._shared.get(id(value))
        if hit is None:
            # the value is kept with its ref so that its id is not reused while cached
            hit = self._shared[id(value)] = (value, self._ray.put(value))
        return hit[1]

    def submit(self, fn, *args) -> Future:
        """Run ``fn(*args)`` as a Ray remote task; its future. ``fn`` must be importable by
        name on the workers (a module-level function of muxsim). A single dataclass argument
        (a :class:`~muxsim.experiment.plan.PlacementTask` or
        :class:`~muxsim.experiment.simulation.CellTask`) travels field by field, so that the
        config and workloads its tasks share are put into the object store once.

        The future raises what ``fn`` raised; ``ray.exceptions.TaskCancelledError`` or
        ``WorkerCrashedError`` when the task was cancelled or its worker died.
        """
        task = args[0] if len(args) == 1 else None
        if (task is not None and dataclasses.is_dataclass(task) and not isinstance(task, type)
                and all(f.init for f in dataclasses.fields(task))):
            names = [f.name for f in dataclasses.fields(task)]
            ref = self._remote.remote(fn, type(task), names,
                                      *(self._ref(getattr(task, n)) for n in names))
        else:
            ref = self._remote.remote(fn, None, None, *(self._ref(a) for a in args))
        out = _RayFuture(self._ray, ref)
        self._futures.append(out)
        ref.future().add_done_callback(lambda f: self._settle(out, f))
        return out

    def _settle(self, out: _RayFuture, inner: Future) -> None:
        """Copy ``inner``'s outcome (Ray's future of the task) to ``out``, Ray's task-error
        wrapper replaced by the exception the task raised."""
        if not out.set_running_or_notify_cancel():
            return  # cancelled by the caller meanwhile
        try:
            out.set_result(inner.result())
        except BaseException as e:
            cause = getattr(e, "cause", None)
            wrapped = isinstance(e, self._ray.exceptions.RayTaskError) and isinstance(cause, BaseException)
            out.set_exception(cause if wrapped else e)

    def stop(self) -> None:
        """Stop now: cancel every task not finished (killing the workers running them), then
        shut down Ray when this executor started or connected it. Never raises."""
        for f in self._futures:
            f.cancel()
        self._end()

    def close(self) -> None:
        """End after the tasks (all gathered already by ``map_tasks``): release the shared
        objects and shut down Ray when this executor started or connected it."""
        self._end()

    def _end(self) -> None:
        self._shared.clear()
        self._futures.clear()
        if self._owns:
            with contextlib.suppress(Exception):
                self._ray.shutdown()
            self._owns = False
