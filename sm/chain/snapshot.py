"""`vdi_snapshot` / `vdi_clone` of a leaf VDI X: the original's chain layout, journaled.

New uuids B (base) and S (the new VDI). Steps (crash points ``<command>:<step>``):

    journaled  intent {kind, vdi X, base B, new S, single, direct, time} written
    deflated   X's volume sealed (an LV shrinks to what it uses: a base never grows again)
    renamed    X's volume renamed to B (X's content is now B), marked read-only
    hidden     B: image uuid B, hidden (single: stays visible)
    leaf       X = new empty child of B (X reads what it read before)
    snap       S = new empty child of B (single: none; S *is* B, read-only)
    records    one transaction: B (hidden base), X (parent B), S (snapshot/clone)

``driver_params`` ``type=single``: the snapshot is the base itself (one new image only). A VDI
that already has children (a single snapshot is an immutable base) is not renamed ("direct":
the new VDI is an empty child of it). Space for the new volumes is checked up front.

Recovery: nothing renamed yet -> nothing to undo; otherwise roll forward, every step checking
before it acts. A snapshot that fails in its own process before its records is undone
(:func:`undo`) before it answers.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sm.errors import MetadataError, VDISnapshot, VDIType

from .plan import Plan, Steps
from .records import GC_KEY, base_copy, check_depth, with_parent

if TYPE_CHECKING:
    from sm.records import VdiRecord

    from .protocols import ChainSR, JournalEntry, RecordTxn

__all__ = ["SnapshotPlan", "SnapshotSteps", "give_back", "recover", "run", "undo", "write_child"]


class SnapshotSteps(Steps):
    journaled = "intent {kind, vdi X, base B, new S, single, direct, time} written"
    deflated = "X's volume sealed at what it uses (LVs)"
    renamed = "X's volume renamed to B, marked read-only"
    hidden = "B: image uuid B, hidden (single: stays visible)"
    leaf = "X = new empty child of B"
    snap = "S = new empty child of B (single: none)"
    records = "one transaction: B, X (parent B), S"


class SnapshotPlan(Plan, kw_only=True):
    kind: str
    vdi: str
    base: str
    new: str
    single: bool
    direct: bool
    time: str


def run(sr: ChainSR, command: str, vdi_uuid: str, driver_params: Mapping[str, str]) -> str:
    """Snapshot (`command` "vdi_snapshot") or clone ("vdi_clone") VDI `vdi_uuid`; the new VDI's
    uuid. The caller holds the chain lock (and has paused the VDI's data path)."""
    kind = "snapshot" if command == "vdi_snapshot" else "clone"
    meta, vols = sr.meta, sr.volumes
    x = meta.get(vdi_uuid)
    meta.check_usable(x.uuid)
    if x.vdi_type != "vhd":
        raise VDIType(f"VDI {x.uuid} is a raw VDI: raw VDIs cannot be snapshotted or cloned")
    if x.hidden:
        raise VDISnapshot(f"VDI {x.uuid} is a hidden base, not a VDI that can be {kind}ed")
    if not vols.exists(x.uuid):
        raise VDISnapshot(f"the image of VDI {x.uuid} is missing")
    direct = bool(meta.children_of(x.uuid))
    single = driver_params.get("type") == "single" and not direct
    check_depth(meta.find, x.uuid, f"VDI {x.uuid}: a {kind}")
    need = [] if single else [vols.leaf_size("", x.virtual_size)]
    if not direct:
        need.append(vols.leaf_size(x.uuid, x.virtual_size))
    vols.need_space(need, f"{kind} of VDI {x.uuid}")
    sr.format.check(vols.path(x.uuid))
    base = str(uuidlib.uuid4())
    plan = SnapshotPlan(kind=kind, vdi=x.uuid, base=base,
                        new=base if single else str(uuidlib.uuid4()), single=single,
                        direct=direct, time=now_iso())
    with meta.begin(command, **plan.to_journal()) as entry:
        entry.passed(SnapshotSteps.journaled)
        with sr.errors(VDISnapshot, f"{kind} of {x.uuid}"):
            _forward(sr, plan, entry)
    return plan.new


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def recover(sr: ChainSR, entry: JournalEntry) -> None:
    """The journal handler: settle a failed snapshot in-process, replay a killed one."""
    p = SnapshotPlan.from_journal(entry.data)
    if entry.failure is not None and sr.meta.find(p.new) is None:
        undo(sr, p)  # failed in-process before the records: back to the VDI as it was
        return
    started = sr.volumes.exists(p.new) if p.direct else sr.volumes.exists(p.base)
    if not started:
        return  # crashed before the first change: nothing to undo
    with sr.errors(VDISnapshot, f"recovery of {entry.op} of {p.vdi}"):
        _forward(sr, p, entry)


def undo(sr: ChainSR, p: SnapshotPlan) -> None:
    """Undo a snapshot that failed before its records: drop the new image and give the base
    back its name, uuid and visibility (each step checks first: a crash in between leaves a
    state the replay rolls forward)."""
    if not p.single:
        sr.volumes.remove(p.new)
    if p.direct or not sr.volumes.exists(p.base):
        return
    give_back(sr, p.base, sr.meta.get(p.vdi))


def give_back(sr: ChainSR, base: str, leaf: VdiRecord) -> None:
    """Undo of a base made from a leaf (snapshot, revert's B2): the empty child in the leaf's
    place goes and the base gets back the leaf's name, uuid, visibility and writability."""
    vols = sr.volumes
    vols.remove(leaf.uuid)
    sr.format.set_identity(vols.path(base), leaf.uuid, hidden=False)
    vols.mark_base(base, False)
    vols.rename(base, leaf.uuid)
    vols.regrow(leaf.uuid, leaf)


def write_child(sr: ChainSR, uuid: str, parent: str, size: int) -> None:
    """An empty child `uuid` of `parent`. Found whole where volumes appear atomically (a file),
    it is kept; otherwise always written (an LV may sit on a removed one's extents, whose stale
    image could carry the same identity): callers run before the records expose it."""
    vols = sr.volumes
    if vols.atomic_create and vols.exists(uuid):
        return
    vols.create(uuid, size)
    sr.format.child(vols.path(parent), vols.path(uuid), uuid)


def _forward(sr: ChainSR, p: SnapshotPlan, entry: JournalEntry) -> None:
    vols, fmt = sr.volumes, sr.format
    parent = p.vdi
    if p.direct:
        for step in (SnapshotSteps.deflated, SnapshotSteps.renamed, SnapshotSteps.hidden,
                     SnapshotSteps.leaf):
            entry.passed(step)
    else:
        if not vols.exists(p.base):
            if not vols.exists(p.vdi):
                raise MetadataError(f"{entry.op} of {p.vdi}: neither its image nor the base "
                                    f"{p.base} exists")
            vols.shrink(p.vdi)
            entry.once(SnapshotSteps.deflated)
            vols.rename(p.vdi, p.base)
        else:
            entry.passed(SnapshotSteps.deflated)
        vols.mark_base(p.base, True)
        entry.once(SnapshotSteps.renamed)
        fmt.set_identity(vols.path(p.base), p.base, hidden=not p.single)
        entry.once(SnapshotSteps.hidden)
        x = sr.meta.get(p.vdi)
        write_child(sr, p.vdi, p.base, vols.leaf_size(p.vdi, x.virtual_size))
        entry.once(SnapshotSteps.leaf)
        parent = p.base
    if not p.single:
        x = sr.meta.get(p.vdi)
        write_child(sr, p.new, parent, vols.leaf_size("", x.virtual_size))
    entry.once(SnapshotSteps.snap)
    sizes = vols.sizes((p.base, p.vdi, p.new))
    with sr.meta.transaction(entry.op, finishing=entry) as txn:
        _records(txn, p, sizes, sr.meta.new_sm_config)
    entry.once(SnapshotSteps.records)


def _records(txn: RecordTxn, p: SnapshotPlan, sizes: Mapping[str, int],
             sm_config: Mapping[str, str]) -> None:
    from sm.records import VdiRecord

    if txn.find(p.new) is not None:
        return  # committed before a crash
    x = txn.get(p.vdi)
    snap = p.kind == "snapshot"
    parent = x.uuid
    if not p.direct:
        parent = p.base
        base = base_copy(x, p.base, physical_utilisation=sizes.get(p.base, 0),
                         sm_config={k: v for k, v in x.sm_config.items() if k != GC_KEY})
        if p.single:  # the base is the snapshot: visible, read-only
            base = base.replace(
                name_label=x.name_label, name_description=x.name_description, hidden=False,
                managed=True, is_a_snapshot=snap, snapshot_of=x.uuid if snap else "",
                snapshot_time=p.time if snap else "")
        txn.put(with_parent(base, x.parent))
        txn.put(with_parent(x.replace(physical_utilisation=sizes.get(x.uuid, 0)), p.base))
        if p.single:
            return
    txn.put(with_parent(VdiRecord(
        uuid=p.new, location=p.new, name_label=x.name_label,
        name_description=x.name_description, type=x.type, vdi_type="vhd",
        read_only=x.read_only, is_a_snapshot=snap, snapshot_of=x.uuid if snap else "",
        snapshot_time=p.time if snap else "", virtual_size=x.virtual_size,
        physical_utilisation=sizes.get(p.new, 0),
        sm_config=sm_config), parent))
