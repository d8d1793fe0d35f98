"""The File, NFS and LVHD SRs' side of the error edge.

`engine_errors` is `sm.edge.errors_as`, the one mapping of engine, OS, lvm2, Ceph and NBD errors
to SM errors (the table is in `sm.edge` and docs/design.md); the name stays for the chain
operations that use it.

`require_sound(*paths)` is the structural check (`sm.vhd.precheck`) every chain operation of the
File, NFS and LVHD SRs runs on the images it will rename or rewrite, before it journals or
changes anything: a damaged image is refused with VDIUnavailable (46) naming it and the problem.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sm.edge import errors_as
from sm.errors import VDIUnavailable

if TYPE_CHECKING:
    from sm.vhd import Storage

__all__ = ["engine_errors", "require_sound"]


def require_sound(*paths: str, storage: Storage | None = None) -> None:
    """VDIUnavailable (46) unless every image passes `sm.vhd.precheck`; reads metadata only."""
    from sm import vhd

    for path in paths:
        try:
            vhd.precheck(path, storage=storage)
        except OSError as err:
            raise VDIUnavailable(f"image {path} cannot be read, nothing was changed: "
                                 f"{err.strerror or err}") from err
        except vhd.VhdError as err:
            raise VDIUnavailable(
                f"image {path} is damaged, nothing was changed: "
                f"{str(err).removeprefix(f'{path}: ')} (`sm vhd check` shows every problem, "
                "`sm vhd repair` fixes footers and the batmap)") from err


engine_errors = errors_as
"""`sm.edge.errors_as` (its old name here)."""
