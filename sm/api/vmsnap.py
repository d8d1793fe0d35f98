"""Taking a VM snapshot: all disks at one consistency point, all or nothing.

Journaled as `vm-snapshot` in the state journal (crash points `api.vm.snapshot.*`):

    begun    intent {vm, snapshot uuid, disks, records of their SRs before}
    pausing  before each live disk's data path is paused (`livepause`): what will be resumed
    paused   all live disks paused
    taken    after each disk's `vdi_snapshot`, the snapshots so far
    resumed  data paths resumed
    then     export attachments; one transaction records the VM snapshot, each disk snapshot
             joins its VDI's tree, and the journal entry is removed

A failure (a driver error, a full SR) at any step deletes the snapshots already taken and
resumes the paused disks; the error names the disk that failed. A crash leaves the entry: the
next API operation (`recover`) deletes every snapshot of those disks that did not exist
before and resumes what was paused. So a VM snapshot exists completely or not at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import uuid as uuidlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sm.errors import InvalidArg, SMError, VDIMissing
from sm.faults import crash_point

from . import checks, livepause, trees
from .vmmodels import VMSnapshot
from .vms import _find_vm, _label, _named_error, _snapshot_of, _Vdis, _vs
from .vmstate import VmDisk, VmRow, VmSnapDisk, VmSnapRow

if TYPE_CHECKING:
    from .client import SRClient
    from .config import SrConfig
    from .manager import StorageManager
    from .models import VDI
    from .state import JournalEntry

__all__ = ["OP", "recover", "snapshot"]

OP = "vm-snapshot"
log = logging.getLogger(__name__)


def snapshot(mgr: StorageManager, ref: str, name: str = "", description: str = "", *,
             for_backup: bool = False, for_export: bool = False) -> VMSnapshot:
    """Snapshot every disk of the VM (CD-ROMs skipped) at one consistency point."""
    checks.name("VM snapshot", name, empty=True)
    checks.description("VM snapshot", description)
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
        missing: list[str] = []
        for d in vs.disks(vm.uuid):
            if d.kind != "disk":
                continue
            found = vdis.disk(vm, d.sr, d.vdi, "snapshotting")
            if found is None:
                missing.append(d.vdi)
            else:
                plan.append((d, *found))
        if missing and not plan:
            raise VDIMissing(f"VM {vm.name} has no disks left to snapshot (gone: "
                             f"{', '.join(missing)})")
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
    return dataclasses.replace(_snapshot_of(vs, vs.current(vm.uuid), row),
                               missing=tuple(missing))


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
        livepause.pause_all(mgr, [(c, vdi.ref) for c, (_, _, vdi) in zip(clients, plan)],
                            paused, lambda: mgr.state.journal_step(entry, "pausing",
                                                                   paused=paused))
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
