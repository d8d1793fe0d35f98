"""A raw VDI (`<uuid>.raw`, a sparse file) as the nbdkit plugin's disk (`opener=`).

Runs inside nbdkit's Python: standard library only.
"""

from __future__ import annotations

import os
import threading

__all__ = ["RawDisk", "open_raw"]


class RawDisk:
    """The `Disk` interface the plugin expects (size, read, write, flush, close)."""

    def __init__(self, path: str, writable: bool) -> None:
        # never through a link: the SR refuses one, and this closes the window after its check
        self._fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_NOFOLLOW)
        self._writable = writable
        self.size = os.fstat(self._fd).st_size
        self.paths = [path]
        self.depth = 1
        self.closed = False
        self._lock = threading.Lock()

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        return data + bytes(length - len(data))

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if not self._writable:
            raise OSError(30, "read-only VDI")
        os.pwrite(self._fd, data, offset)

    def flush(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                os.close(self._fd)
                self.closed = True

    def __enter__(self) -> RawDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_raw(path: str, *, writable: bool = False) -> RawDisk:
    return RawDisk(path, writable)
