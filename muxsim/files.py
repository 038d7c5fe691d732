"""Atomic outputs: every file and folder muxsim writes appears complete or not at all.

- :func:`atomic_file`: write under a temporary name beside the target, then :func:`os.replace`.
- :func:`write_files`: several files into one folder, all or none.
- :func:`staged_folder`: write a whole output folder in a staging folder beside it, then rename
  it into place (an older folder at that path is moved aside first and removed only after the
  new one is in place); staging folders left by dead processes are removed.

The bottom layer: imports nothing of muxsim.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_file", "remove_stale_staging", "staged_folder", "write_files"]

_STAGING = ".staging-"


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without an exception, move
    it onto ``path`` (optionally ``chmod`` ``mode`` first), else remove it.

    The temporary keeps ``path``'s suffix last (``.<stem>.<pid>.tmp<suffix>``), so writers that
    infer the format from the suffix (matplotlib's savefig) still can.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_files(folder: str | os.PathLike, writers: dict[str, Callable[[Path], None]]) -> list[Path]:
    """Write every file of ``writers`` (file name -> ``write(tmp_path)``) under a temporary name
    in ``folder``, then rename them all into place: all appear, or (on any failure) none, and
    the folders this call created are removed again.

    Returns:
        The paths written, in ``writers`` order.

    Raises:
        NotADirectoryError: ``folder`` exists and is not a folder.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} exists and is not a folder")
    made = []
    p = folder
    while not p.exists():
        made.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    tmps: dict[Path, Path] = {}
    try:
        for name, write in writers.items():
            final = folder / name
            tmp = folder / f".{final.stem}.tmp-{os.getpid()}{final.suffix}"
            tmps[final] = tmp
            write(tmp)
        for final, tmp in tmps.items():
            os.replace(tmp, final)
    except BaseException:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
        for d in made:  # innermost first
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    return list(tmps)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_staging(out_dir: str | os.PathLike) -> list[Path]:
    """Remove the staging folders of ``out_dir`` whose writing process is gone (a run that was
    killed); returns the folders removed."""
    out_dir = Path(out_dir)
    gone = []
    parent = out_dir.parent
    if not parent.is_dir():
        return gone
    prefix = f".{out_dir.name}{_STAGING}"
    for p in parent.iterdir():
        if p.name.startswith(prefix) and p.is_dir():
            pid = p.name[len(prefix):]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)
                gone.append(p)
    return gone


@contextlib.contextmanager
def staged_folder(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder beside ``out_dir``; when the block ends without an
    exception, rename it to ``out_dir`` (replacing an older folder there), else remove it.

    Raises:
        NotADirectoryError: ``out_dir`` exists and is not a folder (checked before the block).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} exists and is not a folder")
    remove_stale_staging(out_dir)
    staging = out_dir.parent / f".{out_dir.name}{_STAGING}{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            os.replace(out_dir, old)
        os.replace(staging, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
