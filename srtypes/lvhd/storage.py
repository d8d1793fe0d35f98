"""The VHD engine's ``Storage`` over LVs: image paths are ``/dev/<vg>/<lv>``.

The path is only a name: I/O goes through :func:`~srtypes.lvhd.lvio.open_lv` (device-mapper
node if the kernel has one, else the PV at the segments' offsets). Parent locators written by
the engine are relative (``./VHD-<parent uuid>``), so a child names its parent's LV and the
chain resolves through this Storage in any VG the SR is moved to.

``create`` does not allocate: the caller creates the LV at the size it wants (that decision
belongs to the provisioning code, which also checks free space first) and the engine writes the
image into it.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from .lvio import LvBacking, open_lv
from .lvm import Lvm

__all__ = ["LvImage", "LvStorage", "lv_path"]


def lv_path(vg: str, lv: str) -> str:
    return f"/dev/{vg}/{lv}"


class LvImage:
    """An :class:`LvBacking` as an engine ``Backing`` (fixed capacity)."""

    def __init__(self, path: str, backing: LvBacking) -> None:
        self.path = path
        self.lv = backing

    def pread(self, n: int, off: int) -> bytes:
        n = max(0, min(n, self.lv.size - off))  # the engine may read to the end of data
        return self.lv.pread(n, off) if n else b""

    def pwrite(self, data: bytes | bytearray | memoryview, off: int) -> None:
        self.lv.pwrite(bytes(data), off)

    def capacity(self) -> int | None:
        return self.lv.size

    def size(self) -> int:
        return self.lv.size

    def truncate(self, n: int) -> None:
        if n > self.lv.size:
            raise OSError(errno.ENOSPC, f"LV {self.lv.name} is {self.lv.size} bytes, not {n}")

    def fsync(self) -> None:
        self.lv.fsync()

    def close(self) -> None:
        self.lv.close()

    def raw_range(self, off: int, n: int) -> tuple[int, int] | None:
        return None


class LvStorage:
    """Storage for the images of one VG."""

    def __init__(self, lvm: Lvm, vg: str, dev_root: str = "/dev") -> None:
        self.lvm = lvm
        self.vg = vg
        self.dev_root = dev_root

    def split(self, path: str) -> str:
        """The LV name of an image path in this VG (``OSError(ENOENT)`` for another VG)."""
        vg_dir, lv = os.path.split(os.path.normpath(path))
        if os.path.basename(vg_dir) != self.vg:
            raise FileNotFoundError(errno.ENOENT, f"{path} is not in VG {self.vg}")
        return lv

    def path(self, lv: str) -> str:
        return lv_path(self.vg, lv)

    def open(self, path: str, writable: bool) -> LvImage:
        lv = self.split(path)
        if not self.lvm.lv_exists(self.vg, lv):
            raise FileNotFoundError(errno.ENOENT, f"no LV {self.vg}/{lv}", path)
        return LvImage(path, open_lv(self.lvm, self.vg, lv, writable=writable,
                                     dev_root=self.dev_root))

    def exists(self, path: str) -> bool:
        try:
            return self.lvm.lv_exists(self.vg, self.split(path))
        except FileNotFoundError:
            return False

    @contextlib.contextmanager
    def create(self, path: str, size: int) -> Iterator[LvImage]:
        image = self.open(path, True)
        try:
            if image.size() < size:
                raise OSError(errno.ENOSPC, f"LV of {path} is smaller than {size} bytes")
            yield image
            image.fsync()
        finally:
            image.close()
