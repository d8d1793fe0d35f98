"""The VM methods of `StorageManager` (a mixin; the logic is in `sm.api.vms`)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, cast

from sm.options import DeleteScope, checked

from . import vms, vmsnap
from .vmstate import VmState

if TYPE_CHECKING:
    from .manager import StorageManager
    from .vmmodels import VM, VMRevertResult, VMSnapshot, VMSnapshotTree

__all__ = ["VmMethods"]


class VmMethods:
    """VM groups: named sets of VDIs (on any SRs) snapshotted, reverted and deleted together
    (docs/vm-snapshots.md)."""

    def _sm(self) -> StorageManager:
        return cast("StorageManager", self)

    @functools.cached_property
    def vm_state(self) -> VmState:
        return VmState(self._sm().state)

    def vms(self) -> list[VM]:
        return vms.vms(self._sm())

    def vm(self, ref: str) -> VM:
        """A VM by name or uuid."""
        return vms.show(self._sm(), ref)

    def vm_create(self, name: str, description: str = "") -> VM:
        return vms.create(self._sm(), name, description)

    def vm_delete(self, ref: str) -> None:
        """Forget the VM (its disks stay); refused while it has snapshots."""
        vms.delete(self._sm(), ref)

    @checked
    def vm_add_disk(self, ref: str, vdi: str, *, sr: str | None = None,
                    cdrom: bool = False) -> VM:
        """Add a VDI; `cdrom` marks a CD-ROM/ISO image, which snapshots skip."""
        return vms.add_disk(self._sm(), ref, vdi, sr=sr, cdrom=cdrom)

    def vm_remove_disk(self, ref: str, vdi: str, *, sr: str | None = None) -> VM:
        return vms.remove_disk(self._sm(), ref, vdi, sr=sr)

    @checked
    def vm_snapshot(self, ref: str, name: str = "", description: str = "", *,
                    for_backup: bool = False, for_export: bool = False) -> VMSnapshot:
        """Snapshot all disks at one consistency point (live disks paused together); all or
        nothing. `for_export` attaches each disk snapshot read-only and records where a backup
        tool reads it (`export_path`)."""
        return vmsnap.snapshot(self._sm(), ref, name, description, for_backup=for_backup,
                            for_export=for_export)

    def vm_snapshots(self, ref: str) -> VMSnapshotTree:
        return vms.snapshots(self._sm(), ref)

    def vm_revert(self, ref: str, snapshot: str) -> VMRevertResult:
        """Revert every disk to the snapshot (in place or by clone, identities kept)."""
        return vms.revert(self._sm(), ref, snapshot)

    @checked
    def vm_snapshot_delete(self, ref: str, snapshot: str, *, scope: DeleteScope = "one",
                           metadata_only: bool = False) -> list[str]:
        return vms.snapshot_delete(self._sm(), ref, snapshot, scope=scope,
                                   metadata_only=metadata_only)
