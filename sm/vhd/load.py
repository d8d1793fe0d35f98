"""Opening a VHD image: which footer to trust (the copy at offset 0 or the trailing one), and
the checks of the dynamic header, the parent locators, the BAT and the batmap before anything
is read or allocated through them. `Image.open` (sm.vhd.image) calls `load`; nothing is
written while loading. Every refusal is a VhdFormatError naming the field and its offset
(what each check verifies: docs/vhd.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sm.log import get_logger

from .errors import VhdFormatError
from .layout import bat_problems, batmap_sectors, end_of_data
from .records import (
    BATMAP_COOKIE,
    CREATOR_TAP,
    FILE_VERSION,
    NO_OFFSET,
    PLAT_NONE,
    SECTOR,
    BatmapHeader,
    DiskType,
    DynamicHeader,
    Footer,
    bat_unpack,
)

if TYPE_CHECKING:
    from .backing import Backing
    from .image import Image

__all__ = ["has_batmap_by_creator", "load", "within"]

log = get_logger(__name__)


def _reason(err: VhdFormatError, path: str) -> str:
    return str(err).removeprefix(f"{path}: ")


def has_batmap_by_creator(footer: Footer) -> bool:
    """blktap 1.2 and later always write a batmap."""
    return footer.creator_app == CREATOR_TAP and footer.creator_version >= 0x00010002


def load(cls: type[Image], path: str, backing: Backing, strict: bool, writable: bool,
         lenient: bool) -> Image:
    """The image at `path` opened as `cls` (see `Image.open` for `strict` and `lenient`)."""
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
        _load_dynamic(img, copy, copy_is_good=True, strict=strict)
        return img
    size = backing.capacity() or backing.size()
    if size < SECTOR:
        raise VhdFormatError(f"file too small ({size} bytes)", field="footer", offset=0,
                             path=path)
    tail = Footer.unpack(backing.pread(SECTOR, size - SECTOR), base=size - SECTOR,
                         path=path) if copy_err is None else _try_tail(backing, size, path)
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
    _load_dynamic(img, tail, copy_is_good=False, strict=strict)
    return img


def _try_tail(backing: Backing, size: int, path: str) -> Footer | None:
    try:
        return Footer.unpack(backing.pread(SECTOR, size - SECTOR), base=size - SECTOR,
                             path=path)
    except VhdFormatError:
        return None


def within(img: Image, off: int, n: int, field: str, at: int, what: str) -> None:
    """Refuse a region [off, off+n) that an on-disk field puts beyond the image (checked
    before anything of that size is read or allocated)."""
    limit = img.limit
    if off < 0 or n < 0 or off + n > limit:
        raise VhdFormatError(f"{what} [{off},{off + n}) lies beyond the end of the image "
                             f"({limit} bytes)", field=field, offset=at, path=img.path)


def _load_dynamic(img: Image, footer: Footer, *, copy_is_good: bool, strict: bool) -> None:
    path, b = img.path, img.backing
    fbase = 0 if copy_is_good else img.limit - SECTOR
    if footer.data_offset == NO_OFFSET or footer.data_offset % SECTOR or \
            footer.data_offset < SECTOR:
        raise VhdFormatError(f"bad data offset {footer.data_offset:#x}",
                             field="footer.data_offset", offset=fbase + 16, path=path)
    within(img, footer.data_offset, 1024, "footer.data_offset", fbase + 16, "dynamic header")
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
    if nbat > img.limit:
        raise VhdFormatError(f"a BAT of {hdr.max_table_entries} entries cannot fit in an "
                             f"image of {img.limit} bytes",
                             field="header.max_table_entries", offset=base + 28, path=path)
    within(img, hdr.table_offset, nbat, "header.table_offset", base + 16, "BAT")
    for i, loc in enumerate(hdr.locators):
        if loc.code != PLAT_NONE and loc.data_offset:
            at = base + 576 + 24 * i
            within(img, loc.data_offset, loc.space_bytes, f"header.locators[{i}].data_offset",
                   at + 16, f"parent locator {i} data")
            if loc.data_length > loc.space_bytes:
                raise VhdFormatError(
                    f"parent locator {i} holds {loc.data_length} bytes in a space of "
                    f"{loc.space_bytes}", field=f"header.locators[{i}].data_length",
                    offset=at + 8, path=path)
    raw = b.pread(nbat, hdr.table_offset)
    if len(raw) < nbat:
        raise VhdFormatError("BAT truncated", field="bat", offset=hdr.table_offset, path=path)
    img.header = hdr
    img.bat = bat_unpack(raw, hdr.max_table_entries)
    _load_batmap(img, footer)
    extents = img.extents()
    img.eod = end_of_data(extents, img.bat, hdr.block_size)
    size = img.limit
    if not img.lenient:
        for blk, _, what in bat_problems(extents, img.bat, hdr.block_size, size)[:1]:
            raise VhdFormatError(f"bat[{blk}]: {what}", field=f"bat[{blk}]",
                                 offset=hdr.table_offset + 4 * blk, path=path)
    if size < img.eod:
        raise VhdFormatError(f"image truncated: data ends at {img.eod}, size is {size}",
                             field="bat", offset=hdr.table_offset, path=path)
    img.clean_tail = b.capacity() is None and size <= img.eod + SECTOR
    try:
        tail = Footer.unpack(b.pread(SECTOR, img.eod), base=img.eod, path=path)
        if tail.disk_type != footer.disk_type:
            raise VhdFormatError(f"trailing footer says disk type {tail.disk_type}, the "
                                 f"copy {footer.disk_type}", field="footer.disk_type",
                                 offset=img.eod + 60, path=path)
        if tail.data_offset != footer.data_offset:
            raise VhdFormatError(f"trailing footer puts the header at {tail.data_offset}, "
                                 f"the copy at {footer.data_offset}",
                                 field="footer.data_offset", offset=img.eod + 16, path=path)
        if -(-tail.current_size // hdr.block_size) > hdr.max_table_entries:
            raise VhdFormatError(f"trailing footer's size {tail.current_size} needs more "
                                 f"than the {hdr.max_table_entries} BAT entries",
                                 field="footer.current_size", offset=img.eod + 48,
                                 path=path)
    except VhdFormatError as err:
        if not copy_is_good:
            raise
        if strict:
            raise VhdFormatError(f"trailing footer at {img.eod} is bad ({_reason(err, path)})"
                                 "; `repair` rewrites it from the copy at offset 0",
                                 field="footer", offset=img.eod, path=path) from err
        log.warning("%s: trailing footer bad (%s); using the copy at offset 0", path, err)
        return
    if strict and copy_is_good and tail != footer:
        raise VhdFormatError("footer copy at offset 0 disagrees with the trailing footer; "
                             "`repair` rewrites it from the trailing footer",
                             field="footer copy", offset=0, path=path)
    img.footer = tail


def _load_batmap(img: Image, footer: Footer) -> None:
    assert img.header is not None
    hdr = img.header
    off = hdr.table_offset + -(-hdr.max_table_entries * 4 // SECTOR) * SECTOR
    raw = img.backing.pread(SECTOR, off)
    if raw[:8] != BATMAP_COOKIE:
        if has_batmap_by_creator(footer):
            raise VhdFormatError("batmap missing (tap >= 1.2 requires it)",
                                 field="batmap.cookie", offset=off, path=img.path)
        return
    bh = BatmapHeader.unpack(raw, base=off, path=img.path)
    bad: VhdFormatError | None = None
    try:
        _check_batmap_place(img, bh, off, footer)
    except VhdFormatError as err:
        if not img.lenient:
            raise
        # check reports it; repair rewrites the map where blktap puts it, right after
        bad = err
        bh = BatmapHeader(off + SECTOR, batmap_sectors(hdr.max_table_entries), 0)
        within(img, bh.batmap_offset, bh.batmap_size * SECTOR, "batmap.batmap_size",
               off + 16, "batmap")
    data = img.backing.pread(bh.batmap_size * SECTOR, bh.batmap_offset)
    try:
        bh.verify(data, base=off, path=img.path)
        if bad is not None:
            raise bad
    except VhdFormatError as err:
        if not img.lenient:
            raise
        img.batmap_error = bad or err
    img.batmap_hdr_off, img.batmap_hdr, img.batmap = off, bh, bytearray(data)


def _check_batmap_place(img: Image, bh: BatmapHeader, off: int, footer: Footer) -> None:
    assert img.header is not None
    if bh.batmap_size < batmap_sectors(img.header.max_table_entries) and \
            has_batmap_by_creator(footer):
        raise VhdFormatError(f"batmap too small ({bh.batmap_size} sectors)",
                             field="batmap.batmap_size", offset=off + 16, path=img.path)
    if bh.batmap_offset < off + SECTOR or bh.batmap_offset % SECTOR:
        raise VhdFormatError(f"batmap offset {bh.batmap_offset} is not a sector after its "
                             f"header at {off}", field="batmap.batmap_offset",
                             offset=off + 8, path=img.path)
    within(img, bh.batmap_offset, 0, "batmap.batmap_offset", off + 8, "batmap")
    within(img, bh.batmap_offset, bh.batmap_size * SECTOR, "batmap.batmap_size",
           off + 16, "batmap")

