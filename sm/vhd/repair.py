"""Explicit repair of what a crash can leave behind: a bad footer or footer copy, a stale
batmap. Writable opens refuse such files; this is the one entry point that writes to them."""

from __future__ import annotations

import logging

from .backing import DEFAULT_STORAGE, Storage
from .check import check
from .errors import VhdError, VhdFormatError
from .image import Image
from .layout import bat_problems, metadata_extents
from .records import SECTOR, UNUSED, BatmapHeader, Footer

log = logging.getLogger(__name__)


def repair(path: str, *, storage: Storage | None = None) -> list[str]:
    """Rewrite a bad trailing footer from the copy at 0 (or the copy from the trailing footer)
    and recompute the batmap from the bitmaps; returns what was done ([] when nothing was
    needed). Raises VhdError, writing nothing, for damage it cannot safely fix (header, BAT,
    both footers); raises after its fixes if problems remain."""
    st = storage or DEFAULT_STORAGE
    img = Image.open(path, writable=True, storage=st, lenient=True)
    done: list[str] = []
    try:
        if img.header is None:
            return []
        _refuse_bad_bat(img)
        _repair_footers(img, done)
        _repair_batmap(img, done)
        if done:
            img.flush()
    finally:
        img.close()
    for what in done:
        log.warning("%s: repair: %s", path, what)
    left = check(path, bitmaps=True, parents=False, storage=st, leaks=False)
    if left:
        raise VhdError(f"not repairable: {'; '.join(left)}", path=path)
    return done


def _refuse_bad_bat(img: Image) -> None:
    hdr = img.header
    assert hdr is not None
    bmx = None
    if img.batmap_hdr is not None:
        bmx = (img.batmap_hdr_off,
               img.batmap_hdr.batmap_offset + img.batmap_hdr.batmap_size * SECTOR)
    cap = img.backing.capacity()
    limit = cap if cap is not None else img.backing.size()
    extents = metadata_extents(img.footer.data_offset, hdr, bmx)
    for name, start, end in extents:
        for other, ostart, oend in extents:
            if name < other and start < oend and ostart < end:
                raise VhdFormatError(f"not repairable: {name} overlaps {other}", field=name,
                                     offset=start, path=img.path)
    for blk, _, what in bat_problems(extents, img.bat, img.block_size, limit)[:1]:
        raise VhdFormatError(f"not repairable: bat[{blk}]: {what}", field=f"bat[{blk}]",
                             offset=hdr.table_offset + 4 * blk, path=img.path)


def _read_footer(img: Image, off: int) -> Footer | None:
    try:
        f = Footer.unpack(img.backing.pread(SECTOR, off), base=off, path=img.path)
    except VhdFormatError:
        return None
    return f if f.disk_type == img.disk_type else None


def _repair_footers(img: Image, done: list[str]) -> None:
    # img.footer is the trailing footer when it is good, else the good copy at 0
    copy, tail = _read_footer(img, 0), _read_footer(img, img.eod)
    raw = img.footer.pack()
    if tail is None:
        img.backing.pwrite(raw, img.eod)
        done.append(f"rewrote the trailing footer at {img.eod} from the copy at 0")
    if copy != img.footer:
        img.backing.pwrite(raw, 0)
        done.append("rewrote the footer copy at 0 from the trailing footer")


def _repair_batmap(img: Image, done: list[str]) -> None:
    if img.batmap is None or img.batmap_hdr is None:
        return
    want = bytearray(len(img.batmap))
    for blk, entry in enumerate(img.bat):
        if entry != UNUSED and blk // 8 < len(want) and img.full(img.bitmap(blk)):
            want[blk // 8] |= 0x80 >> (blk % 8)
    if want == img.batmap and img.batmap_error is None:
        return
    hdr = BatmapHeader.for_map(img.batmap_hdr.batmap_offset, bytes(want))
    img.backing.pwrite(bytes(want), hdr.batmap_offset)
    img.backing.pwrite(hdr.pack(), img.batmap_hdr_off)
    img.batmap, img.batmap_hdr, img.batmap_error = want, hdr, None
    done.append("recomputed the batmap from the block bitmaps")
