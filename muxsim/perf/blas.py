"""Run a block with one BLAS thread (the latency fits of :mod:`muxsim.perf.fitting`).

The fits solve ~400 x 27 least-squares steps on tiny matrices; multi-threaded OpenBLAS spins on
such small SVDs when the cores are busy (the whole A100 fit took 27 s instead of 6 s with two
busy cores).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["one_blas_thread"]


def _openblas_thread_setters() -> list[tuple[Any, Any]]:
    """(set, get) thread-count functions of the OpenBLAS libraries loaded in this process.

    Linux only (reads /proc/self/maps), the approach threadpoolctl takes; used when
    threadpoolctl is not installed. Returns [] when nothing is found.
    """
    import ctypes

    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    paths = sorted({ln.split()[-1] for ln in maps.splitlines()
                    if "openblas" in ln.lower() and ".so" in ln})
    names = [(f"{prefix}_set_num_threads{suffix}", f"{prefix}_get_num_threads{suffix}")
             for prefix in ("scipy_openblas", "openblas") for suffix in ("", "64_")]
    out = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        # One pair per library: restoring through two aliases would undo the restore.
        for set_name, get_name in names:
            set_, get_ = getattr(lib, set_name, None), getattr(lib, get_name, None)
            if set_ is not None and get_ is not None:
                set_.argtypes, set_.restype = [ctypes.c_int], None
                get_.argtypes, get_.restype = [], ctypes.c_int
                out.append((set_, get_))
                break
    return out


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with one BLAS thread, restoring the previous count afterwards.

    Uses threadpoolctl when it is installed, else the OpenBLAS libraries already loaded in the
    process (so load numpy / scipy before entering: a library loaded inside the block is not
    limited). Best effort: when neither finds a library the block runs unchanged; never raises
    on its own account.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(1, user_api="blas"):
            yield
        return
    restore = []
    try:
        for set_, get_ in _openblas_thread_setters():
            restore.append((set_, get_()))
            set_(1)
    except Exception:  # noqa: BLE001, S110 - best effort: a foreign library must not break fitting
        pass
    try:
        yield
    finally:
        for set_, n in reversed(restore):
            set_(n)
