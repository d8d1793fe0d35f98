"""Consistency check of one image (and its parent link), and the cheap structural `precheck`
the SR types run before a chain operation renames or rewrites an image.

`check` returns problems ([] when clean); `precheck` raises `VhdFormatError` (field, offset)
for the first structural problem. Which fields are verified, and which cannot be: docs/vhd.md,
"What check verifies".
"""

from __future__ import annotations

from .backing import DEFAULT_STORAGE, Storage
from .chain import find_parent
from .errors import VhdError, VhdFormatError
from .image import Image
from .layout import ALIGN, bat_problems, next_block_start
from .records import (
    CREATOR_TAP,
    FILE_VERSION,
    FOOTER_COOKIE,
    SECTOR,
    UNUSED,
    DiskType,
    DynamicHeader,
    Footer,
)

SCAN_CHUNK = 4 * 1024 * 1024
"""Bytes of block data read at a time when --bitmaps compares a dynamic disk's data with its
bitmaps."""


def precheck(path: str, *, storage: Storage | None = None) -> None:
    """Refuse (VhdFormatError naming the field and offset) an image whose structure is not
    sound: footer and footer copy (present, valid, equal), header, every offset and size
    within the image, BAT entries within the image and clear of metadata and of each other,
    batmap bounds and checksum, the virtual size consistent with the geometry and the BAT.
    Cheap: the metadata is read, no block. Run before a chain operation renames or rewrites
    an image, so that it never starts on a damaged one."""
    img = Image.open(path, storage=storage or DEFAULT_STORAGE, strict=True)
    try:
        found = structure_problems(img, bat=False)
    finally:
        img.close()
    if found:
        raise found[0]


def structure_problems(img: Image, *, bat: bool = True) -> list[VhdFormatError]:
    """Structural problems of an open image that opening it does not refuse (``bat``: also
    the BAT entries' bounds, which a non-lenient open already refused)."""
    out: list[VhdFormatError] = []
    f, path = img.footer, img.path
    fbase = 0 if img.header is not None else img.eod
    if f.version != FILE_VERSION:
        out.append(VhdFormatError(f"unknown file format version {f.version:#x}",
                                  field="footer.version", offset=fbase + 12, path=path))
    cyl, heads, spt = f.geometry
    # 65535/16/255, the largest geometry, is what qemu writes when the size is not a CHS
    # product (then only current_size counts): cannot tell
    if (cyl, heads, spt) != (65535, 16, 255) and cyl * heads * spt * SECTOR > f.current_size:
        out.append(VhdFormatError(
            f"current size {f.current_size} is smaller than the geometry {cyl}/{heads}/{spt} "
            f"addresses ({cyl * heads * spt * SECTOR})", field="footer.current_size",
            offset=fbase + 48, path=path))
    if img.header is None:
        limit = img.limit
        if img.backing.capacity() is None and limit != f.current_size + SECTOR:
            out.append(VhdFormatError(
                f"fixed disk of {f.current_size} bytes in a file of {limit}: the footer at "
                f"the end says another size", field="footer.current_size",
                offset=limit - SECTOR + 48, path=path))
        return out
    hdr = img.header
    extents = img.extents()
    for name, start, end in extents:
        for other, ostart, oend in extents:
            if name < other and start < oend and ostart < end:
                out.append(VhdFormatError(f"{name} [{start},{end}) overlaps {other} "
                                          f"[{ostart},{oend})", field=name, offset=start,
                                          path=path))
    if bat:
        for blk, _, what in bat_problems(extents, img.bat, img.block_size, img.limit):
            out.append(VhdFormatError(f"bat[{blk}]: {what}", field=f"bat[{blk}]",
                                      offset=hdr.table_offset + 4 * blk, path=path))
    used = -(-f.current_size // img.block_size)
    for blk in range(used, len(img.bat)):
        if img.bat[blk] != UNUSED:
            out.append(VhdFormatError(
                f"bat[{blk}]: block {blk} is allocated beyond the virtual size "
                f"({f.current_size} bytes: {used} blocks)", field=f"bat[{blk}]",
                offset=hdr.table_offset + 4 * blk, path=path))
    return out


def check(path: str, *, bitmaps: bool = False, parents: bool = True,
          storage: Storage | None = None, leaks: bool = True) -> list[str]:
    """Every problem found, one string each ([] when clean). ``bitmaps``: also read every
    sector bitmap (and, for a disk without parent, the data its bitmaps say is absent);
    ``leaks`` (with ``bitmaps``): report blocks no BAT entry points to."""
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
        problems.extend(str(err) for err in structure_problems(img))
        if img.header is not None:
            _check_blocks(img, problems, bitmaps, leaks)
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


def _batmap_bit(img: Image, blk: int) -> bool:
    m = img.batmap
    return m is not None and blk // 8 < len(m) and bool(m[blk // 8] & (0x80 >> (blk % 8)))


def _check_blocks(img: Image, problems: list[str], bitmaps: bool, leaks: bool) -> None:
    blocks = [i for i, e in enumerate(img.bat) if e != UNUSED]
    if img.batmap is not None:
        for blk in range(len(img.bat)):
            if _batmap_bit(img, blk):
                if img.bat[blk] == UNUSED:
                    problems.append(f"{img.path}: batmap marks unallocated block {blk} full")
                elif not img.full(img.bitmap(blk)):
                    problems.append(f"{img.path}: batmap marks block {blk} full but its "
                                    f"bitmap is not")
    _check_alignment(img, blocks, problems)
    if not bitmaps:
        return
    for blk in blocks:
        bits = img.bitmap(blk)
        full = img.full(bits)
        if img.batmap is not None and full and not _batmap_bit(img, blk):
            problems.append(f"{img.path}: block {blk} is full but its batmap bit is clear")
        if img.disk_type == DiskType.DYNAMIC and not bits:
            problems.append(f"{img.path}: bat[{blk}]: block {blk} is allocated but its bitmap "
                            f"says no sector is present (bitmap or BAT entry damaged)")
        elif img.disk_type == DiskType.DYNAMIC and not full:
            _check_absent_sectors(img, blk, bits, problems)
    if leaks:
        _check_leaks(img, problems)


def _check_alignment(img: Image, blocks: list[int], problems: list[str]) -> None:
    """blktap (and this engine) start every block's data on a 4 KiB boundary: in such an
    image, the one block that does not was moved (a BAT entry off by some sectors)."""
    if img.footer.creator_app != CREATOR_TAP or len(blocks) < 2:
        return
    odd = [b for b in blocks if (img.bat[b] * SECTOR + img.bm_size) % ALIGN]
    if len(odd) == 1:
        blk = odd[0]
        problems.append(f"{img.path}: bat[{blk}]: block {blk}'s data at "
                        f"{img.bat[blk] * SECTOR + img.bm_size} is not 4 KiB aligned as "
                        f"every other block of this image (the entry was moved?)")


def _check_absent_sectors(img: Image, blk: int, bits: int, problems: list[str]) -> None:
    """A disk without parent reads zeros where a bitmap bit is clear, and every writer puts
    zeros there: data under a clear bit means the bitmap (or the BAT entry) is wrong."""
    off = img.data_offset(blk)
    assert off is not None
    spb = img.spb
    last = min(spb, -(-img.size // SECTOR) - blk * spb)  # sectors inside the virtual size
    step = SCAN_CHUNK // SECTOR
    for s0 in range(0, max(0, last), step):
        n = min(step, last - s0)
        window = (bits >> s0) & ((1 << n) - 1)
        if window == (1 << n) - 1:
            continue
        data = img.backing.pread(n * SECTOR, off + s0 * SECTOR)
        for i in range(min(n, len(data) // SECTOR)):
            if not window >> i & 1 and any(data[i * SECTOR:(i + 1) * SECTOR]):
                problems.append(f"{img.path}: block {blk} sector {s0 + i} holds data but its "
                                f"bitmap bit is clear (bitmap or BAT entry damaged)")
                return


def _check_leaks(img: Image, problems: list[str]) -> None:
    """Space that no metadata and no BAT entry covers, after a block (or after the metadata
    as created: BAT right after the header), where a block's bitmap would be and says data
    is present: a block whose BAT entry was cleared (or space a crash leaked; the image reads
    correctly either way). Cannot tell: after a moved BAT, the space before the first block
    (its old place); past the end of data (where a crash leaves blocks it had not published
    yet), so not the entry of the block last in the file either."""
    assert img.header is not None
    bs, bms = img.block_size, img.bm_size
    span = bms + bs
    moved = img.header.table_offset != img.footer.data_offset + 1024
    regions = sorted([(s, e, False) for _, s, e in img.extents()]
                     + [(e * SECTOR, e * SECTOR + span, True) for e in img.bat if e != UNUSED]
                     + [(img.eod, img.eod + SECTOR, False)])
    pos, after_block = 0, False
    for start, end, is_block in [*regions, (img.eod, img.eod, False)]:
        if start - pos >= span and (after_block or not moved):
            for cand in sorted({pos, next_block_start(pos, bs)}):
                head = img.backing.pread(bms, cand)
                if cand + span <= start and any(head) and head[:8] != FOOTER_COOKIE:
                    problems.append(f"{img.path}: [{cand},{cand + span}) looks like a block "
                                    f"(its bitmap says data is present) but no BAT entry "
                                    f"points to it (a cleared entry, or space a crash leaked)")
                    break
        if end >= pos:
            pos, after_block = end, is_block


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
