"""`vdi_revert` in place: the target X reads exactly what snapshot S reads; X keeps its uuid,
name and location; S's content is unchanged; repeating it changes nothing.

P, the image X's new leaf sits on:
- S has children (a ``type=single`` snapshot, an immutable base) or is hidden: P = S;
- S is an empty leaf (no blocks of its own) over a parent: P = S's parent;
- otherwise S has data of its own (or no parent): S is first "snapshotted in place": its
  volume becomes a new hidden, read-only base B2 and S an empty child of B2 (S keeps its uuid,
  location and content); P = B2.

Steps (crash points ``vdi_revert:<step>``; :class:`RevertSteps`):

    journaled  intent {snapshot S, target X, parent P, b2, old_parent, virtual_size, revert_id}
    renamed    S's volume sealed and renamed to B2, marked read-only  } only when B2 is needed
    hidden     B2: image uuid B2, hidden                              }
    snapleaf   S = new empty child of B2                              }
    leaf       a scratch volume of X (invisible to scan) = empty child of P
    switched   the scratch replaces X's volume (files: one rename; LVs: X removed, then the
               scratch renamed: past the removal the revert only rolls forward)
    records    X: parent P, the snapshot's size, a new revert-id; B2 and S (parent B2); X's
               old parent marked garbage if it is a hidden base left without children
               (SRs that prune at once: kept for `pruned`)
    pruned     SRs that prune at once (LVs): X's old hidden bases left without children are
               removed (volumes, then records, with the journal entry)

The `revert-id` (`VdiRecord.reverted`, sm_config ``revert-id``) is drawn once, in the plan, so
a replay writes the same one: the layer above reads it to learn whether a revert it lost track
of happened. Recovery rolls forward once anything was started (each step checks before it acts;
a step recorded is not redone) and does nothing otherwise. A revert that fails in its own
process before the switch is undone (:func:`undo`) before it answers; after it, completed.

The request checks (which VDI is the target, the refusals on records) are `sm.chain.targets`,
shared with the SR types that revert natively (RBD).
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

from sm.errors import MetadataError, VDIInUse, VDIUnavailable

from .plan import Plan, Steps
from .records import base_copy, check_depth, is_garbage, orphans, with_gc_mark, with_parent
from .snapshot import give_back, write_child
from .targets import check_chain

if TYPE_CHECKING:
    from sm.records import VdiRecord

    from .protocols import ChainSR, JournalEntry, RecordTxn

__all__ = ["OP", "RevertPlan", "RevertSteps", "recover", "run", "undo"]

OP = "vdi_revert"
SCRATCH = "revert"
"""Purpose of X's scratch volume (`Volumes.scratch`): ``.X.revert.vhd``, LV ``VHD-X.revert``."""
BUSY_KEY = "gc-busy"
"""sm_config mark of an image the collector is copying (File SR): not a revert's parent."""


class RevertSteps(Steps):
    journaled = "intent {snapshot S, target X, parent P, b2, old_parent, virtual_size} written"
    renamed = "S's volume sealed, renamed to B2, marked read-only (only with B2)"
    hidden = "B2: image uuid B2, hidden (only with B2)"
    snapleaf = "S = new empty child of B2 (only with B2)"
    leaf = "X's scratch volume = empty child of P"
    switched = "the scratch replaces X's volume"
    records = "X (parent P, size, revert-id), B2 and S; X's old parent marked garbage"
    pruned = "X's old hidden bases without children removed (SRs that prune at once)"


class RevertPlan(Plan, kw_only=True):
    snapshot: str
    target: str
    parent: str
    b2: str | None = None
    old_parent: str = ""
    virtual_size: int
    revert_id: str


def run(sr: ChainSR, snap: VdiRecord, target: VdiRecord) -> None:
    """Revert `target` to `snap` (resolved and refused by `sm.chain.targets.revert_target`);
    the caller holds the chain lock and has paused the target's data path."""
    sr.meta.check_usable(snap.uuid, target.uuid)
    plan = _plan(sr, snap, target)
    with sr.meta.begin(OP, **plan.to_journal()) as entry:
        entry.passed(RevertSteps.journaled)
        with sr.errors(VDIUnavailable, f"revert of {target.uuid} to {snap.uuid}"):
            _forward(sr, plan, entry)


def _plan(sr: ChainSR, snap: VdiRecord, target: VdiRecord) -> RevertPlan:
    meta, vols = sr.meta, sr.volumes
    check_chain(snap, target, meta.children_of(target.uuid))
    if not vols.exists(snap.uuid):
        raise VDIUnavailable(f"vdi_revert: the image of snapshot {snap.uuid} is missing")
    vols.path(target.uuid)  # an image name refused by the SR (a link): 46 before anything
    sr.format.check(vols.path(snap.uuid))
    with sr.errors(VDIUnavailable, f"vdi_revert: reading snapshot {snap.uuid}"):
        info = sr.format.info(vols.path(snap.uuid))
    b2 = None
    if snap.hidden or meta.children_of(snap.uuid):
        parent = snap.uuid
    elif snap.parent and info.parent_uuid is not None and info.allocated_blocks == 0:
        parent = snap.parent
    else:
        b2 = parent = str(uuidlib.uuid4())
    if parent not in (b2, snap.uuid):
        sr.format.check(vols.path(parent))
    if (p := meta.find(parent)) is not None and p.sm_config.get(BUSY_KEY):
        raise VDIInUse(f"vdi_revert: {parent} is being coalesced; try again shortly")
    check_depth(meta.find, snap.uuid if b2 else parent, "vdi_revert: the reverted VDI")
    need = [vols.leaf_size(target.uuid, info.virtual_size)]
    if b2:
        need.append(vols.leaf_size(snap.uuid, info.virtual_size))
    vols.need_space(need, f"revert of VDI {target.uuid}")
    return RevertPlan(snapshot=snap.uuid, target=target.uuid, parent=parent, b2=b2,
                      old_parent=target.parent, virtual_size=info.virtual_size,
                      revert_id=str(uuidlib.uuid4()))


def recover(sr: ChainSR, entry: JournalEntry) -> None:
    """The journal handler: settle a failed revert in-process, replay a killed one."""
    p = RevertPlan.from_journal(entry.data)
    vols = sr.volumes
    tmp = vols.scratch(p.target, SCRATCH)
    if entry.failure is not None and not _switched(sr, p, entry):
        undo(sr, p)  # failed in-process before X's volume was replaced: X is unchanged
        return
    started = any(entry.has_step(s.name) for s in RevertSteps) or vols.exists(tmp) or (
        p.b2 is not None and vols.exists(p.b2))
    if not started:
        return  # killed before the first change: nothing to undo
    with sr.errors(VDIUnavailable, f"recovery of vdi_revert of {p.target}"):
        _forward(sr, p, entry)


def undo(sr: ChainSR, p: RevertPlan) -> None:
    """Undo a revert that failed before the switch: drop the scratch leaf and give B2 back to
    the snapshot (name, uuid, visibility). Each step checks first: a crash in between leaves a
    state the replay rolls forward."""
    sr.volumes.remove(sr.volumes.scratch(p.target, SCRATCH))
    if p.b2 is not None and sr.volumes.exists(p.b2):
        give_back(sr, p.b2, sr.meta.get(p.snapshot))


def _switched(sr: ChainSR, p: RevertPlan, entry: JournalEntry) -> bool:
    """X's old volume is gone (replaced, or removed half-way through a non-atomic replace)."""
    vols = sr.volumes
    tmp = vols.scratch(p.target, SCRATCH)
    if entry.has_step(RevertSteps.switched.name) or entry.has_step(RevertSteps.records.name):
        return True
    if not vols.exists(tmp):
        return entry.has_step(RevertSteps.leaf.name)
    return not vols.exists(p.target)


def _forward(sr: ChainSR, p: RevertPlan, entry: JournalEntry) -> None:
    vols, fmt = sr.volumes, sr.format
    done = entry.has_step(RevertSteps.records.name)
    if p.b2 is not None and not done:
        if not vols.exists(p.b2):
            if not vols.exists(p.snapshot):
                raise MetadataError(f"vdi_revert: neither the image of {p.snapshot} nor the "
                                    f"base {p.b2} exists")
            vols.shrink(p.snapshot)
            vols.rename(p.snapshot, p.b2)
        vols.mark_base(p.b2, True)
        entry.once(RevertSteps.renamed)
        fmt.set_identity(vols.path(p.b2), p.b2, hidden=True)
        entry.once(RevertSteps.hidden)
        if not entry.has_step(RevertSteps.snapleaf.name):
            write_child(sr, p.snapshot, p.b2, vols.leaf_size(p.snapshot, p.virtual_size))
        entry.once(RevertSteps.snapleaf)
    else:  # hit anyway, so a crash test can name every step on every path
        for step in (RevertSteps.renamed, RevertSteps.hidden, RevertSteps.snapleaf):
            entry.passed(step)
    if not done and not entry.has_step(RevertSteps.switched.name):
        tmp = vols.scratch(p.target, SCRATCH)
        if not entry.has_step(RevertSteps.leaf.name):
            vols.remove(tmp)  # a scratch of a run that did not record it: never trusted
            vols.create(tmp, vols.leaf_size(p.target, p.virtual_size))
            fmt.child(vols.path(p.parent), vols.path(tmp), p.target)
        entry.once(RevertSteps.leaf)
        vols.replace(tmp, p.target)
    entry.once(RevertSteps.switched)
    abandoned = p.old_parent if p.old_parent and p.old_parent != p.parent else ""
    prune = bool(abandoned) and vols.prune_on_delete
    if not done:
        left = [u for u in sr.meta.children_of(abandoned) if u != p.target] if abandoned else []
        sizes = vols.sizes([u for u in (p.b2, p.snapshot, p.target) if u])
        with sr.meta.transaction(OP, finishing=None if prune else entry) as txn:
            _records(txn, p, sizes)
            old = txn.find(abandoned) if abandoned and not prune else None
            if old is not None and (marked := with_gc_mark(
                    old, is_garbage(old, {old.uuid: left}))) is not old:
                txn.put(marked)  # for the collector
    entry.once(RevertSteps.records)
    if prune:  # the records name X's new parent: its old bases without children go now
        doomed = orphans(sr.meta.records(), abandoned)
        for rec in doomed:
            vols.remove(rec.uuid, rec.vdi_type)
        with sr.meta.transaction(OP, finishing=entry) as txn:
            for rec in doomed:
                txn.delete(rec.uuid)
    entry.passed(RevertSteps.pruned)  # nothing to record: the entry ends with the records


def _records(txn: RecordTxn, p: RevertPlan, sizes: Mapping[str, int]) -> None:
    if p.b2 is not None and txn.find(p.b2) is None:
        s = txn.get(p.snapshot)
        txn.put(with_parent(base_copy(s, p.b2, physical_utilisation=sizes.get(p.b2, 0)),
                            s.parent))
        txn.put(with_parent(s.replace(physical_utilisation=sizes.get(s.uuid, 0)), p.b2))
    x = txn.get(p.target)
    txn.put(with_parent(x.replace(virtual_size=p.virtual_size,
                                  physical_utilisation=sizes.get(x.uuid, 0)),
                        p.parent).reverted(p.revert_id))
