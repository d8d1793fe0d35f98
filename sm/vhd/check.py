"""Consistency check of one image (and its parent link): returns problems, [] when clean."""

from __future__ import annotations

from .backing import DEFAULT_STORAGE, Storage
from .chain import find_parent
from .errors import VhdError
from .image import Image
from .layout import bat_problems, metadata_extents
from .records import SECTOR, UNUSED, DiskType, DynamicHeader, Footer


def check(path: str, *, bitmaps: bool = False, parents: bool = True,
          storage: Storage | None = None) -> list[str]:
    st = storage or DEFAULT_STORAGE
    problems: list[str] = []
    try:
        img = Image.open(path, storage=st, lenient=True)
    except (VhdError, OSError) as err:
        return [str(err)]
    try:
        if img.batmap_error is not None:
            problems.append(str(img.batmap_error))
        _check_footers(img, problems)
        if img.header is not None:
            _check_blocks(img, problems, bitmaps)
        if parents and img.disk_type == DiskType.DIFFERENCING:
            _check_parent(img, st, problems)
    finally:
        img.close()
    return problems


def _check_footers(img: Image, problems: list[str]) -> None:
    b = img.backing
    if img.header is None:
        return
    for where, off in (("footer copy", 0), ("trailing footer", img.eod)):
        try:
            f = Footer.unpack(b.pread(SECTOR, off), base=off, path=img.path)
        except VhdError as err:
            problems.append(f"{where}: {err}")
            continue
        if f != img.footer:
            problems.append(f"{img.path}: {where} at {off} disagrees with the primary footer")
    try:
        DynamicHeader.unpack(b.pread(1024, img.footer.data_offset),
                             base=img.footer.data_offset, path=img.path)
    except VhdError as err:
        problems.append(str(err))


def _check_blocks(img: Image, problems: list[str], bitmaps: bool) -> None:
    hdr = img.header
    assert hdr is not None
    bmx = None
    if img.batmap_hdr is not None:
        bmx = (img.batmap_hdr_off,
               img.batmap_hdr.batmap_offset + img.batmap_hdr.batmap_size * SECTOR)
    extents = metadata_extents(img.footer.data_offset, hdr, bmx)
    cap = img.backing.capacity()
    limit = cap if cap is not None else img.backing.size()
    blocks = [i for i, e in enumerate(img.bat) if e != UNUSED]
    for name, start, end in extents:
        for other, ostart, oend in extents:
            if (name < other) and start < oend and ostart < end:
                problems.append(f"{img.path}: {name} [{start},{end}) overlaps {other}")
    for blk, _, what in bat_problems(extents, img.bat, img.block_size, limit):
        problems.append(f"{img.path}: bat[{blk}]: {what}")
    if img.batmap is not None:
        for blk in range(len(img.bat)):
            if img.batmap[blk // 8] & (0x80 >> (blk % 8)):
                if img.bat[blk] == UNUSED:
                    problems.append(f"{img.path}: batmap marks unallocated block {blk} full")
                elif not img.full(img.bitmap(blk)):
                    problems.append(f"{img.path}: batmap marks block {blk} full but its "
                                    f"bitmap is not")
    if bitmaps:
        for blk in blocks:
            # bits past the virtual size (qemu sets them in the last block) mean nothing
            bits = img.bitmap(blk)
            if img.batmap is not None and img.full(bits) and not (
                    img.batmap[blk // 8] & (0x80 >> (blk % 8))):
                problems.append(f"{img.path}: block {blk} is full but its batmap bit is clear")


def _check_parent(img: Image, st: Storage, problems: list[str]) -> None:
    try:
        ppath = find_parent(img, st)
        parent = Image.open(ppath, storage=st)
    except (VhdError, OSError) as err:
        problems.append(f"parent: {err}")
        return
    try:
        assert img.header is not None
        if parent.footer.uuid != img.header.parent_uuid:
            problems.append(f"{img.path}: parent uuid {img.header.parent_uuid} != "
                            f"{parent.footer.uuid} of {ppath}")
        if parent.block_size != img.block_size and parent.header is not None:
            problems.append(f"{img.path}: block size differs from the parent's")
    finally:
        parent.close()
