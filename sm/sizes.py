"""VDI sizes checked up front (standard library only): one rule for every SR type.

`vdi_create` and `vdi_resize` of every SR type call :func:`check_vdi_size` before anything is
written. It answers ``VDISize`` (79) with a message a person can act on for a size that is
negative, that the image format cannot hold (a VHD holds at most 2040 GiB; a raw image at most
the largest file offset, 2^63 - 1 bytes), or that the container cannot hold (the file system
of a File/NFS SR: :func:`file_size_limit`; the VG of an LVHD SR; a limit of the SR type's
own). A size is never discovered to be too large by a failing write, nor answered as an
``OverflowError`` (1200).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from sm.errors import VDISize

__all__ = ["MAX_OFFSET", "SECTOR", "VHD_MAX", "check_vdi_size", "file_size_limit",
           "vhd_footprint"]

SECTOR = 512
MAX_OFFSET = 2**63 - 1
"""The largest file offset (off_t); no image of any format is larger."""
VHD_MAX = 2040 * 1024**3
"""The largest virtual size of a VHD with 2 MiB blocks (sm.vhd.MAX_VIRTUAL_SIZE)."""
_BLOCK = 2 * 1024 * 1024
GiB = 1024**3

# Largest file of a file system, by type, as a function of its block size (Linux). A type not
# listed has no limit below MAX_OFFSET that we know of (xfs, btrfs, tmpfs, zfs: 8 EiB - 1).
_FS_LIMITS: dict[str, Callable[[int], int]] = {
    "ext4": lambda bsize: (2**32 - 1) * bsize,  # extents: 32-bit logical block numbers
    "ext3": lambda bsize: {1024: 16 * GiB, 2048: 256 * GiB}.get(bsize, 2048 * GiB),
    "ext2": lambda bsize: {1024: 16 * GiB, 2048: 256 * GiB}.get(bsize, 2048 * GiB),
    "vfat": lambda bsize: 2**32 - 1,
    "msdos": lambda bsize: 2**32 - 1,
}


def vhd_footprint(virtual_size: int) -> int:
    """Bytes a dynamic VHD of ``virtual_size`` takes once every block is written (data,
    per-block bitmaps and metadata), a little over: what its container must be able to hold."""
    blocks = -(-virtual_size // _BLOCK)
    return blocks * (_BLOCK + SECTOR) + blocks * 4 + 8 * 1024 * 1024


def _human(n: int) -> str:
    for unit, scale in (("TiB", 1024**4), ("GiB", GiB), ("MiB", 1024**2)):
        if n >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n} bytes"


def check_vdi_size(size: int, *, fmt: str, limit: int | None = None,
                   container: str = "the SR") -> int:
    """``size`` rounded up to whole sectors, if an image of format ``fmt`` ("vhd" or "raw")
    of that virtual size fits both the format and ``limit`` (the largest image ``container``
    can hold, None: no limit of its own); else VDISize (79)."""
    if size < 0:
        raise VDISize(f"a VDI size cannot be negative ({size})")
    if size > MAX_OFFSET - SECTOR:
        raise VDISize(f"{size} bytes is more than any image can hold (the largest file "
                      f"offset is {MAX_OFFSET})")
    rounded = -(-size // SECTOR) * SECTOR
    if fmt == "vhd":
        if rounded > VHD_MAX:
            raise VDISize(f"{size} bytes ({_human(size)}) is more than a VHD can hold "
                          f"({VHD_MAX} bytes, 2040 GiB); use a raw VDI (sm-config type=raw) "
                          "for a larger disk")
        need = vhd_footprint(rounded)
    else:
        need = rounded
    if limit is not None and need > limit:
        raise VDISize(f"{size} bytes ({_human(size)}): {container} cannot hold an image of "
                      f"{need} bytes ({_human(need)}); its limit is {limit} bytes "
                      f"({_human(limit)})")
    return rounded


def fs_type(path: str) -> str:
    """The type of the file system mounted at or above ``path`` (/proc/self/mounts)."""
    best, kind = "", ""
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                    best, kind = mnt, parts[2]
    except OSError:
        return ""
    return kind


def file_size_limit(path: str | os.PathLike[str]) -> int | None:
    """The largest file the file system holding ``path`` can hold, if it has a known limit
    below MAX_OFFSET (ext4 with 4 KiB blocks: 16 TiB - 4 KiB); None otherwise."""
    path = os.path.realpath(path)
    rule = _FS_LIMITS.get(fs_type(path))
    if rule is None:
        return None
    return rule(os.statvfs(path).f_bsize)
