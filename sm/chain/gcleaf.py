"""The collector's snapshot in place of a leaf too big for the final step (`gc_leafsnap`,
steps in `sm.chain.gcsteps`): X's volume becomes the hidden base X1, X a new empty leaf over it;
X1 is merged later while X runs."""

from __future__ import annotations

import time
import uuid as uuidlib
from typing import TYPE_CHECKING, Any

from .gcsteps import LeafSnapPlan, LeafSnapSteps, MergePlan, recheck, unbusy
from .records import base_copy, with_parent
from .snapshot import give_back, write_child

if TYPE_CHECKING:
    from sm.gc import Action, StepContext

    from .collect import GcSite
    from .protocols import ChainSR, JournalEntry

__all__ = ["forward", "leaf_snapshot", "settle_leafsnap", "undo"]


def settle_leafsnap(sr: ChainSR, site: GcSite, entry: JournalEntry) -> None:
    """The handler of `gc_leafsnap`: forward once the new leaf exists (it may have been
    written to since); before, undone in-process, forward after a kill once renamed."""
    s = LeafSnapPlan.from_journal(entry.data)
    if entry.has_step(LeafSnapSteps.leaf.name):
        forward(sr, site, s, entry)
    elif sr.volumes.exists(s.new):
        if entry.failure is not None:
            undo(sr, s)
        else:
            forward(sr, site, s, entry)


def leaf_snapshot(sr: ChainSR, site: GcSite, action: Action, ctx: StepContext
                  ) -> dict[str, Any]:
    """Visible leaf X (too big for the final step) snapshotted in place: X's volume becomes
    the hidden base X1 and X a new empty leaf over it, with X's data path paused for the
    rename and the create only; X1 is merged by a later merge while X runs."""
    vols = sr.volumes
    seen = recheck(sr, site, action)
    assert isinstance(seen, MergePlan)
    sr.format.check(vols.path(seen.child))
    x = sr.meta.get(seen.child)
    size = vols.leaf_size(x.uuid, x.virtual_size)
    vols.need_space([size], f"snapshot in place of VDI {x.uuid}")
    s = LeafSnapPlan(vdi=x.uuid, new=str(uuidlib.uuid4()), base=seen.base, size=size)
    with sr.meta.begin("gc_leafsnap", **s.to_journal()) as entry:
        entry.passed(LeafSnapSteps.journaled)
        ctx.step("snapshot in place (paused)")
        with site.paused([x.uuid]):
            t0 = time.monotonic()
            _new_leaf(sr, s, entry)
            paused = time.monotonic() - t0
        forward(sr, site, s, entry)
    return {"pause_seconds": round(paused, 4), "new_base": s.new,
            "attached": x.uuid in site.attached()}


def _new_leaf(sr: ChainSR, s: LeafSnapPlan, entry: JournalEntry) -> None:
    vols = sr.volumes
    if entry.has_step(LeafSnapSteps.leaf.name):
        return  # the new leaf was written (and may have been written to since)
    if not vols.exists(s.new):
        vols.rename(s.vdi, s.new)
    vols.mark_base(s.new, True)
    entry.passed(LeafSnapSteps.renamed)
    sr.format.set_identity(vols.path(s.new), s.new, hidden=True)
    entry.passed(LeafSnapSteps.hidden)
    write_child(sr, s.vdi, s.new, s.size)
    entry.once(LeafSnapSteps.leaf)


def forward(sr: ChainSR, site: GcSite, s: LeafSnapPlan, entry: JournalEntry) -> None:
    vols = sr.volumes
    _new_leaf(sr, s, entry)
    x = sr.meta.get(s.vdi)
    if x.parent != s.new:
        vols.shrink(s.new)
    entry.passed(LeafSnapSteps.deflated)
    sizes = vols.sizes((s.vdi, s.new))
    with sr.meta.transaction("gc_leafsnap", finishing=entry) as txn:
        x = txn.get(s.vdi)
        if txn.find(s.new) is None:
            base = base_copy(x, s.new, sm_config=unbusy(x.sm_config),
                             physical_utilisation=sizes.get(s.new, 0))
            txn.put(with_parent(base, x.parent))
            txn.put(with_parent(x.replace(physical_utilisation=sizes.get(s.vdi, 0)), s.new))
    entry.passed(LeafSnapSteps.records)


def undo(sr: ChainSR, s: LeafSnapPlan) -> None:
    """Failed in-process before the new leaf: X's volume and image given back (name, uuid,
    visible, writable)."""
    give_back(sr, s.new, sr.meta.get(s.vdi))
