"""Atomic outputs: every file and folder muxsim writes appears complete or not at all.

- :func:`atomic_file`: write under a temporary name beside the target, then :func:`os.replace`.
- :func:`write_files`: several files into one folder, all or none.
- :func:`staged_folder`: write a whole output folder in a staging folder beside it, then rename
  it into place. An older muxsim output folder at that path is moved aside first and removed
  only after the new one is in place; files in it that muxsim did not write are moved into the
  new folder, never deleted. Staging folders left by dead processes are removed (and an older
  output a killed run had moved aside is put back).
- :func:`check_output_folder` / :func:`check_output_file`: the checks an output path passes
  before any work: never the current folder or a parent of it, never a folder of files muxsim
  did not write, never a file of another kind.

What muxsim wrote in a folder is listed in its :data:`MARKER` file.

The bottom layer: imports nothing of muxsim.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["MARKER", "OutputPathError", "atomic_file", "check_output_file", "check_output_folder",
           "remove_stale_staging", "staged_folder", "write_files"]

#: The file in every output folder muxsim writes that lists what it wrote there (JSON:
#: ``{"writer": "muxsim", "files": [relative paths]}``).
MARKER = ".muxsim-output.json"

#: Longest file or folder name most file systems take (bytes).
_NAME_MAX = 255


class OutputPathError(ValueError):
    """An output path muxsim must not write to, with a one-line message that names it."""

_STAGING = ".staging-"
_OLD = ".old-"


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


def _missing(folder: Path) -> list[Path]:
    """``folder`` and the folders above it that do not exist yet, innermost first."""
    made = []
    while not folder.exists():
        made.append(folder)
        folder = folder.parent
    return made


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
    made = _missing(folder)
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


def _owned(folder: Path) -> set[str] | None:
    """The files muxsim wrote in ``folder`` (relative paths), or None when it is not a muxsim
    output folder. Folders written before :data:`MARKER` existed are recognised by their
    ``run.json`` (``version`` and ``files``, plus the workloads it names)."""
    marker = folder / MARKER
    try:
        if marker.is_file():
            doc = json.loads(marker.read_text())
            if isinstance(doc, dict) and doc.get("writer") == "muxsim" and isinstance(doc.get("files"), list):
                return {str(f) for f in doc["files"]} | {MARKER}
            return None
        run = folder / "run.json"
        if run.is_file():
            doc = json.loads(run.read_text())
            if isinstance(doc, dict) and "version" in doc and isinstance(doc.get("files"), list):
                files = {str(f) for f in doc["files"]} | {"run.json"}
                files |= {str(f) for f in (doc.get("workloads") or {}).values()}
                return files
    except (OSError, ValueError):
        return None
    return None


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _resolved(path: str | os.PathLike, what: str) -> Path:
    text = os.fspath(path)
    if text.strip() == "":
        raise OutputPathError(f"{what} must not be empty; give a path")
    if any(ord(c) < 32 for c in text):
        raise OutputPathError(f"{what} {text!r} holds control characters")
    p = Path(text).expanduser()
    try:
        p = p.resolve()
    except (OSError, RuntimeError) as e:
        raise OutputPathError(f"{what} {text}: cannot resolve the path ({e})") from None
    for part in p.parts:
        if len(part.encode()) > _NAME_MAX:
            raise OutputPathError(f"{what} {text}: a name in it is longer than {_NAME_MAX} bytes")
    return p


def _check_writable_parent(p: Path, what: str, text: str) -> None:
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(f"{what} {text}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {text}: cannot write in {parent} (permission denied)")


def check_output_folder(path: str | os.PathLike, what: str = "--out") -> Path:
    """Check that a whole output folder may be written at ``path``, before any work: it is
    new, or an empty folder, or a folder muxsim wrote (replaced when the new one is complete,
    keeping files muxsim did not write); never a file, the current folder or a parent of it;
    its parent can be written. ``what`` names the path in messages (``--out``).

    Returns:
        The resolved path.

    Raises:
        OutputPathError: any of the above (one line naming the path and what is wrong).
    """
    text = os.fspath(path)
    p = _resolved(path, what)
    cwd = Path.cwd().resolve()
    if p == cwd or p in cwd.parents:
        raise OutputPathError(f"{what} {text} is the current folder or a folder above it; give a new "
                              f"folder (muxsim replaces the whole output folder)")
    if p.exists():
        if not p.is_dir():
            raise OutputPathError(f"{what} {text} is a file; give a folder")
        if _entries(p) and _owned(p) is None:
            first = _entries(p)[0]
            raise OutputPathError(f"{what} {text} is a folder muxsim did not write (it holds {first!r}); "
                                  f"give a new or empty folder, or an earlier muxsim output folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputPathError(f"{what} {text}: cannot write in it (permission denied)")
    _check_writable_parent(p, what, text)
    return p


def check_output_file(path: str | os.PathLike, is_ours, what: str = "--out", kind: str = "output file") -> Path:
    """Check that an output file may be written at ``path``, before any work: a new file, or
    one that ``is_ours(path)`` recognises as a file of this kind (then replaced); never a
    folder; its folder can be written.

    Returns:
        The resolved path.

    Raises:
        OutputPathError: any of the above (one line).
    """
    text = os.fspath(path)
    p = _resolved(path, what)
    if p.exists():
        if p.is_dir():
            raise OutputPathError(f"{what} {text} is a folder; give a file name")
        if not is_ours(p):
            raise OutputPathError(f"{what} {text} exists and is not a {kind}; muxsim replaces only its own "
                                  f"kind of file: give a new file name")
    _check_writable_parent(p, what, text)
    return p


def _keep_user_files(old: Path, new: Path) -> list[Path]:
    """Move the files muxsim did not write in ``old`` (its muxsim output, moved aside) into
    ``new``; a name the new output also uses gets a ``.kept`` suffix. Returns where they went."""
    owned = _owned(old) or set()
    kept = []
    for name in _entries(old):
        if name in owned:
            continue
        dest = new / name
        k = 0
        while dest.exists():
            k += 1
            dest = new / f"{name}.kept{'' if k == 1 else k}"
        os.replace(old / name, dest)
        kept.append(dest)
    return kept


def remove_stale_staging(out_dir: str | os.PathLike) -> list[Path]:
    """Clean up after runs to ``out_dir`` whose writing process is gone (killed): remove their
    staging folders, and put back an older output a killed run had moved aside (or, when a
    newer output is already in place, move its user files into it and remove it). Returns the
    folders removed or restored."""
    out_dir = Path(out_dir)
    done = []
    parent = out_dir.parent
    if not parent.is_dir():
        return done
    staging, old = f".{out_dir.name}{_STAGING}", f".{out_dir.name}{_OLD}"
    for p in sorted(parent.iterdir()):
        for prefix in (staging, old):
            if not (p.name.startswith(prefix) and p.is_dir()):
                continue
            pid = p.name[len(prefix):]
            if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
                continue
            if prefix == staging:
                shutil.rmtree(p, ignore_errors=True)
            elif not out_dir.exists():
                os.replace(p, out_dir)
            else:
                _keep_user_files(p, out_dir)
                shutil.rmtree(p, ignore_errors=True)
            done.append(p)
    return done


def _write_marker(folder: Path) -> None:
    files = sorted(str(f.relative_to(folder)) for f in folder.rglob("*") if f.is_file())
    with atomic_file(folder / MARKER) as tmp:
        tmp.write_text(json.dumps({"writer": "muxsim", "files": files}, indent=1) + "\n")


@contextlib.contextmanager
def staged_folder(out_dir: str | os.PathLike, what: str = "--out") -> Iterator[Path]:
    """Yield an empty staging folder beside ``out_dir``; when the block ends without an
    exception, list its files in :data:`MARKER` and rename it to ``out_dir``, else remove it.

    An older muxsim output at ``out_dir`` is moved aside, and removed once the new folder is
    in place; the files in it muxsim did not write are moved into the new folder first.

    Raises:
        OutputPathError: as :func:`check_output_folder` (checked before the block).
    """
    out_dir = check_output_folder(out_dir, what)
    remove_stale_staging(out_dir)
    staging = out_dir.parent / f".{out_dir.name}{_STAGING}{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    made = _missing(out_dir.parent)  # created here: removed again if the write fails
    staging.mkdir(parents=True)
    ok = False
    try:
        yield staging
        _write_marker(staging)
        old = None
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}{_OLD}{os.getpid()}"
            os.replace(out_dir, old)
        os.replace(staging, out_dir)
        if old is not None:
            _keep_user_files(old, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        ok = True
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if not ok:
            for d in made:  # innermost first; only if still empty
                with contextlib.suppress(OSError):
                    d.rmdir()
