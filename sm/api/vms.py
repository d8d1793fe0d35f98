"""VM groups and VM (multi-disk) snapshots (docs/vm-snapshots.md): groups, the VM snapshot
tree, revert and delete. Taking a snapshot is `sm.api.vmsnap`.

Revert reverts each disk with the VDI revert (in place, or the clone fallback with the
identity handed over), so every disk keeps uuid, name-label and location. Delete follows the
libvirt model, as VDI snapshot trees do (`sm.api.trees`).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid as uuidlib
import warnings
from typing import TYPE_CHECKING

from sm.errors import InvalidArg, SMError, VDIMissing
from sm.faults import crash_point
from sm.options import DeleteScope

from . import guards, trees
from . import revert as revert_ops
from .vmmodels import (
    VM,
    VMDisk,
    VMRevertResult,
    VMSnapshot,
    VMSnapshotDisk,
    VMSnapshotNode,
    VMSnapshotTree,
)
from .vmstate import VmDisk, VmRow, VmSnapDisk, VmSnapRow, VmState

if TYPE_CHECKING:
    from .config import SrConfig
    from .manager import StorageManager
    from .models import VDI
    from .state import JournalEntry

__all__ = ["OP", "MissingDisk", "Scope", "add_disk", "create", "delete", "recover", "remove_disk",
           "revert", "show", "snapshot_delete", "snapshots", "vms"]

OP = "vm-snapshot-delete"

log = logging.getLogger(__name__)
Scope = DeleteScope


def _vs(mgr: StorageManager) -> VmState:
    vs: VmState = mgr.vm_state
    return vs


def _find_vm(vs: VmState, ref: str) -> VmRow:
    for vm in vs.vms():
        if ref in (vm.uuid, vm.name) or ref.lower() == vm.uuid:
            return vm
    raise InvalidArg(f"no VM {ref!r} (see `sm vm list`)")


class _Vdis:
    """The VDIs of each SR, listed once per operation."""

    def __init__(self, mgr: StorageManager) -> None:
        self.mgr = mgr
        self.by_sr: dict[str, list[VDI]] = {}

    def cfg(self, sr: str) -> SrConfig:
        return self.mgr._config(sr)

    def get(self, sr: str, uuid: str) -> VDI | None:
        if sr not in self.by_sr:
            self.by_sr[sr] = self.mgr.vdis(sr, hidden=True)
        return next((v for v in self.by_sr[sr] if v.uuid == uuid), None)

    def need(self, sr: str, uuid: str, what: str) -> VDI:
        found = self.get(sr, uuid)
        if found is None:
            raise VDIMissing(f"{what} {uuid} on SR {sr} no longer exists")
        return found

    def disk(self, vm: VmRow, sr: str, uuid: str, doing: str) -> tuple[SrConfig, VDI] | None:
        """A disk of `vm` and its SR; None, with a `MissingDisk` warning, if the disk or its
        SR is gone (the VM stays usable: the other disks are `doing`)."""
        try:
            cfg = self.cfg(sr)
            found = self.get(sr, uuid)
        except InvalidArg:  # the SR is no longer declared
            cfg, found = None, None
        if cfg is None or found is None:
            where = f"on SR {cfg.name}" if cfg else f"(its SR {sr} is gone)"
            warnings.warn(MissingDisk(
                f"disk {uuid} of VM {vm.name} no longer exists {where}; {doing} the other "
                f"disks (sm vm remove-disk {vm.name} {uuid} forgets it)"), stacklevel=3)
            return None
        return cfg, found


class MissingDisk(UserWarning):
    """A disk of a VM vanished (deleted through its driver, or its SR forgotten): VM
    snapshots and reverts go on with the other disks and warn with this (the CLI prints it
    as `Warning: ...`); their results list it in `missing`."""


# -- groups -----------------------------------------------------------------------------------


def create(mgr: StorageManager, name: str, description: str = "") -> VM:
    if not name or name != name.strip():
        raise InvalidArg(f"invalid VM name {name!r}")
    with mgr._locked("vm create"):
        vs = _vs(mgr)
        if any(name in (vm.name, vm.uuid) for vm in vs.vms()):
            raise InvalidArg(f"a VM named {name!r} exists")
        vs.add_vm(VmRow(str(uuidlib.uuid4()), name, description, time.time()))
    return show(mgr, name)


def delete(mgr: StorageManager, ref: str) -> None:
    """Forget a VM (its disks stay); refused while it has snapshots."""
    with mgr._locked("vm delete"):
        vs = _vs(mgr)
        vm = _find_vm(vs, ref)
        if vs.snapshots(vm.uuid):
            raise InvalidArg(f"VM {vm.name} has snapshots; delete them first")
        vs.remove_vm(vm.uuid)


def add_disk(mgr: StorageManager, ref: str, vdi_ref: str, *, sr: str | None = None,
             cdrom: bool = False) -> VM:
    """Add a VDI to the VM; `cdrom` marks a CD-ROM / ISO image (never snapshotted)."""
    with mgr._locked("vm add-disk"):
        vs = _vs(mgr)
        vm = _find_vm(vs, ref)
        vdi = mgr.vdi(vdi_ref, sr)
        if vdi.is_a_snapshot or vdi.hidden:
            raise InvalidArg(f"{vdi.uuid} is a snapshot or a hidden base, not a disk")
        owners = vs.disk_owners(vdi.sr, vdi.uuid)
        if any(o.vm == vm.uuid for o in owners):
            raise InvalidArg(f"{vdi.uuid} is already a disk of VM {vm.name}")
        if not cdrom and any(o.kind == "disk" for o in owners):
            raise InvalidArg(f"{vdi.uuid} is a disk of another VM")
        position = max((d.position for d in vs.disks(vm.uuid)), default=-1) + 1
        vs.add_disk(VmDisk(vm.uuid, position, vdi.sr, vdi.uuid, "cdrom" if cdrom else "disk"))
    return show(mgr, vm.uuid)


def remove_disk(mgr: StorageManager, ref: str, vdi_ref: str, *, sr: str | None = None) -> VM:
    with mgr._locked("vm remove-disk"):
        vs = _vs(mgr)
        vm = _find_vm(vs, ref)
        disks = vs.disks(vm.uuid)
        match = [d for d in disks if d.vdi == vdi_ref.lower()]
        if not match:
            vdi = mgr.vdi(vdi_ref, sr)
            match = [d for d in disks if (d.sr, d.vdi) == (vdi.sr, vdi.uuid)]
        if not match:
            raise InvalidArg(f"{vdi_ref} is not a disk of VM {vm.name}")
        vs.remove_disk(vm.uuid, match[0].sr, match[0].vdi)
    return show(mgr, vm.uuid)


def _present(mgr: StorageManager, vs: VmState, vm: VmRow, vdis: _Vdis) -> VM:
    disks = []
    for d in vs.disks(vm.uuid):
        try:
            cfg = vdis.cfg(d.sr)
            vdi = vdis.get(d.sr, d.vdi)
        except InvalidArg:  # the SR is gone
            cfg, vdi = None, None
        disks.append(VMDisk(d.position, d.sr, cfg.name if cfg else "", d.vdi,
                            vdi.name_label if vdi else "", d.kind,
                            vdi.virtual_size if vdi else 0, vdi is None))
    return VM(vm.uuid, vm.name, vm.description, vm.created, tuple(disks),
              vs.current(vm.uuid), len(vs.snapshots(vm.uuid)))


def vms(mgr: StorageManager) -> list[VM]:
    vs, vdis = _vs(mgr), _Vdis(mgr)
    return [_present(mgr, vs, vm, vdis) for vm in vs.vms()]


def show(mgr: StorageManager, ref: str) -> VM:
    vs = _vs(mgr)
    return _present(mgr, vs, _find_vm(vs, ref), _Vdis(mgr))


# -- snapshot ---------------------------------------------------------------------------------


def _label(vdi: VDI, cfg: SrConfig) -> str:
    return f"disk {vdi.name_label or vdi.uuid} ({vdi.uuid}) on SR {cfg.name}"


def _named_error(err: BaseException, what: str) -> SMError:
    """The same error class, its message prefixed with the disk it happened to."""
    if isinstance(err, SMError):
        return type(err)(f"{what}: {err.message or err.description}", details=err.details)
    return SMError(f"{what}: {type(err).__name__}: {err}")


# -- tree, revert, delete ---------------------------------------------------------------------


def _snapshot_of(vs: VmState, current: str | None, row: VmSnapRow) -> VMSnapshot:
    disks = tuple(VMSnapshotDisk(d.sr, d.vdi, d.snap_sr, d.snap, d.export_path)
                  for d in vs.snapshot_disks(row.uuid))
    return VMSnapshot(row.uuid, row.vm, row.name, row.description, row.created, row.parent,
                      row.for_backup, row.for_export, row.uuid == current, disks)


def _resolve(vs: VmState, vm: VmRow, ref: str) -> VmSnapRow:
    rows = vs.snapshots(vm.uuid)
    found = [s for s in rows if s.uuid == ref.lower()] or [s for s in rows if s.name == ref]
    if len(found) > 1:
        raise InvalidArg(f"{len(found)} snapshots of VM {vm.name} are called {ref!r} "
                         f"({', '.join(s.uuid for s in found)}); use a uuid")
    if not found:
        raise VDIMissing(f"no snapshot {ref!r} of VM {vm.name}")
    return found[0]


def snapshots(mgr: StorageManager, ref: str) -> VMSnapshotTree:
    vs = _vs(mgr)
    vm = _find_vm(vs, ref)
    rows = vs.snapshots(vm.uuid)
    current = vs.current(vm.uuid)
    known = {r.uuid for r in rows}
    kids: dict[str | None, list[VmSnapRow]] = {}
    for r in rows:
        kids.setdefault(r.parent if r.parent in known else None, []).append(r)

    def make(r: VmSnapRow) -> VMSnapshotNode:
        return VMSnapshotNode(_snapshot_of(vs, current, r),
                              tuple(make(k) for k in kids.get(r.uuid, [])))

    return VMSnapshotTree(_present(mgr, vs, vm, _Vdis(mgr)), current,
                          tuple(make(r) for r in kids.get(None, [])))


def revert(mgr: StorageManager, ref: str, snap_ref: str) -> VMRevertResult:
    """Revert every disk recorded in the snapshot; the snapshot becomes current."""
    with mgr._locked("vm revert"):
        vs = _vs(mgr)
        vm = _find_vm(vs, ref)
        snap = _resolve(vs, vm, snap_ref)
        vdis = _Vdis(mgr)
        plan = []
        missing: list[str] = []
        for sd in vs.snapshot_disks(snap.uuid):
            disk = vdis.disk(vm, sd.sr, sd.vdi, "reverting")
            if disk is None:
                missing.append(sd.vdi)
                continue
            cfg, target = disk
            taken = vdis.need(sd.snap_sr, sd.snap, f"snapshot of {_label(target, cfg)}")
            plan.append((cfg, target, taken))
        if not plan:
            raise VDIMissing(f"none of the disks of VM {vm.name} in snapshot {snap.name} "
                             f"exist any more ({', '.join(missing)})")
        for cfg, target, taken in plan:  # every refusal before the first disk is touched
            try:
                trees.check_lineage(mgr.state, target, taken)
                guards.detached(mgr._client(cfg), target, "revert")
            except SMError as err:
                raise _named_error(err, f"VM {vm.name}, {_label(target, cfg)}") from err
        done: list[dict[str, str]] = []
        for cfg, target, taken in plan:
            try:
                result = revert_ops.revert(mgr, cfg, target, taken, safety=False)
            except Exception as err:
                reverted = ", ".join(x["vdi"] for x in done) or "none"
                raise _named_error(err, f"{_label(target, cfg)} (already reverted: "
                                        f"{reverted})") from err
            done.append({"vdi": target.uuid, "snapshot": taken.uuid, "path": result.path})
        vs.set_current(vm.uuid, snap.uuid)
    return VMRevertResult(vm.uuid, snap.uuid, tuple(done), tuple(missing))


def snapshot_delete(mgr: StorageManager, ref: str, snap_ref: str, *, scope: Scope = "one",
                    metadata_only: bool = False) -> list[str]:
    """Delete a VM snapshot the libvirt way (`one`: children move to its parent;
    `with-children`; `children-only`), its disk snapshots with it unless `metadata_only`.
    Returns the VM snapshot uuids removed. Journaled (`vm-snapshot-delete`, crash point
    `api.vm.snapshot_delete.disk`): a process killed half-way is finished by the next command
    (`recover`), so no VM snapshot is left with some of its disk snapshots gone."""
    if scope not in ("one", "with-children", "children-only"):
        raise InvalidArg(f"unknown scope {scope!r}")
    with mgr._locked("vm snapshot-delete"):
        vs = _vs(mgr)
        vm = _find_vm(vs, ref)
        target = _resolve(vs, vm, snap_ref)
        order = [target.uuid] if scope == "one" else trees.postorder(
            [(r.uuid, r.parent) for r in vs.snapshots(vm.uuid)], target.uuid)
        if scope == "children-only":
            order = order[:-1]
        entry = mgr.state.journal_begin(OP, "", vm=vm.uuid, order=order,
                                        metadata_only=metadata_only)
        try:
            _delete_rows(mgr, vs, vm.uuid, order, metadata_only, _Vdis(mgr))
        finally:  # a driver error ends the deletion there (a crash leaves the entry)
            mgr.state.journal_done(entry)
        return order


def _delete_rows(mgr: StorageManager, vs: VmState, vm: str, order: list[str],
                 metadata_only: bool, vdis: _Vdis) -> None:
    for uuid in order:
        row = next((r for r in vs.snapshots(vm) if r.uuid == uuid), None)
        if row is None:
            continue
        for sd in vs.snapshot_disks(uuid):
            _drop_disk_snapshot(mgr, vdis, sd, metadata_only)
            crash_point("api.vm.snapshot_delete.disk")
        vs.remove_snapshot(row)


def recover(mgr: StorageManager, entry: JournalEntry) -> None:
    """Finish a VM snapshot deletion a crash interrupted (with the API lock held: the VDIs
    are listed without `mgr.vdis`, which would repair again)."""
    from .present import present

    vs, d, vdis = _vs(mgr), entry.data, _Vdis(mgr)
    for sr in {sd.snap_sr for uuid in d["order"] for sd in vs.snapshot_disks(uuid)}:
        cfg = next((c for c in mgr._configs() if c.uuid == sr), None)
        if cfg is not None:
            vdis.by_sr[sr] = present(mgr.state, sr, mgr._client(cfg).records())
    _delete_rows(mgr, vs, str(d["vm"]), list(d["order"]), bool(d["metadata_only"]), vdis)
    mgr.state.journal_done(entry.id)


def _drop_disk_snapshot(mgr: StorageManager, vdis: _Vdis, sd: VmSnapDisk,
                        metadata_only: bool) -> None:
    cfg = next((c for c in mgr._configs() if c.uuid == sd.snap_sr), None)
    if cfg is None:
        return
    client = mgr._client(cfg)
    found = vdis.get(cfg.uuid, sd.snap)
    if found is None:
        mgr.state.remove_snapshot((sd.snap_sr, sd.snap))
        return
    if sd.export_path:
        with contextlib.suppress(SMError):
            client.vdi_detach(found.ref)
    if metadata_only:
        return
    key = (sd.snap_sr, sd.snap)
    if mgr.state.snapshot(key) is not None:
        trees.delete(mgr.state, client, vdis.by_sr[cfg.uuid], key, "one", False)
    else:
        with contextlib.suppress(VDIMissing):
            client.vdi_delete(found.ref)
