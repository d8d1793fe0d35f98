"""`vdi_revert`: the target X reads exactly what snapshot S reads; X keeps its uuid, name and
location; S's content is unchanged; repeating it changes nothing.

Plan. P, the image X's new leaf will sit on:
- S has children (a `type=single` snapshot, an immutable base) or is hidden: P = S;
- S is an empty leaf (no blocks of its own) over a parent: P = S's parent;
- otherwise S has data of its own (or no parent): S is first "snapshotted in place": S.vhd is
  renamed to a new hidden base B2 and S.vhd recreated as an empty child of B2 (S keeps its
  uuid, location and content); P = B2.

Steps (crash points `vdi_revert:<step>`):

    journaled  intent {snapshot S, target X, parent P, b2, old_parent, virtual_size}
    renamed    S.vhd -> B2.vhd                     } only when B2 is needed
    hidden     B2.vhd: footer uuid B2, hidden       }
    snapleaf   S.vhd = empty child of B2            }
    leaf       .X.revert.vhd = empty child of P     (scratch name, invisible to scan)
    switched   rename(.X.revert.vhd, X.vhd)         (atomic: old content or new, never a mix)
    records    X.parent = P, virtual size; B2 record and S.parent = B2; X's old parent marked
               garbage if it is a hidden base left without children

Recovery rolls forward once anything was started (each step checks before it acts; redoing
`leaf`+`switched` yields the same content, an empty child of P) and does nothing otherwise.
A revert that fails in its own process before `switched` is undone (`undo`) before it answers.
"""

from __future__ import annotations

import os
import uuid as uuidlib
from typing import TYPE_CHECKING, Any

from sm.chain.records import base_copy, check_depth, with_parent
from sm.chain.snapshot import give_back
from sm.errors import (
    InvalidArg,
    MetadataError,
    VDIInUse,
    VDIMissing,
    VDIType,
    VDIUnavailable,
)
from sm.faults import crash_point

from .edge import engine_errors, require_sound
from .vdiops import mark_garbage, physical

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sm.journal import Entry
    from sm.records import VdiRecord
    from sm.requests import VDIRevertRequest

    from .repo import FileRepo

__all__ = ["STEPS", "check_pair", "plan", "recover", "run"]

STEPS = ("journaled", "renamed", "hidden", "snapleaf", "leaf", "switched", "records")


def resolve(repo: FileRepo, request: VDIRevertRequest) -> tuple[VdiRecord, VdiRecord]:
    """(snapshot, target) records."""
    snap = repo.resolve(request.snapshot.uuid, request.snapshot.location)
    target = None
    if request.target:
        target = repo.records.find(request.target) or repo.records.find_by_location(
            request.target)
    if target is None and snap.snapshot_of:
        target = repo.records.find(snap.snapshot_of)
    if target is None:
        raise VDIMissing(f"vdi_revert: no target VDI (args[0] {request.target!r}, "
                         f"snapshot_of {snap.snapshot_of!r})")
    return snap, target


def check_pair(snap: VdiRecord, target: VdiRecord, children: Mapping[str, list[str]]) -> None:
    """The refusals a revert of VHD VDIs makes on the records alone (File and LVHD SRs):
    raw VDIs, a snapshot that is its own target, a target that is a hidden base or has
    children."""
    for rec, role in ((snap, "snapshot"), (target, "target")):
        if rec.vdi_type != "vhd":
            raise VDIType(f"vdi_revert: the {role} {rec.uuid} is a raw VDI; only VHD VDIs "
                          "can be reverted")
    if snap.uuid == target.uuid:
        raise InvalidArg(f"vdi_revert: VDI {snap.uuid} is both the snapshot and the target")
    if target.hidden:
        raise InvalidArg(f"vdi_revert: the target {target.uuid} is a hidden base")
    if children.get(target.uuid):
        raise VDIInUse(f"vdi_revert: the target {target.uuid} is the parent of other VDIs")


def plan(repo: FileRepo, snap: VdiRecord, target: VdiRecord) -> dict[str, Any]:
    from sm import vhd

    children = {u: repo.children_of(u) for u in (snap.uuid, target.uuid)}
    check_pair(snap, target, children)
    sp = repo.path(snap)
    if not os.path.exists(sp):
        raise VDIUnavailable(f"vdi_revert: the image of snapshot {snap.uuid} is missing")
    require_sound(sp)
    with engine_errors(VDIUnavailable, f"reading snapshot {snap.uuid}"):
        info = vhd.info(sp, storage=repo.storage)
    b2 = None
    if children.get(snap.uuid) or snap.hidden:
        parent = snap.uuid
    elif snap.parent and info.parent_uuid is not None and info.allocated_blocks == 0:
        parent = snap.parent
    else:
        b2 = str(uuidlib.uuid4())
        parent = b2
    if parent not in (b2, snap.uuid):
        require_sound(repo.layout.image(parent))
    if (p := repo.records.find(parent)) is not None and p.sm_config.get("gc-busy"):
        raise VDIInUse(f"vdi_revert: {parent} is being coalesced; try again shortly")
    check_depth(repo.records.find, snap.uuid if b2 else parent,
                "vdi_revert: the reverted VDI")
    return {"snapshot": snap.uuid, "target": target.uuid, "parent": parent, "b2": b2,
            "old_parent": target.parent, "virtual_size": info.virtual_size,
            "revert_id": str(uuidlib.uuid4())}


def run(repo: FileRepo, snap: VdiRecord, target: VdiRecord) -> None:
    """Revert `target` to `snap`; the caller holds the chain lock."""
    repo.check_usable(snap.uuid, target.uuid)
    data = plan(repo, snap, target)
    with repo.journal.begin("vdi_revert", **data) as entry:
        crash_point("vdi_revert:journaled")
        with engine_errors(VDIUnavailable, f"revert of {target.uuid} to {snap.uuid}"):
            _forward(repo, data, entry)


def recover(repo: FileRepo, entry: Entry) -> None:
    d = entry.data
    lay = repo.layout
    tmp = lay.temp_image(d["target"], "revert")
    switched = entry.has_step("switched") or (entry.has_step("leaf") and not os.path.exists(tmp))
    if entry.failure is not None and not switched:
        undo(repo, d)  # failed in-process before X's image was replaced: X is unchanged
        return
    started = bool(entry.steps) or os.path.exists(lay.temp_image(d["target"], "revert")) or (
        d["b2"] is not None and os.path.exists(lay.image(d["b2"])))
    if not started:
        return
    with engine_errors(VDIUnavailable, f"recovery of vdi_revert of {d['target']}"):
        _forward(repo, d, entry)


def undo(repo: FileRepo, d: Mapping[str, Any]) -> None:
    """Undo a revert that failed before the switch: drop the scratch leaf and give B2 back to
    the snapshot (name, uuid, visibility). Each step checks first."""
    from sm import atomic

    lay = repo.layout
    atomic.unlink(lay.temp_image(d["target"], "revert"), missing_ok=True)
    if d["b2"] is None:
        return
    if not os.path.exists(lay.image(d["b2"])):
        return
    give_back(repo.chain, d["b2"], repo.records.get(d["snapshot"]))


def _step(entry: Entry, name: str) -> None:
    if not entry.has_step(name):
        entry.step(name)
    crash_point(f"vdi_revert:{name}")


def _forward(repo: FileRepo, d: Mapping[str, Any], entry: Entry) -> None:
    from sm import atomic, vhd

    lay = repo.layout
    sp, xp, pp = lay.image(d["snapshot"]), lay.image(d["target"]), lay.image(d["parent"])
    if d["b2"] is not None:
        if not os.path.exists(pp):
            if not os.path.exists(sp):
                raise MetadataError(f"vdi_revert: neither {sp} nor {pp} exists")
            atomic.replace_atomic(sp, pp)
        _step(entry, "renamed")
        info = vhd.info(pp, storage=repo.storage)
        if str(info.uuid) != d["b2"]:
            vhd.set_uuid(pp, uuidlib.UUID(d["b2"]), storage=repo.storage)
        if not info.hidden:
            vhd.set_hidden(pp, True, storage=repo.storage)
        _step(entry, "hidden")
        if not os.path.exists(sp):
            vhd.snapshot(pp, sp, uuid=uuidlib.UUID(d["snapshot"]), storage=repo.storage)
        _step(entry, "snapleaf")
    else:  # the points are still hit, so a crash test can name every step on every path
        for name in ("renamed", "hidden", "snapleaf"):
            crash_point(f"vdi_revert:{name}")
    if not entry.has_step("switched"):
        tmp = lay.temp_image(d["target"], "revert")
        atomic.unlink(tmp, missing_ok=True, sync=False)
        vhd.snapshot(pp, tmp, uuid=uuidlib.UUID(d["target"]), storage=repo.storage)
        _step(entry, "leaf")
        atomic.replace_atomic(tmp, xp)
    _step(entry, "switched")
    with repo.records.transaction(purpose="vdi_revert") as txn:
        if d["b2"] is not None and txn.find(d["b2"]) is None:
            s = txn.get(d["snapshot"])
            base = base_copy(s, d["b2"], physical_utilisation=physical(pp, "vhd"))
            txn.put(with_parent(base, s.parent))
            txn.put(with_parent(s.replace(
                physical_utilisation=physical(sp, "vhd")), d["b2"]))
        x = txn.get(d["target"])
        txn.put(with_parent(x.replace(
            virtual_size=d["virtual_size"], physical_utilisation=physical(xp, "vhd")),
            d["parent"]).reverted(d.get("revert_id", "")))
        if d["old_parent"] and d["old_parent"] != d["parent"]:
            mark_garbage(txn, [d["old_parent"]])
    _step(entry, "records")
