"""Revert: in place when the driver can, otherwise by clone with the identity handed over.

In place: `vdi_revert` when the SR type advertises VDI_REVERT (and the `revert` setting is not
`clone`); a Fault 38 from it falls through to the clone path.

Clone fallback. SMAPIv1 cannot rename a VDI, so identity is handed over in this layer's SQLite
state: the public identity (sr, uuid, location, name-label, name-description) of the target is
recorded in `identities`, the clone becomes its live backing and the old volume a retired one
(`backings`). Every API call resolves a public VDI to its live backing and presents records the
other way round (a retired backing's uuid, e.g. in an old snapshot's `snapshot_of`, reads as
the public uuid), so the VDI keeps uuid, names and location, reads the snapshot's content, and
its snapshots still point at it. Journaled (`journal` table), crash points `api.revert.<step>`:

    begun     intent {target identity, old backing, snapshot, volumes before}
    clone     vdi_clone(snapshot) returned (crash here: the clone is an orphan)
    cloned    the new backing is recorded
    switched  one transaction: identity + backings + current snapshot + journal step
    deleted   vdi_delete(old backing)

Recovery (before the next API operation): `begun` -> roll back (delete orphan clones: new,
visible, non-snapshot volumes nobody maps); `cloned` or later -> roll forward. Either way the
VDI reads the old content or the snapshot's, never neither.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sm.capabilities import Capability
from sm.errors import SMError, Unimplemented, VDIMissing
from sm.faults import crash_point

from . import trees
from .models import VDI, RevertPath, RevertResult
from .state import Identity, JournalEntry

if TYPE_CHECKING:
    from .client import SRClient
    from .config import SrConfig
    from .manager import StorageManager

__all__ = ["OP", "recover", "revert"]

OP = "revert-clone"
log = logging.getLogger(__name__)


def revert(mgr: StorageManager, cfg: SrConfig, target: VDI, snap: VDI, *,
           safety: bool) -> RevertResult:
    trees.check_lineage(mgr.state, target, snap)
    client = mgr._client(cfg)
    safety_ref: tuple[str, str] | None = client.vdi_snapshot(target.ref) if safety else None
    try:
        path = _revert(mgr, client, cfg, target, snap)
    except BaseException:
        if safety_ref is not None:
            # Keep it where the user can find it: in the tree, as a snapshot.
            trees.add(mgr.state, target, (cfg.uuid, safety_ref[0]), "safety-before-revert",
                      f"taken before reverting to {snap.uuid}")
        raise
    if safety_ref is not None:
        client.vdi_delete(safety_ref)
    return RevertResult(mgr.vdi(target.uuid, cfg.name), snap.uuid, path,
                        safety_ref[0] if safety_ref else None)


def _revert(mgr: StorageManager, client: SRClient, cfg: SrConfig, target: VDI,
            snap: VDI) -> RevertPath:
    vdi_key, snap_key = (cfg.uuid, target.uuid), (cfg.uuid, snap.uuid)
    in_tree = mgr.state.snapshot(snap_key) is not None
    if mgr.setting("revert") != "clone" and client.has(Capability.VDI_REVERT):
        try:
            client.vdi_revert(snap.ref, target.ref[0])
        except Unimplemented:
            log.info("vdi_revert answered 38: falling back to vdi_clone")
        else:
            if in_tree:
                mgr.state.set_current(vdi_key, snap_key)
            return "in-place"
    ident = Identity(cfg.uuid, target.uuid, target.location, target.name_label,
                     target.name_description)
    before = [r["uuid"] for r in client.records()]
    entry = mgr.state.journal_begin(
        OP, cfg.uuid, identity=ident.__dict__, old=list(target.ref), snapshot=list(snap.ref),
        current=list(snap_key) if in_tree else None, before=before)
    crash_point("api.revert.begun")
    new = client.vdi_clone(snap.ref)
    crash_point("api.revert.clone")
    mgr.state.journal_step(entry, "cloned", new=list(new))
    crash_point("api.revert.cloned")
    _finish(mgr, client, _entry(mgr, entry))
    return "clone-fallback"


def _entry(mgr: StorageManager, entry_id: int) -> JournalEntry:
    return next(e for e in mgr.state.journal() if e.id == entry_id)


def _finish(mgr: StorageManager, client: SRClient, entry: JournalEntry) -> None:
    """Roll forward from `cloned`: switch (idempotent), delete the old backing, done."""
    d = entry.data
    ident = Identity(**d["identity"])
    if entry.step == "cloned":
        with mgr.state.transaction():
            mgr.state.hand_over(ident, d["old"][0], d["old"][1], d["new"][0], d["new"][1])
            if d.get("current"):
                mgr.state.set_current((ident.sr, ident.uuid), (d["current"][0], d["current"][1]))
            mgr.state.journal_step(entry.id, "switched")
        crash_point("api.revert.switched")
    try:
        client.vdi_delete((d["old"][0], d["old"][1]))
    except VDIMissing:
        pass
    crash_point("api.revert.deleted")
    mgr.state.journal_done(entry.id)


def recover(mgr: StorageManager, entry: JournalEntry) -> None:
    """Repair one interrupted operation of this layer (called with the API lock held)."""
    if entry.op != OP:
        raise SMError(f"unknown operation {entry.op!r} in the state journal")
    cfg = next((c for c in mgr._configs() if c.uuid == entry.sr), None)
    if cfg is None:
        log.warning("dropping journal entry %s: SR %s is gone", entry.id, entry.sr)
        mgr.state.journal_done(entry.id)
        return
    client = mgr._client(cfg)
    if entry.step != "begun":
        log.warning("rolling forward an interrupted revert of %s", entry.data["identity"]["uuid"])
        _finish(mgr, client, entry)
        return
    log.warning("rolling back an interrupted revert of %s", entry.data["identity"]["uuid"])
    known = set(entry.data["before"]) | set(mgr.state.backings(cfg.uuid))
    for rec in client.records():
        if rec["uuid"] in known or _flag(rec, "hidden") or _flag(rec, "is_a_snapshot"):
            continue
        client.vdi_delete((str(rec["uuid"]), str(rec["location"])))
    mgr.state.journal_done(entry.id)


def _flag(rec: dict[str, Any], key: str) -> bool:
    return rec.get(key) is True or str(rec.get(key)).lower() == "true"
