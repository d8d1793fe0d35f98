"""Where image bytes live: the Backing and Storage protocols and their file implementations.

An LVM SR supplies its own Storage whose Backings map LV offsets onto a PV; their
``capacity()`` is fixed and the end of the VHD data is NOT the device size, so the engine
always computes the end of data from the image's metadata.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Protocol, runtime_checkable


@runtime_checkable
class Backing(Protocol):
    """Byte access to one image."""

    path: str

    def pread(self, n: int, off: int) -> bytes: ...
    def pwrite(self, data: bytes | bytearray | memoryview, off: int) -> None: ...
    def capacity(self) -> int | None:
        """Fixed capacity in bytes, or None when the backing grows (files)."""
    def size(self) -> int:
        """Current length in bytes (file size, or the capacity of a device)."""
    def truncate(self, n: int) -> None: ...
    def fsync(self) -> None: ...
    def close(self) -> None: ...
    def raw_range(self, off: int, n: int) -> tuple[int, int] | None:
        """(fd, offset in fd) when [off, off+n) is contiguous in one fd, for copy offload."""


class Storage(Protocol):
    """Opens and creates images by path."""

    def open(self, path: str, writable: bool) -> Backing: ...
    def exists(self, path: str) -> bool: ...
    def create(self, path: str, size: int) -> contextlib.AbstractContextManager[Backing]:
        """A new image of at least ``size`` bytes, published at ``path`` atomically when the
        context exits normally and discarded when it raises."""


class FileBacking:
    """A plain file, accessed with os.pread / os.pwrite."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd

    def pread(self, n: int, off: int) -> bytes:
        data = os.pread(self.fd, n, off)
        if len(data) == n or not data:
            return data
        parts = [data]
        got = len(data)
        while got < n:
            more = os.pread(self.fd, n - got, off + got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def preadinto(self, view: memoryview, off: int) -> int:
        """Read into ``view`` (optional Backing extension, used by ``Disk.readinto``); returns
        the byte count, short only at the end of the file."""
        got = 0
        while got < len(view):
            n = os.preadv(self.fd, [view[got:]], off + got)
            if not n:
                break
            got += n
        return got

    def pwrite(self, data: bytes | bytearray | memoryview, off: int) -> None:
        view = memoryview(data)
        while view:
            done = os.pwrite(self.fd, view, off)
            view = view[done:]
            off += done

    def capacity(self) -> int | None:
        return None

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def truncate(self, n: int) -> None:
        os.ftruncate(self.fd, n)

    def fsync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def raw_range(self, off: int, n: int) -> tuple[int, int] | None:
        return self.fd, off


class FileStorage:
    """Images as files in a directory tree (the default Storage)."""

    def open(self, path: str, writable: bool) -> Backing:
        flags = (os.O_RDWR if writable else os.O_RDONLY) | getattr(os, "O_CLOEXEC", 0)
        return FileBacking(path, os.open(path, flags))

    def exists(self, path: str) -> bool:
        return os.path.isfile(path)

    @contextlib.contextmanager
    def create(self, path: str, size: int) -> Iterator[Backing]:
        directory = os.path.dirname(os.path.abspath(path))
        from sm.atomic import open_temp  # standard library only, like the engine
        from sm.faults import crash_point

        fd, tmp = open_temp(directory, ".tmp-", ".vhd")
        backing = FileBacking(tmp, fd)
        try:
            yield backing
            backing.fsync()
            crash_point("vhd.create.staged")  # written, not published: a scratch file left
            backing.close()
            os.rename(tmp, path)
        except BaseException:
            backing.close()
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


DEFAULT_STORAGE = FileStorage()
