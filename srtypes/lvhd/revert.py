"""`vdi_revert` on LVs: the target X reads exactly what snapshot S reads; X keeps its uuid,
name and location (LV ``VHD-X``); S is unchanged; repeating it changes nothing.

The plan is the File SR's (srtypes/file/revert.py). P, the image X's new leaf sits on:
- S has children (a ``type=single`` snapshot) or is hidden: P = S;
- S is an empty leaf over a parent: P = S's parent;
- otherwise S is first "snapshotted in place": ``VHD-S`` (deflated) is renamed to a new hidden,
  read-only base ``VHD-B2`` and ``VHD-S`` recreated as its empty child; P = B2.

Steps (crash points ``vdi_revert:<step>``), journaled in MGT:

    journaled  intent {snapshot S, target X, parent P, b2, old_parent, virtual_size}
    renamed    deflate VHD-S, lvrename VHD-S -> VHD-B2, tag sm_ro   } only when B2 is needed
    hidden     VHD-B2: footer uuid B2, hidden                       }
    snapleaf   VHD-S = new LV, empty child of B2                     }
    leaf       LV ``VHD-X.revert`` = empty child of P (a name sr_scan ignores); step in MGT
    switched   lvremove VHD-X, lvrename VHD-X.revert -> VHD-X
    records    X.parent = P, size; B2 and S.parent = B2; the journal entry removed (kept, with
               step "records", when X's old parent may need pruning)
    pruned     X's old hidden bases without children are removed (LVs, then records and
               the journal entry)

Recovery rolls forward once anything was changed (each step checks before it acts) and drops
the entry otherwise. Failing in its own process, a revert is undone (`undo`) until X's old LV
is removed (the switch), completed after.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping
from typing import Any

from sm.chain.records import MAX_DEPTH
from sm.edge import errors_as
from sm.errors import (
    MetadataError,
    SnapshotChainTooLong,
    VDIMissing,
    VDIUnavailable,
)
from sm.faults import crash_point
from sm.records import VdiRecord

from .chainsr import RO_TAG, leaf_size
from .chainsr import write_child_lv as write_child
from .repo import LvhdRepo
from .repo import vhd_lv as _lv

__all__ = ["STEPS", "recover", "resolve", "run"]

STEPS = ("journaled", "renamed", "hidden", "snapleaf", "leaf", "switched", "records", "pruned")


def _tmp(uuid: str) -> str:
    return f"{_lv(uuid)}.revert"


def resolve(repo: LvhdRepo, snapshot: str, target: str | None) -> tuple[VdiRecord, VdiRecord]:
    """(snapshot, target) records; the target defaults to the snapshot's snapshot-of."""
    vdis = repo.read().vdis
    snap = vdis.get(snapshot)
    if snap is None:
        raise VDIMissing(f"vdi_revert: no snapshot VDI {snapshot} in SR {repo.sr_uuid}")
    found = vdis.get(target) if target else None
    if found is None and snap.snapshot_of:
        found = vdis.get(snap.snapshot_of)
    if found is None:
        raise VDIMissing(f"vdi_revert: no target VDI (args[0] {target!r}, "
                         f"snapshot_of {snap.snapshot_of!r})")
    return snap, found


def plan(repo: LvhdRepo, snap: VdiRecord, target: VdiRecord) -> dict[str, Any]:
    from sm import vhd
    from sm.chain.records import children_map
    from sm.chain.records import depth as chain_depth
    from srtypes.file.edge import require_sound
    from srtypes.file.revert import check_pair

    doc = repo.read()
    vdis = doc.vdis
    children = children_map(vdis.values())
    check_pair(snap, target, children)
    if not repo.lvm.lv_exists(repo.vg, _lv(snap.uuid)):
        raise VDIUnavailable(f"vdi_revert: the LV of snapshot {snap.uuid} is missing")
    require_sound(repo.path(snap), storage=repo.storage)
    with errors_as(VDIUnavailable, f"vdi_revert: reading snapshot {snap.uuid}"):
        info = vhd.info(repo.path(snap), storage=repo.storage)
    b2 = None
    if snap.hidden or children.get(snap.uuid):
        parent = snap.uuid
    elif snap.parent and info.parent_uuid is not None and info.allocated_blocks == 0:
        parent = snap.parent
    else:
        b2 = str(uuidlib.uuid4())
        parent = b2
    if parent not in (b2, snap.uuid):
        require_sound(repo.storage.path(_lv(parent)), storage=repo.storage)
    depth = chain_depth(vdis, snap.uuid if b2 else parent) + 1
    if depth > MAX_DEPTH:
        raise SnapshotChainTooLong(f"vdi_revert: the reverted VDI would have a chain of "
                                   f"{depth} images (limit {MAX_DEPTH})")
    thick = repo.allocation(doc) == "thick"
    need = [leaf_size(repo, target.uuid, info.virtual_size, thick)]
    if b2:
        need.append(leaf_size(repo, snap.uuid, info.virtual_size, thick))
    repo.need_space(need, f"revert of VDI {target.uuid}")
    return {"op": "vdi_revert", "snapshot": snap.uuid, "target": target.uuid,
            "parent": parent, "b2": b2, "old_parent": target.parent, "thick": thick,
            "virtual_size": info.virtual_size, "revert_id": str(uuidlib.uuid4()), "steps": []}


def run(repo: LvhdRepo, snap: VdiRecord, target: VdiRecord) -> None:
    """Revert ``target`` to ``snap``; the caller holds the chain lock."""
    from .srops import check_usable

    check_usable(repo, snap.uuid, target.uuid)
    data = plan(repo, snap, target)
    key = f"vdi_revert-{target.uuid}"
    with repo.transaction("vdi_revert") as txn:
        txn.journal[key] = data
    from sm.journal import undo_on_failure

    with undo_on_failure(lambda _err: undo(repo, key)):
        crash_point("vdi_revert:journaled")
        with errors_as(VDIUnavailable, f"revert of {target.uuid} to {snap.uuid}"):
            _forward(repo, key, data)


def undo(repo: LvhdRepo, key: str) -> None:
    """A revert that failed in-process: completed once X's old LV is gone (the switch), else
    undone: the scratch leaf removed, B2 given back to S (name, uuid, visibility, no tag), the
    entry dropped. Each step checks first: a crash in between is rolled forward by replay."""
    from sm import vhd

    d = repo.read().journal.get(key)
    if d is None:
        return
    lvm, vg = repo.lvm, repo.vg
    x_lv, tmp = _lv(d["target"]), _tmp(d["target"])
    switched = "records" in d.get("steps", []) or not lvm.lv_exists(vg, x_lv) or (
        "leaf" in d.get("steps", []) and not lvm.lv_exists(vg, tmp))
    if switched:
        _forward(repo, key, d)
        return
    if lvm.lv_exists(vg, tmp):
        lvm.lvremove(vg, tmp)
    b2, s_uuid = d["b2"], d["snapshot"]
    if b2 is not None and lvm.lv_exists(vg, _lv(b2)):
        if lvm.lv_exists(vg, _lv(s_uuid)):
            lvm.lvremove(vg, _lv(s_uuid))  # the empty child of B2
        bp = repo.storage.path(_lv(b2))
        info = vhd.info(bp, storage=repo.storage)
        if str(info.uuid) != s_uuid:
            vhd.set_uuid(bp, uuidlib.UUID(s_uuid), storage=repo.storage)
        if info.hidden:
            vhd.set_hidden(bp, False, storage=repo.storage)
        if RO_TAG in lvm.lv(vg, _lv(b2)).tags:
            lvm.lv_deltag(vg, _lv(b2), RO_TAG)
        lvm.lvrename(vg, _lv(b2), _lv(s_uuid))
    with repo.transaction("undo") as txn:
        txn.journal.pop(key, None)


def recover(repo: LvhdRepo, key: str, data: Mapping[str, Any]) -> None:
    lvm = repo.lvm
    started = bool(data.get("steps")) or lvm.lv_exists(repo.vg, _tmp(data["target"])) or (
        data["b2"] is not None and lvm.lv_exists(repo.vg, _lv(data["b2"])))
    if not started:
        with repo.transaction("recover") as txn:
            txn.journal.pop(key, None)
        return
    _forward(repo, key, data)


def _forward(repo: LvhdRepo, key: str, d: Mapping[str, Any]) -> None:
    p_uuid = d["parent"]
    prune_from = d["old_parent"] if d["old_parent"] and d["old_parent"] != p_uuid else None
    if "records" not in d.get("steps", []):
        _switch(repo, key, d, prune_from)
    if prune_from is not None:
        prune(repo, prune_from, key)
    crash_point("vdi_revert:pruned")


def _switch(repo: LvhdRepo, key: str, d: Mapping[str, Any], prune_from: str | None) -> None:
    """Every step up to ``records`` (the new records published)."""
    from sm import vhd

    from .provision import resize_lv

    lvm, vg = repo.lvm, repo.vg
    s_uuid, x_uuid, p_uuid, b2 = d["snapshot"], d["target"], d["parent"], d["b2"]
    vsize = d["virtual_size"]
    if b2 is not None:
        if not lvm.lv_exists(vg, _lv(b2)):
            s = repo.read().vdis.get(s_uuid)
            if s is None or not lvm.lv_exists(vg, _lv(s_uuid)):
                raise MetadataError(f"vdi_revert: neither VHD-{s_uuid} nor VHD-{b2} exists")
            used = vhd.physical_size(repo.path(s), storage=repo.storage)
            resize_lv(repo, s, used, "deflate")
            lvm.lvrename(vg, _lv(s_uuid), _lv(b2))
        if RO_TAG not in lvm.lv(vg, _lv(b2)).tags:
            lvm.lv_addtag(vg, _lv(b2), RO_TAG)
        crash_point("vdi_revert:renamed")
        bp = repo.storage.path(_lv(b2))
        info = vhd.info(bp, storage=repo.storage)
        if str(info.uuid) != b2:
            vhd.set_uuid(bp, uuidlib.UUID(b2), storage=repo.storage)
        if not info.hidden:
            vhd.set_hidden(bp, True, storage=repo.storage)
        crash_point("vdi_revert:hidden")
        write_child(repo, _lv(s_uuid), s_uuid, b2, leaf_size(repo, s_uuid, vsize, d["thick"]))
        crash_point("vdi_revert:snapleaf")
    else:  # hit anyway, so a crash test can name every step on every path
        for name in ("renamed", "hidden", "snapleaf"):
            crash_point(f"vdi_revert:{name}")
    steps = list(d.get("steps", []))
    if "leaf" not in steps:
        write_child(repo, _tmp(x_uuid), x_uuid, p_uuid,
                    leaf_size(repo, x_uuid, vsize, d["thick"]))
        steps.append("leaf")
        with repo.transaction("vdi_revert") as txn:
            txn.journal[key] = {**d, "steps": steps}
    crash_point("vdi_revert:leaf")
    if lvm.lv_exists(vg, _tmp(x_uuid)):
        if lvm.lv_exists(vg, _lv(x_uuid)):
            lvm.lvremove(vg, _lv(x_uuid))
        lvm.lvrename(vg, _tmp(x_uuid), _lv(x_uuid))
    crash_point("vdi_revert:switched")
    sizes = {lv.name: lv.size for lv in lvm.lvs(vg)}
    with repo.transaction("vdi_revert") as txn:
        _records(txn.vdis, d, sizes)
        if prune_from is None:
            txn.journal.pop(key, None)
        else:  # kept until X's old bases are pruned, so a crash cannot leave them behind
            txn.journal[key] = {**d, "steps": [*steps, "records"]}
    crash_point("vdi_revert:records")


def _records(vdis: dict[str, VdiRecord], d: Mapping[str, Any], sizes: Mapping[str, int]) -> None:
    from sm.chain.records import base_copy, with_parent

    b2 = d["b2"]
    if b2 is not None and b2 not in vdis:
        s = vdis[d["snapshot"]]
        vdis[b2] = with_parent(base_copy(s, b2, physical_utilisation=sizes.get(_lv(b2), 0)),
                               s.parent)
        vdis[s.uuid] = with_parent(s.replace(
            physical_utilisation=sizes.get(_lv(s.uuid), 0)), b2)
    x = vdis[d["target"]]
    vdis[x.uuid] = with_parent(x.replace(
        virtual_size=d["virtual_size"], physical_utilisation=sizes.get(_lv(x.uuid), 0)),
        d["parent"]).reverted(d.get("revert_id", ""))


def orphans(vdis: Mapping[str, VdiRecord], start: str) -> list[VdiRecord]:
    """Hidden bases from ``start`` upwards that no VDI depends on any more (pure)."""
    out: list[VdiRecord] = []
    remaining = dict(vdis)
    cur = remaining.get(start)
    while cur is not None and cur.hidden and not any(
            r.parent == cur.uuid for r in remaining.values()):
        out.append(cur)
        del remaining[cur.uuid]
        cur = remaining.get(cur.parent)
    return out


def prune(repo: LvhdRepo, start: str, key: str | None = None) -> None:
    """Remove the LVs, then the records, of the hidden bases left without children (and the
    journal entry ``key`` with the records)."""
    from .repo import lv_name

    doomed = orphans(repo.read().vdis, start)
    for rec in doomed:
        if repo.lvm.lv_exists(repo.vg, lv_name(rec.uuid, rec.vdi_type)):
            repo.lvm.lvremove(repo.vg, lv_name(rec.uuid, rec.vdi_type))
    if doomed or key is not None:
        with repo.transaction("prune") as txn:
            for rec in doomed:
                txn.vdis.pop(rec.uuid, None)
            if key is not None:
                txn.journal.pop(key, None)
