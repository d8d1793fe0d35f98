"""One VHD image: open (the footer choice and validation: `sm.vhd.load`), block lookup, block
allocation, bitmap/BAT/batmap/footer updates. Crash-safety order for a new block: block
(bitmap + data) and the trailing footer beyond it, then the BAT entry, then the batmap."""

from __future__ import annotations

import struct
import threading
from array import array
from collections.abc import Mapping

from . import bitmap as bm
from . import load
from .backing import DEFAULT_STORAGE, Backing, Storage
from .errors import VhdError, VhdFormatError, VhdNoSpaceError
from .layout import BAT_PER_SECTOR, metadata_extents, next_block_start
from .records import (
    SECTOR,
    UNUSED,
    BatmapHeader,
    DiskType,
    DynamicHeader,
    Footer,
    bat_pack,
    bitmap_bytes,
)


class Image:
    """An opened VHD file. Metadata (BAT, batmap, bitmaps) is cached; updates hold ``lock``."""

    def __init__(self, path: str, backing: Backing, footer: Footer, writable: bool) -> None:
        self.path = path
        self.backing = backing
        self.footer = footer
        self.writable = writable
        self.lenient = False
        self.batmap_error: VhdFormatError | None = None
        self.header: DynamicHeader | None = None
        self.bat: array[int] = array("I")
        self.batmap_hdr_off = 0
        self.batmap: bytearray | None = None
        self.batmap_hdr: BatmapHeader | None = None
        self.eod = 0
        self.lock = threading.RLock()
        self._bitmaps: dict[int, int] = {}
        self.clean_tail = False
        """Nothing but a footer lies past the end of data (a new block needs no zeroing)."""

    # -- opening -----------------------------------------------------------------------
    @classmethod
    def open(cls, path: str, *, writable: bool = False, storage: Storage | None = None,
             strict: bool = False, lenient: bool = False) -> Image:
        """Open and validate; nothing is written while loading. Any open refuses BAT entries
        overlapping metadata or each other. A writable or ``strict`` open also refuses a
        damaged footer or footer copy (a read-only one falls back to the good copy).
        ``lenient`` (check and repair only) loads despite both and despite a bad batmap
        checksum (kept in ``batmap_error``)."""
        backing = (storage or DEFAULT_STORAGE).open(path, writable)
        try:
            return load.load(cls, path, backing, (writable or strict) and not lenient,
                             writable, lenient)
        except BaseException:
            backing.close()
            raise

    @property
    def limit(self) -> int:
        """Bytes the image may use: the backing's fixed capacity, else its current size."""
        cap = self.backing.capacity()
        return cap if cap is not None else self.backing.size()

    def extents(self) -> list[tuple[str, int, int]]:
        """(name, start, end) of every metadata region of a dynamic image."""
        assert self.header is not None
        bmx = None
        if self.batmap_hdr is not None:
            bmx = (self.batmap_hdr_off,
                   self.batmap_hdr.batmap_offset + self.batmap_hdr.batmap_size * SECTOR)
        return metadata_extents(self.footer.data_offset, self.header, bmx)

    # -- queries -----------------------------------------------------------------------
    @property
    def disk_type(self) -> DiskType:
        return self.footer.disk_type

    @property
    def size(self) -> int:
        return self.footer.current_size

    @property
    def block_size(self) -> int:
        return self.header.block_size if self.header else 2 * 1024 * 1024

    @property
    def spb(self) -> int:
        return self.block_size // SECTOR

    @property
    def bm_size(self) -> int:
        return bitmap_bytes(self.block_size)

    @property
    def physical_size(self) -> int:
        return self.eod + SECTOR

    def allocated_blocks(self) -> int:
        if self.header is None:
            return -(-self.size // self.block_size)
        return len(self.bat) - self.bat.count(UNUSED)

    def data_offset(self, blk: int) -> int | None:
        """Byte offset of block ``blk``'s data, or None when not allocated here."""
        if self.header is None:
            return blk * self.block_size
        if blk >= len(self.bat):
            return None
        entry = self.bat[blk]
        if entry == UNUSED:
            return None
        return entry * SECTOR + self.bm_size

    def bitmap(self, blk: int) -> int:
        """Sectors of block ``blk`` present in this image (bit i = sector i)."""
        if self.header is None:
            return bm.mask(0, self.spb)
        cached = self._bitmaps.get(blk)
        if cached is not None:
            return cached
        off = self.data_offset(blk)
        if off is None:
            return 0
        bits = bm.from_disk(self.backing.pread(self.bm_size, off - self.bm_size), self.spb)
        self._bitmaps[blk] = bits
        return bits

    def known_full(self, blk: int) -> bool:
        """Block ``blk`` is known to be full without reading its bitmap (batmap bit or cached
        bitmap); a hint only: False may still be a full block."""
        if self.header is None:
            return True
        bits = self._bitmaps.get(blk)
        if bits is not None:
            return self.full(bits)
        byte = blk >> 3
        return self.batmap is not None and byte < len(self.batmap) and bool(
            self.batmap[byte] & (0x80 >> (blk & 7)))

    def full(self, bits: int) -> bool:
        return bits == bm.mask(0, self.spb)

    # -- updates -----------------------------------------------------------------------
    def _require_writable(self) -> None:
        if not self.writable:
            raise VhdError("image is opened read-only", path=self.path)

    def write_footers(self, footer: Footer) -> None:
        """Rewrite the trailing footer, then the copy at 0 (dynamic disks)."""
        self._require_writable()
        raw = footer.pack()
        self.backing.pwrite(raw, self.eod)
        if self.header is not None:
            self.backing.pwrite(raw, 0)
        self.footer = footer

    def write_header(self, header: DynamicHeader) -> None:
        self._require_writable()
        self.backing.pwrite(header.pack(), self.footer.data_offset)
        self.header = header

    def write_sectors(self, sector: int, data: bytes | bytearray | memoryview) -> None:
        """Write whole sectors at virtual ``sector`` (len(data) % 512 == 0)."""
        self._require_writable()
        view = memoryview(data)
        spb = self.spb
        with self.lock:
            while view:
                blk, s0 = divmod(sector, spb)
                n = min(spb - s0, len(view) // SECTOR)
                piece = view[: n * SECTOR]
                off = self.data_offset(blk)
                if off is None:
                    self._allocate(blk, bm.mask(s0, n), [(s0, piece)])
                else:
                    self.backing.pwrite(piece, off + s0 * SECTOR)
                    if self.header is not None:
                        self.set_bits(blk, bm.mask(s0, n))
                view = view[n * SECTOR:]
                sector += n

    def set_bits(self, blk: int, bits: int) -> None:
        """OR ``bits`` into the on-disk bitmap of an allocated block (one write)."""
        old = self.bitmap(blk)
        new = old | bits
        if new == old:
            return
        off = self.data_offset(blk)
        assert off is not None
        self.backing.pwrite(bm.to_disk(new, self.bm_size), off - self.bm_size)
        self._bitmaps[blk] = new
        if self.full(new):
            self._set_batmap(blk)

    def publish(self, new: Mapping[int, int]) -> None:
        """Point the BAT at blocks already written in place (block -> bitmap offset, beyond
        the end of data, each followed by a footer where `layout.footer_blocks` says) with one
        write of whole BAT sectors, so it needs no read around it and any subset of its
        sectors that reaches the disk leaves a valid image. The caller has made the blocks
        durable first and holds the lock."""
        assert self.header is not None
        if not new:
            return
        for blk, start in new.items():
            self.bat[blk] = start // SECTOR
        lo, hi = min(new), max(new) + 1
        lo -= lo % BAT_PER_SECTOR
        hi = min(len(self.bat), -(-hi // BAT_PER_SECTOR) * BAT_PER_SECTOR)
        self.backing.pwrite(bat_pack(self.bat[lo:hi]), self.header.table_offset + 4 * lo)
        self.eod = max(self.eod, max(new.values()) + self.bm_size + self.block_size)

    def _allocate(self, blk: int, bits: int, pieces: list[tuple[int, memoryview]]) -> None:
        assert self.header is not None
        if blk >= len(self.bat):
            raise VhdError(f"block {blk} beyond the BAT", path=self.path)
        bs, bms = self.block_size, self.bm_size
        start = next_block_start(self.eod, bs)
        new_eod = start + bms + bs
        cap = self.backing.capacity()
        if cap is not None and new_eod + SECTOR > cap:
            raise VhdNoSpaceError(f"no room for block {blk}: needs {new_eod + SECTOR} bytes of "
                                  f"{cap}", path=self.path)
        b = self.backing
        bmap = bm.to_disk(bits, bms)
        if len(pieces) == 1 and pieces[0][0] == 0 and len(pieces[0][1]) == bs:
            b.pwrite(bmap, start)
            b.pwrite(pieces[0][1], start + bms)
        elif self.disk_type == DiskType.DYNAMIC and not self.clean_tail:
            # stale bytes may lie here and readers that ignore bitmaps (qemu) would see them
            buf = bytearray(bs)
            for s0, piece in pieces:
                buf[s0 * SECTOR: s0 * SECTOR + len(piece)] = piece
            b.pwrite(bmap + bytes(buf), start)
        else:
            b.pwrite(bmap, start)
            for s0, piece in pieces:
                b.pwrite(piece, start + bms + s0 * SECTOR)
        b.pwrite(self.footer.pack(), new_eod)
        b.pwrite(struct.pack(">I", start // SECTOR), self.header.table_offset + 4 * blk)
        self.bat[blk] = start // SECTOR
        self.eod = new_eod
        self._bitmaps[blk] = bits
        if self.full(bits):
            self._set_batmap(blk)

    def _set_batmap(self, blk: int) -> None:
        if self.batmap is None or self.batmap_hdr is None:
            return
        byte, bit = divmod(blk, 8)
        if byte >= len(self.batmap):
            return
        self.batmap[byte] |= 0x80 >> bit
        hdr = BatmapHeader.for_map(self.batmap_hdr.batmap_offset, bytes(self.batmap))
        self.backing.pwrite(self.batmap[byte:byte + 1], self.batmap_hdr.batmap_offset + byte)
        self.backing.pwrite(hdr.pack(), self.batmap_hdr_off)
        self.batmap_hdr = hdr

    def flush(self) -> None:
        if self.writable:
            self.backing.fsync()

    def close(self) -> None:
        self.backing.close()
