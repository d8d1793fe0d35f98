"""Independent helpers for the VHD tests: a minimal layout parser written from the spec (not
from `sm.vhd`), a raw model of expected content, and readers through pyvhdi."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

SECTOR = 512
UNUSED = 0xFFFFFFFF


@dataclass
class Layout:
    """Byte offsets of the records of a dynamic/differencing VHD, read straight off the file."""

    size: int
    trailer: int  # offset of the trailing footer (= end of data)
    header: int
    bat: int
    max_entries: int
    block_size: int
    entries: list[int]
    locators: list[tuple[int, int, int, int]] = field(default_factory=list)  # code, space, len, off
    batmap: int | None = None  # offset of the tdbatmap header

    @property
    def bitmap_bytes(self) -> int:
        return -(-(self.block_size // SECTOR // 8) // SECTOR) * SECTOR

    def block_offset(self, index: int) -> int:
        return self.entries[index] * SECTOR


def layout(path: str | Path) -> Layout:
    data = Path(path).read_bytes()
    footer = data[:512]
    assert footer[:8] == b"conectix", "no footer copy at offset 0"
    header = struct.unpack(">Q", footer[16:24])[0]
    hdr = data[header : header + 1024]
    assert hdr[:8] == b"cxsparse"
    bat, _version, max_entries, block_size = struct.unpack(">QIII", hdr[16:36])
    entries = list(struct.unpack(f">{max_entries}I", data[bat : bat + 4 * max_entries]))
    locators = [struct.unpack(">IIIIQ", hdr[576 + 24 * i : 600 + 24 * i]) for i in range(8)]
    located = [(c, s, n, o) for c, s, n, _r, o in locators if c]
    bat_end = bat + -(-4 * max_entries // SECTOR) * SECTOR
    batmap = bat_end if data[bat_end : bat_end + 8] == b"tdbatmap" else None
    return Layout(
        size=len(data),
        trailer=len(data) - 512,
        header=header,
        bat=bat,
        max_entries=max_entries,
        block_size=block_size,
        entries=entries,
        locators=located,
        batmap=batmap,
    )


def flip(path: str | Path, offset: int, mask: int = 0xFF) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))


def poke(path: str | Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def fix_checksum(path: str | Path, start: int, length: int, field_at: int) -> None:
    """Recompute a one's-complement checksum so a test can corrupt a field behind it."""
    with open(path, "r+b") as f:
        f.seek(start)
        buf = bytearray(f.read(length))
        buf[field_at : field_at + 4] = b"\0\0\0\0"
        f.seek(start + field_at)
        f.write(struct.pack(">I", ~sum(buf) & 0xFFFFFFFF))


class RawModel:
    """The bytes a chain should read: a bytearray written like the disk."""

    def __init__(self, size: int, base: bytes | None = None) -> None:
        self.data = bytearray(base if base is not None else bytes(size))
        if len(self.data) < size:
            self.data.extend(bytes(size - len(self.data)))

    def write(self, offset: int, data: bytes) -> None:
        self.data[offset : offset + len(data)] = data

    def copy(self) -> RawModel:
        return RawModel(len(self.data), bytes(self.data))


def random_writes(
    rng: random.Random, size: int, count: int, *, align: int, max_len: int
) -> list[tuple[int, bytes]]:
    """`count` writes of random bytes, offsets and lengths multiples of `align`."""
    out = []
    for _ in range(count):
        length = rng.randrange(1, max(2, max_len // align + 1)) * align
        length = min(length, size)
        offset = rng.randrange(0, (size - length) // align + 1) * align
        out.append((offset, rng.randbytes(length)))
    return out


def pyvhdi_read(paths_leaf_first: list[str], chunk: int = 64 * 1024) -> bytes:
    """Read a whole chain with libvhdi, opening from the base up.

    Reads go in `chunk`-sized pieces no larger than a block: libvhdi returns zeros for parts
    of one large read that spans several small (64 KiB) blocks."""
    import pyvhdi

    files = []
    try:
        for path in reversed(paths_leaf_first):
            f = pyvhdi.file()
            f.open(path)
            if files:
                f.set_parent(files[-1])
            files.append(f)
        leaf = files[-1]
        size = leaf.get_media_size()
        chunks = []
        pos = 0
        while pos < size:
            n = min(chunk, size - pos)
            chunks.append(leaf.read_buffer_at_offset(n, pos))
            pos += n
        return b"".join(chunks)
    finally:
        for f in reversed(files):
            f.close()
