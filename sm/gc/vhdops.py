"""Engine operations the collector needs beyond `sm.vhd` (standard library only).

`block_set`: the allocated blocks of one image, from its BAT alone (no bitmaps read).
`fill_from_parent`: the "down" merge: copy into a differencing child every sector its parent
holds and it lacks, so that the child can be re-parented onto its grandparent. Readers of the
child see the same bytes at every moment (only sectors that read through to the parent are
written: all data first, one fsync, then the BAT entries of new blocks, still without bits,
then the bits), so a crash at any point leaves a valid chain that reads the same.
"""

from __future__ import annotations

from collections.abc import Callable

from sm.vhd import bitmap as bm
from sm.vhd.backing import DEFAULT_STORAGE, Storage
from sm.vhd.chain import find_parent
from sm.vhd.errors import VhdChainError, VhdNoSpaceError, VhdUnsupportedError
from sm.vhd.fastcopy import copy_backing_range
from sm.vhd.image import Image
from sm.vhd.layout import footer_blocks, next_block_start
from sm.vhd.records import SECTOR, UNUSED, DiskType

__all__ = ["block_set", "fill_from_parent"]

Progress = Callable[[int, int], None]


def block_set(path: str, *, storage: Storage | None = None) -> tuple[frozenset[int], int]:
    """(allocated blocks, block size) of one image; a fixed disk has every block. A damaged
    image (`sm.vhd.precheck`) raises VhdFormatError: the collector leaves it alone."""
    from sm.vhd.check import structure_problems

    img = Image.open(path, storage=storage or DEFAULT_STORAGE, strict=True)
    try:
        problems = structure_problems(img, bat=False)
        if problems:
            raise problems[0]
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
    """Data first, one fsync, then what makes it visible: bitmap bits of the child's blocks
    (their new sectors read through to the parent until then, which holds the same bytes)
    and the BAT entries of new blocks (placed beyond the end of data, unreachable until
    then, with no bits set); a footer after the last new block of every BAT sector, as in
    coalesce. The old order (an fsync per block) cost a flush per 2 MiB."""
    assert dst.header is not None
    bs, bms = src.block_size, dst.bm_size
    full = bm.mask(0, src.spb)
    if src.header is None:
        blocks = list(range(-(-src.size // bs)))
    else:
        blocks = sorted((i for i, e in enumerate(src.bat) if e != UNUSED),
                        key=src.bat.__getitem__)
    blocks = [b for b in blocks if b < len(dst.bat)]
    work: list[tuple[int, int, int, int | None]] = []  # block, bits, source, new place
    pos = dst.eod
    for blk in blocks:
        sbits = full if src.known_full(blk) else src.bitmap(blk)
        soff = src.data_offset(blk)
        assert soff is not None
        if dst.data_offset(blk) is None:
            if sbits:
                start = next_block_start(pos + SECTOR, bs)
                work.append((blk, sbits, soff, start))
                pos = start + bms + bs
        else:
            need = sbits & ~dst.bitmap(blk)
            if need:
                work.append((blk, need, soff, None))
    cap = dst.backing.capacity()
    if cap is not None and pos + SECTOR > cap:
        raise VhdNoSpaceError(f"no room for the new blocks: needs {pos + SECTOR} bytes of {cap}",
                              path=dst.path)
    new = {blk: place for blk, _bits, _soff, place in work if place is not None}
    footers = footer_blocks(new)
    total, done, copied = len(blocks) * bs, 0, 0
    for blk, bits, soff, place in work:
        if place is None:
            doff = dst.data_offset(blk)
            assert doff is not None
            for s0, cnt in bm.runs(bits):
                copy_backing_range(src.backing, soff + s0 * SECTOR, dst.backing,
                                   doff + s0 * SECTOR, cnt * SECTOR)
                copied += cnt * SECTOR
        else:
            copy_backing_range(src.backing, soff, dst.backing, place + bms, bs)
            # published with no bits (reading through, as before) until set_bits below
            dst.backing.pwrite(bytes(bms), place)
            if blk in footers:
                dst.backing.pwrite(dst.footer.pack(), place + bms + bs)
            copied += bs
        done += bs
        if progress is not None:
            progress(min(done, total), total)
    if progress is not None:
        progress(total, total)
    if not work:
        return 0
    dst.backing.fsync()  # data durable before anything points at it
    with dst.lock:
        dst.publish(new)
        for blk, bits, _soff, _start in work:
            dst.set_bits(blk, bits)
    dst.flush()
    return copied
