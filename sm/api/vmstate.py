"""VM groups in the state database (`sm.db`, next to the tables of `sm.api.state`).

Tables (created on first use; every change in one transaction of `State`):

- `vms(uuid, name, description, created)`: a VM is a named group of VDIs;
- `vm_disks(vm, position, sr, vdi, kind)`: its disks by public (sr, uuid); `kind` is `disk` or
  `cdrom` (CD-ROM / ISO images, never snapshotted);
- `vm_snapshots(uuid, vm, parent, name, description, created, for_backup, for_export)`: the
  VM's snapshot tree (the libvirt model, as for VDIs); `vm_current(vm, snapshot)`;
- `vm_snapshot_disks(snapshot, position, sr, vdi, snap_sr, snap, export_path)`: the snapshot
  VDI taken of each disk and, for an export snapshot, where a backup tool reads it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from . import checks
from .state import State

__all__ = ["DiskKind", "VmDisk", "VmRow", "VmSnapDisk", "VmSnapRow", "VmState"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS vms (
    uuid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS vm_disks (
    vm TEXT NOT NULL, position INTEGER NOT NULL, sr TEXT NOT NULL, vdi TEXT NOT NULL,
    kind TEXT NOT NULL, PRIMARY KEY (vm, sr, vdi));
CREATE TABLE IF NOT EXISTS vm_snapshots (
    uuid TEXT PRIMARY KEY, vm TEXT NOT NULL, parent TEXT, name TEXT NOT NULL,
    description TEXT NOT NULL, created REAL NOT NULL, for_backup INTEGER NOT NULL,
    for_export INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS vm_snapshots_vm ON vm_snapshots (vm);
CREATE TABLE IF NOT EXISTS vm_current (vm TEXT PRIMARY KEY, snapshot TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vm_snapshot_disks (
    snapshot TEXT NOT NULL, position INTEGER NOT NULL, sr TEXT NOT NULL, vdi TEXT NOT NULL,
    snap_sr TEXT NOT NULL, snap TEXT NOT NULL, export_path TEXT NOT NULL,
    PRIMARY KEY (snapshot, sr, vdi));
"""

DiskKind = str
"""`disk` or `cdrom`."""


@dataclass(frozen=True)
class VmRow:
    uuid: str
    name: str
    description: str
    created: float


@dataclass(frozen=True)
class VmDisk:
    vm: str
    position: int
    sr: str
    vdi: str
    kind: DiskKind


@dataclass(frozen=True)
class VmSnapRow:
    uuid: str
    vm: str
    parent: str | None
    name: str
    description: str
    created: float
    for_backup: bool
    for_export: bool


@dataclass(frozen=True)
class VmSnapDisk:
    snapshot: str
    position: int
    sr: str
    vdi: str
    snap_sr: str
    snap: str
    export_path: str


class VmState:
    """The VM tables over one `State` (its connection and transactions)."""

    def __init__(self, state: State) -> None:
        self.state = state
        with state.transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    def _all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return list(self.state.db.execute(sql, args))

    # -- VMs ----------------------------------------------------------------------------------

    def vms(self) -> list[VmRow]:
        return [VmRow(*r) for r in self._all("SELECT * FROM vms ORDER BY created, name")]

    def add_vm(self, vm: VmRow) -> None:
        checks.name("VM", vm.name)
        checks.description("VM", vm.description)
        with self.state.transaction() as db:
            db.execute("INSERT INTO vms VALUES (?, ?, ?, ?)",
                       (vm.uuid, vm.name, vm.description, vm.created))

    def remove_vm(self, uuid: str) -> None:
        with self.state.transaction() as db:
            for table, col in (("vm_disks", "vm"), ("vm_current", "vm"), ("vms", "uuid")):
                db.execute(f"DELETE FROM {table} WHERE {col}=?", (uuid,))

    def disks(self, vm: str) -> list[VmDisk]:
        return [VmDisk(*r) for r in self._all(
            "SELECT * FROM vm_disks WHERE vm=? ORDER BY position", vm)]

    def disk_owners(self, sr: str, vdi: str) -> list[VmDisk]:
        return [VmDisk(*r) for r in self._all(
            "SELECT * FROM vm_disks WHERE sr=? AND vdi=?", sr, vdi)]

    def add_disk(self, disk: VmDisk) -> None:
        with self.state.transaction() as db:
            db.execute("INSERT INTO vm_disks VALUES (?, ?, ?, ?, ?)",
                       (disk.vm, disk.position, disk.sr, disk.vdi, disk.kind))

    def remove_disk(self, vm: str, sr: str, vdi: str) -> None:
        with self.state.transaction() as db:
            db.execute("DELETE FROM vm_disks WHERE vm=? AND sr=? AND vdi=?", (vm, sr, vdi))

    # -- snapshots ----------------------------------------------------------------------------

    def snapshots(self, vm: str) -> list[VmSnapRow]:
        rows = self._all("SELECT * FROM vm_snapshots WHERE vm=? ORDER BY created, rowid", vm)
        return [VmSnapRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), bool(r[7]))
                for r in rows]

    def current(self, vm: str) -> str | None:
        rows = self._all("SELECT snapshot FROM vm_current WHERE vm=?", vm)
        return str(rows[0][0]) if rows else None

    def set_current(self, vm: str, snapshot: str | None) -> None:
        with self.state.transaction() as db:
            if snapshot is None:
                db.execute("DELETE FROM vm_current WHERE vm=?", (vm,))
            else:
                db.execute("INSERT OR REPLACE INTO vm_current VALUES (?, ?)", (vm, snapshot))

    def snapshot_disks(self, snapshot: str) -> list[VmSnapDisk]:
        return [VmSnapDisk(*r) for r in self._all(
            "SELECT * FROM vm_snapshot_disks WHERE snapshot=? ORDER BY position", snapshot)]

    def add_snapshot(self, snap: VmSnapRow, disks: list[VmSnapDisk]) -> None:
        """Record a VM snapshot (parent: the VM's current one) and make it current."""
        with self.state.transaction() as db:
            db.execute("INSERT INTO vm_snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (snap.uuid, snap.vm, snap.parent, snap.name, snap.description,
                        snap.created, int(snap.for_backup), int(snap.for_export)))
            for d in disks:
                db.execute("INSERT INTO vm_snapshot_disks VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (d.snapshot, d.position, d.sr, d.vdi, d.snap_sr, d.snap,
                            d.export_path))
            self.set_current(snap.vm, snap.uuid)

    def remove_snapshot(self, snap: VmSnapRow) -> None:
        """One node out of the tree: its children get its parent; current moves up."""
        with self.state.transaction() as db:
            db.execute("UPDATE vm_snapshots SET parent=? WHERE parent=?", (snap.parent, snap.uuid))
            if self.current(snap.vm) == snap.uuid:
                self.set_current(snap.vm, snap.parent)
            db.execute("DELETE FROM vm_snapshot_disks WHERE snapshot=?", (snap.uuid,))
            db.execute("DELETE FROM vm_snapshots WHERE uuid=?", (snap.uuid,))
