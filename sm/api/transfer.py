"""`export` and `import` of a VDI's content, and streamed `write` / `read`: files or streams.

A source or destination is a path or a binary stream (the CLI passes stdin/stdout for `-`).
Everything moves in chunks of at most `CHUNK` bytes, so memory stays bounded whatever the size.

Import (`open_input` then `import_from`): the format is detected (`sm.api.streams.detect`)
unless given: VHD (any kind from a file, a dynamic one from a stream) or raw; qcow2, VMDK,
VirtualBox VDI and VHDX are refused naming `qemu-img convert`. `Input.size` is the virtual size
(VHD footer, raw file length) or None for a raw stream. A raw image larger than the VDI is
refused; a VHD may be larger if only zeros lie past the VDI's end (qemu-img rounds a VHD's size
up to a disk geometry). Into a fresh VDI all-zero chunks are
skipped; into an existing one every byte is written (gaps of a VHD as zeros), so the VDI ends
up holding exactly the image.

Export (`export_to`): to a file, a sparse raw file or a dynamic VHD written by the engine; to a
stream, raw bytes, or a VHD written front to back after a first pass that finds the blocks
holding data. `progress(done, total)` is called as bytes are handled.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal, Protocol

from sm.errors import InvalidArg

from .streams import CHUNK, RawStream, VhdStream, detect, read_full, unreadable, write_vhd

__all__ = ["CHUNK", "Format", "Input", "export_to", "import_from", "open_input", "read_to",
           "write_from"]

Format = Literal["raw", "vhd"]
InputFormat = Literal["auto", "raw", "vhd"]
Progress = Callable[[int, int], None]
Source = str | BinaryIO


class _Readable(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes: ...


class _Writable(_Readable, Protocol):
    def write(self, offset: int, data: bytes) -> None: ...
    def flush(self) -> None: ...


def _name(obj: Source) -> str:
    return obj if isinstance(obj, str) else str(getattr(obj, "name", "the stream"))


def _os_error(action: str, name: str, err: OSError) -> InvalidArg:
    return InvalidArg(f"cannot {action} {name}: {err.strerror or err}")


# -- import ----------------------------------------------------------------------------------


@dataclass
class Input:
    """An opened import source: its format, its virtual size (None: a raw stream, known only
    at its end) and its data as (offset, bytes) chunks in increasing offset order."""

    name: str
    format: Format
    size: int | None
    chunks: Callable[[], Iterator[tuple[int, bytes]]]


@contextlib.contextmanager
def open_input(source: Source, fmt: InputFormat = "auto") -> Iterator[Input]:
    """Open `source` (a path or a binary stream) and find its format and virtual size."""
    name = _name(source)
    if isinstance(source, str):
        if os.path.isdir(source):
            raise InvalidArg(f"cannot read {name}: it is a directory")
        try:
            fd = os.open(source, os.O_RDONLY)
        except OSError as err:
            raise _os_error("read", name, err) from err
        with open(fd, "rb", buffering=0, closefd=True) as stream:
            with _opened(stream, name, fmt, path=source) as src:
                yield src
        return
    with _opened(source, name, fmt, path=None) as src:
        yield src


def _seekable_size(stream: BinaryIO) -> int | None:
    """The length of a regular file or block device behind `stream`, else None (a pipe)."""
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (OSError, AttributeError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISBLK(mode):
        try:
            here = stream.tell()
            end = stream.seek(0, os.SEEK_END)
            stream.seek(here)
            return end - here
        except OSError:
            return None
    return None


@contextlib.contextmanager
def _opened(stream: BinaryIO, name: str, fmt: InputFormat, path: str | None
            ) -> Iterator[Input]:
    length = _seekable_size(stream)
    head = read_full(stream, 512)
    tail = None
    if length is not None and length >= 1024:
        here = stream.tell()
        stream.seek(here - len(head) + length - 512)
        tail = read_full(stream, 512)
        stream.seek(here)
    found = detect(head, tail)
    if fmt == "auto":
        if found not in ("raw", "vhd"):
            raise unreadable(name, found)
        fmt = found  # type: ignore[assignment]
    elif fmt == "vhd" and found != "vhd":
        raise InvalidArg(f"{name} is not a VHD" + ("" if found == "raw" else f" but {found}"))
    if fmt == "raw":
        raw = RawStream(stream, head, length)
        yield Input(name, "raw", length, raw.chunks)
        return
    if path is not None or (length is not None and head[:8] != b"conectix"):
        # a file: the engine reads every kind (fixed, dynamic, differencing with its parents)
        from sm import vhd

        target = path if path is not None else f"/proc/self/fd/{stream.fileno()}"
        try:
            with vhd.open_chain(target) as disk:
                yield Input(name, "vhd", disk.size, lambda: _chunks_of(disk))
        except vhd.VhdError as err:
            raise InvalidArg(f"{name}: {err}") from err
        return
    vs = VhdStream(stream, head, name)
    yield Input(name, "vhd", vs.size, vs.chunks)


def _chunks_of(disk: _Readable) -> Iterator[tuple[int, bytes]]:
    for off in range(0, disk.size, CHUNK):
        yield off, disk.read(off, min(CHUNK, disk.size - off))


def import_from(disk: _Writable, src: Input, progress: Progress | None = None, *,
                fresh: bool = False) -> int:
    """Copy `src` into `disk` from offset 0; returns the bytes of the image. `fresh`: the VDI
    reads as zeros (just created), so all-zero chunks and gaps need no writing."""
    if src.size is not None and src.size > disk.size and src.format == "raw":
        raise InvalidArg(f"{src.name} holds {src.size} bytes; the VDI has {disk.size}")
    total = min(src.size, disk.size) if src.size is not None else disk.size
    zero = bytes(CHUNK)
    pos = 0
    for off, data in src.chunks():
        if off + len(data) > disk.size:
            # a VHD a little larger than the disk (qemu-img rounds sizes up to a geometry)
            # is fine as long as nothing but zeros lies past the disk's end
            keep = max(0, disk.size - off)
            if data[keep:] != zero[:len(data) - keep]:
                raise InvalidArg(f"{src.name} holds data past the VDI's {disk.size} bytes "
                                 f"(the first {pos} bytes were written)")
            data = data[:keep]
            if not data:
                continue
        if not fresh:
            _zero_fill(disk, pos, off, zero)
        _write(disk, off, data, zero, fresh)
        pos = off + len(data)
        if progress:
            progress(pos, total)
    end = min(src.size, disk.size) if src.size is not None else pos
    if not fresh:
        _zero_fill(disk, pos, end, zero)
    disk.flush()
    if progress:
        progress(end, end)
    return end


def _write(disk: _Writable, off: int, data: bytes, zero: bytes, fresh: bool = False) -> None:
    """Write a chunk, except zeros where the disk reads zeros already (it stays sparse)."""
    if data == zero[:len(data)] and (fresh or disk.read(off, len(data)) == data):
        return
    disk.write(off, data)


def _zero_fill(disk: _Writable, start: int, end: int, zero: bytes) -> None:
    for off in range(start, end, CHUNK):
        _write(disk, off, zero[:min(CHUNK, end - off)], zero)


def write_from(disk: _Writable, offset: int, stream: BinaryIO,
               progress: Progress | None = None) -> int:
    """Write `stream`'s bytes into `disk` at `offset` until the stream ends; the bytes
    written. Past the end of the disk: InvalidArg (what came before stays written)."""
    if offset < 0 or offset > disk.size:
        raise InvalidArg(f"offset {offset} is outside the disk ({disk.size})")
    total = _seekable_size(stream) or (disk.size - offset)
    zero = bytes(CHUNK)
    done = 0
    while True:
        data = read_full(stream, CHUNK)
        if not data:
            break
        if offset + done + len(data) > disk.size:
            raise InvalidArg(f"range {offset}+{done + len(data)} is outside the disk "
                             f"({disk.size}); the first {done} bytes were written")
        _write(disk, offset + done, data, zero)
        done += len(data)
        if progress:
            progress(done, max(total, done))
    disk.flush()
    if progress:
        progress(done, done)  # the stream ended: all of it is done
    return done


# -- export ----------------------------------------------------------------------------------


def read_to(disk: _Readable, offset: int, length: int | None, out: BinaryIO,
            progress: Progress | None = None) -> int:
    """Write `length` bytes (None: to the end) of `disk` from `offset` to `out`."""
    if length is None:
        length = max(0, disk.size - offset)
    if offset < 0 or length < 0 or offset + length > disk.size:
        raise InvalidArg(f"range {offset}+{length} is outside the disk ({disk.size})")
    for off in range(offset, offset + length, CHUNK):
        out.write(disk.read(off, min(CHUNK, offset + length - off)))
        if progress:
            progress(min(off + CHUNK, offset + length) - offset, length)
    out.flush()
    return length


def export_to(disk: _Readable, output: Source, fmt: Format, progress: Progress | None = None
              ) -> int:
    """Copy `disk` to `output` (a path: a sparse raw file or a new dynamic VHD; a stream: raw
    bytes or a dynamic VHD written front to back); returns the disk's size."""
    if not isinstance(output, str):
        return _export_stream(disk, output, fmt, progress)
    try:
        special = not stat.S_ISREG(os.stat(output).st_mode)  # /dev/stdout, a named pipe
    except OSError:
        special = False
    if special:
        try:
            f = open(output, "wb")  # noqa: SIM115
        except OSError as err:
            raise _os_error("write", output, err) from err
        with f:
            return _export_stream(disk, f, fmt, progress)
    with _sink(output, disk.size, fmt) as sink:
        zero = bytes(CHUNK)
        for off in range(0, disk.size, CHUNK):
            data = disk.read(off, min(CHUNK, disk.size - off))
            if data != zero[:len(data)]:
                sink.write(off, data)
            if progress:
                progress(off + len(data), disk.size)
        sink.flush()
    return disk.size


def _export_stream(disk: _Readable, out: BinaryIO, fmt: Format, progress: Progress | None
                   ) -> int:
    size = disk.size
    if fmt == "raw":
        read_to(disk, 0, size, out, progress)
        return size
    # VHD: a first pass finds the blocks holding data (the BAT precedes them in the stream)
    from sm.vhd.records import DEFAULT_BLOCK_SIZE as block

    zero = bytes(block)
    present = []
    for off in range(0, size, block):
        if disk.read(off, min(block, size - off)) != zero[:min(block, size - off)]:
            present.append(off // block)
        if progress:
            progress(min(off + block, size) // 2, size)
    written = [0]

    def emit(data: bytes) -> None:
        out.write(data)
        written[0] += len(data)

    def read(off: int, length: int) -> bytes:
        if progress:
            progress(size // 2 + off // 2, size)
        return disk.read(off, length)

    write_vhd(emit, size, present, read, block)
    out.flush()
    if progress:
        progress(size, size)
    return size


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
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InvalidArg(f"cannot write {path}: no directory {directory}")
    if fmt == "vhd":
        from sm import vhd

        try:
            vhd.create(path, size)
        except OSError as err:
            raise _os_error("write", path, err) from err
        with vhd.open_chain(path, writable=True) as out:
            yield out
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as err:
        raise _os_error("write", path, err) from err
    try:
        os.ftruncate(fd, size)
        yield _RawFile(fd, size)
    finally:
        os.close(fd)
