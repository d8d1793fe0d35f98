"""Engine operations the collector needs beyond `sm.vhd` (standard library only).

`block_set`: the allocated blocks of one image, from its BAT alone (no bitmaps read).
`fill_from_parent`: the "down" merge: copy into a differencing child every sector its parent
holds and it lacks, so that the child can be re-parented onto its grandparent. Readers of the
child see the same bytes at every moment (only sectors that read through to the parent are
written, data before bitmap, new blocks published by their BAT entry last), so a crash at any
point leaves a valid chain that reads the same.
"""

from __future__ import annotations

from collections.abc import Callable

from sm.vhd import bitmap as bm
from sm.vhd.backing import DEFAULT_STORAGE, Storage
from sm.vhd.chain import find_parent
from sm.vhd.errors import VhdChainError, VhdUnsupportedError
from sm.vhd.fastcopy import copy_backing_range
from sm.vhd.image import Image
from sm.vhd.records import SECTOR, UNUSED, DiskType

__all__ = ["block_set", "fill_from_parent"]

Progress = Callable[[int, int], None]


def block_set(path: str, *, storage: Storage | None = None) -> tuple[frozenset[int], int]:
    """(allocated blocks, block size) of one image; a fixed disk has every block."""
    img = Image.open(path, storage=storage or DEFAULT_STORAGE)
    try:
        if img.header is None:
            return frozenset(range(-(-img.size // img.block_size))), img.block_size
        return frozenset(i for i, e in enumerate(img.bat) if e != UNUSED), img.block_size
    finally:
        img.close()


def fill_from_parent(child: str, *, progress: Progress | None = None,
                     storage: Storage | None = None) -> int:
    """Copy the parent's sectors the child lacks into the child; returns bytes copied."""
    st = storage or DEFAULT_STORAGE
    dst = Image.open(child, writable=True, storage=st)
    try:
        if dst.disk_type != DiskType.DIFFERENCING or dst.header is None:
            raise VhdUnsupportedError("only a differencing disk has a parent", path=child)
        src = Image.open(find_parent(dst, st), storage=st)
        try:
            if src.footer.uuid != dst.header.parent_uuid:
                raise VhdChainError(f"parent {src.path} has uuid {src.footer.uuid}, expected "
                                    f"{dst.header.parent_uuid}", path=child)
            if src.block_size != dst.block_size:
                raise VhdUnsupportedError("parent and child block sizes differ", path=child)
            return _fill(src, dst, progress)
        finally:
            src.close()
    finally:
        dst.close()


def _fill(src: Image, dst: Image, progress: Progress | None) -> int:
    bs = src.block_size
    full = bm.mask(0, src.spb)
    if src.header is None:
        blocks = list(range(-(-src.size // bs)))
    else:
        blocks = sorted((i for i, e in enumerate(src.bat) if e != UNUSED),
                        key=src.bat.__getitem__)
    blocks = [b for b in blocks if b < len(dst.bat)]
    total, done, copied = len(blocks) * bs, 0, 0
    for blk in blocks:
        sbits = full if src.known_full(blk) else src.bitmap(blk)
        soff = src.data_offset(blk)
        assert soff is not None
        doff = dst.data_offset(blk)
        if doff is None:
            if sbits:
                def fill(off: int, s: int = soff) -> None:
                    copy_backing_range(src.backing, s, dst.backing, off, bs)
                    dst.backing.fsync()  # data durable before the BAT entry publishes it

                dst.allocate_with(blk, sbits, fill)
                copied += bs
        else:
            need = sbits & ~dst.bitmap(blk)
            if need:
                for s0, cnt in bm.runs(need):
                    copy_backing_range(src.backing, soff + s0 * SECTOR, dst.backing,
                                       doff + s0 * SECTOR, cnt * SECTOR)
                    copied += cnt * SECTOR
                dst.backing.fsync()  # data durable before the bits say it is there
                with dst.lock:
                    dst.set_bits(blk, need)
        done += bs
        if progress is not None:
            progress(done, total)
    dst.flush()
    return copied
