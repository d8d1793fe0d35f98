"""Coalesce: copy every sector present in a child into its parent.

Crash-safe order, with the parent's allocation batched: every block the parent lacks gets its
place beyond the old end of data up front (mirroring the child's spacing, so that a run of
full child blocks maps onto one contiguous span of the parent); then data and bitmaps are
written (such a run with one reflink of the whole span: data plus the all-ones bitmaps between
its blocks), and a footer after the last new block of every BAT sector; fsync; then the BAT in
one write and the batmap (header and map together when adjacent); fsync. Until the BAT write
nothing new is reachable; any subset of BAT sectors that reaches the disk publishes complete
blocks, and the end of data it makes (the end of the last block of one of those sectors) is
followed by a valid footer, so a crash leaves the parent valid (at worst with leaked space).
The child is only read.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from . import bitmap as bm
from .backing import DEFAULT_STORAGE, Storage
from .chain import find_parent
from .errors import VhdChainError, VhdError, VhdNoSpaceError, VhdUnsupportedError
from .fastcopy import clone_backing_range, copy_backing_range
from .image import Image
from .layout import ALIGN, footer_blocks, next_block_start
from .ops import grow_image
from .records import SECTOR, UNUSED, BatmapHeader, DiskType

Progress = Callable[[int, int], None]

MIRROR_GAP = 64 * 1024  # largest extra space between new parent blocks to keep a child's layout


def coalesce(child: str, *, progress: Progress | None = None,
             storage: Storage | None = None) -> None:
    """Copy every sector present in ``child`` into its parent; the child is not modified."""
    st = storage or DEFAULT_STORAGE
    src = Image.open(child, storage=st, strict=True)  # nothing comes from a damaged file
    try:
        if src.disk_type != DiskType.DIFFERENCING:
            raise VhdUnsupportedError("only a differencing disk can be coalesced", path=child)
        dst = Image.open(find_parent(src, st), writable=True, storage=st)
        try:
            assert src.header is not None
            if dst.footer.uuid != src.header.parent_uuid:
                raise VhdChainError(f"parent {dst.path} has uuid {dst.footer.uuid}, expected "
                                    f"{src.header.parent_uuid}", path=child)
            if dst.block_size != src.block_size:
                raise VhdUnsupportedError("parent and child block sizes differ", path=child)
            if src.size > dst.size:
                grow_image(dst, src.size)
            with dst.lock:
                _Merge(src, dst, progress).run()
            dst.flush()
        finally:
            dst.close()
    finally:
        src.close()


class _ReadAhead:
    """Ask the kernel to read the child's next blocks (bitmap and data) while this one is
    copied: a cold child is otherwise read one synchronous 2 MiB request at a time."""

    WINDOW = 16 * 1024 * 1024

    def __init__(self, src: Image, blocks: list[int]) -> None:
        self.src, self.blocks, self.next = src, blocks, 0
        self.depth = max(1, self.WINDOW // src.block_size)
        raw = src.backing.raw_range(0, 0) if hasattr(src.backing, "raw_range") else None
        self.fd = raw[0] if raw is not None and hasattr(os, "posix_fadvise") else None

    def upto(self, i: int) -> None:
        if self.fd is None:
            return
        end = min(len(self.blocks), i + self.depth)
        while self.next < end:
            off = self.src.data_offset(self.blocks[self.next])
            self.next += 1
            if off is None:
                continue
            raw = self.src.backing.raw_range(off - self.src.bm_size, 0)
            if raw is None:
                continue
            try:
                os.posix_fadvise(raw[0], raw[1], self.src.bm_size + self.src.block_size,
                                 os.POSIX_FADV_WILLNEED)
            except OSError:
                self.fd = None
                return


class _Merge:
    def __init__(self, src: Image, dst: Image, progress: Progress | None) -> None:
        self.src, self.dst, self.progress = src, dst, progress
        self.bs, self.bms = src.block_size, dst.bm_size
        self.full = bm.mask(0, src.spb)
        self.new: dict[int, int] = {}  # block -> bitmap offset of its new place in dst
        self.filled: list[int] = []  # blocks of dst that end up full
        self.cloned = False  # a full block was reflinked: its bytes are never read
        self.footer_after: set[int] = set()  # new blocks whose end can become the end of data
        # runs may span the bitmaps between blocks only when a full bitmap has no padding
        self.spans = self.bms * 8 == src.spb

    def src_bits(self, blk: int) -> int:
        # the batmap says "full" without reading the bitmap
        m = self.src.batmap
        if m is not None and blk // 8 < len(m) and m[blk // 8] & (0x80 >> (blk % 8)):
            return self.full
        return self.src.bitmap(blk)

    def run(self) -> None:
        src, dst = self.src, self.dst
        # in the child's physical order, so new parent blocks mirror its layout
        blocks = sorted((i for i, e in enumerate(src.bat) if e != UNUSED),
                        key=src.bat.__getitem__)
        if dst.header is not None:
            self.plan(blocks)
        total, done = len(blocks) * self.bs, 0
        ahead = _ReadAhead(src, blocks)
        i = 0
        while i < len(blocks):
            n = self.clone_run(blocks, i)
            if not n:
                if not self.cloned:  # reading ahead what will be cloned costs a full read
                    ahead.upto(i)
                bits = self.src_bits(blocks[i])
                if bits:
                    self.copy_block(blocks[i], bits)
                n = 1
            i += n
            done += n * self.bs
            if self.progress is not None:
                self.progress(done, total)
        if self.new:
            dst.backing.fsync()  # blocks and footers durable before the BAT points at them
            dst.publish(self.new)
        self.write_batmap()

    def plan(self, blocks: list[int]) -> None:
        dst, span = self.dst, self.bms + self.bs
        pos = dst.eod
        prev: tuple[int, int] | None = None  # ends of the previous block (child, parent)
        for blk in blocks:
            if blk < len(dst.bat) and dst.bat[blk] != UNUSED:
                prev = None
                continue
            if blk >= len(dst.bat):
                raise VhdError(f"block {blk} beyond the BAT", path=dst.path)
            # a sector after the old end and after each block stays free for a footer
            start = next_block_start(pos + SECTOR, self.bs)
            sstart = self.src.bat[blk] * SECTOR
            if prev is not None:
                # the child's gap after the previous block, if it leaves that room too
                mirror = prev[1] + sstart - prev[0]
                if start <= mirror <= start + MIRROR_GAP and (mirror + self.bms) % ALIGN == 0:
                    start = mirror
            self.new[blk] = start
            pos = start + span
            prev = (sstart + span, pos)
        self.footer_after = footer_blocks(self.new)
        cap = dst.backing.capacity()
        if self.new and cap is not None and pos + SECTOR > cap:
            raise VhdNoSpaceError(f"no room for {len(self.new)} blocks: needs {pos + SECTOR} "
                                  f"bytes of {cap}", path=dst.path)

    def clone_run(self, blocks: list[int], i: int) -> int:
        """Reflink the longest run of full new blocks from ``blocks[i]`` on whose parent
        places keep the child's offsets apart, in one call; the number of blocks cloned
        (0: none, copy block by block)."""
        if not self.spans or not self.new:
            return 0
        src, bs, bms = self.src, self.bs, self.bms
        first = blocks[i]
        start = self.new.get(first)
        if start is None or self.src_bits(first) != self.full:
            return 0
        delta = start - src.bat[first] * SECTOR
        if (start + bms) % ALIGN or delta % ALIGN:
            return 0
        j = i + 1
        while j < len(blocks) and blocks[j - 1] not in self.footer_after:
            blk = blocks[j]
            place = self.new.get(blk)
            if place is None or place - src.bat[blk] * SECTOR != delta or \
                    self.src_bits(blk) != self.full:
                break
            j += 1
        last = blocks[j - 1]
        soff = src.bat[first] * SECTOR + bms
        length = src.bat[last] * SECTOR + bms + bs - soff
        if not clone_backing_range(src.backing, soff, self.dst.backing, start + bms, length):
            self.spans = False  # no reflinks here: block by block from now on
            return 0
        self.cloned = True
        # the bitmaps between the run's blocks came with it: only the first one and the
        # footer lie outside the cloned span
        self.dst.backing.pwrite(bm.to_disk(self.full, bms), start)
        if last in self.footer_after:
            self.dst.backing.pwrite(self.dst.footer.pack(), self.new[last] + bms + bs)
        self.filled.extend(blocks[i:j])
        return j - i

    def copy_block(self, blk: int, bits: int) -> None:
        src, dst, bs, bms = self.src, self.dst, self.bs, self.bms
        soff = src.data_offset(blk)
        assert soff is not None
        start = self.new.get(blk)
        if start is not None:
            doff = start + bms
            if bits == self.full:
                self.cloned |= copy_backing_range(src.backing, soff, dst.backing, doff, bs)
            elif dst.disk_type == DiskType.DYNAMIC:
                # unset sectors of a dynamic disk must read as zeros even to readers that
                # ignore bitmaps, and the space past the end of data may hold stale bytes
                buf = bytearray(bs)
                for s0, cnt in bm.runs(bits):
                    buf[s0 * SECTOR:(s0 + cnt) * SECTOR] = src.backing.pread(
                        cnt * SECTOR, soff + s0 * SECTOR)
                dst.backing.pwrite(buf, doff)
            else:
                self.copy_runs(bits, soff, doff)
            dst.backing.pwrite(bm.to_disk(bits, bms), start)
            if blk in self.footer_after:
                dst.backing.pwrite(dst.footer.pack(), doff + bs)
        else:
            have = dst.data_offset(blk)
            assert have is not None
            if bits == self.full:
                self.cloned |= copy_backing_range(src.backing, soff, dst.backing, have, bs)
            else:
                self.copy_runs(bits, soff, have)
            if dst.header is None:
                return
            old = dst.bitmap(blk)
            if old | bits != old:
                dst.backing.pwrite(bm.to_disk(old | bits, bms), have - bms)
            bits |= old  # a full block may still lack its batmap bit (a crash before it)
        if bits == self.full:
            self.filled.append(blk)

    def copy_runs(self, bits: int, soff: int, doff: int) -> None:
        for s0, cnt in bm.runs(bits):
            copy_backing_range(self.src.backing, soff + s0 * SECTOR, self.dst.backing,
                               doff + s0 * SECTOR, cnt * SECTOR)

    def write_batmap(self) -> None:
        dst = self.dst
        if dst.batmap is None or dst.batmap_hdr is None or not self.filled:
            return
        m = dst.batmap
        lo = hi = -1
        for blk in self.filled:
            byte = blk // 8
            if byte < len(m) and not m[byte] & (0x80 >> (blk % 8)):
                m[byte] |= 0x80 >> (blk % 8)
                lo = byte if lo < 0 else min(lo, byte)
                hi = max(hi, byte + 1)
        if lo < 0:
            return
        hoff, moff = dst.batmap_hdr_off, dst.batmap_hdr.batmap_offset
        hdr = BatmapHeader.for_map(moff, bytes(m))
        if moff == hoff + SECTOR:
            # header and map in one write: no moment where the checksum disagrees
            hi = -(-hi // SECTOR) * SECTOR
            dst.backing.pwrite(hdr.pack() + m[:hi], hoff)
        else:
            dst.backing.pwrite(m[lo:hi], moff + lo)
            dst.backing.pwrite(hdr.pack(), hoff)
        dst.batmap_hdr = hdr
