"""`export` and `import` of a VDI's content: raw files or standalone dynamic VHDs.

Both go through `open_attached` (the one data-access function), chunk by chunk; all-zero
chunks are skipped on export (the output stays sparse) and on import into a fresh VDI region
they are still written (the VDI may hold data there). `progress(done)` is called with the
bytes handled so far.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Literal, Protocol

from sm.errors import InvalidArg

__all__ = ["CHUNK", "Format", "export_to", "import_from"]

CHUNK = 2 << 20
Format = Literal["raw", "vhd"]
Progress = Callable[[int], None]


class _Readable(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes: ...


class _Writable(_Readable, Protocol):
    def write(self, offset: int, data: bytes) -> None: ...
    def flush(self) -> None: ...


def export_to(disk: _Readable, output: str, fmt: Format, progress: Progress | None = None
              ) -> int:
    """Copy `disk` to `output` (raw sparse file, or a new dynamic VHD); returns its size."""
    with _sink(output, disk.size, fmt) as sink:
        zero = bytes(CHUNK)
        for off in range(0, disk.size, CHUNK):
            data = disk.read(off, min(CHUNK, disk.size - off))
            if data != zero[:len(data)]:
                sink.write(off, data)
            if progress:
                progress(off + len(data))
        sink.flush()
    return disk.size


def import_from(disk: _Writable, source: str, fmt: Format, progress: Progress | None = None
                ) -> int:
    """Copy `source` (raw file or VHD chain) into `disk` from offset 0; returns bytes copied."""
    with _source(source, fmt) as src:
        if src.size > disk.size:
            raise InvalidArg(f"{source} holds {src.size} bytes; the VDI has {disk.size}")
        for off in range(0, src.size, CHUNK):
            data = src.read(off, min(CHUNK, src.size - off))
            disk.write(off, data)
            if progress:
                progress(off + len(data))
        disk.flush()
        return src.size


class _RawFile:
    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self.fd, length, offset)
        return data + bytes(length - len(data))

    def write(self, offset: int, data: bytes) -> None:
        os.pwrite(self.fd, data, offset)

    def flush(self) -> None:
        os.fsync(self.fd)


@contextlib.contextmanager
def _sink(path: str, size: int, fmt: Format) -> Iterator[_Writable]:
    if fmt == "vhd":
        from sm import vhd

        vhd.create(path, size)
        with vhd.open_chain(path, writable=True) as out:
            yield out
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        yield _RawFile(fd, size)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _source(path: str, fmt: Format) -> Iterator[_Readable]:
    if fmt == "vhd":
        from sm import vhd

        with vhd.open_chain(path) as src:
            yield src
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        yield _RawFile(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
