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
skipped with the message) and deflated after (a thick leaf keeps its full size).

    gc_leafsnap  see `gcleaf` (the snapshot in place of a leaf too big for the final step)

Every step runs under the SR's chain lock, except that a merge's bulk copy lets go of it
between slices (`_stepping`) and checks the chain again when it is back; the leaf steps
(snapshot in place, final copy and switch) hold it throughout with the leaf's server paused.
Images of attached chains change only with the servers above them paused (`servers_paused`).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from sm.faults import crash_point
from sm.gc import Skip

from .repo import vhd_lv as lv

if TYPE_CHECKING:
    from sm.gc import Action, StepContext

    from .repo import LvhdRepo

__all__ = ["CRASH_POINTS", "attached", "lv", "merge", "recheck", "recover", "remove", "served",
           "servers_paused", "write_entry"]

log = logging.getLogger(__name__)

CRASH_POINTS: Mapping[str, tuple[str, ...]] = {
    "gc_remove": ("journaled", "lv", "records"),
    "gc_merge": ("journaled", "inflated", "copied", "merged", "reparented", "deleted", "uuid",
                 "switched", "deflated", "records"),
    "gc_leafsnap": ("journaled", "renamed", "hidden", "leaf", "deflated", "records"),
}


def attached(repo: LvhdRepo) -> set[str]:
    return {p.name.removeprefix("attached-vdi-")
            for p in repo.host_dir.glob("attached-vdi-*")}


def served(repo: LvhdRepo, uuid: str) -> bool:
    """`uuid` has a data path (an NBD server) the collector can pause."""
    from sm.chain.datapath import find

    return find(repo.chain, uuid) is not None


@contextlib.contextmanager
def servers_paused(repo: LvhdRepo, uuids: Iterable[str]) -> Iterator[None]:
    """The running servers of `uuids` paused for the block (caller holds the chain lock)."""
    from sm.chain.datapath import live

    with contextlib.ExitStack() as stack:
        for u in sorted(set(uuids)):
            stack.enter_context(live(repo.chain, u))
        yield


def _subtree(vdis: Mapping[str, Any], uuid: str) -> set[str]:
    out, todo = {uuid}, [uuid]
    while todo:
        cur = todo.pop()
        for u, r in vdis.items():
            if r.parent == cur and u not in out:
                out.add(u)
                todo.append(u)
    return out


def recheck(repo: LvhdRepo, action: Action) -> dict[str, Any]:
    """The action's journal data if the chain is still as planned, else Skip. An attached
    image is touched only if it is the visible leaf of a leaf step with a server to pause."""
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
    if kids != [action.child] or c is None:
        raise Skip(f"{action.base} no longer has {action.child} as its only child")
    leaf = not any(r.parent == c.uuid for r in doc.vdis.values())
    if (action.kind in ("leaf-merge", "leaf-snapshot")) != (leaf and not c.hidden):
        raise Skip(f"{c.uuid} is no longer what the plan saw")
    if c.uuid in on and not (leaf and served(repo, c.uuid)):
        raise Skip(f"VDI {c.uuid} is attached without a data path the collector can pause")
    blind = [u for u in sorted(_subtree(doc.vdis, c.uuid) & on) if not served(repo, u)]
    if blind:
        # its readers open the LVs themselves: nothing to pause around a switch
        raise Skip(f"VDI {blind[0]} is attached without a data path the collector can pause")
    down = action.direction == "down"
    if down and (not b.parent or leaf):
        raise Skip(f"{b.uuid} cannot be merged into {c.uuid}")
    return {"base": b.uuid, "child": c.uuid, "parent": b.parent, "visible": not c.hidden,
            "leaf": leaf and not c.hidden, "direction": action.direction}


def write_entry(repo: LvhdRepo, key: str, data: Mapping[str, Any] | None) -> None:
    with repo.transaction("gc") as txn:
        if data is None:
            txn.journal.pop(key, None)
        else:
            txn.journal[key] = dict(data)


# -- remove -------------------------------------------------------------------------------


def remove(repo: LvhdRepo, action: Action) -> None:
    d = {"op": "gc_remove", **recheck(repo, action)}
    key = f"gc_remove-{d['vdi']}"
    write_entry(repo, key, d)
    from sm.journal import undo_on_failure

    def settle(_err: BaseException) -> None:  # failed in-process: the LV gone -> complete
        if repo.lvm.lv_exists(repo.vg, lv(d["vdi"])):
            write_entry(repo, key, None)
        else:
            _forward_remove(repo, key, d)

    with undo_on_failure(settle):
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


SLICE = 0.5
"""Seconds a merge's bulk copy holds the chain lock before it lets user commands in."""
GAP = 0.12
"""How long it then leaves the lock free: longer than a waiter's longest poll (0.1 s)."""


class Stepper(Protocol):
    """The chain lock as the collector holds it (`gc.ChainLock`)."""

    held: bool

    def acquire(self) -> None: ...

    def release(self) -> None: ...


def _stepping(repo: LvhdRepo, action: Action, ctx: StepContext, lock: Stepper,
              chk: Mapping[str, Any]) -> Callable[[int, int], None]:
    """The copy's progress callback for a merge that is not a leaf's final step: every
    SLICE (or every block when throttled) it lets go of the chain lock, so user commands
    wait for a slice, not for the merge; back under the lock, if MGT changed meanwhile, the
    chain is checked again (Skip: the merge is undone) before another byte is written."""
    state = {"since": time.monotonic(), "gen": repo.read().generation}

    def progress(done: int, total: int) -> None:
        if time.monotonic() - state["since"] < SLICE and not ctx.rate:
            ctx.progress(done, total)
            return
        lock.release()
        try:
            ctx.progress(done, total)  # throttling and abort checks without the lock
            time.sleep(GAP)
        finally:
            lock.acquire()
        state["since"] = time.monotonic()
        doc = repo.read()
        if doc.generation != state["gen"]:
            now = recheck(repo, action)
            if any(now[k] != chk[k] for k in now) or not all(
                    repo.lvm.lv_exists(repo.vg, lv(u)) for u in (chk["base"], chk["child"])):
                raise Skip(f"the chain of {chk['base']} changed during the merge")
            state["gen"] = doc.generation

    return progress


def merge(repo: LvhdRepo, action: Action, ctx: StepContext, lock: Stepper | None = None
          ) -> dict[str, Any]:
    from sm import vhd
    from sm.gc.vhdops import fill_from_parent
    from srtypes.file.edge import require_sound

    from .provision import resize_lv
    from .repo import BLOCK

    chk = recheck(repo, action)
    require_sound(*(repo.storage.path(lv(u)) for u in (chk["base"], chk["child"])),
                  storage=repo.storage)
    d = {"op": "gc_merge", **chk}
    key = f"gc_merge-{d['base']}"
    dst, src = _target(d), (d["base"] if d["direction"] == "down" else d["child"])
    rec = repo.read().vdis[dst]
    write_entry(repo, key, d)
    crash_point("gc_merge:journaled")
    try:
        new_blocks = len(_blocks(repo, src) - _blocks(repo, dst))
        need = (vhd.physical_size(repo.path(rec), storage=repo.storage)
                + new_blocks * (BLOCK + 4096) + 8192)
        if d["leaf"] and _keeps_full(repo, d["child"]):  # the base becomes the running leaf
            from .provision import leaf_target

            need = max(need, leaf_target(repo, rec),
                       leaf_target(repo, repo.read().vdis[d["child"]]))
        if need > repo.lvm.lv(repo.vg, lv(dst)).size:
            resize_lv(repo, rec, need, "inflate")
    except BaseException:
        write_entry(repo, key, None)
        raise
    crash_point("gc_merge:inflated")
    # a leaf's final step: its data path paused from the copy to the switch, under the lock;
    # any other merge lets user commands in between slices of its copy
    with servers_paused(repo, [d["child"]] if d["leaf"] else []):
        paused = time.monotonic()
        ctx.step("final copy (paused)" if d["leaf"] else "copy")
        progress = ctx.progress if d["leaf"] or lock is None else _stepping(
            repo, action, ctx, lock, chk)
        try:
            if d["direction"] == "down":
                fill_from_parent(repo.storage.path(lv(d["child"])), progress=progress,
                                 storage=repo.storage)
            else:
                vhd.coalesce(repo.storage.path(lv(d["child"])), progress=progress,
                             storage=repo.storage)
        except Exception:
            if lock is not None and not lock.held:
                try:
                    lock.acquire()
                except Exception:  # the entry stays for the replay after this run
                    log.warning("gc: merge of %s left for recovery", d["base"])
                    raise
            _undo(repo, key, d)
            raise
        try:  # what changed without an MGT write (a read-only attach) is seen here
            if recheck(repo, action) != chk:
                raise Skip(f"the chain of {chk['base']} changed during the merge")
        except Exception:
            _undo(repo, key, d)
            raise
        crash_point("gc_merge:copied")
        _forward_merge(repo, key, d, records=False)
        resumed = time.monotonic()
    _merge_records(repo, key, d, sorted(d.get("kids", ())))
    crash_point("gc_merge:records")
    if not d["leaf"]:
        return {}
    return {"pause_seconds": round(resumed - paused, 4), "attached": d["child"] in attached(repo)}


def _undo(repo: LvhdRepo, key: str, d: Mapping[str, Any]) -> None:
    """Before `merged`: the receiving image only holds extra copies of sectors that read the
    same (shadowed by the child, or read through to the parent); shrink it back, drop the
    entry."""
    from .provision import deflate

    with contextlib.suppress(Exception):
        rec = repo.read().vdis.get(_target(d))
        if rec is not None and repo.lvm.lv_exists(repo.vg, lv(rec.uuid)):
            deflate(repo, rec)  # never a leaf: a leaf only ever gives data
    write_entry(repo, key, None)


def _keeps_full(repo: LvhdRepo, uuid: str) -> bool:
    """A leaf stays inflated on a thick SR and while attached writable."""
    marker = repo.host_dir / f"attached-vdi-{uuid}"
    return repo.allocation(repo.read()) == "thick" or (
        marker.exists() and marker.read_text() == "rw")


def _forward_merge(repo: LvhdRepo, key: str, d: dict[str, Any], *, records: bool = True
                   ) -> None:
    """From `merged` on (caller holds the chain lock): the attached images among the child
    and its descendants are paused while the chain changes under them."""
    doc = repo.read()
    kids = sorted(u for u, r in doc.vdis.items() if r.parent == d["child"])
    if not d.get("merged"):
        d["merged"], d["kids"] = True, kids
        with repo.transaction("gc_merge") as txn:
            txn.journal[key] = dict(d)
    crash_point("gc_merge:merged")
    kids = sorted(d.get("kids", kids))
    with servers_paused(repo, _subtree(doc.vdis, d["child"]) & attached(repo)):
        _switch(repo, d, kids)
    if records:
        _merge_records(repo, key, d, kids)
        crash_point("gc_merge:records")


def _switch(repo: LvhdRepo, d: Mapping[str, Any], kids: list[str]) -> None:
    from sm import vhd

    from .provision import deflate, inflate

    lvm, vg, st = repo.lvm, repo.vg, repo.storage
    base, child = d["base"], d["child"]
    doc = repo.read()
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


def _merge_records(repo: LvhdRepo, key: str, d: Mapping[str, Any], kids: list[str]) -> None:
    from sm.chain.records import with_parent

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
    elif op == "gc_leafsnap":
        if data.get("leaf") or repo.lvm.lv_exists(repo.vg, lv(data["new"])):
            from .gcleaf import forward

            forward(repo, key, dict(data))
        else:
            write_entry(repo, key, None)
    else:
        log.warning("unknown collector journal entry %s (%s) left alone", key, op)
