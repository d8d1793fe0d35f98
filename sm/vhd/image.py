"""One VHD image: open and validate, block lookup, block allocation, bitmap/BAT/batmap/footer
updates. Crash-safety order for a new block: block (bitmap + data) and the trailing footer
beyond it, then the BAT entry, then the batmap."""

from __future__ import annotations

import struct
import threading
from array import array
from collections.abc import Mapping

from sm.log import get_logger

from . import bitmap as bm
from .backing import DEFAULT_STORAGE, Backing, Storage
from .errors import VhdError, VhdFormatError, VhdNoSpaceError
from .layout import (
    BAT_PER_SECTOR,
    bat_problems,
    batmap_sectors,
    end_of_data,
    metadata_extents,
    next_block_start,
)
from .records import (
    BATMAP_COOKIE,
    CREATOR_TAP,
    FILE_VERSION,
    NO_OFFSET,
    PLAT_NONE,
    SECTOR,
    UNUSED,
    BatmapHeader,
    DiskType,
    DynamicHeader,
    Footer,
    bat_pack,
    bat_unpack,
    bitmap_bytes,
)

log = get_logger(__name__)


def _reason(err: VhdFormatError, path: str) -> str:
    return str(err).removeprefix(f"{path}: ")


def has_batmap_by_creator(footer: Footer) -> bool:
    return footer.creator_app == CREATOR_TAP and footer.creator_version >= 0x00010002


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
        self._clean_tail = False

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
            return cls._load(path, backing, (writable or strict) and not lenient, writable,
                             lenient)
        except BaseException:
            backing.close()
            raise

    @classmethod
    def _load(cls, path: str, backing: Backing, strict: bool, writable: bool,
              lenient: bool) -> Image:
        head = backing.pread(SECTOR, 0)
        copy_err: VhdFormatError | None = None
        copy: Footer | None = None
        try:
            copy = Footer.unpack(head, base=0, path=path)
        except VhdFormatError as err:
            copy_err = err
        if copy is not None and copy.disk_type != DiskType.FIXED:
            img = cls(path, backing, copy, writable)
            img.lenient = lenient
            img._load_dynamic(copy, copy_is_good=True, strict=strict)
            return img
        size = backing.capacity() or backing.size()
        if size < SECTOR:
            raise VhdFormatError(f"file too small ({size} bytes)", field="footer", offset=0,
                                 path=path)
        tail = Footer.unpack(backing.pread(SECTOR, size - SECTOR), base=size - SECTOR,
                             path=path) if copy_err is None else cls._try_tail(backing, size, path)
        if tail is None:
            assert copy_err is not None
            raise copy_err
        img = cls(path, backing, tail, writable)
        img.lenient = lenient
        if tail.disk_type == DiskType.FIXED:
            if tail.current_size + SECTOR > size:
                raise VhdFormatError(
                    f"fixed disk truncated: {size} bytes for {tail.current_size} of data",
                    field="footer.current_size", offset=size - SECTOR + 48, path=path)
            img.eod = tail.current_size
            return img
        if copy_err is None:  # a valid footer at 0 saying "fixed" before dynamic data
            copy_err = VhdFormatError(f"footer copy says disk type {DiskType.FIXED}, the "
                                      f"trailing footer {tail.disk_type}",
                                      field="footer copy.disk_type", offset=60, path=path)
        if strict:
            raise VhdFormatError(f"footer copy at offset 0 is bad ({_reason(copy_err, path)}); "
                                 "`repair` rewrites it from the trailing footer",
                                 field="footer copy", offset=0, path=path) from copy_err
        log.warning("%s: footer copy at offset 0 is bad, using the trailing footer", path)
        img._load_dynamic(tail, copy_is_good=False, strict=strict)
        return img

    @staticmethod
    def _try_tail(backing: Backing, size: int, path: str) -> Footer | None:
        try:
            return Footer.unpack(backing.pread(SECTOR, size - SECTOR), base=size - SECTOR,
                                 path=path)
        except VhdFormatError:
            return None

    def _within(self, off: int, n: int, field: str, at: int, what: str) -> None:
        """Refuse a region [off, off+n) that an on-disk field puts beyond the image (checked
        before anything of that size is read or allocated)."""
        limit = self.limit
        if off < 0 or n < 0 or off + n > limit:
            raise VhdFormatError(f"{what} [{off},{off + n}) lies beyond the end of the image "
                                 f"({limit} bytes)", field=field, offset=at, path=self.path)

    def _load_dynamic(self, footer: Footer, *, copy_is_good: bool, strict: bool) -> None:
        path, b = self.path, self.backing
        fbase = 0 if copy_is_good else self.limit - SECTOR
        if footer.data_offset == NO_OFFSET or footer.data_offset % SECTOR or \
                footer.data_offset < SECTOR:
            raise VhdFormatError(f"bad data offset {footer.data_offset:#x}",
                                 field="footer.data_offset", offset=fbase + 16, path=path)
        self._within(footer.data_offset, 1024, "footer.data_offset", fbase + 16,
                     "dynamic header")
        hdr = DynamicHeader.unpack(b.pread(1024, footer.data_offset), base=footer.data_offset,
                                   path=path)
        base = footer.data_offset
        if hdr.version != FILE_VERSION:
            raise VhdFormatError(f"unknown header version {hdr.version:#x}",
                                 field="header.version", offset=base + 24, path=path)
        need = -(-footer.current_size // hdr.block_size)
        if hdr.max_table_entries < need:
            raise VhdFormatError(
                f"BAT has {hdr.max_table_entries} entries, {need} needed for the virtual size",
                field="header.max_table_entries", offset=base + 28, path=path)
        if footer.disk_type == DiskType.DIFFERENCING and hdr.parent_uuid is None:
            raise VhdFormatError("differencing disk without parent uuid",
                                 field="header.parent_uuid", offset=base + 40, path=path)
        nbat = hdr.max_table_entries * 4
        if nbat > self.limit:
            raise VhdFormatError(f"a BAT of {hdr.max_table_entries} entries cannot fit in an "
                                 f"image of {self.limit} bytes",
                                 field="header.max_table_entries", offset=base + 28, path=path)
        self._within(hdr.table_offset, nbat, "header.table_offset", base + 16, "BAT")
        for i, loc in enumerate(hdr.locators):
            if loc.code != PLAT_NONE and loc.data_offset:
                at = base + 576 + 24 * i
                self._within(loc.data_offset, loc.space_bytes,
                             f"header.locators[{i}].data_offset", at + 16,
                             f"parent locator {i} data")
                if loc.data_length > loc.space_bytes:
                    raise VhdFormatError(
                        f"parent locator {i} holds {loc.data_length} bytes in a space of "
                        f"{loc.space_bytes}", field=f"header.locators[{i}].data_length",
                        offset=at + 8, path=path)
        raw = b.pread(nbat, hdr.table_offset)
        if len(raw) < nbat:
            raise VhdFormatError("BAT truncated", field="bat", offset=hdr.table_offset, path=path)
        self.header = hdr
        self.bat = bat_unpack(raw, hdr.max_table_entries)
        self._load_batmap(footer)
        extents = self.extents()
        self.eod = end_of_data(extents, self.bat, hdr.block_size)
        size = self.limit
        if not self.lenient:
            for blk, _, what in bat_problems(extents, self.bat, hdr.block_size, size)[:1]:
                raise VhdFormatError(f"bat[{blk}]: {what}", field=f"bat[{blk}]",
                                     offset=hdr.table_offset + 4 * blk, path=path)
        if size < self.eod:
            raise VhdFormatError(f"image truncated: data ends at {self.eod}, size is {size}",
                                 field="bat", offset=hdr.table_offset, path=path)
        self._clean_tail = b.capacity() is None and size <= self.eod + SECTOR
        try:
            tail = Footer.unpack(b.pread(SECTOR, self.eod), base=self.eod, path=path)
            if tail.disk_type != footer.disk_type:
                raise VhdFormatError(f"trailing footer says disk type {tail.disk_type}, the "
                                     f"copy {footer.disk_type}", field="footer.disk_type",
                                     offset=self.eod + 60, path=path)
            if tail.data_offset != footer.data_offset:
                raise VhdFormatError(f"trailing footer puts the header at {tail.data_offset}, "
                                     f"the copy at {footer.data_offset}",
                                     field="footer.data_offset", offset=self.eod + 16, path=path)
            if -(-tail.current_size // hdr.block_size) > hdr.max_table_entries:
                raise VhdFormatError(f"trailing footer's size {tail.current_size} needs more "
                                     f"than the {hdr.max_table_entries} BAT entries",
                                     field="footer.current_size", offset=self.eod + 48,
                                     path=path)
        except VhdFormatError as err:
            if not copy_is_good:
                raise
            if strict:
                raise VhdFormatError(f"trailing footer at {self.eod} is bad ({_reason(err, path)})"
                                     "; `repair` rewrites it from the copy at offset 0",
                                     field="footer", offset=self.eod, path=path) from err
            log.warning("%s: trailing footer bad (%s); using the copy at offset 0", path, err)
            return
        if strict and copy_is_good and tail != footer:
            raise VhdFormatError("footer copy at offset 0 disagrees with the trailing footer; "
                                 "`repair` rewrites it from the trailing footer",
                                 field="footer copy", offset=0, path=path)
        self.footer = tail

    def _load_batmap(self, footer: Footer) -> None:
        assert self.header is not None
        hdr = self.header
        off = hdr.table_offset + -(-hdr.max_table_entries * 4 // SECTOR) * SECTOR
        raw = self.backing.pread(SECTOR, off)
        if raw[:8] != BATMAP_COOKIE:
            if has_batmap_by_creator(footer):
                raise VhdFormatError("batmap missing (tap >= 1.2 requires it)",
                                     field="batmap.cookie", offset=off, path=self.path)
            return
        bh = BatmapHeader.unpack(raw, base=off, path=self.path)
        bad: VhdFormatError | None = None
        try:
            self._check_batmap_place(bh, off, footer)
        except VhdFormatError as err:
            if not self.lenient:
                raise
            # check reports it; repair rewrites the map where blktap puts it, right after
            bad = err
            bh = BatmapHeader(off + SECTOR, batmap_sectors(hdr.max_table_entries), 0)
            self._within(bh.batmap_offset, bh.batmap_size * SECTOR, "batmap.batmap_size",
                         off + 16, "batmap")
        data = self.backing.pread(bh.batmap_size * SECTOR, bh.batmap_offset)
        try:
            bh.verify(data, base=off, path=self.path)
            if bad is not None:
                raise bad
        except VhdFormatError as err:
            if not self.lenient:
                raise
            self.batmap_error = bad or err
        self.batmap_hdr_off, self.batmap_hdr, self.batmap = off, bh, bytearray(data)

    def _check_batmap_place(self, bh: BatmapHeader, off: int, footer: Footer) -> None:
        assert self.header is not None
        if bh.batmap_size < batmap_sectors(self.header.max_table_entries) and \
                has_batmap_by_creator(footer):
            raise VhdFormatError(f"batmap too small ({bh.batmap_size} sectors)",
                                 field="batmap.batmap_size", offset=off + 16, path=self.path)
        if bh.batmap_offset < off + SECTOR or bh.batmap_offset % SECTOR:
            raise VhdFormatError(f"batmap offset {bh.batmap_offset} is not a sector after its "
                                 f"header at {off}", field="batmap.batmap_offset",
                                 offset=off + 8, path=self.path)
        self._within(bh.batmap_offset, 0, "batmap.batmap_offset", off + 8, "batmap")
        self._within(bh.batmap_offset, bh.batmap_size * SECTOR, "batmap.batmap_size",
                     off + 16, "batmap")

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
        elif self.disk_type == DiskType.DYNAMIC and not self._clean_tail:
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
