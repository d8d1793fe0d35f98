"""`vdi_snapshot` / `vdi_clone`: the original's chain layout, journaled, crash-safe.

Snapshot (or clone) of a leaf VDI X, new uuids B (base) and S (the new VDI):

    journaled  intent {kind, vdi X, base B, new S, single, direct, time} on the SR
    renamed    X.vhd -> B.vhd                       (X's content is now B)
    hidden     B.vhd: footer uuid B, hidden (single: stays visible)
    leaf       X.vhd = new empty child of B         (X reads what it read before)
    snap       S.vhd = new empty child of B         (single: none; S *is* B, read-only)
    records    one transaction: B (hidden base), X (parent B), S (snapshot/clone)

A VDI that already has children (a `type=single` snapshot, which is an immutable base) is not
renamed: the new VDI is an empty child of it ("direct": steps journaled, snap, records).

Recovery (`recover`) looks at the files: nothing renamed yet -> roll back (nothing to undo);
otherwise roll forward, every step being idempotent (it checks before it acts). A snapshot that
fails in its own process before its records are committed is undone (`undo`) before it answers.
"""

from __future__ import annotations

import os
import uuid as uuidlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sm.errors import MetadataError, SnapshotChainTooLong, VDISnapshot, VDIType
from sm.faults import crash_point

from .chain import GC_KEY, with_parent
from .edge import engine_errors, require_sound

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sm.journal import Entry
    from sm.records import Transaction, VdiRecord

    from .repo import FileRepo

__all__ = ["MAX_DEPTH", "STEPS", "recover", "run"]

MAX_DEPTH = 30
STEPS = ("journaled", "renamed", "hidden", "leaf", "snap", "records")


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def chain_depth(repo: FileRepo, uuid: str) -> int:
    """Images in the chain of `uuid`, by walking parent links record by record."""
    seen: list[str] = []
    current = uuid
    while current and current not in seen and len(seen) <= MAX_DEPTH + 1:
        seen.append(current)
        record = repo.records.find(current)
        current = record.parent if record is not None else ""
    return len(seen)


def run(repo: FileRepo, command: str, vdi_uuid: str, driver_params: Mapping[str, str]) -> str:
    """Snapshot (`command` "vdi_snapshot") or clone ("vdi_clone") VDI `vdi_uuid`; returns the
    new VDI's uuid. The caller holds the chain lock."""
    kind = "snapshot" if command == "vdi_snapshot" else "clone"
    x = repo.get(vdi_uuid)
    repo.check_usable(x.uuid)
    if x.vdi_type != "vhd":
        raise VDIType(f"VDI {x.uuid} is a raw VDI: raw VDIs cannot be snapshotted or cloned")
    if x.hidden:
        raise VDISnapshot(f"VDI {x.uuid} is a hidden base, not a VDI that can be {kind}ed")
    if not os.path.exists(repo.path(x)):
        raise VDISnapshot(f"the image of VDI {x.uuid} is missing")
    direct = bool(repo.children_of(x.uuid))
    single = driver_params.get("type") == "single" and not direct
    depth = chain_depth(repo, x.uuid) + 1
    if depth > MAX_DEPTH:
        raise SnapshotChainTooLong(
            f"VDI {x.uuid}: a {kind} would make a chain of {depth} images (limit {MAX_DEPTH})")
    require_sound(repo.path(x))
    base = str(uuidlib.uuid4())
    new = base if single else str(uuidlib.uuid4())
    data = {"kind": kind, "vdi": x.uuid, "base": base, "new": new, "single": single,
            "direct": direct, "time": now_iso()}
    with repo.journal.begin(command, **data) as entry:
        crash_point(f"{command}:journaled")
        with engine_errors(VDISnapshot, f"{kind} of {x.uuid}"):
            _forward(repo, command, data, entry)
    return new


def recover(repo: FileRepo, entry: Entry) -> None:
    d = entry.data
    lay = repo.layout
    if entry.failure is not None and repo.records.find(d["new"]) is None:
        undo(repo, d)  # failed in-process before the records: back to the VDI as it was
        return
    started = (os.path.exists(lay.image(d["new"])) if d["direct"]
               else os.path.exists(lay.image(d["base"])))
    if not started:
        return  # crashed before the first change: nothing to undo
    with engine_errors(VDISnapshot, f"recovery of {entry.op} of {d['vdi']}"):
        _forward(repo, entry.op, d, entry)


def undo(repo: FileRepo, d: Mapping[str, Any]) -> None:
    """Undo a snapshot that failed before its records: drop the new images and give the
    base back its name, uuid and visibility (each step checks first, so a crash in between
    leaves a state the replay rolls forward)."""
    from sm import atomic

    lay = repo.layout
    xp, bp = lay.image(d["vdi"]), lay.image(d["base"])
    if not d["single"]:
        atomic.unlink(lay.image(d["new"]), missing_ok=True)
    if d["direct"] or not os.path.exists(bp):
        return
    give_back(repo, bp, xp, d["vdi"])


def give_back(repo: FileRepo, base: str, leaf: str, uuid: str) -> None:
    """Undo of a base made from a leaf (snapshot, revert's B2): the empty child at `leaf` is
    removed and `base` gets back the leaf's name, `uuid` and visibility (each step checks
    first, so a crash in between leaves a state the replay rolls forward)."""
    from sm import atomic, vhd

    atomic.unlink(leaf, missing_ok=True)
    info = vhd.info(base, storage=repo.storage)
    if str(info.uuid) != uuid:
        vhd.set_uuid(base, uuidlib.UUID(uuid), storage=repo.storage)
    if info.hidden:
        vhd.set_hidden(base, False, storage=repo.storage)
    atomic.replace_atomic(base, leaf)


def _step(entry: Entry, command: str, name: str) -> None:
    if not entry.has_step(name):
        entry.step(name)
    crash_point(f"{command}:{name}")


def _forward(repo: FileRepo, command: str, d: Mapping[str, Any], entry: Entry) -> None:
    from sm import atomic, vhd

    lay = repo.layout
    xp, bp, sp = lay.image(d["vdi"]), lay.image(d["base"]), lay.image(d["new"])
    if d["direct"]:
        parent_file = xp
        for name in ("renamed", "hidden", "leaf"):  # hit anyway: every point on every path
            crash_point(f"{command}:{name}")
    else:
        if not os.path.exists(bp):
            if not os.path.exists(xp):
                raise MetadataError(f"{command} of {d['vdi']}: neither {xp} nor {bp} exists")
            atomic.replace_atomic(xp, bp)
        _step(entry, command, "renamed")
        info = vhd.info(bp, storage=repo.storage)
        if str(info.uuid) != d["base"]:
            vhd.set_uuid(bp, uuidlib.UUID(d["base"]), storage=repo.storage)
        if info.hidden != (not d["single"]):
            vhd.set_hidden(bp, not d["single"], storage=repo.storage)
        _step(entry, command, "hidden")
        if not os.path.exists(xp):
            vhd.snapshot(bp, xp, uuid=uuidlib.UUID(d["vdi"]), storage=repo.storage)
        _step(entry, command, "leaf")
        parent_file = bp
    if not d["single"] and not os.path.exists(sp):
        vhd.snapshot(parent_file, sp, uuid=uuidlib.UUID(d["new"]), storage=repo.storage)
    _step(entry, command, "snap")
    with repo.records.transaction(purpose=command) as txn:
        _records(txn, d, repo)
    _step(entry, command, "records")


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _records(txn: Transaction, d: Mapping[str, Any], repo: FileRepo) -> None:
    lay = repo.layout
    if txn.find(d["new"]) is not None:
        return  # committed before a crash
    x = txn.get(d["vdi"])
    snap = d["kind"] == "snapshot"
    common: dict[str, Any] = {
        "type": x.type, "virtual_size": x.virtual_size, "is_a_snapshot": snap,
        "snapshot_of": x.uuid if snap else "", "snapshot_time": d["time"] if snap else "",
        "other_config": {},
    }
    sm_config = {k: v for k, v in x.sm_config.items() if k != GC_KEY}
    if d["direct"]:
        txn.put(_new_vdi(x, d["new"], x.uuid, lay.image(d["new"]), common))
        return
    base: VdiRecord = x.replace(
        uuid=d["base"], location=d["base"], read_only=True,
        physical_utilisation=_size(lay.image(d["base"])), sm_config=sm_config,
        other_config={},
    )
    if d["single"]:
        base = base.replace(hidden=False, managed=True, **common)
    else:
        base = base.replace(
            name_label="base copy", name_description="", hidden=True, managed=False,
            is_a_snapshot=False, snapshot_of="", snapshot_time="")
    txn.put(with_parent(base, x.parent))
    txn.put(with_parent(x.replace(
        physical_utilisation=_size(lay.image(x.uuid))), d["base"]))
    if not d["single"]:
        txn.put(_new_vdi(x, d["new"], d["base"], lay.image(d["new"]), common))


def _new_vdi(x: VdiRecord, uuid: str, parent: str, path: str,
             common: Mapping[str, Any]) -> VdiRecord:
    from sm.records import VdiRecord

    record = VdiRecord(
        uuid=uuid, location=uuid, name_label=x.name_label,
        name_description=x.name_description, vdi_type="vhd", read_only=x.read_only,
        physical_utilisation=_size(path), **common,
    )
    return with_parent(record, parent)
