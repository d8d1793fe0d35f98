"""Images stay inside the SR: no symbolic link, nothing that resolves elsewhere.

A File SR's image is a regular file directly in the SR directory, on the SR's file system.
`layout.refusal(path, root_dev)` says why an existing entry is not one (a symbolic link, not
a regular file, another file system: a file bind-mounted over it); `SRLayout.image` refuses
such an entry for every command with VDIUnavailable (46), so neither snapshot, clone,
revert, resize, delete, attach nor the collector ever writes through a link to a file
outside the SR.

`SRStorage` is the VHD engine's Storage confined to one SR directory: it opens with
`O_NOFOLLOW` and checks the opened file's type and device (what was opened, not only what a
name pointed at a moment earlier), and a parent locator resolves only to an image in the SR
(`exists` is false elsewhere, so the engine's `find_parent` never follows one outside). The
data path opens chains with it (`open_disk`, the nbdkit plugin's opener for File SR VHDs).

Standard library and the engine's backing module only: `open_disk` runs inside nbdkit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

from sm.vhd.backing import Backing, FileBacking, FileStorage

from .layout import refusal

__all__ = ["ImageOutsideSR", "SRStorage", "open_disk"]


class ImageOutsideSR(OSError):
    """An image path or parent locator that leaves the SR, or an entry that is not a regular
    file of the SR's file system."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(errno.EPERM, f"{path} {why}: sm uses only regular files inside the "
                                      "SR directory")
        self.filename = path


class SRStorage(FileStorage):
    """The engine's file Storage, confined to the images directly in `root`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(root)
        self._dev: int | None = None

    @property
    def root_dev(self) -> int:
        if self._dev is None:
            self._dev = os.stat(self.root).st_dev
        return self._dev

    def _inside(self, path: str) -> str:
        full = os.path.abspath(path)
        if os.path.dirname(full) != self.root:
            raise ImageOutsideSR(path, f"is outside the SR directory {self.root}")
        return full

    def open(self, path: str, writable: bool) -> Backing:
        full = self._inside(path)
        flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(full, flags)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise ImageOutsideSR(path, "is a symbolic link") from err
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_dev != self.root_dev:
            os.close(fd)
            raise ImageOutsideSR(path, "is not a regular file of the SR's file system")
        return FileBacking(path, fd)

    def exists(self, path: str) -> bool:
        try:
            full = self._inside(path)
            return os.path.lexists(full) and refusal(full, self.root_dev) is None
        except OSError:
            return False

    @contextlib.contextmanager
    def create(self, path: str, size: int) -> Iterator[Backing]:
        self._inside(path)
        with super().create(path, size) as backing:
            yield backing


def open_disk(path: str, *, writable: bool = False) -> object:
    """The nbdkit plugin's opener for a File SR VHD: the chain at `path`, every image of it
    inside the SR directory that holds `path`."""
    from sm.vhd import open_chain

    return open_chain(path, writable=writable, storage=SRStorage(os.path.dirname(path)))
