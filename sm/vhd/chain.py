"""Parent resolution and ``Disk``: I/O through a chain of images (leaf first)."""

from __future__ import annotations

import os
import threading
import uuid as uuidlib
from types import TracebackType

from sm.struct import Frozen

from . import bitmap as bm
from .backing import DEFAULT_STORAGE, Storage
from .errors import VhdChainError, VhdError
from .image import Image
from .records import MAX_CHAIN_DEPTH, PLAT_MACX, PLAT_W2KU, PLAT_W2RU, SECTOR, DiskType


def locator_paths(img: Image) -> list[str]:
    """Candidate parent paths from the locators, in header order, resolved against the child's
    directory (absolute paths and file:// URLs taken as they are)."""
    hdr = img.header
    if hdr is None:
        return []
    base = os.path.dirname(os.path.abspath(img.path))
    out: list[str] = []
    for loc in hdr.locators:
        if loc.code not in (PLAT_MACX, PLAT_W2KU, PLAT_W2RU) or not loc.data_length:
            continue
        if loc.data_length > max(loc.space_bytes, SECTOR) or loc.data_length > 4096:
            continue
        raw = img.backing.pread(loc.data_length, loc.data_offset)
        if loc.code == PLAT_MACX:
            text = raw.decode("utf-8", errors="replace")
            if text.startswith("file://"):
                text = text[len("file://"):]
        else:
            text = raw.decode("utf-16-le", errors="replace").replace("\\", "/")
        text = text.rstrip("\0")
        if not text:
            continue
        out.append(os.path.normpath(text if os.path.isabs(text) else os.path.join(base, text)))
    if hdr.parent_name:
        out.append(os.path.join(base, hdr.parent_name))
    return out


def find_parent(img: Image, storage: Storage) -> str:
    candidates = locator_paths(img)
    for cand in candidates:
        if storage.exists(cand):
            return cand
    raise VhdChainError(f"parent not found (tried {candidates})", path=img.path)


def open_images(path: str, *, writable: bool = False, storage: Storage | None = None
                ) -> list[Image]:
    """Open the chain at ``path`` (leaf writable if asked), verifying parent uuids."""
    st = storage or DEFAULT_STORAGE
    images: list[Image] = []
    seen: set[str] = set()
    try:
        img = Image.open(path, writable=writable, storage=st)
        images.append(img)
        seen.add(os.path.realpath(path))
        while img.disk_type == DiskType.DIFFERENCING:
            if len(images) >= MAX_CHAIN_DEPTH:
                raise VhdChainError(f"chain deeper than {MAX_CHAIN_DEPTH}", path=path)
            parent_path = find_parent(img, st)
            real = os.path.realpath(parent_path)
            if real in seen:
                raise VhdChainError(f"loop in chain at {parent_path}", path=img.path)
            seen.add(real)
            parent = Image.open(parent_path, storage=st)
            images.append(parent)
            assert img.header is not None
            if parent.footer.uuid != img.header.parent_uuid:
                raise VhdChainError(
                    f"parent {parent_path} has uuid {parent.footer.uuid}, "
                    f"expected {img.header.parent_uuid}", path=img.path)
            img = parent
    except BaseException:
        for i in images:
            i.close()
        raise
    return images


READ_AHEAD_MIN = 16 * 1024 * 1024
"""Sequential reads hint at least this far ahead (and 4 requests ahead): A/B on a cold
3-deep 1 GiB chain read in 8 MiB requests, 2 requests ahead 2.32 s, 4 ahead 1.86 s (median
of 3 alternating runs)."""


class VhdInfo(Frozen):
    path: str
    disk_type: DiskType
    virtual_size: int
    uuid: uuidlib.UUID
    parent_uuid: uuidlib.UUID | None
    parent_name: str | None
    parent_path: str | None
    hidden: bool
    block_size: int
    max_blocks: int
    allocated_blocks: int
    physical_size: int
    creator: str
    timestamp: int


def image_info(img: Image, parent_path: str | None) -> VhdInfo:
    hdr = img.header
    f = img.footer
    return VhdInfo(
        path=img.path, disk_type=f.disk_type, virtual_size=f.current_size, uuid=f.uuid,
        parent_uuid=hdr.parent_uuid if hdr and f.disk_type == DiskType.DIFFERENCING else None,
        parent_name=(hdr.parent_name or None)
        if hdr and f.disk_type == DiskType.DIFFERENCING else None,
        parent_path=parent_path, hidden=bool(f.hidden), block_size=img.block_size,
        max_blocks=hdr.max_table_entries if hdr else -(-f.current_size // img.block_size),
        allocated_blocks=img.allocated_blocks(), physical_size=img.physical_size,
        creator=f.creator_app.decode("latin-1").rstrip("\0"), timestamp=f.timestamp,
    )


class Disk:
    """A chain opened for I/O. Reads fall through to parents per sector bitmap; writes go to
    the leaf with copy-on-write of partially written sectors. Thread-safe."""

    def __init__(self, images: list[Image], writable: bool) -> None:
        self._images = images
        self._writable = writable
        self._lock = threading.RLock()
        self.size = images[0].size
        self.depth = len(images)
        self.paths = [i.path for i in images]
        self._next = 0  # end of the last read: a read starting there is sequential
        self._hinted = 0  # blocks below this one have been announced to the kernel
        self._advised = False  # kernel read-ahead switched off (chains only)

    @property
    def images(self) -> list[Image]:
        return self._images

    def __enter__(self) -> Disk:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise VhdError(f"range {offset}+{length} outside the virtual size {self.size}",
                           path=self.paths[0])

    def read(self, offset: int, length: int) -> bytes:
        self._check_range(offset, length)
        if length == 0:
            return b""
        if offset == self._next:
            self._read_ahead(offset, max(4 * length, READ_AHEAD_MIN))
        else:
            self._hinted = 0
        self._next = offset + length
        first = offset // SECTOR
        last = -(-(offset + length) // SECTOR)
        data = self._read_sectors(first, last - first)
        skip = offset - first * SECTOR
        if skip == 0 and len(data) == length:
            return data
        return data[skip: skip + length]

    def readinto(self, offset: int, buf: bytearray | memoryview) -> None:
        """Read ``len(buf)`` bytes at ``offset`` into ``buf``, without intermediate copies;
        ``offset`` and ``len(buf)`` must be multiples of the sector size."""
        view = memoryview(buf).cast("B")
        length = len(view)
        self._check_range(offset, length)
        if offset % SECTOR or length % SECTOR:
            raise VhdError(f"readinto of {offset}+{length}: not sector aligned",
                           path=self.paths[0])
        if length == 0:
            return
        if offset == self._next:
            self._read_ahead(offset, max(4 * length, READ_AHEAD_MIN))
        else:
            self._hinted = 0
        self._next = offset + length
        sector = offset // SECTOR
        count = length // SECTOR
        spb = self._images[0].spb
        pos = 0
        while count:
            blk, s0 = divmod(sector, spb)
            n = min(spb - s0, count)
            for start, cnt, img in self._plan(blk, s0, n):
                piece = view[pos + (start - s0) * SECTOR: pos + (start - s0 + cnt) * SECTOR]
                if img is None:
                    piece[:] = bytes(len(piece))
                else:
                    off = img.data_offset(blk)
                    assert off is not None
                    _preadinto(img, piece, off + start * SECTOR)
            pos += n * SECTOR
            sector += n
            count -= n

    def _read_sectors(self, sector: int, count: int) -> bytes:
        leaf = self._images[0]
        spb = leaf.spb
        parts: list[bytes] = []
        while count:
            blk, s0 = divmod(sector, spb)
            n = min(spb - s0, count)
            for start, cnt, img in self._plan(blk, s0, n):
                if img is None:
                    parts.append(bytes(cnt * SECTOR))
                else:
                    off = img.data_offset(blk)
                    assert off is not None
                    parts.append(img.backing.pread(cnt * SECTOR, off + start * SECTOR))
            sector += n
            count -= n
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _read_ahead(self, offset: int, length: int) -> None:
        """Sequential reads: tell the kernel which block of which image comes next, so the
        reads of the (interleaved, per-block) images overlap instead of waiting one by one.
        In a chain, the kernel's own read-ahead is switched off: it would read the blocks of a
        parent that its children hide (2/3 of the base in a 3-deep chain of even thirds)."""
        leaf = self._images[0]
        bs = leaf.block_size
        end = min(-(-(offset + length) // bs), -(-self.size // bs))
        blk = max(self._hinted, offset // bs)
        if not self._advised and len(self._images) > 1:
            self._advised = True
            for img in self._images:
                _advise(img, os.POSIX_FADV_RANDOM if hasattr(os, "POSIX_FADV_RANDOM") else 0)
        self._hinted = max(self._hinted, end)
        for b in range(blk, end):
            for img in self._images:
                off = img.data_offset(b)
                if off is None or img.block_size != bs:
                    continue
                # bitmap and data in one hint: no bitmap read (one synchronous I/O) here
                bms = img.bm_size if img.header is not None else 0
                _will_need(img, off - bms, bs + bms)
                if img.known_full(b):
                    break

    def _plan(self, blk: int, s0: int, n: int) -> list[tuple[int, int, Image | None]]:
        """Where sectors s0 .. s0+n-1 of block ``blk`` come from: (first sector, count,
        image or None for zeros), in ascending order."""
        want = bm.mask(s0, n)
        # (start sector, count, image index or -1 for zeros)
        pieces: list[tuple[int, int, int]] = []
        for idx, img in enumerate(self._images):
            if img.block_size != self._images[0].block_size:
                raise VhdError("images with different block sizes in one chain",
                               path=img.path)
            last = -(-img.size // SECTOR) - blk * img.spb
            if last <= 0:
                continue
            # sectors past an image's virtual size are not in it (a fixed disk's footer is)
            have = img.bitmap(blk) & want & bm.mask(0, last)
            if not have:
                continue
            if have == want and not pieces:
                return [(s0, n, img)]
            for start, cnt in bm.runs(have):
                pieces.append((start, cnt, idx))
            want &= ~have
            if not want:
                break
        for start, cnt in bm.runs(want):
            pieces.append((start, cnt, -1))
        pieces.sort()
        return [(start, cnt, self._images[idx] if idx >= 0 else None)
                for start, cnt, idx in pieces]

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if not self._writable:
            raise VhdError("disk is opened read-only", path=self.paths[0])
        self._check_range(offset, len(data))
        if not data:
            return
        with self._lock:
            first = offset // SECTOR
            end = offset + len(data)
            last = -(-end // SECTOR)
            head = offset - first * SECTOR
            tail = last * SECTOR - end
            if head == 0 and tail == 0:
                self._images[0].write_sectors(first, data)
                return
            buf = bytearray()
            if head:
                buf += self._read_sectors(first, 1)[:head]
            buf += data
            if tail:
                buf += self._read_sectors(last - 1, 1)[SECTOR - tail:]
            self._images[0].write_sectors(first, buf)

    def flush(self) -> None:
        self._images[0].flush()

    def close(self) -> None:
        for img in self._images:
            img.close()
        self._images = []


def _preadinto(img: Image, view: memoryview, off: int) -> None:
    """Fill ``view`` from the image's bytes at ``off`` (zeros past the end of the file)."""
    fill = getattr(img.backing, "preadinto", None)
    if fill is not None:
        got = fill(view, off)
    else:
        got = _copy_into(view, img.backing.pread(len(view), off))
    if got < len(view):
        view[got:] = bytes(len(view) - got)


def _copy_into(view: memoryview, data: bytes) -> int:
    view[: len(data)] = data
    return len(data)


def _advise(img: Image, advice: int) -> None:
    raw = img.backing.raw_range(0, 0) if hasattr(img.backing, "raw_range") else None
    if raw is None or not advice or not hasattr(os, "posix_fadvise"):
        return
    try:
        os.posix_fadvise(raw[0], 0, 0, advice)
    except OSError:
        pass


def _will_need(img: Image, off: int, n: int) -> None:
    raw = img.backing.raw_range(off, n) if hasattr(img.backing, "raw_range") else None
    if raw is None or not hasattr(os, "posix_fadvise"):
        return
    try:
        os.posix_fadvise(raw[0], raw[1], n, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass


def open_chain(path: str, *, writable: bool = False, storage: Storage | None = None) -> Disk:
    return Disk(open_images(path, writable=writable, storage=storage), writable)
