"""Revert: in place when the driver can, otherwise by clone with the identity handed over.

One rule for both paths: a VDI attached on this host (by a toolstack through its driver, or
by `sm vdi attach`; the driver's `sm_vdi_get` says `attached`) is not reverted: VDIInUse (24)
naming the attachment, before anything changes (`sm.api.guards.detached`). Only the VDI's own
snapshots are taken (`trees.check_lineage`).

In place: `vdi_revert` when the SR type advertises VDI_REVERT (and the `revert` setting is not
`clone`); a Fault 38 from it falls through to the clone path. When the snapshot is in the VDI's
tree, the call is journaled (`revert-in-place`, crash points `api.revert.in-place.<step>`):

    begun     intent {vdi, snapshot (the new current node), the VDI's revert id before}
    reverted  the driver answered; one transaction moves the tree's current node and ends it

Recovery asks the driver whether the revert happened: every in-place revert writes a new
unique id into the VDI record's `sm_config` `revert-id` (`sm_vdi_get`), so a changed id means
the driver finished it (its own journal replays a kill after its point of no return) and the
current node moves; an unchanged one means it did not. An SR type that does not report revert
ids leaves the tree as it was (logged).

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
    deleted   vdi_delete(old backing) returned (or the old backing was already gone)
    switched  one transaction: identity + backings + current snapshot, journal entry removed

The old backing is deleted BEFORE the switch: a driver that refuses (VDIInUse: someone
attached the old volume after all) refuses while nothing is switched, so the revert is rolled
back (the clone deleted) and reported as refused, never half done.

Recovery (before the next API operation): `begun` -> roll back (delete orphan clones: new,
visible, non-snapshot volumes nobody maps that look like a clone of the snapshot); `cloned` ->
roll forward (delete the old backing, switch), or back if the old backing is in use;
`deleted` -> switch. Either way the VDI reads the old content or the snapshot's, never neither.
An entry that cannot progress (its SR unreachable) is logged and set aside: it never blocks
commands on other VDIs or SRs; `repair()` retries it, and a new revert of the same VDI is
refused until then.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sm.capabilities import Capability
from sm.errors import SMError, Unimplemented, VDIInUse, VDIMissing
from sm.faults import crash_point
from sm.records import REVERT_ID

from . import guards, trees
from .models import VDI, RevertPath, RevertResult
from .state import Identity, JournalEntry

if TYPE_CHECKING:
    from .client import SRClient
    from .config import SrConfig
    from .manager import StorageManager

__all__ = ["IN_PLACE", "OP", "recover", "revert"]

OP = "revert-clone"
IN_PLACE = "revert-in-place"
log = logging.getLogger(__name__)


def revert(mgr: StorageManager, cfg: SrConfig, target: VDI, snap: VDI, *,
           safety: bool) -> RevertResult:
    trees.check_lineage(mgr.state, target, snap)
    _no_pending(mgr, cfg, target)
    client = mgr._client(cfg)
    guards.detached(client, target, "revert")
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
        entry = mgr.state.journal_begin(
            IN_PLACE, cfg.uuid, vdi=list(target.ref), current=list(snap_key),
            mark=_revert_id(client, target.ref)) if in_tree else None
        crash_point("api.revert.in-place.begun")
        try:
            client.vdi_revert(snap.ref, target.ref[0])
        except Unimplemented:
            log.info("vdi_revert answered 38: falling back to vdi_clone")
            if entry is not None:
                mgr.state.journal_done(entry)
        except BaseException:
            if entry is not None:  # a failing driver command undoes itself: nothing reverted
                mgr.state.journal_done(entry)
            raise
        else:
            crash_point("api.revert.in-place.reverted")
            if entry is not None:
                with mgr.state.transaction():
                    mgr.state.set_current(vdi_key, snap_key)
                    mgr.state.journal_done(entry)
            return "in-place"
    ident = Identity(cfg.uuid, target.uuid, target.location, target.name_label,
                     target.name_description)
    before = [r["uuid"] for r in client.records()]
    entry = mgr.state.journal_begin(
        OP, cfg.uuid, identity=ident.__dict__, old=list(target.ref), snapshot=list(snap.ref),
        current=list(snap_key) if in_tree else None, before=before,
        clone_of={"name_label": snap.name_label, "virtual_size": snap.virtual_size})
    crash_point("api.revert.begun")
    new = client.vdi_clone(snap.ref)
    crash_point("api.revert.clone")
    mgr.state.journal_step(entry, "cloned", new=list(new))
    crash_point("api.revert.cloned")
    _finish(mgr, client, _entry(mgr, entry))
    return "clone-fallback"


def _entry(mgr: StorageManager, entry_id: int) -> JournalEntry:
    return next(e for e in mgr.state.journal() if e.id == entry_id)


def _no_pending(mgr: StorageManager, cfg: SrConfig, target: VDI) -> None:
    """Refuse a revert of a VDI whose earlier revert is set aside, unfinished."""
    for entry in mgr.state.journal():
        if entry.op == OP and entry.sr == cfg.uuid and \
                entry.data["identity"]["uuid"] == target.uuid:
            raise VDIInUse(f"an interrupted revert of VDI {target.uuid} could not be finished "
                           f"({entry.data.get('aside') or 'pending'}); the next command "
                           "retries it, StorageManager.repair() (sm.repair over XML-RPC) now")


def _finish(mgr: StorageManager, client: SRClient, entry: JournalEntry) -> None:
    """Roll forward from `cloned`: delete the old backing (rolled back if it is in use),
    then switch and end the entry in one transaction."""
    d = entry.data
    ident = Identity(**d["identity"])
    if entry.step == "cloned":
        try:
            client.vdi_delete((d["old"][0], d["old"][1]))
        except VDIMissing:
            pass
        except VDIInUse as err:
            _undo(mgr, client, entry)
            raise VDIInUse(f"VDI {ident.uuid} is in use, nothing was reverted: "
                           f"{err.message or err.description}") from err
        mgr.state.journal_step(entry.id, "deleted")
        crash_point("api.revert.deleted")
    with mgr.state.transaction():
        mgr.state.hand_over(ident, d["old"][0], d["old"][1], d["new"][0], d["new"][1])
        if d.get("current"):
            mgr.state.set_current((ident.sr, ident.uuid), (d["current"][0], d["current"][1]))
        mgr.state.journal_done(entry.id)
    crash_point("api.revert.switched")


def _undo(mgr: StorageManager, client: SRClient, entry: JournalEntry) -> None:
    """Roll back from `cloned`: the old backing stays the VDI's data; the clone goes."""
    try:
        client.vdi_delete((entry.data["new"][0], entry.data["new"][1]))
    except VDIMissing:
        pass
    mgr.state.journal_done(entry.id)


def _revert_id(client: SRClient, ref: tuple[str, str]) -> str | None:
    """The id of the VDI's last in-place revert (`sm_config` `revert-id`, `sm_vdi_get`), ""
    for none yet; None when the SR type does not report it."""
    try:
        record = client.record(*ref)
    except (Unimplemented, VDIMissing):
        return None
    sm_config = record.get("sm_config")
    return str(sm_config.get(REVERT_ID, "")) if isinstance(sm_config, dict) else None


def _recover_in_place(mgr: StorageManager, client: SRClient, entry: JournalEntry) -> None:
    """A kill between the driver's `vdi_revert` and the tree update: the tree's current node
    follows the driver's answer to "did it revert?" (its record's revert id changed)."""
    d = entry.data
    ref = (d["vdi"][0], d["vdi"][1])
    client.sr_scan()  # the driver finishes (or undoes) its own interrupted work first
    now = _revert_id(client, ref)
    if now is not None and now != d["mark"] and d.get("current"):
        log.warning("an interrupted in-place revert of %s happened: the tree follows", ref[0])
        with mgr.state.transaction():
            mgr.state.set_current((entry.sr, ref[0]), (d["current"][0], d["current"][1]))
            mgr.state.journal_done(entry.id)
        return
    if now is None or d["mark"] is None:
        log.warning("an interrupted in-place revert of %s: SR %s does not report revert ids; "
                    "the snapshot tree's current node is left as it was", ref[0], entry.sr)
    mgr.state.journal_done(entry.id)


def recover(mgr: StorageManager, entry: JournalEntry) -> None:
    """Repair one interrupted operation of this layer (called with the API lock held)."""
    if entry.op not in (OP, IN_PLACE):
        raise SMError(f"unknown operation {entry.op!r} in the state journal")
    cfg = next((c for c in mgr._configs() if c.uuid == entry.sr), None)
    if cfg is None:
        log.warning("dropping journal entry %s: SR %s is gone", entry.id, entry.sr)
        mgr.state.journal_done(entry.id)
        return
    client = mgr._client(cfg)
    if entry.op == IN_PLACE:
        _recover_in_place(mgr, client, entry)
        return
    uuid = entry.data["identity"]["uuid"]
    if entry.step != "begun":
        log.warning("rolling forward an interrupted revert of %s", uuid)
        try:
            _finish(mgr, client, entry)
        except VDIInUse as err:  # rolled back: the old volume is in use
            log.warning("%s", err.message)
        return
    log.warning("rolling back an interrupted revert of %s", uuid)
    known = set(entry.data["before"]) | set(mgr.state.backings(cfg.uuid))
    like = entry.data.get("clone_of")
    for rec in client.records():
        if rec["uuid"] in known or _flag(rec, "hidden") or _flag(rec, "is_a_snapshot"):
            continue
        if like and (str(rec.get("name_label", "")) != like["name_label"]
                     or int(rec.get("virtual_size") or 0) != int(like["virtual_size"])):
            continue  # not a clone of the snapshot: someone else's new VDI
        client.vdi_delete((str(rec["uuid"]), str(rec["location"])))
    mgr.state.journal_done(entry.id)


def _flag(rec: dict[str, Any], key: str) -> bool:
    return rec.get(key) is True or str(rec.get(key)).lower() == "true"
