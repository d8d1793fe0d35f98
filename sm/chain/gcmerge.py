"""The collector's merge of a base B and its only child C (`gc_merge`, steps and recovery in
`sm.chain.gcsteps`): up, C's sectors into B; down, the sectors of B that C lacks into C."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from sm.gc import Skip

from .gcsteps import BUSY_KEY, MergePlan, MergeSteps, recheck, subtree, unbusy
from .records import with_parent

if TYPE_CHECKING:
    from sm.gc import Action, StepContext
    from sm.journal import Owned

    from .collect import GcSite, Lock
    from .protocols import ChainSR, JournalEntry

__all__ = ["finish", "merge", "settle_merge", "undo"]

SLICE = 0.5
"""Seconds a locked merge's bulk copy holds the chain lock before it lets user commands in."""
GAP = 0.12
"""How long it then leaves the lock free: longer than a waiter's longest poll (0.1 s)."""


def settle_merge(sr: ChainSR, site: GcSite, entry: JournalEntry) -> None:
    """The handler of `gc_merge` (caller holds the chain lock): before `merged` undone, from
    it on finished."""
    m = MergePlan.from_journal(entry.data)
    if not entry.has_step(MergeSteps.merged.name):
        undo(sr, m)
    else:
        finish(sr, site, m, entry)


def _set_busy(sr: ChainSR, uuids: Iterable[str], value: str | None) -> None:
    uuids = list(uuids)
    if not uuids:
        return
    with sr.meta.transaction("gc") as txn:
        for u in uuids:
            r = txn.find(u)
            if r is None or r.sm_config.get(BUSY_KEY) == value:
                continue
            sm_config = {k: v for k, v in r.sm_config.items() if k != BUSY_KEY}
            if value is not None:
                sm_config[BUSY_KEY] = value
            txn.put(r.replace(sm_config=sm_config))


def merge(sr: ChainSR, site: GcSite, action: Action, ctx: StepContext, lock: Lock
          ) -> dict[str, Any]:
    """`gc_merge` of a planned merge or leaf-merge (`lock` held, and let go of as the SR's
    `GcSite.unlocked_copy` says); a leaf's final step reports how long its data path was
    paused."""
    vols, fmt = sr.volumes, sr.format
    seen = recheck(sr, site, action)
    assert isinstance(seen, MergePlan)
    fmt.check(vols.path(seen.base), vols.path(seen.child))
    unlocked = site.unlocked_copy and not seen.leaf
    busy = (seen.base, *((seen.child,) if seen.visible else ())) if unlocked else ()
    m = seen.replace(busy=busy)
    entry = sr.meta.begin("gc_merge", **m.to_journal())
    paused = resumed = 0.0
    try:
        entry.passed(MergeSteps.journaled)
        _set_busy(sr, m.busy, entry.id)
        entry.passed(MergeSteps.marked)
        src = m.base if m.down else m.child
        new = fmt.blocks(vols.path(src))[0] - fmt.blocks(vols.path(m.target))[0]
        vols.make_room(m.target, len(new), m.child if m.leaf else "")
        entry.passed(MergeSteps.inflated)
        if unlocked:
            lock.release()
        with site.paused([m.child] if m.leaf else []):
            paused = time.monotonic()
            ctx.step("final copy (paused)" if m.leaf else "copy")
            progress = ctx.progress if m.leaf or unlocked else _stepping(
                sr, site, action, ctx, lock, seen)
            child = vols.path(m.child)
            if m.down:
                fmt.fill(child, progress)
            else:
                fmt.coalesce(child, progress)
            if unlocked:
                ctx.step("switch")
                lock.acquire()
            # what changed meanwhile without a record write (a read-only attach) shows here
            if recheck(sr, site, action) != seen:
                raise Skip(f"the chain of {m.base} changed during the merge")
            entry.passed(MergeSteps.copied)
            finish(sr, site, m, entry, records=False)
            resumed = time.monotonic()
        _merge_records(sr, m, entry)
    except Exception as err:
        try:
            if not lock.held:
                lock.acquire()
        except BaseException:
            entry.release()  # the entry stays for the replay after this run
            raise
        from sm.journal import settle

        settle(cast("Owned", entry), err, lambda: settle_merge(sr, site, entry))
        raise
    except BaseException:
        entry.release()
        raise
    entry.done()
    if not m.leaf:
        return {}
    return {"pause_seconds": round(resumed - paused, 4),
            "attached": m.child in site.attached()}


def _stepping(sr: ChainSR, site: GcSite, action: Action, ctx: StepContext, lock: Lock,
              seen: MergePlan) -> Callable[[int, int], None]:
    """The copy's progress callback for a locked merge that is not a leaf's final step: every
    SLICE (or every block when throttled) it lets go of the chain lock, so user commands wait
    for a slice, not for the merge; back under the lock, if the records changed meanwhile, the
    chain is checked again (Skip: the merge is undone) before another byte is written."""
    state: dict[str, Any] = {"since": time.monotonic(), "gen": site.generation()}

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
        gen = site.generation()
        if gen is None or gen != state["gen"]:
            if recheck(sr, site, action) != seen or not all(
                    sr.volumes.exists(u) for u in (seen.base, seen.child)):
                raise Skip(f"the chain of {seen.base} changed during the merge")
            state["gen"] = gen

    return progress


def undo(sr: ChainSR, m: MergePlan) -> None:
    """Before `merged`: the receiving image only holds extra copies of sectors that read the
    same; its volume shrinks back (never a leaf's: a leaf only gives data), the marks go."""
    _set_busy(sr, m.busy, None)
    if sr.volumes.exists(m.target) and sr.meta.find(m.target) is not None:
        with contextlib.suppress(Exception):
            sr.volumes.shrink(m.target)


def finish(sr: ChainSR, site: GcSite, m: MergePlan, entry: JournalEntry, *,
           records: bool = True) -> None:
    """From `merged` on (caller holds the chain lock): the attached images among the child
    and its descendants are paused while the chain changes under them."""
    entry.once(MergeSteps.merged)
    recs = sr.meta.records()
    kids = sorted(u for u, r in recs.items() if r.parent == m.child)
    with site.paused(sorted(subtree(recs, m.child) & set(site.attached()))):
        survivor = _switch(sr, m, kids, entry)
        if sr.volumes.exists(survivor):
            sr.volumes.fit(survivor, m.leaf)
    entry.passed(MergeSteps.deflated)
    if records:
        _merge_records(sr, m, entry)


def _switch(sr: ChainSR, m: MergePlan, kids: list[str], entry: JournalEntry) -> str:
    """The chain switched over to the merged image; the survivor's uuid."""
    vols, fmt = sr.volumes, sr.format
    if m.down:
        if vols.exists(m.base):
            fmt.reparent(vols.path(m.child), vols.path(m.parent), m.parent)
        entry.passed(MergeSteps.reparented)
        vols.remove(m.base)
        entry.passed(MergeSteps.deleted)
        return m.child
    if not m.visible:
        if vols.exists(m.child):
            for k in kids:
                if vols.exists(k):
                    fmt.reparent(vols.path(k), vols.path(m.base), m.base)
        entry.passed(MergeSteps.reparented)
        vols.remove(m.child)
        entry.passed(MergeSteps.deleted)
        return m.base
    if vols.exists(m.base):
        fmt.set_identity(vols.path(m.base), m.child, hidden=False)
        entry.passed(MergeSteps.uuid)
        vols.remove(m.child)
        vols.rename(m.base, m.child)
        child = sr.meta.find(m.child)
        vols.mark_base(m.child, child is not None and child.read_only)
    entry.passed(MergeSteps.switched)
    return m.child


def _merge_records(sr: ChainSR, m: MergePlan, entry: JournalEntry) -> None:
    kids = sr.meta.children_of(m.child)
    sizes = sr.volumes.sizes((m.base, m.child))
    with sr.meta.transaction("gc_merge", finishing=entry) as txn:
        base, child = txn.find(m.base), txn.find(m.child)
        if m.down or m.visible:  # the child's record survives (its identity), the base's goes
            if base is not None:
                txn.delete(base.uuid)
            if child is not None:
                txn.put(with_parent(child.replace(physical_utilisation=sizes.get(m.child, 0),
                                                  sm_config=unbusy(child.sm_config)), m.parent))
        else:
            if child is not None:
                txn.delete(child.uuid)
            for k in kids:
                kr = txn.find(k)
                if kr is not None:
                    txn.put(with_parent(kr, m.base))
            if base is not None:  # grown to the child's size if it was larger
                txn.put(base.replace(
                    physical_utilisation=sizes.get(m.base, 0),
                    virtual_size=max(base.virtual_size, child.virtual_size if child else 0),
                    sm_config=unbusy(base.sm_config)))
    entry.passed(MergeSteps.records)
