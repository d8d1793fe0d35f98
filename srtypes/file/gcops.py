"""The collector's journaled steps on a File SR (docs/gc.md). Crash points `gc_<op>:<step>`.

    gc_remove    journaled, file, records                   garbage base B
    gc_merge     journaled, marked, copied, merged, ...      base B, only child C:
                   up, C hidden:   reparented (C's children onto B), deleted (C), records
                   up, C visible:  uuid (B's footer takes C's uuid), switched (B.vhd -> C.vhd),
                                   records      -- C keeps its uuid, location, file name
                   down:           reparented (C onto B's parent), deleted (B), records
    gc_leafsnap  journaled, renamed, hidden, leaf, records   visible leaf C -> C over new C1

The copy of a long merge runs without the SR lock; everything that changes a chain runs under
it, after checking the chain is still what the plan saw. A base that receives data is marked
`sm_config gc-busy` (attach and revert refuse it) for the copy. Recovery: before `merged` a
merge is undone (the copy only wrote sectors that were shadowed or read the same), from
`merged` on it is finished; gc_remove and gc_leafsnap (once renamed) roll forward.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from sm.chain.records import GC_KEY, base_copy, with_parent
from sm.faults import crash_point
from sm.gc import Skip
from sm.journal import settle

from .edge import require_sound
from .vdiops import mark_garbage, physical

if TYPE_CHECKING:
    from sm.gc import Action, StepContext
    from sm.journal import Entry
    from sm.records import VdiRecord

    from .repo import FileRepo

__all__ = ["BUSY_KEY", "CRASH_POINTS", "OPS", "execute", "recover"]

BUSY_KEY = "gc-busy"
CRASH_POINTS: Mapping[str, tuple[str, ...]] = {
    "gc_remove": ("journaled", "file", "records"),
    "gc_merge": ("journaled", "marked", "copied", "merged", "reparented", "uuid", "switched",
                 "deleted", "records"),
    "gc_leafsnap": ("journaled", "renamed", "hidden", "leaf", "records"),
}
OPS = tuple(CRASH_POINTS)


def _step(entry: Entry, op: str, name: str) -> None:
    """Step `name` is done. Only `merged` is recorded (before it a merge is undone, after it
    finished); every other step is redone or skipped by looking at the files, so it costs no
    journal write (fsyncs), only its crash point."""
    if name == "merged" and not entry.has_step(name):
        entry.step(name)
    crash_point(f"{op}:{name}")


@contextlib.contextmanager
def _locked(repo: FileRepo, *uuids: str) -> Iterator[None]:
    """SR lock (with journal replay), then the VDI locks by uuid."""
    with repo.chain_lock("gc"), contextlib.ExitStack() as stack:
        for u in sorted(set(uuids)):
            stack.enter_context(repo.vdi_lock(u, "gc"))
        yield


def _attached(repo: FileRepo, uuid: str) -> bool:
    return repo.attachment(uuid) is not None


def _recheck(repo: FileRepo, action: Action, *, shared: bool = False
             ) -> tuple[VdiRecord, VdiRecord | None]:
    """The records of the action's images if the chain is still as planned, else Skip.
    `shared`: other hosts may use the SR (NFS) and their attachments are invisible here, so a
    leaf is only touched where it is attached writable with a data path to pause."""
    b = repo.records.find(action.base)
    if b is None or not b.hidden or b.vdi_type != "vhd" or _attached(repo, b.uuid):
        raise Skip(f"{action.base} changed meanwhile (gone, visible or attached)")
    kids = repo.children_of(b.uuid)
    if action.kind == "remove":
        if kids:
            raise Skip(f"{b.uuid} has children again")
        return b, None
    if kids != [action.child]:
        raise Skip(f"{b.uuid} no longer has {action.child} as its only child")
    c = repo.get(action.child)
    leaf = not c.hidden and not repo.children_of(c.uuid)
    if (action.kind in ("leaf-merge", "leaf-snapshot")) != leaf:
        raise Skip(f"{c.uuid} is no longer what the plan saw")
    if not leaf and _attached(repo, c.uuid):
        raise Skip(f"{c.uuid} is attached")
    if leaf and shared and not (repo.attachment(c.uuid) or {}).get("writable"):
        raise Skip(f"VDI {c.uuid}: on a shared SR a leaf is merged only by the host where it "
                   "is attached writable (another host may be using it)")
    if leaf and _attached(repo, c.uuid):
        from sm.chain.datapath import find

        if find(repo.chain, c.uuid) is None:
            raise Skip(f"VDI {c.uuid} is attached without a data path the collector can "
                       "pause")
    return b, c


# -- remove ---------------------------------------------------------------------------------


def _remove(repo: FileRepo, action: Action, ctx: StepContext) -> None:
    with _locked(repo, action.base):
        b, _ = _recheck(repo, action)
        with repo.journal.begin("gc_remove", vdi=b.uuid) as entry:
            crash_point("gc_remove:journaled")
            _forward_remove(repo, entry)


def _forward_remove(repo: FileRepo, entry: Entry) -> None:
    from sm import atomic

    uuid = entry.data["vdi"]
    atomic.unlink(repo.layout.image(uuid), missing_ok=True)
    _step(entry, "gc_remove", "file")
    with repo.records.transaction(purpose="gc_remove") as txn:
        x = txn.find(uuid)
        if x is not None:
            txn.delete(uuid)
            if x.parent:
                mark_garbage(txn, [x.parent])
    _step(entry, "gc_remove", "records")


# -- merge ----------------------------------------------------------------------------------


def _set_busy(repo: FileRepo, uuids: list[str], value: str | None) -> None:
    with repo.records.transaction(purpose="gc") as txn:
        for u in uuids:
            r = txn.find(u)
            if r is None or r.sm_config.get(BUSY_KEY) == value:
                continue
            sm_config = {k: v for k, v in r.sm_config.items() if k != BUSY_KEY}
            if value is not None:
                sm_config[BUSY_KEY] = value
            txn.put(r.replace(sm_config=sm_config))


def _merge_data(b: VdiRecord, c: VdiRecord, action: Action) -> dict[str, Any]:
    return {"base": b.uuid, "child": c.uuid, "direction": action.direction,
            "parent": b.parent, "visible": not c.hidden, "leaf": action.kind == "leaf-merge",
            "busy": [b.uuid] + ([c.uuid] if not c.hidden else [])}


def _copy(repo: FileRepo, d: Mapping[str, Any], progress: Callable[[int, int], None]) -> None:
    from sm import vhd
    from sm.gc.vhdops import fill_from_parent

    cp = repo.layout.image(d["child"])
    # confined: the merge writes into the parent (up) or reads it (down), never one outside
    if d["direction"] == "up":
        vhd.coalesce(cp, progress=progress, storage=repo.storage)
    else:
        fill_from_parent(cp, progress=progress, storage=repo.storage)


def _merge(repo: FileRepo, action: Action, ctx: StepContext) -> dict[str, Any]:
    with _locked(repo, action.base, action.child):
        b, c = _recheck(repo, action)
        assert c is not None
        require_sound(repo.path(b), repo.path(c))
        d = _merge_data(b, c, action)
        entry = repo.journal.begin("gc_merge", **d)
        try:
            crash_point("gc_merge:journaled")
            _set_busy(repo, d["busy"], entry.id)
            _step(entry, "gc_merge", "marked")
        except Exception as err:  # failed in-process: only the busy marks to undo
            settle(entry, err, lambda: _set_busy(repo, d["busy"], None))
            raise
        except BaseException:
            entry.release()
            raise
    try:
        ctx.step("copy")
        _copy(repo, d, ctx.progress)
        _step(entry, "gc_merge", "copied")
        ctx.step("switch")
        with _locked(repo, action.base, action.child):
            _recheck(repo, action)
            _finish_merge(repo, entry)
    except BaseException as err:
        if isinstance(err, Exception):  # not a SIGKILL-like exit: undo (before `merged`) or
            def undo() -> None:  # finish (after) now, under the SR lock
                with repo.chain_lock("gc settle"):
                    recover(repo, entry)

            settle(entry, err, undo)
        entry.release()
        raise
    entry.done()
    return {}


def _finish_merge(repo: FileRepo, entry: Entry, *, records: bool = True) -> None:
    """From `merged` on (caller holds the SR lock): switch the chain over, delete, then (with
    `records`) the records."""
    from sm import atomic, vhd

    d = entry.data
    lay = repo.layout
    bp, cp = lay.image(d["base"]), lay.image(d["child"])
    _step(entry, "gc_merge", "merged")
    kids = repo.children_of(d["child"])
    if d["direction"] == "down":
        if os.path.exists(bp) and d["parent"]:
            vhd.reparent(cp, lay.image(d["parent"]), expect_uuid=uuidlib.UUID(d["parent"]))
        _step(entry, "gc_merge", "reparented")
        atomic.unlink(bp, missing_ok=True)
        _step(entry, "gc_merge", "deleted")
    elif d["visible"]:
        if os.path.exists(bp):
            info = vhd.info(bp)
            if str(info.uuid) != d["child"]:
                vhd.set_uuid(bp, uuidlib.UUID(d["child"]))
            if info.hidden:
                vhd.set_hidden(bp, False)
            _step(entry, "gc_merge", "uuid")
            atomic.replace_atomic(bp, cp)
        _step(entry, "gc_merge", "switched")
    else:
        if os.path.exists(cp):
            for k in kids:
                record = repo.records.find(k)
                kp = lay.image(k)
                if record is not None and os.path.exists(kp):
                    _reparent_live(repo, k, kp, bp, d["base"])
        _step(entry, "gc_merge", "reparented")
        atomic.unlink(cp, missing_ok=True)
        _step(entry, "gc_merge", "deleted")
    if records:
        _merge_records(repo, entry)


def _merge_records(repo: FileRepo, entry: Entry) -> None:
    d = entry.data
    bp, cp = repo.layout.image(d["base"]), repo.layout.image(d["child"])
    with repo.records.transaction(purpose="gc_merge") as txn:
        kids = txn.children_of(d["child"])
        base, child = txn.find(d["base"]), txn.find(d["child"])
        if d["direction"] == "down" or d["visible"]:
            # the child's record survives (its identity), the base's goes
            if base is not None:
                txn.delete(base.uuid)
            if child is not None:
                txn.put(with_parent(child.replace(
                    physical_utilisation=physical(cp, "vhd"),
                    sm_config=_unbusy(child.sm_config)), d["parent"]))
        else:
            if child is not None:
                txn.delete(child.uuid)
            for k in kids:
                kr = txn.find(k)
                if kr is not None:
                    txn.put(with_parent(kr, d["base"]))
            if base is not None:  # grown to the child's size if it was larger
                size = max(base.virtual_size, child.virtual_size if child else 0)
                txn.put(base.replace(physical_utilisation=physical(bp, "vhd"),
                                            virtual_size=size,
                                            sm_config=_unbusy(base.sm_config)))
    _step(entry, "gc_merge", "records")


def _unbusy(sm_config: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in sm_config.items() if k not in (BUSY_KEY, GC_KEY)}


def _reparent_live(repo: FileRepo, uuid: str, path: str, new_parent: str, puuid: str) -> None:
    """Re-parent an image; an attached one with its data path paused around it."""
    from sm import vhd
    from sm.chain.datapath import live

    info = vhd.info(path)
    if str(info.parent_uuid) == puuid and info.parent_path == new_parent:
        return
    with live(repo.chain, uuid):
        vhd.reparent(path, new_parent, expect_uuid=uuidlib.UUID(puuid))


# -- leaf steps (under the SR lock, the leaf's data path paused) ----------------------------


def _leaf_merge(repo: FileRepo, action: Action, ctx: StepContext, shared: bool
                ) -> dict[str, Any]:
    from sm.chain.datapath import live

    with _locked(repo, action.base, action.child):
        b, c = _recheck(repo, action, shared=shared)
        assert c is not None
        require_sound(repo.path(b), repo.path(c))
        d = _merge_data(b, c, action)
        t0 = time.monotonic()
        with repo.journal.begin("gc_merge", **d) as entry:
            crash_point("gc_merge:journaled")
            _step(entry, "gc_merge", "marked")
            # paused: the copy of what the leaf holds, its file replaced; records after
            with live(repo.chain, c.uuid):
                paused = time.monotonic()
                ctx.step("final copy (paused)")
                try:
                    _copy(repo, d, ctx.progress)
                except BaseException:
                    entry.done()  # nothing to undo: only shadowed sectors were written
                    raise
                _step(entry, "gc_merge", "copied")
                _finish_merge(repo, entry, records=False)
                done = time.monotonic()
            _merge_records(repo, entry)
        return {"pause_seconds": round(done - paused, 4),
                "locked_seconds": round(time.monotonic() - t0, 4),
                "attached": _attached(repo, c.uuid)}


def _leaf_snapshot(repo: FileRepo, action: Action, ctx: StepContext, shared: bool
                   ) -> dict[str, Any]:
    from sm.chain.datapath import live

    with _locked(repo, action.base, action.child):
        _b, c = _recheck(repo, action, shared=shared)
        assert c is not None
        require_sound(repo.path(c))
        new = str(uuidlib.uuid4())
        with repo.journal.begin("gc_leafsnap", vdi=c.uuid, new=new,
                                base=action.base) as entry:
            crash_point("gc_leafsnap:journaled")
            with live(repo.chain, c.uuid):  # paused: rename, new empty leaf; records after
                t0 = time.monotonic()
                _forward_leafsnap(repo, entry, records=False)
                paused = time.monotonic() - t0
            _forward_leafsnap(repo, entry)
        return {"pause_seconds": round(paused, 4), "new_base": new}


def _forward_leafsnap(repo: FileRepo, entry: Entry, *, records: bool = True) -> None:
    from sm import atomic, vhd

    d = entry.data
    lay = repo.layout
    cp, np_ = lay.image(d["vdi"]), lay.image(d["new"])
    if not os.path.exists(np_):
        atomic.replace_atomic(cp, np_)
    _step(entry, "gc_leafsnap", "renamed")
    info = vhd.info(np_)
    if str(info.uuid) != d["new"]:
        vhd.set_uuid(np_, uuidlib.UUID(d["new"]))
    if not info.hidden:
        vhd.set_hidden(np_, True)
    _step(entry, "gc_leafsnap", "hidden")
    if not os.path.exists(cp):
        vhd.snapshot(np_, cp, uuid=uuidlib.UUID(d["vdi"]))
    _step(entry, "gc_leafsnap", "leaf")
    if not records:
        return
    with repo.records.transaction(purpose="gc_leafsnap") as txn:
        if txn.find(d["new"]) is None:
            x = txn.get(d["vdi"])
            base = base_copy(x, d["new"], sm_config=_unbusy(x.sm_config),
                             physical_utilisation=physical(np_, "vhd"))
            txn.put(with_parent(base, x.parent))
            txn.put(with_parent(x.replace(
                physical_utilisation=physical(cp, "vhd")), d["new"]))
    _step(entry, "gc_leafsnap", "records")


def _undo_leafsnap(repo: FileRepo, d: Mapping[str, Any]) -> None:
    """A leaf snapshot that failed before its records: the new leaf dropped, the renamed image
    given back its name, uuid and visibility."""
    from sm import atomic, vhd

    cp, np_ = repo.layout.image(d["vdi"]), repo.layout.image(d["new"])
    if not os.path.exists(np_):
        return
    atomic.unlink(cp, missing_ok=True)
    info = vhd.info(np_)
    if str(info.uuid) != d["vdi"]:
        vhd.set_uuid(np_, uuidlib.UUID(d["vdi"]))
    if info.hidden:
        vhd.set_hidden(np_, False)
    atomic.replace_atomic(np_, cp)


# -- dispatch and recovery ------------------------------------------------------------------


def execute(repo: FileRepo, action: Action, ctx: StepContext, *, shared: bool = False
            ) -> dict[str, Any]:
    """Run one planned action; returns extra facts for the run summary. `shared`: the SR is
    on a network file system other hosts may attach it from."""
    from sm.errors import LockErr, VDIUnavailable

    handlers: Mapping[str, Callable[[FileRepo, Action, StepContext], Any]] = {
        "remove": _remove, "merge": _merge,
        "leaf-merge": lambda r, a, c: _leaf_merge(r, a, c, shared),
        "leaf-snapshot": lambda r, a, c: _leaf_snapshot(r, a, c, shared),
    }
    try:
        return handlers[action.kind](repo, action, ctx) or {}
    except LockErr as err:
        raise Skip(f"the SR is busy ({err})") from err
    except VDIUnavailable as err:  # a damaged image (require_sound): left alone
        raise Skip(str(err)) from err


def recover(repo: FileRepo, entry: Entry) -> None:
    """Journal replay of a collector step (the caller holds the SR lock)."""
    from sm import vhd

    d = entry.data
    lay = repo.layout
    failed = entry.failure is not None  # in-process: undo what is not past its point of no return
    if entry.op == "gc_remove":
        if failed and os.path.exists(lay.image(d["vdi"])):
            return  # the image was not removed: nothing changed
        _forward_remove(repo, entry)
    elif entry.op == "gc_leafsnap":
        if failed and repo.records.find(d["new"]) is None:
            _undo_leafsnap(repo, d)
        elif os.path.exists(lay.image(d["new"])):
            _forward_leafsnap(repo, entry)
    elif entry.op == "gc_merge":
        if not entry.has_step("merged"):
            _set_busy(repo, list(d["busy"]), None)  # undo: nothing else changed
            return
        if d["direction"] == "up" and not d["visible"] and os.path.exists(lay.image(d["base"])):
            vhd.info(lay.image(d["base"]))  # the merged base must be readable to go on
        _finish_merge(repo, entry)
