"""A raw-file stand-in for `sm.vhd.open_chain`, for unit tests of the data path only."""

from __future__ import annotations

import os
import threading


class RawDisk:
    def __init__(self, path: str, writable: bool) -> None:
        self._fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        self._writable = writable
        self.size = os.fstat(self._fd).st_size
        self.paths = [path]
        self.depth = 1
        self.flushes = 0
        self.closed = False
        self._lock = threading.Lock()

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if not self._writable:
            raise OSError(30, "read-only")
        os.pwrite(self._fd, data, offset)

    def flush(self) -> None:
        os.fsync(self._fd)
        self.flushes += 1

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
            self.closed = True

    def __enter__(self) -> RawDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_chain(path: str, *, writable: bool = False) -> RawDisk:
    return RawDisk(path, writable)
