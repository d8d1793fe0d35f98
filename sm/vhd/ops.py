"""Image-level operations: create, snapshot, info, chain, resize, hidden, uuid, reparent
(coalesce lives in ``coalesce.py``)."""

from __future__ import annotations

import os
import time
import uuid as uuidlib
from collections.abc import Callable

from sm.log import get_logger

from .backing import DEFAULT_STORAGE, Storage
from .chain import VhdInfo, find_parent, image_info, open_images
from .errors import VhdChainError, VhdError, VhdNoSpaceError, VhdUnsupportedError
from .geometry import chs
from .image import Image
from .layout import ALIGN, bat_bytes, batmap_sectors, pad
from .records import (
    DEFAULT_BLOCK_SIZE,
    MAX_VIRTUAL_SIZE,
    PLAT_MACX,
    PLAT_W2KU,
    PLAT_W2RU,
    SECTOR,
    UNUSED,
    VHD_EPOCH,
    BatmapHeader,
    DiskType,
    DynamicHeader,
    Footer,
    ParentLocator,
    bat_pack,
)

log = get_logger(__name__)
Progress = Callable[[int, int], None]
LOCATOR_SPACE = 512


def now() -> int:
    return max(0, int(time.time()) - VHD_EPOCH) & 0xFFFFFFFF


def _limit(block_size: int) -> int:
    return MAX_VIRTUAL_SIZE * block_size // DEFAULT_BLOCK_SIZE


def _parent_refs(child: str, parent: str) -> tuple[str, bytes, bytes]:
    """(unicode name, MacX bytes, W2ku/W2ru bytes) as vhd-util snapshot writes them."""
    rel = os.path.relpath(os.path.abspath(parent), os.path.dirname(os.path.abspath(child)))
    rel = "./" + rel
    return (os.path.basename(parent), ("file://" + rel).encode("utf-8"),
            rel.replace("/", "\\").encode("utf-16-le"))


def _locators(child: str, parent: str, offsets: list[int]) -> tuple[
        str, tuple[ParentLocator, ...], list[tuple[int, bytes]]]:
    name, macx, win = _parent_refs(child, parent)
    if max(len(macx), len(win)) > LOCATOR_SPACE:
        raise VhdUnsupportedError(f"parent path too long for a locator: {parent}", path=child)
    datas = [(PLAT_MACX, macx), (PLAT_W2KU, win), (PLAT_W2RU, win)]
    locs = [ParentLocator(code, LOCATOR_SPACE, len(d), 0, off)
            for (code, d), off in zip(datas, offsets)]
    locs += [ParentLocator()] * (8 - len(locs))
    writes = [(off, d.ljust(LOCATOR_SPACE, b"\0")) for (_, d), off in zip(datas, offsets)]
    return name, tuple(locs), writes


def peek(path: str, storage: Storage | None = None) -> tuple[Footer, DynamicHeader | None]:
    """Footer (+ header) without reading the BAT; falls back to a full open."""
    st = storage or DEFAULT_STORAGE
    b = st.open(path, False)
    try:
        try:
            f = Footer.unpack(b.pread(SECTOR, 0), path=path)
            limit = b.capacity() or b.size()
            if f.disk_type != DiskType.FIXED and f.data_offset + 1024 <= limit:
                return f, DynamicHeader.unpack(b.pread(1024, f.data_offset), path=path,
                                               base=f.data_offset)
        except VhdError:
            pass
    finally:
        b.close()
    img = Image.open(path, storage=st)
    try:
        return img.footer, img.header
    finally:
        img.close()


def create(path: str, size: int, *, disk_type: DiskType = DiskType.DYNAMIC,
           parent: str | None = None, block_size: int = DEFAULT_BLOCK_SIZE,
           max_size: int | None = None, uuid: uuidlib.UUID | None = None, hidden: bool = False,
           storage: Storage | None = None) -> VhdInfo:
    st = storage or DEFAULT_STORAGE
    pfooter: Footer | None = None
    if parent is not None:
        disk_type = DiskType.DIFFERENCING
        pfooter, pheader = peek(parent, st)
        if pheader is not None:
            block_size = pheader.block_size
        if not size:
            size = pfooter.current_size
    elif disk_type == DiskType.DIFFERENCING:
        raise VhdError("a differencing disk needs a parent", path=path)
    size = pad(size)
    if block_size < 4096 or block_size & (block_size - 1):
        raise VhdUnsupportedError(f"block size {block_size} is not a power of two >= 4096",
                                  path=path)
    top = max(size, max_size or 0)
    if top > _limit(block_size):
        raise VhdUnsupportedError(f"size {top} exceeds the limit {_limit(block_size)}",
                                  path=path)
    uid = uuid or uuidlib.uuid4()
    ts = now()
    if disk_type == DiskType.FIXED:
        footer = Footer(DiskType.FIXED, size, uid, ts, original_size=size, geometry=chs(size),
                        hidden=int(hidden))
        with st.create(path, size + SECTOR) as b:
            if b.capacity() is None:
                b.truncate(size)
            b.pwrite(footer.pack(), size)
        return VhdInfo(path, DiskType.FIXED, size, uid, None, None, None, hidden, block_size,
                       -(-size // block_size), -(-size // block_size), size + SECTOR,
                       "tap", ts)
    entries = -(-top // block_size)
    table = 512 + 1024
    bh_off = table + bat_bytes(entries)
    map_off = bh_off + SECTOR
    map_len = batmap_sectors(entries) * SECTOR
    meta_end = map_off + map_len
    header = DynamicHeader(table, entries, block_size)
    writes: list[tuple[int, bytes]] = []
    parent_path = None
    if parent is not None:
        assert pfooter is not None
        offsets = [meta_end + i * LOCATOR_SPACE for i in range(3)]
        name, locs, writes = _locators(path, parent, offsets)
        meta_end = offsets[-1] + LOCATOR_SPACE
        header = header.replace(parent_uuid=pfooter.uuid, parent_timestamp=pfooter.timestamp,
                              parent_name=name, locators=locs)
        parent_path = os.path.abspath(parent)
    footer = Footer(disk_type, size, uid, ts, data_offset=512, original_size=size,
                    geometry=chs(size), hidden=int(hidden))
    fraw = footer.pack()
    bmap = bytes(map_len)
    buf = bytearray(meta_end + SECTOR)
    buf[0:512] = fraw
    buf[512:1536] = header.pack()
    buf[table:table + entries * 4] = b"\xff" * (entries * 4)
    buf[bh_off:map_off] = BatmapHeader.for_map(map_off, bmap).pack()
    for off, data in writes:
        buf[off:off + len(data)] = data
    buf[meta_end:] = fraw
    with st.create(path, len(buf)) as b:
        b.pwrite(buf, 0)
    return VhdInfo(path, disk_type, size, uid, pfooter.uuid if pfooter else None,
                   header.parent_name or None, parent_path, hidden, block_size, entries, 0,
                   meta_end + SECTOR, "tap", ts)


def snapshot(parent: str, child: str, *, uuid: uuidlib.UUID | None = None,
             max_size: int | None = None, storage: Storage | None = None) -> VhdInfo:
    return create(child, 0, parent=parent, uuid=uuid, max_size=max_size, storage=storage)


def info(path: str, *, storage: Storage | None = None) -> VhdInfo:
    st = storage or DEFAULT_STORAGE
    img = Image.open(path, storage=st)
    try:
        parent_path = None
        if img.disk_type == DiskType.DIFFERENCING:
            try:
                parent_path = find_parent(img, st)
            except VhdChainError:
                parent_path = None
        return image_info(img, parent_path)
    finally:
        img.close()


def chain(path: str, *, storage: Storage | None = None) -> list[VhdInfo]:
    images = open_images(path, storage=storage)
    try:
        return [image_info(img, images[i + 1].path if i + 1 < len(images) else None)
                for i, img in enumerate(images)]
    finally:
        for img in images:
            img.close()


def physical_size(path: str, *, storage: Storage | None = None) -> int:
    img = Image.open(path, storage=storage)
    try:
        return img.physical_size
    finally:
        img.close()


def _update_footer(path: str, storage: Storage | None, **changes: object) -> None:
    img = Image.open(path, writable=True, storage=storage)
    try:
        with img.lock:
            img.write_footers(img.footer.replace(**changes))
            img.flush()
    finally:
        img.close()


def set_hidden(path: str, hidden: bool = True, *, storage: Storage | None = None) -> None:
    _update_footer(path, storage, hidden=int(hidden))


def set_uuid(path: str, uuid: uuidlib.UUID, *, storage: Storage | None = None) -> None:
    _update_footer(path, storage, uuid=uuid)


def resize(path: str, size: int, *, storage: Storage | None = None) -> None:
    img = Image.open(path, writable=True, storage=storage)
    try:
        grow_image(img, size)
        img.flush()
    finally:
        img.close()


def grow_image(img: Image, size: int) -> None:
    """Grow the virtual size of an open, writable image (never shrinks)."""
    size = pad(size)
    if size < img.size:
        raise VhdUnsupportedError(f"cannot shrink from {img.size} to {size}", path=img.path)
    if size == img.size:
        return
    if size > _limit(img.block_size):
        raise VhdUnsupportedError(f"size {size} exceeds the limit", path=img.path)
    with img.lock:
        new = img.footer.replace(current_size=size, geometry=chs(size))
        if img.header is None:
            _grow_fixed(img, new)
            return
        if -(-size // img.block_size) > img.header.max_table_entries:
            _relocate_bat(img, -(-size // img.block_size))
        img.write_footers(new)


def _grow_fixed(img: Image, new: Footer) -> None:
    b, old = img.backing, img.size
    cap = b.capacity()
    if cap is not None and new.current_size + SECTOR > cap:
        raise VhdNoSpaceError(f"fixed disk needs {new.current_size + SECTOR} bytes of {cap}",
                              path=img.path)
    if new.current_size - old <= 64 * 1024 * 1024:
        # one write: a crash cannot leave the old footer inside the grown data
        b.pwrite(bytes(new.current_size - old) + new.pack(), old)
    else:
        b.pwrite(new.pack(), new.current_size)  # new footer first: readers look at the end
        b.pwrite(bytes(SECTOR), old)
    img.eod = new.current_size
    img.footer = new


def _relocate_bat(img: Image, entries: int) -> None:
    """Move BAT + batmap to the end of data; the header write (one sector) commits."""
    assert img.header is not None
    b = img.backing
    start = pad(img.eod + SECTOR, ALIGN)  # the old trailing footer stays valid until then
    bat = img.bat + type(img.bat)("I", [UNUSED] * (entries - len(img.bat)))
    map_off = start + bat_bytes(entries) + SECTOR
    old_map = bytes(img.batmap or b"")
    new_map = old_map[:batmap_sectors(entries) * SECTOR].ljust(batmap_sectors(entries) * SECTOR,
                                                                b"\0")
    end = map_off + len(new_map)
    cap = b.capacity()
    if cap is not None and end + SECTOR > cap:
        raise VhdNoSpaceError(f"no room to grow the BAT ({end + SECTOR} > {cap})",
                              path=img.path)
    bh = BatmapHeader.for_map(map_off, new_map)
    raw = bytearray(end - start)
    raw[:entries * 4] = bat_pack(bat)
    if img.batmap is not None:
        raw[bat_bytes(entries):bat_bytes(entries) + SECTOR] = bh.pack()
        raw[map_off - start:] = new_map
    b.pwrite(raw, start)
    b.pwrite(img.footer.pack(), end)
    img.write_header(img.header.replace(table_offset=start, max_table_entries=entries))
    img.bat = bat
    img.eod = end
    if img.batmap is not None:
        img.batmap, img.batmap_hdr, img.batmap_hdr_off = (bytearray(new_map), bh,
                                                           start + bat_bytes(entries))
    log.info("%s: BAT relocated to %d for %d entries", img.path, start, entries)


def reparent(child: str, new_parent: str, *, expect_uuid: uuidlib.UUID | None = None,
             storage: Storage | None = None) -> None:
    st = storage or DEFAULT_STORAGE
    pfooter, _ = peek(new_parent, st)
    if expect_uuid is not None and pfooter.uuid != expect_uuid:
        raise VhdChainError(f"{new_parent} has uuid {pfooter.uuid}, expected {expect_uuid}",
                            path=child)
    img = Image.open(child, writable=True, storage=st)
    try:
        hdr = img.header
        if hdr is None or img.disk_type != DiskType.DIFFERENCING:
            raise VhdUnsupportedError("only differencing disks have a parent", path=child)
        with img.lock:
            spaces = [loc.data_offset for loc in hdr.locators
                      if loc.code and loc.data_offset and loc.space_bytes >= LOCATOR_SPACE]
            if len(spaces) < 3:
                base = img.eod
                spaces = [base + i * LOCATOR_SPACE for i in range(3)]
                img.eod = base + 3 * LOCATOR_SPACE
                b = img.backing
                cap = b.capacity()
                if cap is not None and img.eod + SECTOR > cap:
                    raise VhdNoSpaceError("no room for parent locators", path=child)
                b.pwrite(img.footer.pack(), img.eod)
            name, locs, writes = _locators(child, new_parent, spaces[:3])
            for off, data in writes:
                img.backing.pwrite(data, off)
            img.write_header(hdr.replace(parent_uuid=pfooter.uuid,
                                       parent_timestamp=pfooter.timestamp,
                                       parent_name=name, locators=locs))
            img.flush()
    finally:
        img.close()
