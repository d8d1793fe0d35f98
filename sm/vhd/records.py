"""On-disk records of a VHD file: footer, dynamic header, parent locators, BAT, batmap.

References: Microsoft "Virtual Hard Disk Image Format Specification" 1.0 (2006) sections
"Hard Disk Footer Format", "Dynamic Disk Header Format", "Block Allocation Table";
blktap ``vhd.h`` for the extensions: hidden byte (footer offset 85) and the batmap
(``dd_batmap_hdr``: cookie ``tdbatmap``, batmap offset u64, size in sectors u32, version u32,
checksum u32 = one's complement of the byte sum of the map, marker byte). Big-endian throughout.
"""

from __future__ import annotations

import struct
import sys
import uuid as uuidlib
from array import array
from enum import IntEnum

from sm.struct import Frozen

from .errors import VhdFormatError

SECTOR = 512
DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024
MAX_VIRTUAL_SIZE = 2040 * 1024**3
MAX_CHAIN_DEPTH = 30
UNUSED = 0xFFFFFFFF
NO_OFFSET = 0xFFFFFFFFFFFFFFFF
FOOTER_COOKIE = b"conectix"
HEADER_COOKIE = b"cxsparse"
BATMAP_COOKIE = b"tdbatmap"
FILE_VERSION = 0x00010000
CREATOR_TAP = b"tap\0"
CREATOR_VERSION = 0x00010003
BATMAP_VERSION = 0x00010002
VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z as a Unix time

PLAT_MACX = 0x4D616358
PLAT_W2KU = 0x57326B75
PLAT_W2RU = 0x57327275
PLAT_NONE = 0


class DiskType(IntEnum):
    FIXED = 2
    DYNAMIC = 3
    DIFFERENCING = 4


def ones_complement_sum(buf: bytes) -> int:
    """The spec's checksum: one's complement of the byte sum (the checksum field zeroed)."""
    return ~sum(buf) & 0xFFFFFFFF


def _check_cookie(got: bytes, want: bytes, name: str, base: int, path: str | None) -> None:
    if got != want:
        raise VhdFormatError(
            f"bad cookie {got!r}, expected {want!r}", field=name, offset=base, path=path
        )


_FOOTER = struct.Struct(">8sIIQI4sIIQQHBBII16sBB426s")


class Footer(Frozen):
    """The 512-byte hard disk footer (and its copy at offset 0 of dynamic disks)."""

    disk_type: DiskType
    current_size: int
    uuid: uuidlib.UUID
    timestamp: int
    data_offset: int = NO_OFFSET
    original_size: int = 0
    geometry: tuple[int, int, int] = (0, 0, 0)
    creator_app: bytes = CREATOR_TAP
    creator_version: int = CREATOR_VERSION
    creator_os: int = 0
    features: int = 2
    version: int = FILE_VERSION
    saved_state: int = 0
    hidden: int = 0

    SIZE = 512

    def pack(self) -> bytes:
        cyl, heads, spt = self.geometry
        fields = (
            FOOTER_COOKIE, self.features, self.version, self.data_offset, self.timestamp,
            self.creator_app, self.creator_version, self.creator_os, self.original_size,
            self.current_size, cyl, heads, spt, int(self.disk_type), 0, self.uuid.bytes,
            self.saved_state, self.hidden, b"",
        )
        raw = _FOOTER.pack(*fields)
        csum = ones_complement_sum(raw)
        return raw[:64] + struct.pack(">I", csum) + raw[68:]

    @classmethod
    def unpack(cls, buf: bytes, *, base: int = 0, path: str | None = None) -> Footer:
        if len(buf) < 512:
            raise VhdFormatError(
                f"footer truncated ({len(buf)} of 512 bytes)", field="footer", offset=base,
                path=path,
            )
        (cookie, features, version, data_offset, ts, app, cver, cos, orig, cur, cyl, heads,
         spt, dtype, csum, uid, saved, hidden, _res) = _FOOTER.unpack(buf[:512])
        _check_cookie(cookie, FOOTER_COOKIE, "footer.cookie", base, path)
        want = ones_complement_sum(buf[:64] + b"\0\0\0\0" + buf[68:512])
        if csum != want:
            raise VhdFormatError(
                f"footer checksum {csum:#010x} != computed {want:#010x}",
                field="footer.checksum", offset=base + 64, path=path,
            )
        try:
            disk_type = DiskType(dtype)
        except ValueError:
            raise VhdFormatError(
                f"unknown disk type {dtype}", field="footer.disk_type", offset=base + 60,
                path=path,
            ) from None
        if cur % SECTOR:
            raise VhdFormatError(
                f"current size {cur} is not a multiple of 512", field="footer.current_size",
                offset=base + 48, path=path,
            )
        return cls(
            disk_type=disk_type, current_size=cur, uuid=uuidlib.UUID(bytes=uid), timestamp=ts,
            data_offset=data_offset, original_size=orig, geometry=(cyl, heads, spt),
            creator_app=app, creator_version=cver, creator_os=cos, features=features,
            version=version, saved_state=saved, hidden=hidden,
        )


_LOCATOR = struct.Struct(">IIIIQ")


class ParentLocator(Frozen):
    """One of the eight 24-byte parent locator entries of the dynamic header."""

    code: int = PLAT_NONE
    data_space: int = 0
    data_length: int = 0
    reserved: int = 0
    data_offset: int = 0

    SIZE = 24

    def pack(self) -> bytes:
        return _LOCATOR.pack(
            self.code, self.data_space, self.data_length, self.reserved, self.data_offset
        )

    @classmethod
    def unpack(cls, buf: bytes) -> ParentLocator:
        return cls(*_LOCATOR.unpack(buf[:24]))

    @property
    def space_bytes(self) -> int:
        """Data space in bytes: the spec says sectors, blktap writes bytes; accept both."""
        if self.data_space < SECTOR:
            return self.data_space * SECTOR
        return self.data_space


_HEADER = struct.Struct(">8sQQIIII16sII512s192s256s")


def _empty_locators() -> tuple[ParentLocator, ...]:
    return tuple(ParentLocator() for _ in range(8))


class DynamicHeader(Frozen):
    """The 1024-byte dynamic disk header."""

    table_offset: int
    max_table_entries: int
    block_size: int = DEFAULT_BLOCK_SIZE
    parent_uuid: uuidlib.UUID | None = None
    parent_timestamp: int = 0
    parent_name: str = ""
    locators: tuple[ParentLocator, ...] = _empty_locators()
    data_offset: int = NO_OFFSET
    version: int = FILE_VERSION

    SIZE = 1024

    def pack(self) -> bytes:
        name = self.parent_name.encode("utf-16-be")[:512]
        locs = b"".join(loc.pack() for loc in self.locators[:8]).ljust(192, b"\0")
        pu = self.parent_uuid.bytes if self.parent_uuid else bytes(16)
        raw = _HEADER.pack(
            HEADER_COOKIE, self.data_offset, self.table_offset, self.version,
            self.max_table_entries, self.block_size, 0, pu, self.parent_timestamp, 0, name,
            locs, b"",
        )
        csum = ones_complement_sum(raw)
        return raw[:36] + struct.pack(">I", csum) + raw[40:]

    @classmethod
    def unpack(cls, buf: bytes, *, base: int = 512, path: str | None = None) -> DynamicHeader:
        if len(buf) < 1024:
            raise VhdFormatError(
                f"dynamic header truncated ({len(buf)} of 1024 bytes)", field="header",
                offset=base, path=path,
            )
        (cookie, data_offset, table_offset, version, entries, block_size, csum, pu, pts,
         _r1, name, locs, _r2) = _HEADER.unpack(buf[:1024])
        _check_cookie(cookie, HEADER_COOKIE, "header.cookie", base, path)
        want = ones_complement_sum(buf[:36] + b"\0\0\0\0" + buf[40:1024])
        if csum != want:
            raise VhdFormatError(
                f"dynamic header checksum {csum:#010x} != computed {want:#010x}",
                field="header.checksum", offset=base + 36, path=path,
            )
        if block_size < SECTOR or block_size & (block_size - 1):
            raise VhdFormatError(
                f"block size {block_size} is not a power of two >= 512",
                field="header.block_size", offset=base + 32, path=path,
            )
        if table_offset % SECTOR or table_offset < 512:
            raise VhdFormatError(
                f"table offset {table_offset} is not a sector offset past the footer copy",
                field="header.table_offset", offset=base + 16, path=path,
            )
        parent_uuid = uuidlib.UUID(bytes=pu) if any(pu) else None
        text = name.decode("utf-16-be", errors="replace").split("\0", 1)[0]
        locators = tuple(ParentLocator.unpack(locs[i * 24:(i + 1) * 24]) for i in range(8))
        return cls(
            table_offset=table_offset, max_table_entries=entries, block_size=block_size,
            parent_uuid=parent_uuid, parent_timestamp=pts, parent_name=text,
            locators=locators, data_offset=data_offset, version=version,
        )


_BATMAP = struct.Struct(">8sQIIIB483s")


def batmap_checksum(data: bytes) -> int:
    """blktap batmap checksum (version 1.2): one's complement of the unsigned byte sum."""
    return ~sum(data) & 0xFFFFFFFF


class BatmapHeader(Frozen):
    """blktap batmap header (512 bytes, right after the BAT); ``checksum`` covers the map."""

    batmap_offset: int
    batmap_size: int  # sectors
    checksum: int
    version: int = BATMAP_VERSION
    marker: int = 0

    SIZE = 512

    @classmethod
    def for_map(cls, batmap_offset: int, data: bytes) -> BatmapHeader:
        return cls(batmap_offset, len(data) // SECTOR, batmap_checksum(data))

    def pack(self) -> bytes:
        return _BATMAP.pack(
            BATMAP_COOKIE, self.batmap_offset, self.batmap_size, self.version, self.checksum,
            self.marker, b"",
        )

    @classmethod
    def unpack(cls, buf: bytes, *, base: int = 0, path: str | None = None) -> BatmapHeader:
        if len(buf) < 512:
            raise VhdFormatError(
                "batmap header truncated", field="batmap", offset=base, path=path
            )
        cookie, off, size, version, csum, marker, _ = _BATMAP.unpack(buf[:512])
        _check_cookie(cookie, BATMAP_COOKIE, "batmap.cookie", base, path)
        return cls(off, size, csum, version, marker)

    def verify(self, data: bytes, *, base: int = 0, path: str | None = None) -> None:
        want = batmap_checksum(data)
        if want != self.checksum:
            raise VhdFormatError(
                f"batmap checksum {self.checksum:#010x} != computed {want:#010x}",
                field="batmap.checksum", offset=base + 24, path=path,
            )


def bat_unpack(buf: bytes, entries: int) -> array[int]:
    """BAT bytes (big-endian u32 sector offsets) to an array of host integers."""
    bat = array("I")
    bat.frombytes(buf[: entries * 4])
    if sys.byteorder == "little":
        bat.byteswap()
    return bat


def bat_pack(bat: array[int]) -> bytes:
    out = array("I", bat)
    if sys.byteorder == "little":
        out.byteswap()
    return out.tobytes()


def sectors_for(nbytes: int) -> int:
    """Sectors needed to hold nbytes (at least one, as blktap rounds)."""
    return max(1, -(-nbytes // SECTOR))


def bitmap_bytes(block_size: int) -> int:
    """Size on disk of a block's sector bitmap (padded to a sector)."""
    return sectors_for(block_size // SECTOR // 8) * SECTOR
