"""Crash-safe file updates (standard library only).

POSIX gives one atomic primitive for file contents: ``rename(2)`` over an existing name. A
writer fills a temporary file in the same directory, fsyncs it, renames it over the target and
then fsyncs the directory so that the rename itself survives a power cut. Readers see the old
or the new contents, never a mix. Temporary files are named ``.<name>.<random>.tmp``: a crash
can leave one behind, and :func:`remove_stale_temps` clears them (callers decide when that is
safe, usually under their own lock).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

StrPath = str | os.PathLike[str]

TEMP_SUFFIX = ".tmp"


def fsync_dir(path: StrPath) -> None:
    """fsync a directory so that entries created, renamed or removed in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """os.write until all of ``data`` is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def open_temp(directory: StrPath, prefix: str, suffix: str) -> tuple[int, str]:
    """A new file ``<directory>/<prefix><random><suffix>`` opened read-write, mode 0600:
    (descriptor, path). `tempfile.mkstemp`'s contract without importing `tempfile` (with
    `shutil`, `random`, `bz2`, ...) into every driver process."""
    while True:
        tmp = os.path.join(directory, f"{prefix}{os.urandom(6).hex()}{suffix}")
        try:
            return os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), tmp
        except FileExistsError:
            continue


def _write_temp(path: Path, data: bytes, mode: int, sync: bool) -> str:
    """Write ``data`` to a fresh temporary file next to ``path``; return its name."""
    fd, tmp = open_temp(path.parent, f".{path.name}.", TEMP_SUFFIX)
    try:
        try:
            write_all(fd, data)
            os.fchmod(fd, mode)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def write_atomic(path: StrPath, data: bytes, *, mode: int = 0o644, sync: bool = True) -> None:
    """Replace the contents of ``path`` with ``data`` atomically and durably.

    ``sync=False`` skips both fsyncs (still atomic for readers; not durable across power loss).
    """
    target = Path(path)
    tmp = _write_temp(target, data, mode, sync)
    try:
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync:
        fsync_dir(target.parent)


def replace_atomic(src: StrPath, dst: StrPath, *, sync: bool = True) -> None:
    """Rename ``src`` over ``dst`` and make the rename durable (both directories fsynced)."""
    os.replace(src, dst)
    if sync:
        src_dir = Path(src).parent
        dst_dir = Path(dst).parent
        fsync_dir(dst_dir)
        if os.path.realpath(src_dir) != os.path.realpath(dst_dir):
            fsync_dir(src_dir)


def create_exclusive(path: StrPath, data: bytes = b"", *, mode: int = 0o644) -> None:
    """Create ``path`` holding ``data``; raise ``FileExistsError`` if it already exists.

    The file appears complete or not at all: it is written under a temporary name and then
    hard-linked into place (``link(2)`` refuses to overwrite, also over NFS).
    """
    target = Path(path)
    tmp = _write_temp(target, data, mode, sync=True)
    try:
        os.link(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    fsync_dir(target.parent)


def open_exclusive(path: StrPath, *, mode: int = 0o644) -> int:
    """Open a new file for writing with ``O_CREAT | O_EXCL``; return the descriptor.

    Raises ``FileExistsError`` if the name exists. Unlike :func:`create_exclusive` the file is
    visible (empty) at once; use it for lock or marker files whose contents do not matter.
    """
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)


def unlink(path: StrPath, *, missing_ok: bool = False, sync: bool = True) -> bool:
    """Remove ``path`` durably; return whether it existed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        if not missing_ok:
            raise
        return False
    if sync:
        fsync_dir(Path(path).parent)
    return True


def is_temp_name(name: str) -> bool:
    """Whether a directory entry is a temporary file left by this module."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def remove_stale_temps(directory: StrPath, *, older_than: float = 60.0) -> list[str]:
    """Remove this module's temporary files older than ``older_than`` seconds; return names.

    A temporary file younger than that may belong to a writer still at work.
    """
    removed: list[str] = []
    limit = time.time() - older_than
    with os.scandir(directory) as entries:
        for entry in entries:
            if not is_temp_name(entry.name):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime <= limit:
                    os.unlink(entry.path)
                    removed.append(entry.name)
            except FileNotFoundError:
                continue
    return sorted(removed)
