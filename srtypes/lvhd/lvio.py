"""Byte access to a logical volume, as a VHD-engine ``Backing``.

:func:`open_lv` uses the device-mapper node ``/dev/<vg>/<lv>`` when the kernel has one (it
exists and is a block device). Otherwise -- machines without device-mapper, where activation
does nothing -- it maps LV offsets to the physical volumes through the LV's linear segments::

    pv_offset = pe_start + start_extent * extent_size + (lv_offset - seg_start)

and reads/writes the PV block devices directly, splitting I/O that crosses segments. The
mapping is a snapshot of the metadata: call :meth:`LvBacking.refresh` after ``lvresize``.
The capacity is the LV size; I/O past it raises :class:`LvRangeError`; ``truncate`` is refused
(resize the LV through :class:`~srtypes.lvhd.lvm.Lvm` instead).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from types import TracebackType

from .lvm import Lvm, Segment


class LvIoError(OSError):
    """I/O on an LV that cannot be done."""


class LvRangeError(LvIoError):
    """Read or write beyond the end of the LV (errno ENOSPC for writes, EINVAL for reads)."""


@dataclass(frozen=True)
class Extent:
    """LV bytes ``[lv_start, lv_start+length)`` are at ``dev_offset`` on ``device``."""

    lv_start: int
    length: int
    device: str
    dev_offset: int


def extents_from_segments(segments: list[Segment]) -> list[Extent]:
    """Check the segments tile ``[0, size)`` without gaps and turn them into extents."""
    out: list[Extent] = []
    pos = 0
    for seg in sorted(segments, key=lambda s: s.seg_start):
        if seg.seg_start != pos:
            raise LvIoError(errno.EIO, f"LV segments are not contiguous at offset {pos}")
        out.append(Extent(seg.seg_start, seg.seg_size, seg.pv, seg.pv_offset))
        pos += seg.seg_size
    return out


def device_node(vg: str, lv: str, dev_root: str = "/dev") -> str | None:
    """``<dev_root>/<vg>/<lv>`` if it is a block device (device-mapper active), else None."""
    path = os.path.join(dev_root, vg, lv)
    try:
        return path if stat.S_ISBLK(os.stat(path).st_mode) else None
    except OSError:
        return None


class LvBacking:
    """An LV opened for I/O (``pread``/``pwrite``/``capacity``/``fsync``/``close``)."""

    def __init__(
        self, lvm: Lvm, vg: str, lv: str, *, writable: bool, dev_root: str = "/dev"
    ) -> None:
        self.lvm = lvm
        self.vg = vg
        self.lv = lv
        self.writable = writable
        self.dev_root = dev_root
        self.name = f"{vg}/{lv}"
        self.extents: list[Extent] = []
        self.size = 0
        self._fds: dict[str, int] = {}
        self.closed = False
        try:
            self.refresh()
        except BaseException:
            self.close()
            raise

    # --- mapping --------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read size and mapping from the LVM metadata (after lvresize)."""
        node = device_node(self.vg, self.lv, self.dev_root)
        if node is not None:
            size = self.lvm.lv(self.vg, self.lv).size
            extents = [Extent(0, size, node, 0)]
        else:
            extents = extents_from_segments(self.lvm.segments(self.vg, self.lv))
            if not extents:
                raise LvIoError(errno.ENOENT, f"LV {self.name} has no segments")
            size = extents[-1].lv_start + extents[-1].length
        for dev in {e.device for e in extents}:
            self._fd(dev)
        self.extents = extents
        self.size = size

    def _fd(self, device: str) -> int:
        if self.closed:
            raise ValueError(f"I/O on closed LV {self.name}")
        fd = self._fds.get(device)
        if fd is None:
            flags = (os.O_RDWR if self.writable else os.O_RDONLY) | os.O_CLOEXEC
            fd = os.open(device, flags)
            self._fds[device] = fd
        return fd

    def _pieces(self, n: int, off: int) -> list[tuple[Extent, int, int]]:
        """(extent, offset within it, length) pieces covering LV bytes [off, off+n)."""
        out = []
        end = off + n
        for ext in self.extents:
            lo = max(off, ext.lv_start)
            hi = min(end, ext.lv_start + ext.length)
            if lo < hi:
                out.append((ext, lo - ext.lv_start, hi - lo))
        return out

    def _check_range(self, n: int, off: int, *, write: bool) -> None:
        if self.closed:
            raise ValueError(f"I/O on closed LV {self.name}")
        if off < 0 or n < 0:
            raise ValueError(f"negative offset or length ({off}, {n})")
        if off + n > self.size:
            what = "write" if write else "read"
            raise LvRangeError(
                errno.ENOSPC if write else errno.EINVAL,
                f"{what} of {n} bytes at offset {off} goes past the end of LV "
                f"{self.name} ({self.size} bytes)",
            )

    # --- Backing protocol -----------------------------------------------------------------

    def pread(self, n: int, off: int) -> bytes:
        self._check_range(n, off, write=False)
        chunks = []
        for ext, start, length in self._pieces(n, off):
            fd = self._fd(ext.device)
            pos = ext.dev_offset + start
            while length:
                data = os.pread(fd, length, pos)
                if not data:
                    raise LvIoError(errno.EIO, f"short read from {ext.device} at {pos}")
                chunks.append(data)
                pos += len(data)
                length -= len(data)
        return b"".join(chunks)

    def pwrite(self, data: bytes, off: int) -> int:
        if not self.writable:
            raise LvIoError(errno.EBADF, f"LV {self.name} is open read-only")
        view = memoryview(data)
        self._check_range(len(view), off, write=True)
        done = 0
        for ext, start, length in self._pieces(len(view), off):
            fd = self._fd(ext.device)
            pos = ext.dev_offset + start
            while length:
                written = os.pwrite(fd, view[done : done + length], pos)
                done += written
                pos += written
                length -= written
        return done

    def capacity(self) -> int:
        return self.size

    def truncate(self, n: int) -> None:
        raise LvIoError(
            errno.EINVAL, f"cannot truncate LV {self.name}: resize it with lvresize instead"
        )

    def fsync(self) -> None:
        for fd in self._fds.values():
            os.fsync(fd)

    def close(self) -> None:
        self.closed = True
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def __enter__(self) -> LvBacking:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LvBacking({self.name!r}, size={self.size}, extents={len(self.extents)})"


def open_lv(
    lvm: Lvm, vg: str, lv: str, *, writable: bool, dev_root: str = "/dev"
) -> LvBacking:
    """Open an LV for I/O: through ``<dev_root>/<vg>/<lv>`` if device-mapper provides it,
    otherwise through the PVs at the segments' offsets."""
    return LvBacking(lvm, vg, lv, writable=writable, dev_root=dev_root)
