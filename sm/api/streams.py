"""Disk images as byte streams, for `sm vdi import` / `export` through pipes (docs/cli.md).

- `detect(head, tail)`: the format of an image from its first bytes (and its last 512 where the
  input can seek): VHD (dynamic or differencing: the footer copy at 0; fixed: the footer at the
  end) or raw; the formats we do not read (qcow2, VMDK, VirtualBox VDI, VHDX) by their magic,
  so they are refused instead of being written as raw bytes.
- `RawStream`: a raw image read front to back from a pipe, in whole chunks.
- `VhdStream`: a dynamic VHD read front to back (footer copy, header, BAT, then the blocks in
  file order, each skipped forward to); memory is one block plus the BAT.
- `write_vhd`: a dynamic VHD written front to back (footer copy, header, BAT, batmap, blocks,
  footer),
  given which blocks hold data: nothing is seeked, so the output can be a pipe.

Specification: Microsoft "Virtual Hard Disk Image Format Specification" 1.0 (the footer,
dynamic header, BAT and per-block sector bitmaps, as `sm.vhd.records` codes them).
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from sm.errors import InvalidArg
from sm.vhd import records
from sm.vhd.errors import VhdFormatError
from sm.vhd.geometry import chs
from sm.vhd.layout import bat_bytes, batmap_sectors, next_block_start
from sm.vhd.ops import now
from sm.vhd.records import (
    DEFAULT_BLOCK_SIZE,
    SECTOR,
    BatmapHeader,
    DiskType,
    DynamicHeader,
    Footer,
    bat_unpack,
    bitmap_bytes,
)

__all__ = ["CHUNK", "RawStream", "VhdStream", "detect", "read_full", "unreadable", "write_vhd"]

CHUNK = 2 << 20
UNUSED = 0xFFFFFFFF

#: magic at offset 0 -> the format it starts (formats we refuse; see `unreadable`)
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"QFI\xfb", "qcow2"),
    (0, b"KDMV", "vmdk"),
    (0, b"COWD", "vmdk"),
    (0, b"# Disk DescriptorFile", "vmdk"),
    (0, b"vhdxfile", "vhdx"),
    (64, b"\x7f\x10\xda\xbe", "vdi"),  # VirtualBox: signature 0xbeda107f, little-endian
)
_QEMU_NAMES = {"qcow2": "qcow2", "vmdk": "vmdk", "vhdx": "vhdx", "vdi": "vdi"}


def detect(head: bytes, tail: bytes | None = None) -> str:
    """"vhd", "raw", or the name of a format we do not read ("qcow2", "vmdk", "vdi", "vhdx").
    `tail` is the input's last 512 bytes when it can seek (a fixed VHD has only a footer)."""
    if head[:8] == records.FOOTER_COOKIE:
        return "vhd"
    for offset, magic, name in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return name
    if tail is not None and tail[:8] == records.FOOTER_COOKIE:
        try:
            footer = Footer.unpack(tail)
        except VhdFormatError:
            return "raw"
        if footer.disk_type == DiskType.FIXED:
            return "vhd"
    return "raw"


def unreadable(name: str, kind: str) -> InvalidArg:
    """The refusal of an input in a format we do not read, naming the way to convert it."""
    qemu = _QEMU_NAMES.get(kind, kind)
    return InvalidArg(
        f"{name} is a {kind} image; sm imports raw and VHD images only: convert it first, "
        f"e.g. `qemu-img convert -f {qemu} -O raw {name} disk.raw` (or `-O vpc` for a VHD)")


def read_full(stream: BinaryIO, n: int) -> bytes:
    """Up to `n` bytes: fewer only at the end of the stream (a pipe returns short reads)."""
    parts: list[bytes] = []
    left = n
    while left > 0:
        data = stream.read(left)
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _skip(stream: BinaryIO, n: int) -> None:
    while n > 0:
        data = stream.read(min(n, CHUNK))
        if not data:
            raise InvalidArg("the VHD stream ends early")
        n -= len(data)


class RawStream:
    """A raw image from a stream (after the `head` already read from it): (offset, bytes)
    chunks front to back until the end of the stream."""

    def __init__(self, stream: BinaryIO, head: bytes, size: int | None = None) -> None:
        self.stream, self.head, self.size = stream, head, size

    def chunks(self) -> Iterator[tuple[int, bytes]]:
        off = 0
        pending = self.head
        while True:
            data = pending + read_full(self.stream, CHUNK - len(pending))
            pending = b""
            if not data:
                return
            yield off, data
            off += len(data)
            if len(data) < CHUNK:
                return


class VhdStream:
    """A dynamic VHD read front to back from a stream whose first 512 bytes (`head`, the
    footer copy) were read already. `size` is its virtual size; `chunks()` yields the data of
    its allocated blocks, in file order, sectors absent from a block's bitmap as zeros."""

    def __init__(self, stream: BinaryIO, head: bytes, name: str = "the input") -> None:
        self.stream, self.name = stream, name
        try:
            self.footer = Footer.unpack(head)
        except VhdFormatError as err:
            raise InvalidArg(f"{name}: not a VHD ({err})") from err
        if self.footer.disk_type == DiskType.DIFFERENCING:
            raise InvalidArg(f"{name} is a differencing VHD: it needs its parent; import it "
                             "from a file next to its parent, not from a pipe")
        if self.footer.disk_type != DiskType.DYNAMIC:
            raise InvalidArg(f"{name}: a fixed VHD cannot be read from a pipe; import it from "
                             "a file, or as raw (its data is raw bytes before a footer)")
        self.pos = SECTOR
        _skip(stream, self.footer.data_offset - self.pos)
        self.pos = self.footer.data_offset
        try:
            self.header = DynamicHeader.unpack(read_full(stream, DynamicHeader.SIZE))
        except VhdFormatError as err:
            raise InvalidArg(f"{name}: not a VHD ({err})") from err
        self.pos += DynamicHeader.SIZE
        table = self.header.table_offset
        if table < self.pos:
            raise InvalidArg(f"{name}: its BAT lies before its header; import it from a file")
        _skip(stream, table - self.pos)
        entries = self.header.max_table_entries
        raw = read_full(stream, bat_bytes(entries))
        if len(raw) < entries * 4:
            raise InvalidArg(f"{name}: the VHD stream ends inside its BAT")
        self.bat = bat_unpack(raw, entries)
        self.pos = table + len(raw)
        self.size = self.footer.current_size

    def chunks(self) -> Iterator[tuple[int, bytes]]:
        block = self.header.block_size
        bitmap_len = bitmap_bytes(block)
        order = sorted((sector, index) for index, sector in enumerate(self.bat)
                       if sector != UNUSED)
        for sector, index in order:
            start = sector * SECTOR
            if start < self.pos:
                raise InvalidArg(f"{self.name}: its blocks are not stored in stream order; "
                                 "import it from a file")
            _skip(self.stream, start - self.pos)
            bitmap = read_full(self.stream, bitmap_len)
            data = read_full(self.stream, block)
            self.pos = start + len(bitmap) + len(data)
            if len(data) < block:
                raise InvalidArg(f"{self.name}: the VHD stream ends inside block {index}")
            off = index * block
            if off >= self.size:
                continue
            yield off, _apply_bitmap(bitmap, data)[:self.size - off]


def _apply_bitmap(bitmap: bytes, data: bytes) -> bytes:
    """The block's data with the sectors its bitmap marks absent read as zeros."""
    sectors = len(data) // SECTOR
    full = sectors // 8
    if bitmap[:full] == b"\xff" * full:
        return data
    out = bytearray(data)
    for i in range(sectors):
        if not bitmap[i >> 3] >> (7 - (i & 7)) & 1:
            out[i * SECTOR:(i + 1) * SECTOR] = bytes(SECTOR)
    return bytes(out)


def write_vhd(out: Callable[[bytes], object], size: int, blocks: Iterable[int],
              read: Callable[[int, int], bytes], block_size: int = DEFAULT_BLOCK_SIZE) -> None:
    """Write a dynamic VHD of virtual size `size` front to back through `out`: the blocks
    whose index is in `blocks` (sorted) hold `read(offset, length)`; the others are absent."""
    size = -(-size // SECTOR) * SECTOR
    entries = max(1, -(-size // block_size))
    present = sorted(set(blocks))
    footer = Footer(DiskType.DYNAMIC, size, uuidlib.uuid4(), now(), data_offset=SECTOR,
                    original_size=size, geometry=chs(size)).pack()
    table = SECTOR + DynamicHeader.SIZE
    header = DynamicHeader(table, entries, block_size).pack()
    bitmap = b"\xff" * bitmap_bytes(block_size)
    # the batmap (blktap >= 1.2 writes one; `sm.vhd` requires it of tap images): a header
    # sector after the BAT, then one bit per block, set for a block fully allocated
    map_header_off = table + bat_bytes(entries)
    map_off = map_header_off + SECTOR
    batmap = bytearray(batmap_sectors(entries) * SECTOR)
    for index in present:
        batmap[index >> 3] |= 0x80 >> (index & 7)
    # every block's data 4 KiB aligned, as blktap and the engine place them
    data_start = map_off + len(batmap)
    bat = [UNUSED] * entries
    starts = []
    end = data_start
    for index in present:
        start = next_block_start(end, block_size)
        bat[index] = start // SECTOR
        starts.append(start)
        end = start + len(bitmap) + block_size
    out(footer)
    out(header)
    out(b"".join(v.to_bytes(4, "big") for v in bat).ljust(bat_bytes(entries), b"\0"))
    out(BatmapHeader.for_map(map_off, bytes(batmap)).pack())
    out(bytes(batmap))
    pos = map_off + len(batmap)
    for index, start in zip(present, starts):
        off = index * block_size
        data = read(off, min(block_size, size - off))
        out(bytes(start - pos) + bitmap)
        out(data + bytes(block_size - len(data)))
        pos = start + len(bitmap) + block_size
    out(footer)
