"""VM groups and VM (multi-disk) snapshots (docs/vm-snapshots.md).

Snapshot, journaled as `vm-snapshot` in the state journal (crash points `api.vm.snapshot.*`):

    begun    intent {vm, snapshot uuid, disks, records of their SRs before}
    paused   the live disks' data paths are paused (`livepause`), the list recorded
    taken    after each disk's `vdi_snapshot`, the snapshots so far
    resumed  data paths resumed
    then     export attachments; one transaction records the VM snapshot, each disk snapshot
             joins its VDI's tree; the journal entry is removed

A failure (a driver error, a full SR) at any step deletes the snapshots already taken and
resumes the paused disks; the error names the disk that failed. A crash leaves the entry: the
next API operation (`recover`) deletes every snapshot of those disks that did not exist
before and resumes what was paused. So a VM snapshot exists completely or not at all.

Revert reverts each disk with the VDI revert (in place, or the clone fallback with the
identity handed over), so every disk keeps uuid, name-label and location.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid as uuidlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from sm.errors import InvalidArg, SMError, VDIMissing
from sm.faults import crash_point

from . import livepause, trees
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
    from .client import SRClient
    from .config import SrConfig
    from .manager import StorageManager
    from .models import VDI
    from .state import JournalEntry

__all__ = ["OP", "Scope", "add_disk", "create", "delete", "recover", "remove_disk", "revert",
           "show", "snapshot", "snapshot_delete", "snapshots", "vms"]

OP = "vm-snapshot"
log = logging.getLogger(__name__)
Scope = Literal["one", "with-children", "children-only"]


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


def snapshot(mgr: StorageManager, ref: str, name: str = "", description: str = "", *,
             for_backup: bool = False, for_export: bool = False) -> VMSnapshot:
    """Snapshot every disk of the VM (CD-ROMs skipped) at one consistency point."""
    with mgr._locked("vm snapshot"):
        vs = _vs(mgr)
        vm = _find_vm(vs, ref)
        existing = {s.name for s in vs.snapshots(vm.uuid)}
        if name and name in existing:
            raise InvalidArg(f"VM {vm.name} already has a snapshot called {name!r}")
        if not name:
            name = base = time.strftime("%Y-%m-%dT%H:%M:%S")
            n = 1
            while name in existing:
                n, name = n + 1, f"{base}.{n}"
        vdis = _Vdis(mgr)
        plan: list[tuple[VmDisk, SrConfig, VDI]] = []
        for d in vs.disks(vm.uuid):
            if d.kind != "disk":
                continue
            plan.append((d, vdis.cfg(d.sr), vdis.need(d.sr, d.vdi, f"disk of VM {vm.name}")))
        if not plan:
            raise InvalidArg(f"VM {vm.name} has no disks to snapshot")
        snap_uuid = str(uuidlib.uuid4())
        taken = _take(mgr, vm, snap_uuid, plan)
        try:
            exports = [_export(mgr._client(cfg), ref_) if for_export else ""
                       for (_, cfg, _), ref_ in zip(plan, taken)]
            crash_point("api.vm.snapshot.exported")
            row = VmSnapRow(snap_uuid, vm.uuid, vs.current(vm.uuid), name, description,
                            time.time(), for_backup, for_export)
            disks = [VmSnapDisk(snap_uuid, d.position, vdi.sr, vdi.uuid, cfg.uuid, r[0], x)
                     for (d, cfg, vdi), r, x in zip(plan, taken, exports)]
            with mgr.state.transaction():
                vs.add_snapshot(row, disks)
                for (_, cfg, vdi), r in zip(plan, taken):
                    trees.add(mgr.state, vdi, (cfg.uuid, r[0]), name, description)
                mgr.state.journal_done(_entry_id(mgr, snap_uuid))
        except BaseException:
            _drop(mgr, [(cfg.uuid, r) for (_, cfg, _), r in zip(plan, taken)], exports=True)
            mgr.state.journal_done(_entry_id(mgr, snap_uuid))
            raise
    return _snapshot_of(vs, vs.current(vm.uuid), row)


def _take(mgr: StorageManager, vm: VmRow, snap_uuid: str,
          plan: list[tuple[VmDisk, SrConfig, VDI]]) -> list[tuple[str, str]]:
    """Pause, snapshot every disk, resume. On failure nothing is left and the error names
    the disk; on success the journal entry stays open (at `resumed`) for the caller."""
    clients = [mgr._client(cfg) for _, cfg, _ in plan]
    before = {cfg.uuid: [str(r["uuid"]) for r in client.records()]
              for (_, cfg, _), client in zip(plan, clients)}
    entry = mgr.state.journal_begin(
        OP, "", vm=vm.uuid, snapshot=snap_uuid, before=before,
        disks=[[cfg.uuid, *vdi.ref] for _, cfg, vdi in plan], paused=[], taken=[])
    crash_point("api.vm.snapshot.begun")
    paused: list[dict[str, Any]] = []
    taken: list[tuple[str, str]] = []
    try:
        try:
            livepause.pause_all(mgr, [(c, vdi.ref) for c, (_, _, vdi) in zip(clients, plan)],
                                paused)
        finally:
            mgr.state.journal_step(entry, "paused", paused=paused)
        crash_point("api.vm.snapshot.paused")
        for client, (_, cfg, vdi) in zip(clients, plan):
            try:
                taken.append(client.vdi_snapshot(vdi.ref))
            except Exception as err:
                raise _named_error(err, _label(vdi, cfg)) from err
            mgr.state.journal_step(entry, "taken", taken=[[c.sr.uuid, *t] for c, t in
                                                          zip(clients, taken)])
            crash_point("api.vm.snapshot.taken")
    except BaseException:
        livepause.resume_all(mgr, paused)
        _drop(mgr, [(c.sr.uuid, t) for c, t in zip(clients, taken)], exports=False)
        mgr.state.journal_done(entry)
        raise
    errors = livepause.resume_all(mgr, paused)
    mgr.state.journal_step(entry, "resumed")
    crash_point("api.vm.snapshot.resumed")
    if errors:
        log.error("VM %s snapshot: resume failed for %s", vm.name, "; ".join(errors))
    return taken


def _entry_id(mgr: StorageManager, snap_uuid: str) -> int:
    return next(e.id for e in mgr.state.journal()
                if e.op == OP and e.data.get("snapshot") == snap_uuid)


def _export(client: SRClient, ref: tuple[str, str]) -> str:
    """Attach the snapshot read-only for a backup tool; where to read it."""
    attach = client.vdi_attach(ref, False)
    return str(attach.get("params_nbd") or attach.get("params") or "")


def _drop(mgr: StorageManager, refs: Iterable[tuple[str, tuple[str, str]]], *,
          exports: bool) -> None:
    """Delete snapshot volumes (sr uuid, backing ref) of a failed VM snapshot; log errors."""
    for sr, ref in refs:
        try:
            cfg = next(c for c in mgr._configs() if c.uuid == sr)
            client = mgr._client(cfg)
            if exports:
                with contextlib.suppress(SMError):
                    client.vdi_detach(ref)
            with contextlib.suppress(VDIMissing):
                client.vdi_delete(ref)
        except Exception as err:
            log.error("could not remove snapshot %s of a failed VM snapshot: %s", ref[0], err)


def recover(mgr: StorageManager, entry: JournalEntry) -> None:
    """Undo an interrupted VM snapshot (called with the API lock held): delete every snapshot
    of its disks that did not exist before it began, resume what it paused."""
    d = entry.data
    log.warning("rolling back an interrupted snapshot of VM %s", d.get("vm"))
    livepause.resume_all(mgr, list(d.get("paused") or []))
    disks_by_sr: dict[str, set[str]] = {}
    for sr, backing, _ in d.get("disks", []):
        disks_by_sr.setdefault(sr, set()).add(backing)
    doomed: list[tuple[str, tuple[str, str]]] = [(t[0], (t[1], t[2])) for t in d.get("taken", [])]
    for sr, before in (d.get("before") or {}).items():
        cfg = next((c for c in mgr._configs() if c.uuid == sr), None)
        if cfg is None:
            continue
        for rec in mgr._client(cfg).records():
            if (str(rec["uuid"]) not in set(before)
                    and str(rec.get("snapshot_of") or "") in disks_by_sr.get(sr, set())):
                doomed.append((sr, (str(rec["uuid"]), str(rec["location"]))))
    unique = {(sr, ref[0]): (sr, ref) for sr, ref in doomed}
    _drop(mgr, unique.values(), exports=True)
    mgr.state.journal_done(entry.id)


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
        raise InvalidArg(f"{len(found)} snapshots of VM {vm.name} are called {ref!r}")
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
        for sd in vs.snapshot_disks(snap.uuid):
            cfg = vdis.cfg(sd.sr)
            target = vdis.need(sd.sr, sd.vdi, f"disk of VM {vm.name}")
            taken = vdis.need(sd.snap_sr, sd.snap, f"snapshot of {_label(target, cfg)}")
            plan.append((cfg, target, taken))
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
    return VMRevertResult(vm.uuid, snap.uuid, tuple(done))


def _postorder(rows: list[VmSnapRow], root: str) -> list[str]:
    kids: dict[str | None, list[str]] = {}
    for r in rows:
        kids.setdefault(r.parent, []).append(r.uuid)
    out: list[str] = []
    stack: list[tuple[str, bool]] = [(root, False)]
    while stack:
        key, expanded = stack.pop()
        if expanded:
            out.append(key)
            continue
        stack.append((key, True))
        stack.extend((child, False) for child in reversed(kids.get(key, [])))
    return out


def snapshot_delete(mgr: StorageManager, ref: str, snap_ref: str, *, scope: Scope = "one",
                    metadata_only: bool = False) -> list[str]:
    """Delete a VM snapshot the libvirt way (`one`: children move to its parent;
    `with-children`; `children-only`), its disk snapshots with it unless `metadata_only`.
    Returns the VM snapshot uuids removed."""
    if scope not in ("one", "with-children", "children-only"):
        raise InvalidArg(f"unknown scope {scope!r}")
    with mgr._locked("vm snapshot-delete"):
        vs = _vs(mgr)
        vm = _find_vm(vs, ref)
        target = _resolve(vs, vm, snap_ref)
        order = [target.uuid] if scope == "one" else _postorder(vs.snapshots(vm.uuid),
                                                                target.uuid)
        if scope == "children-only":
            order = order[:-1]
        vdis = _Vdis(mgr)
        for uuid in order:
            row = next(r for r in vs.snapshots(vm.uuid) if r.uuid == uuid)
            for sd in vs.snapshot_disks(uuid):
                _drop_disk_snapshot(mgr, vdis, sd, metadata_only)
            vs.remove_snapshot(row)
        return order


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
