"""`vdi_revert`'s request checks, shared by every SR type (File, NFS, LVHD and RBD): which VDI
is the target, and the refusals on the records alone. Pure functions, no I/O.

- the target is the VDI args[0] names (by uuid or location), else the snapshot's
  `snapshot_of`; none: VDIMissing (144). A `snapshot_of` that names a hidden record (the VDI
  was deleted and its image kept as a base) is missing too;
- the snapshot and the target are one VDI: InvalidArg (1);
- the target is a hidden base: InvalidArg (1).

Image-chain SR types add `check_chain` (VHD VDIs only, the target no parent of others); each
SR type keeps the refusals that come from its own storage (RBD: the snapshot must be a Ceph
snapshot, the target is no snapshot).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sm.errors import InvalidArg, VDIInUse, VDIMissing, VDIType

if TYPE_CHECKING:
    from sm.records import VdiRecord

__all__ = ["check_chain", "revert_target"]


def revert_target(snapshot: VdiRecord, ref: str | None,
                  lookup: Callable[[str], VdiRecord | None]) -> VdiRecord:
    """The target of a revert to `snapshot`: the VDI `ref` (args[0]) names, else the one the
    snapshot was taken of; `lookup` finds a record by uuid or location. Refuses a target that
    is the snapshot itself or a hidden base."""
    target = lookup(ref) if ref else None
    if target is None and snapshot.snapshot_of:
        target = lookup(snapshot.snapshot_of)
        if target is not None and target.hidden:
            target = None  # deleted, its image kept as a base: the VDI is gone
    if target is None:
        raise VDIMissing(f"vdi_revert: no target VDI (args[0] {ref!r}, snapshot_of "
                         f"{snapshot.snapshot_of!r}): the VDI the snapshot was taken of is gone")
    if snapshot.uuid == target.uuid:
        raise InvalidArg(f"vdi_revert: VDI {snapshot.uuid} is both the snapshot and the target")
    if target.hidden:
        raise InvalidArg(f"vdi_revert: the target {target.uuid} is a hidden base, not a VDI")
    return target


def check_chain(snapshot: VdiRecord, target: VdiRecord, target_children: Sequence[str]) -> None:
    """The refusals of a revert in an image chain (File, NFS, LVHD): raw VDIs (VDIType 66), a
    target other VDIs depend on (VDIInUse 24: its image cannot be replaced)."""
    for rec, role in ((snapshot, "snapshot"), (target, "target")):
        if rec.vdi_type != "vhd":
            raise VDIType(f"vdi_revert: the {role} {rec.uuid} is a raw VDI; only VHD VDIs "
                          "can be reverted")
    if target_children:
        raise VDIInUse(f"vdi_revert: the target {target.uuid} is the parent of other VDIs")
