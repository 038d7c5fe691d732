"""Child processes that die with their parent.

A worker process (a pool worker of :mod:`muxsim.experiment.tasks`, an LLM worker of
:mod:`muxsim.live.workers`) calls :func:`die_with_parent` first thing, so that it never outlives
the process that started it, however that one ends (an exception, Ctrl-C, SIGTERM, ``kill -9``,
the OOM killer): an orphaned worker would otherwise keep its memory (hundreds of MB) and its
CPU for as long as its task runs, or forever when it waits for work.

- Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``; the kernel kills the worker when its parent dies.
- Elsewhere (or if prctl fails): a daemon thread polls :func:`os.getppid` once a second and
  ends the process with :func:`os._exit` when the parent changed (the worker was re-parented).

The bottom layer: imports nothing of muxsim.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

__all__ = ["EXIT_ORPHANED", "die_with_parent", "ignore_sigint"]

#: Exit code of a worker that found its parent gone (the fallback's :func:`os._exit`).
EXIT_ORPHANED = 1

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def ignore_sigint() -> None:
    """Ignore SIGINT in this process (a worker: Ctrl-C in a terminal reaches the whole process
    group, but the parent decides when workers stop; otherwise every worker would print its own
    KeyboardInterrupt traceback). Only valid in the main thread (:func:`signal.signal`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _set_pdeathsig() -> bool:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)`` for this process; False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, poll_s: float) -> None:
    while True:
        time.sleep(poll_s)
        if os.getppid() != parent_pid:
            # the parent is gone (we were re-parented to init or a subreaper); no clean-up:
            # nobody is left to read what this process would produce
            os._exit(EXIT_ORPHANED)


def die_with_parent(parent_pid: int | None = None, *, poll_s: float = 1.0,
                    use_prctl: bool = True) -> str:
    """Make this process end when its parent process ends, for any reason (``kill -9``
    included). Call it early in the child, from its main thread.

    On Linux the kernel sends SIGKILL to this process when its parent dies
    (``PR_SET_PDEATHSIG``). Caveat of that mechanism: "parent" is the *thread* that started this
    process, so start workers from a thread that lives as long as they should (the main thread
    in muxsim). Where prctl is unavailable (or ``use_prctl`` is False), a daemon thread checks
    :func:`os.getppid` every ``poll_s`` seconds and calls ``os._exit(EXIT_ORPHANED)`` once it
    changed, so the child ends at most ~``poll_s`` s after its parent.

    Args:
        parent_pid: the pid of the process that started this one, as it passed it in
            (``os.getpid()`` in the parent). When :func:`os.getppid` no longer matches it, the
            parent died before the death signal was armed and this process exits at once
            (``os._exit(EXIT_ORPHANED)``). None: take ``os.getppid()`` now (for children whose
            parent is not their creator, e.g. forkserver-started ones; a parent that died before
            this call is then not detected).
        poll_s: the fallback thread's polling interval (s, > 0).
        use_prctl: try ``PR_SET_PDEATHSIG`` first (False: the fallback thread only; for tests).

    Returns:
        ``"prctl"`` or ``"poll"``: the mechanism in effect.

    Raises:
        ValueError: ``poll_s`` is not positive.
    """
    if not poll_s > 0:
        raise ValueError(f"poll_s must be > 0, got {poll_s!r}")
    if parent_pid is None:
        parent_pid = os.getppid()
    armed = use_prctl and _set_pdeathsig()
    # Checked after arming: a parent that died before prctl took effect never sends the signal.
    if os.getppid() != parent_pid:
        os._exit(EXIT_ORPHANED)
    if armed:
        return "prctl"
    threading.Thread(target=_watch_parent, args=(parent_pid, poll_s), name="muxsim-parent-watch",
                     daemon=True).start()
    return "poll"
