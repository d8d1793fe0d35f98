"""Copy byte ranges between fds: reflink (FICLONERANGE) when aligned, else copy_file_range,
else large pread/pwrite chunks; or reflink only (`clone_backing_range`)."""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from .backing import Backing

FICLONERANGE = 0x4020940D
_ALIGN = 4096
CHUNK = 8 * 1024 * 1024
_NO_OFFLOAD = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF,
               errno.ETXTBSY, errno.EPERM}


def _reflink(src_fd: int, src_off: int, dst_fd: int, dst_off: int, length: int) -> bool:
    if (src_off | dst_off | length) % _ALIGN:
        return False
    arg = struct.pack("=qQQQ", src_fd, src_off, length, dst_off)
    try:
        fcntl.ioctl(dst_fd, FICLONERANGE, arg)
    except OSError:
        return False
    return True


def copy_fd_range(src_fd: int, src_off: int, dst_fd: int, dst_off: int, length: int) -> bool:
    """Copy ``length`` bytes; a short source reads as zeros past its end. True when the range
    was cloned (reflink: no bytes were read or written)."""
    if length <= 0:
        return False
    if _reflink(src_fd, src_off, dst_fd, dst_off, length):
        return True
    done = 0
    try:
        while done < length:
            n = os.copy_file_range(src_fd, dst_fd, length - done, src_off + done, dst_off + done)
            if n == 0:
                break
            done += n
    except OSError as err:
        if err.errno not in _NO_OFFLOAD:
            raise
    while done < length:
        n = min(CHUNK, length - done)
        data = os.pread(src_fd, n, src_off + done)
        if len(data) < n:
            data = data.ljust(n, b"\0")
        view = memoryview(data)
        pos = dst_off + done
        while view:
            w = os.pwrite(dst_fd, view, pos)
            view = view[w:]
            pos += w
        done += n
    return False


def clone_backing_range(src: Backing, src_off: int, dst: Backing, dst_off: int,
                        length: int) -> bool:
    """Reflink ``length`` bytes between two Backings in one call, never copying; False (nothing
    written) when the file system, the alignment or either Backing does not allow it."""
    s = src.raw_range(src_off, length) if hasattr(src, "raw_range") else None
    d = dst.raw_range(dst_off, length) if hasattr(dst, "raw_range") else None
    return s is not None and d is not None and _reflink(s[0], s[1], d[0], d[1], length)


def copy_backing_range(src: Backing, src_off: int, dst: Backing, dst_off: int,
                       length: int) -> bool:
    """Copy between two Backings, offloaded to the kernel when both expose an fd range; True
    when the range was cloned (reflink)."""
    s = src.raw_range(src_off, length) if hasattr(src, "raw_range") else None
    d = dst.raw_range(dst_off, length) if hasattr(dst, "raw_range") else None
    if s is not None and d is not None:
        return copy_fd_range(s[0], s[1], d[0], d[1], length)
    done = 0
    while done < length:
        n = min(CHUNK, length - done)
        dst.pwrite(src.pread(n, src_off + done).ljust(n, b"\0"), dst_off + done)
        done += n
    return False
