"""The collector's journaled steps, written once for every chain SR type (docs/gc.md).

Crash points ``<op>:<step>``; every path passes every step of its op (a step with nothing to
do on an SR type or a path is only its crash point):

    gc_remove    journaled, volume, records                     garbage base B
    gc_merge     journaled, marked, inflated, copied, merged, then
                   up, C hidden:  reparented (C's children onto B), deleted (C)
                   up, C visible: uuid (B's image takes C's uuid), switched (B's volume
                                  takes C's name) -- C keeps its uuid, name and record
                   down:          reparented (C onto B's parent), deleted (B)
                 deflated, records                              base B, only child C
    gc_leafsnap  journaled, renamed, hidden, leaf, deflated, records
                                                                visible leaf X -> X over X1

Up copies C's sectors into B (`ImageFormat.coalesce`), down copies into C the sectors of B
that C lacks (`ImageFormat.fill`), whichever copies less (the planner decides). The volume
receiving data is grown for its new blocks first (`Volumes.make_room`: an LV is inflated;
a merge that does not fit is skipped) and sized for what it is after (`Volumes.fit`).

Locking (the SR type's `GcSite.lock`): everything that changes a chain runs under the SR's
chain lock, after checking that the chain is still what the plan saw. The bulk copy of a merge
that is not a leaf's final step either runs without the lock, with the receiving images marked
``sm_config gc-busy`` (attach and revert refuse them) where the SR says
``GcSite.unlocked_copy`` (File), or lets go of it between slices of SLICE seconds, checking the
chain again when it is back (LVHD). A leaf's final copy and switch, and a snapshot in place of
a leaf too big for it, hold the lock with the leaf's data path paused; the images of an
attached chain change only with the data paths above them paused.

Recovery: a merge before `merged` is undone (the copy only wrote sectors that were shadowed or
read the same; the receiving volume shrinks back), from `merged` on it is finished; gc_remove
rolls forward once the volume is gone; gc_leafsnap is undone before `leaf`, and rolled
forward once the new leaf exists (it may have been written to since).
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from sm.gc import Skip

from .plan import Plan, Steps
from .records import GC_KEY

if TYPE_CHECKING:
    from sm.gc import Action
    from sm.records import VdiRecord

    from .collect import GcSite
    from .protocols import ChainSR

__all__ = ["BUSY_KEY", "CRASH_POINTS", "OPS", "STEPS", "LeafSnapPlan", "LeafSnapSteps",
           "MergePlan", "MergeSteps", "RemovePlan", "RemoveSteps", "recheck", "subtree",
           "unbusy"]

BUSY_KEY = "gc-busy"




class RemoveSteps(Steps):
    journaled = "intent {vdi B} written"
    volume = "B's volume removed"
    records = "B's record gone (its parent marked garbage if it now is)"


class MergeSteps(Steps):
    journaled = "intent {base B, child C, B's parent, direction, C visible, leaf} written"
    marked = "the images receiving data marked gc-busy (an unlocked copy only)"
    inflated = "the volume receiving data grown for its new blocks (LVs)"
    copied = "up: C's sectors in B; down: the sectors of B that C lacks in C"
    merged = "recorded: from here on the merge is finished, before it undone"
    reparented = "C hidden: C's children onto B; down: C onto B's parent"
    deleted = "C hidden: C's volume removed; down: B's"
    uuid = "C visible: B's image has C's uuid, visible"
    switched = "C visible: B's volume has C's name"
    deflated = "the survivor's volume sized for what it now is (LVs)"
    records = "one transaction: the survivor's record, the other one gone"


class LeafSnapSteps(Steps):
    journaled = "intent {vdi X, new base X1, base, size} written"
    renamed = "X's volume renamed to X1, marked read-only"
    hidden = "X1's image: uuid X1, hidden"
    leaf = "recorded: X = new empty child of X1 (never rewritten after)"
    deflated = "X1's volume sealed at what it uses (LVs)"
    records = "one transaction: X1 (hidden base), X (parent X1)"


STEPS: Mapping[str, type[Steps]] = MappingProxyType(
    {"gc_remove": RemoveSteps, "gc_merge": MergeSteps, "gc_leafsnap": LeafSnapSteps})
OPS = tuple(STEPS)
CRASH_POINTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {op: steps.names() for op, steps in STEPS.items()})
"""op -> its step names in order: crash points ``<op>:<step>`` on every chain SR type."""


class RemovePlan(Plan, kw_only=True):
    vdi: str


class MergePlan(Plan, kw_only=True):
    base: str
    child: str
    parent: str
    direction: str
    visible: bool
    leaf: bool
    busy: tuple[str, ...] = ()

    @property
    def down(self) -> bool:
        return self.direction == "down"

    @property
    def target(self) -> str:
        """The image that receives data."""
        return self.child if self.down else self.base


class LeafSnapPlan(Plan, kw_only=True):
    vdi: str
    new: str
    base: str
    size: int

# -- checks -------------------------------------------------------------------------------


def subtree(records: Mapping[str, VdiRecord], uuid: str) -> set[str]:
    out, todo = {uuid}, [uuid]
    while todo:
        cur = todo.pop()
        for u, r in records.items():
            if r.parent == cur and u not in out:
                out.add(u)
                todo.append(u)
    return out


def recheck(sr: ChainSR, site: GcSite, action: Action) -> MergePlan | RemovePlan:
    """The action's plan if the chain is still as planned, else Skip. An attached image is
    touched only if it is the visible leaf of a leaf step with a data path to pause (on a
    shared SR, only where it is attached writable: other hosts may be using it)."""
    records = sr.meta.records()
    on = site.attached()
    b = records.get(action.base)
    if b is None or not b.hidden or b.vdi_type != "vhd" or b.uuid in on:
        raise Skip(f"{action.base} changed meanwhile (gone, visible or attached)")
    kids = sorted(u for u, r in records.items() if r.parent == b.uuid)
    if action.kind == "remove":
        if kids:
            raise Skip(f"{b.uuid} has children again")
        return RemovePlan(vdi=b.uuid)
    c = records.get(action.child)
    if kids != [action.child] or c is None:
        raise Skip(f"{b.uuid} no longer has {action.child} as its only child")
    leaf = not c.hidden and not any(r.parent == c.uuid for r in records.values())
    if (action.kind in ("leaf-merge", "leaf-snapshot")) != leaf:
        raise Skip(f"{c.uuid} is no longer what the plan saw")
    if c.uuid in on and not leaf:
        raise Skip(f"{c.uuid} is attached")
    if leaf and site.shared and not on.get(c.uuid):
        raise Skip(f"VDI {c.uuid}: on a shared SR a leaf is merged only by the host where it "
                   "is attached writable (another host may be using it)")
    blind = [u for u in sorted(subtree(records, c.uuid) & set(on)) if not site.served(u)]
    if blind:  # its readers open the images themselves: nothing to pause around a switch
        raise Skip(f"VDI {blind[0]} is attached without a data path the collector can pause")
    if action.direction == "down" and (not b.parent or leaf):
        raise Skip(f"{b.uuid} cannot be merged into {c.uuid}")
    return MergePlan(base=b.uuid, child=c.uuid, parent=b.parent, direction=action.direction,
                     visible=not c.hidden, leaf=leaf)



def unbusy(sm_config: Mapping[str, str]) -> dict[str, str]:
    """`sm_config` without the collector's marks."""
    return {k: v for k, v in sm_config.items() if k not in (BUSY_KEY, GC_KEY)}
