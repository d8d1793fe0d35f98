"""The VHD engine as the chain core's image format (`sm.chain.protocols.ImageFormat`)."""

from __future__ import annotations

import uuid as uuidlib
from typing import TYPE_CHECKING

from sm.errors import VDIUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from sm.vhd import Storage, VhdInfo

__all__ = ["VhdFormat"]


class VhdFormat:
    """VHD images read and written through one `sm.vhd.Storage` (the SR's confinement: files
    inside the SR directory, LVs of the SR's VG)."""

    name = "vhd"

    def __init__(self, storage: Storage | None) -> None:
        self.storage = storage

    def info(self, path: str) -> VhdInfo:
        from sm import vhd

        return vhd.info(path, storage=self.storage)

    def child(self, parent: str, path: str, uuid: str) -> None:
        from sm import vhd

        vhd.snapshot(parent, path, uuid=uuidlib.UUID(uuid), storage=self.storage)

    def set_identity(self, path: str, uuid: str, hidden: bool) -> None:
        from sm import vhd

        info = vhd.info(path, storage=self.storage)
        if str(info.uuid) != uuid:
            vhd.set_uuid(path, uuidlib.UUID(uuid), storage=self.storage)
        if info.hidden != hidden:
            vhd.set_hidden(path, hidden, storage=self.storage)

    def create(self, path: str, size: int, uuid: str) -> None:
        from sm import vhd

        vhd.create(path, size, uuid=uuidlib.UUID(uuid), storage=self.storage)

    def resize(self, path: str, size: int) -> None:
        from sm import vhd

        vhd.resize(path, size, storage=self.storage)

    def physical_size(self, path: str) -> int:
        from sm import vhd

        return vhd.physical_size(path, storage=self.storage)

    def check(self, *paths: str) -> None:
        """VDIUnavailable (46) unless every image passes `sm.vhd.precheck` (metadata only):
        the structural check every chain operation runs on the images it will rename or
        rewrite, before it journals or changes anything."""
        from sm import vhd

        for path in paths:
            try:
                vhd.precheck(path, storage=self.storage)
            except OSError as err:
                raise VDIUnavailable(f"image {path} cannot be read, nothing was changed: "
                                     f"{err.strerror or err}") from err
            except vhd.VhdError as err:
                raise VDIUnavailable(
                    f"image {path} is damaged, nothing was changed: "
                    f"{str(err).removeprefix(f'{path}: ')} (`sm vhd check` shows every "
                    "problem, `sm vhd repair` fixes footers and the batmap)") from err

    def problems(self, path: str) -> list[str]:
        from sm import vhd

        return vhd.check(path, storage=self.storage)

    def allocation(self, path: str) -> str:
        from sm import extents

        return extents.vhd_allocation(path, storage=self.storage)

    def blocks(self, path: str) -> tuple[frozenset[int], int]:
        from sm.gc.vhdops import block_set

        return block_set(path, storage=self.storage)

    def data_bytes(self, path: str) -> int | None:
        """The set bits of the allocated blocks' bitmaps (a leaf written in scattered small
        pieces holds far less than its allocated blocks)."""
        from sm.vhd.image import Image

        try:
            img = Image.open(path, storage=self.storage)
        except Exception:
            return None
        try:
            if img.header is None:
                return None
            full = (1 << img.spb) - 1
            return sum((full if img.known_full(b) else img.bitmap(b)).bit_count()
                       for b in range(len(img.bat)) if img.data_offset(b) is not None) * 512
        except Exception:
            return None
        finally:
            img.close()

    def coalesce(self, child: str, progress: Callable[[int, int], None]) -> None:
        from sm import vhd

        vhd.coalesce(child, progress=progress, storage=self.storage)

    def fill(self, child: str, progress: Callable[[int, int], None]) -> None:
        from sm.gc.vhdops import fill_from_parent

        fill_from_parent(child, progress=progress, storage=self.storage)

    def reparent(self, path: str, parent: str, parent_uuid: str) -> None:
        from sm import vhd

        info = vhd.info(path, storage=self.storage)
        if str(info.parent_uuid) == parent_uuid and info.parent_path == parent:
            return
        vhd.reparent(path, parent, expect_uuid=uuidlib.UUID(parent_uuid), storage=self.storage)
