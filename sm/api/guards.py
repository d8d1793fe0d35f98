"""Refusals the layer above makes before it asks a driver for anything (issue 16).

Each guard raises the SM error a toolstack would get for the same mistake and changes nothing:

- `mutable`: snapshots (and read-only VDIs) never change: resize, write and import into one
  are refused with VDIUnavailable (46), as the drivers refuse a writable attach of a read-only
  VDI and the original drivers a resize of a hidden one.
- `vm_disks`: a VDI that is a disk (or CD-ROM) of a VM is not deleted unless forced: VDIInUse
  (24) naming the VM; forced, it also leaves the VM (docs/vm-snapshots.md).
- `detached`: a VDI attached on this host (through its driver, by a toolstack or
  `sm vdi attach`) is not reverted, in place or by clone: VDIInUse (24) naming the
  attachment (docs/api.md, "Never under its user").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sm.errors import Unimplemented, VDIInUse, VDIUnavailable

if TYPE_CHECKING:
    from .client import SRClient
    from .manager import StorageManager
    from .models import VDI
    from .vmstate import VmDisk

__all__ = ["detached", "mutable", "vm_disks"]


def _name(vdi: VDI) -> str:
    return f"VDI {vdi.uuid}{f' ({vdi.name_label})' if vdi.name_label else ''}"


def mutable(vdi: VDI, action: str) -> None:
    """Refuse to `action` (resize, write, import into) a snapshot or read-only VDI."""
    if vdi.is_a_snapshot:
        raise VDIUnavailable(f"cannot {action} {_name(vdi)}: it is a snapshot"
                             f"{f' of {vdi.snapshot_of}' if vdi.snapshot_of else ''}, and "
                             "snapshots never change; clone it for a writable copy")
    if vdi.read_only or vdi.hidden:
        raise VDIUnavailable(f"cannot {action} {_name(vdi)}: it is read-only"
                             f"{' (a hidden snapshot base)' if vdi.hidden else ''}")


def vm_disks(mgr: StorageManager, vdi: VDI, *, force: bool) -> list[VmDisk]:
    """The VM memberships of `vdi`; refused (VDIInUse) if there are any and not `force`."""
    owners = mgr.vm_state.disk_owners(vdi.sr, vdi.uuid)
    if owners and not force:
        names = {vm.uuid: vm.name for vm in mgr.vm_state.vms()}
        which = ", ".join(f"{'a CD-ROM' if o.kind == 'cdrom' else 'a disk'} of VM "
                          f"{names.get(o.vm, o.vm)}" for o in owners)
        first = names.get(owners[0].vm, owners[0].vm)
        raise VDIInUse(f"{_name(vdi)} is {which}: remove it from the VM first "
                       f"(sm vm remove-disk {first} {vdi.uuid}), or delete it with --force "
                       "(force=True), which also removes it from the VM")
    return owners


def detached(client: SRClient, vdi: VDI, action: str) -> None:
    """Refuse to `action` a VDI attached on this host (the driver's `sm_vdi_get` reports
    `attached`: "ro" or "rw"); an SR type that does not answer `sm_vdi_get` is taken at its
    word (its own commands refuse what they cannot do)."""
    try:
        record = client.record(*vdi.ref)
    except Unimplemented:
        return
    mode = str(record.get("attached") or "")
    if mode:
        how = {"rw": "read-write", "ro": "read-only"}.get(mode, mode)
        raise VDIInUse(f"cannot {action} {_name(vdi)}: it is attached {how} on this host "
                       "(by a toolstack through its driver, or `sm vdi attach`); detach it "
                       "first: a revert never changes a disk under its user")
