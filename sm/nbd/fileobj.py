"""A VDI's chain as a file-like object, for in-process users (standard library only).

    with open_vdi("/sr/<uuid>.vhd", "r+b") as f:
        f.seek(1 << 20)
        f.write(b"...")
        f.flush()           # fsync of the leaf

Reads and writes go through `sm.vhd.open_chain`, the same engine the NBD server uses. The
object has the VDI's virtual size: reads stop at the end, writes past the end fail with
ENOSPC. Do not open a VDI writable here while a server serves it writable (the SR's attach
rules prevent it); wrap in `io.BufferedReader` / `io.BufferedRandom` for small I/O.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable
from typing import Any

from sm.nbd.export import DiskLike

__all__ = ["VdiFile", "open_vdi"]


def _engine_open(path: str, writable: bool) -> DiskLike:
    from sm.vhd import open_chain

    return open_chain(path, writable=writable)


class VdiFile(io.RawIOBase):
    """Raw, seekable, unbuffered access to the chain whose leaf is `path`."""

    def __init__(self, path: str | os.PathLike[str], *, writable: bool = False,
                 opener: Callable[[str, bool], DiskLike] | None = None) -> None:
        super().__init__()
        self.name = os.fspath(path)
        self._writable = writable
        self._disk = (opener or _engine_open)(self.name, writable)
        self._pos = 0

    @property
    def size(self) -> int:
        return self._disk.size

    @property
    def mode(self) -> str:
        return "r+b" if self._writable else "rb"

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return self._writable

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence}")
        pos = base + offset
        if pos < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: Any) -> int:
        self._checkClosed()
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self.size - self._pos))
        if n:
            view[:n] = self._disk.read(self._pos, n)
            self._pos += n
        return n

    def readall(self) -> bytes:
        self._checkClosed()
        n = max(0, self.size - self._pos)
        data = self._disk.read(self._pos, n) if n else b""
        self._pos += n
        return data

    def write(self, data: Any) -> int:
        self._checkClosed()
        if not self._writable:
            raise io.UnsupportedOperation("VDI opened read-only")
        view = memoryview(data).cast("B")
        if not view:
            return 0
        n = min(len(view), self.size - self._pos)
        if n <= 0:
            raise OSError(errno.ENOSPC, f"write at {self._pos} past the end of the VDI "
                                        f"({self.size} bytes)")
        self._disk.write(self._pos, view[:n])
        self._pos += n
        return n

    def truncate(self, size: int | None = None) -> int:
        raise io.UnsupportedOperation("a VDI has a fixed virtual size (resize it instead)")

    def flush(self) -> None:
        if not self.closed and self._writable:
            self._disk.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()  # calls flush()
        finally:
            self._disk.close()


def open_vdi(path: str | os.PathLike[str], mode: str = "rb", *,
             opener: Callable[[str, bool], DiskLike] | None = None) -> VdiFile:
    """Open the chain whose leaf is `path`: mode "rb" (read-only) or "r+b" (read-write)."""
    if mode not in ("rb", "r+b", "rb+"):
        raise ValueError(f"mode must be 'rb' or 'r+b', not {mode!r}")
    return VdiFile(path, writable=mode != "rb", opener=opener)
