"""The collector's journaled steps on an LVHD SR (docs/gc.md), in MGT's journal like the SR's
own operations. Crash points `gc_<op>:<step>`.

    gc_remove  journaled, lv, records                               garbage base B
    gc_merge   journaled, inflated (the image receiving data grown for its new blocks),
               copied, merged (recorded in the entry: from here on it is finished, before it
               undone), then
                 up, hidden child C: reparented (C's children onto B), deleted (VHD-C), deflated
                 up, visible child C (not attached): uuid (B's footer takes C's uuid, visible),
                   switched (lvremove VHD-C, lvrename VHD-B VHD-C), deflated
                 down (B into C): reparented (C onto B's parent), deleted (VHD-B), deflated
               records (one MGT write; the entry removed)

Up copies C's blocks into B (`sm.vhd.coalesce`); down copies into C the sectors of B that C
lacks (`sm.gc.vhdops.fill_from_parent`), whichever copies less (the planner decides). The
image receiving data is inflated first (VG free space checked: a merge that does not fit is
skipped with the message) and deflated after (a thick leaf keeps its full size). Every action
runs under the SR's chain lock (`gc.py`).
"""

from __future__ import annotations

import contextlib
import logging
import uuid as uuidlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sm.faults import crash_point
from sm.gc import Skip

if TYPE_CHECKING:
    from sm.gc import Action, StepContext

    from .repo import LvhdRepo

__all__ = ["CRASH_POINTS", "attached", "lv", "merge", "recover", "remove"]

log = logging.getLogger(__name__)

CRASH_POINTS: Mapping[str, tuple[str, ...]] = {
    "gc_remove": ("journaled", "lv", "records"),
    "gc_merge": ("journaled", "inflated", "copied", "merged", "reparented", "deleted", "uuid",
                 "switched", "deflated", "records"),
}


def lv(uuid: str) -> str:
    return f"VHD-{uuid}"


def attached(repo: LvhdRepo) -> set[str]:
    return {p.name.removeprefix("attached-vdi-")
            for p in repo.host_dir.glob("attached-vdi-*")}


def _recheck(repo: LvhdRepo, action: Action) -> dict[str, Any]:
    """The action's journal data if the chain is still as planned, else Skip."""
    doc = repo.read()
    b = doc.vdis.get(action.base)
    on = attached(repo)
    if b is None or not b.hidden or b.uuid in on:
        raise Skip(f"{action.base} changed meanwhile")
    kids = sorted(u for u, r in doc.vdis.items() if r.parent == b.uuid)
    if action.kind == "remove":
        if kids:
            raise Skip(f"{b.uuid} has children again")
        return {"vdi": b.uuid}
    c = doc.vdis.get(action.child)
    if kids != [action.child] or c is None or c.uuid in on:
        raise Skip(f"{action.base} no longer has {action.child} as its only child")
    leaf = not any(r.parent == c.uuid for r in doc.vdis.values())
    if (action.kind == "leaf-merge") != (leaf and not c.hidden):
        raise Skip(f"{c.uuid} is no longer what the plan saw")
    down = action.direction == "down"
    if down and (not b.parent or leaf):
        raise Skip(f"{b.uuid} cannot be merged into {c.uuid}")
    return {"base": b.uuid, "child": c.uuid, "parent": b.parent, "visible": not c.hidden,
            "leaf": leaf and not c.hidden, "direction": action.direction}


def _journal(repo: LvhdRepo, key: str, data: Mapping[str, Any] | None) -> None:
    with repo.transaction("gc") as txn:
        if data is None:
            txn.journal.pop(key, None)
        else:
            txn.journal[key] = dict(data)


# -- remove -------------------------------------------------------------------------------


def remove(repo: LvhdRepo, action: Action) -> None:
    d = {"op": "gc_remove", **_recheck(repo, action)}
    key = f"gc_remove-{d['vdi']}"
    _journal(repo, key, d)
    crash_point("gc_remove:journaled")
    _forward_remove(repo, key, d)


def _forward_remove(repo: LvhdRepo, key: str, d: Mapping[str, Any]) -> None:
    if repo.lvm.lv_exists(repo.vg, lv(d["vdi"])):
        repo.lvm.lvremove(repo.vg, lv(d["vdi"]))
    crash_point("gc_remove:lv")
    with repo.transaction("gc_remove") as txn:
        txn.vdis.pop(d["vdi"], None)
        txn.journal.pop(key, None)
    crash_point("gc_remove:records")


# -- merge --------------------------------------------------------------------------------


def _blocks(repo: LvhdRepo, uuid: str) -> frozenset[int]:
    from sm.gc.vhdops import block_set

    return block_set(repo.storage.path(lv(uuid)), storage=repo.storage)[0]


def _target(d: Mapping[str, Any]) -> str:
    """The image that receives data: the base (up) or the child (down)."""
    return str(d["child"] if d["direction"] == "down" else d["base"])


def merge(repo: LvhdRepo, action: Action, ctx: StepContext) -> dict[str, Any]:
    from sm import vhd
    from sm.gc.vhdops import fill_from_parent

    from .repo import BLOCK
    from .vdiops import resize_lv

    d = {"op": "gc_merge", **_recheck(repo, action)}
    key = f"gc_merge-{d['base']}"
    dst, src = _target(d), (d["base"] if d["direction"] == "down" else d["child"])
    rec = repo.read().vdis[dst]
    _journal(repo, key, d)
    crash_point("gc_merge:journaled")
    try:
        new_blocks = len(_blocks(repo, src) - _blocks(repo, dst))
        need = (vhd.physical_size(repo.path(rec), storage=repo.storage)
                + new_blocks * (BLOCK + 4096) + 8192)
        if need > repo.lvm.lv(repo.vg, lv(dst)).size:
            resize_lv(repo, rec, need, "inflate")
    except BaseException:
        _journal(repo, key, None)
        raise
    crash_point("gc_merge:inflated")
    ctx.step("copy")
    try:
        if d["direction"] == "down":
            fill_from_parent(repo.storage.path(lv(d["child"])), progress=ctx.progress,
                             storage=repo.storage)
        else:
            vhd.coalesce(repo.storage.path(lv(d["child"])), progress=ctx.progress,
                         storage=repo.storage)
    except Exception:
        _undo(repo, key, d)
        raise
    crash_point("gc_merge:copied")
    _forward_merge(repo, key, d)
    return {}


def _undo(repo: LvhdRepo, key: str, d: Mapping[str, Any]) -> None:
    """Before `merged`: the receiving image only holds extra copies of sectors that read the
    same (shadowed by the child, or read through to the parent); shrink it back, drop the
    entry."""
    from .vdiops import deflate

    with contextlib.suppress(Exception):
        rec = repo.read().vdis.get(_target(d))
        if rec is not None and repo.lvm.lv_exists(repo.vg, lv(rec.uuid)):
            deflate(repo, rec)  # never a leaf: a leaf only ever gives data
    _journal(repo, key, None)


def _keeps_full(repo: LvhdRepo, uuid: str) -> bool:
    """A leaf stays inflated on a thick SR and while attached writable."""
    marker = repo.host_dir / f"attached-vdi-{uuid}"
    return repo.allocation(repo.read()) == "thick" or (
        marker.exists() and marker.read_text() == "rw")


def _forward_merge(repo: LvhdRepo, key: str, d: Mapping[str, Any]) -> None:
    from sm import vhd

    from .vdiops import deflate, inflate

    lvm, vg, st = repo.lvm, repo.vg, repo.storage
    with repo.transaction("gc_merge") as txn:
        txn.journal[key] = {**d, "merged": True}
    crash_point("gc_merge:merged")
    base, child = d["base"], d["child"]
    doc = repo.read()
    kids = sorted(u for u, r in doc.vdis.items() if r.parent == child)
    down = d.get("direction") == "down"
    if down:
        if lvm.lv_exists(vg, lv(base)):
            cp = st.path(lv(child))
            if str(vhd.info(cp, storage=st).parent_uuid) != d["parent"]:
                vhd.reparent(cp, st.path(lv(d["parent"])),
                             expect_uuid=uuidlib.UUID(d["parent"]), storage=st)
        crash_point("gc_merge:reparented")
        if lvm.lv_exists(vg, lv(base)):
            lvm.lvremove(vg, lv(base))
        crash_point("gc_merge:deleted")
        survivor = child
    elif not d["visible"]:
        if lvm.lv_exists(vg, lv(child)):
            for k in kids:
                kp = st.path(lv(k))
                if str(vhd.info(kp, storage=st).parent_uuid) != base:
                    vhd.reparent(kp, st.path(lv(base)), expect_uuid=uuidlib.UUID(base),
                                 storage=st)
        crash_point("gc_merge:reparented")
        if lvm.lv_exists(vg, lv(child)):
            lvm.lvremove(vg, lv(child))
        crash_point("gc_merge:deleted")
        survivor = base
    else:
        if lvm.lv_exists(vg, lv(base)):
            bp = st.path(lv(base))
            info = vhd.info(bp, storage=st)
            if str(info.uuid) != child:
                vhd.set_uuid(bp, uuidlib.UUID(child), storage=st)
            if info.hidden:
                vhd.set_hidden(bp, False, storage=st)
            crash_point("gc_merge:uuid")
            if lvm.lv_exists(vg, lv(child)):
                lvm.lvremove(vg, lv(child))
            lvm.lvrename(vg, lv(base), lv(child))
            with contextlib.suppress(Exception):
                if "sm_ro" in lvm.lv(vg, lv(child)).tags and not doc.vdis[child].read_only:
                    lvm.lv_deltag(vg, lv(child), "sm_ro")
        crash_point("gc_merge:switched")
        survivor = child
    rec = repo.read().vdis[survivor]
    if d.get("leaf", d["visible"]) and _keeps_full(repo, survivor):
        inflate(repo, rec)
    else:
        deflate(repo, rec)
    crash_point("gc_merge:deflated")
    _merge_records(repo, key, d, kids)
    crash_point("gc_merge:records")


def _merge_records(repo: LvhdRepo, key: str, d: Mapping[str, Any], kids: list[str]) -> None:
    from srtypes.file.chain import with_parent

    base, child = d["base"], d["child"]
    size = {x.name: x.size for x in repo.lvm.lvs(repo.vg)}
    with repo.transaction("gc_merge") as txn:
        grown = max((txn.vdis[u].virtual_size for u in (base, child) if u in txn.vdis),
                    default=0)
        if d.get("direction") == "down" or d["visible"]:
            # the child's record survives (its identity), the base's goes
            txn.vdis.pop(base, None)
            if child in txn.vdis:
                txn.vdis[child] = with_parent(txn.vdis[child], d["parent"])
            keep = child
        else:
            txn.vdis.pop(child, None)
            for k in kids:
                if k in txn.vdis:
                    txn.vdis[k] = with_parent(txn.vdis[k], base)
            keep = base
        if keep in txn.vdis:
            txn.vdis[keep] = txn.vdis[keep].replace(
                physical_utilisation=size.get(lv(keep), 0),
                virtual_size=grown if keep == base else txn.vdis[keep].virtual_size)
        txn.journal.pop(key, None)


# -- recovery -----------------------------------------------------------------------------


def recover(repo: LvhdRepo, key: str, data: Mapping[str, Any]) -> None:
    """Replay one collector entry (caller holds the chain lock; its collector is gone)."""
    op = data.get("op")
    if op == "gc_remove":
        _forward_remove(repo, key, data)
    elif op == "gc_merge":
        d = {"direction": "up", **data}  # entries written before down merges existed
        if d.get("merged"):
            _forward_merge(repo, key, d)
        else:
            _undo(repo, key, d)
    else:
        log.warning("unknown collector journal entry %s (%s) left alone", key, op)
