"""VDI operations of the RBD SR, each under the chain lock with an intent (see `repo`).

| VDI | RBD | record `parent` |
|---|---|---|
| plain / cloned VDI | image `<uuid>` (clone: of a protected snap) | the snapshot it came from |
| snapshot VDI | snapshot `<uuid>` of image `rbd-image` | the VDI of that image |
| clone's hidden base ("base copy") | snapshot `<uuid>` of the cloned VDI's image | that VDI |

- snapshot: `create_snap`; of a snapshot VDI: clone it to a hidden image, snapshot that.
- clone: protect the snapshot (a VDI: its own hidden base snapshot first) and `clone`.
- revert: `rollback_to_snap` when the snapshot is on the target's own image (Ceph does it in
  the OSDs, no data through Python); otherwise the target's image is replaced by a clone of the
  snapshot (the old image stays as a hidden base if snapshots of it remain).
- delete: removed at once when nothing depends on the VDI; otherwise hidden (deferred) and
  removed by `collect` when its last dependant goes. Nothing a dependant reads is removed.
  `flatten` (sr_scan) copies a deleted image's data into the clones that still need it, so
  the image and its hidden base snapshot can go.
"""

from __future__ import annotations

import datetime
import uuid as uuidlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sm.chain.records import MAX_DEPTH
from sm.errors import (
    SnapshotChainTooLong,
    VDIClone,
    VDIExists,
    VDIInUse,
    VDIMissing,
    VDIResize,
    VDISize,
    VDISnapshot,
    VDIUnavailable,
)
from sm.faults import crash_point
from sm.records import VdiRecord
from sm.sizes import check_vdi_size

from .conn import ceph_errors
from .names import IMAGE_KEY, SNAP_KEY, image_of, snap_of
from .store import Snapshot

if TYPE_CHECKING:
    from .repo import RbdRepo

__all__ = ["MAX_DEPTH", "MAX_SIZE", "collect", "create", "delete", "flatten", "resize",
           "revert", "snapshot"]

"""Clone layers (images) on one chain; Ceph reads through every layer, so deep chains are slow."""
MAX_SIZE = 1 << 60


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _round(size: int) -> int:
    return max(512, -(-size // 512) * 512)


def children(snap: Snapshot, uuid: str) -> list[VdiRecord]:
    return [r for r in snap.vdis.values() if r.parent == uuid]


def depth(snap: Snapshot, rec: VdiRecord) -> int:
    """Images on the chain from `rec` up (a snapshot VDI counts its image)."""
    n, seen = 0, set()
    cur: VdiRecord | None = rec
    while cur is not None and cur.uuid not in seen:
        seen.add(cur.uuid)
        if snap_of(cur) is None:
            n += 1
        cur = snap.vdis.get(cur.parent) if cur.parent else None
    return n


def create(repo: RbdRepo, snap: Snapshot, *, uuid: str, size: int, name_label: str,
           name_description: str, vdi_type: str, sm_config: Mapping[str, str],
           read_only: bool) -> VdiRecord:
    if uuid in snap.vdis or repo.image_exists(uuid):
        raise VDIExists(f"VDI {uuid} exists")
    size = max(512, check_vdi_size(size, fmt="raw", limit=MAX_SIZE, container="an RBD SR"))
    ident = repo.begin("create", images_made=[uuid])
    crash_point("vdi_create:journaled")
    repo.create_image(uuid, size)
    crash_point("vdi_create:image")
    rec = VdiRecord(uuid=uuid, location=uuid, name_label=name_label,
                    name_description=name_description, type=vdi_type, vdi_type="raw",
                    read_only=read_only, virtual_size=size,
                    sm_config={k: v for k, v in sm_config.items()
                               if k not in (IMAGE_KEY, SNAP_KEY)})
    repo.store.commit(put=[rec], done=[ident])
    return rec


def snapshot(repo: RbdRepo, snap: Snapshot, rec: VdiRecord, *, clone_of: bool) -> VdiRecord:
    """`vdi_snapshot` (clone_of False) or `vdi_clone` (True) of `rec`: the new VDI."""
    cmd = "vdi_clone" if clone_of else "vdi_snapshot"
    err = VDIClone if clone_of else VDISnapshot
    if rec.hidden:
        raise err(f"VDI {rec.uuid} is a hidden base")
    new = str(uuidlib.uuid4())
    now = _now()
    source = snap_of(rec)
    image = image_of(rec)
    records: list[VdiRecord] = []
    plan: dict[str, Any] = {"images_made": [], "snaps_made": [], "protected": []}
    common: dict[str, Any] = dict(name_label=rec.name_label, name_description=rec.name_description,
                  type=rec.type, vdi_type="raw", virtual_size=rec.virtual_size)
    if clone_of:
        if depth(snap, rec) + 1 > MAX_DEPTH:
            raise SnapshotChainTooLong(f"a clone of {rec.uuid} would be {MAX_DEPTH + 1} "
                                       f"images deep (limit {MAX_DEPTH})")
        if source is None:  # a hidden base snapshot of the VDI to clone from
            base = str(uuidlib.uuid4())
            plan["snaps_made"].append([image, base])
            records.append(VdiRecord(uuid=base, location=base, read_only=True, hidden=True,
                                     managed=False, name_label="base copy",
                                     type=rec.type, vdi_type="raw",
                                     virtual_size=rec.virtual_size, parent=rec.uuid,
                                     sm_config={IMAGE_KEY: image, SNAP_KEY: base}))
            src_image, src_snap, parent = image, base, base
        else:
            src_image, src_snap, parent = image, source, rec.uuid
        plan["protected"].append([src_image, src_snap])
        plan["images_made"].append(new)
        records.append(VdiRecord(uuid=new, location=new, parent=parent, **common))
    elif source is None:
        plan["snaps_made"].append([image, new])
        records.append(VdiRecord(uuid=new, location=new, read_only=True, is_a_snapshot=True,
                                 snapshot_of=rec.uuid, snapshot_time=now, parent=rec.uuid,
                                 sm_config={IMAGE_KEY: image, SNAP_KEY: new}, **common))
    else:  # snapshot of a snapshot: RBD snapshots are flat, so clone it and snapshot that
        if depth(snap, rec) + 1 > MAX_DEPTH:
            raise SnapshotChainTooLong(f"a snapshot of {rec.uuid} would be too deep")
        base = str(uuidlib.uuid4())
        plan["protected"].append([image, source])
        plan["images_made"].append(base)
        plan["snaps_made"].append([base, new])
        records.append(VdiRecord(uuid=base, location=base, read_only=True, hidden=True,
                                 managed=False, name_label="base copy", type=rec.type,
                                 vdi_type="raw", virtual_size=rec.virtual_size,
                                 parent=rec.uuid))
        records.append(VdiRecord(uuid=new, location=new, read_only=True, is_a_snapshot=True,
                                 snapshot_of=rec.uuid, snapshot_time=now, parent=base,
                                 sm_config={IMAGE_KEY: base, SNAP_KEY: new}, **common))
    ident = repo.begin("clone" if clone_of else "snapshot", vdi=rec.uuid, new=new, **plan)
    crash_point(f"{cmd}:journaled")
    with ceph_errors(err, f"{cmd} of {rec.uuid}"):
        if not clone_of and source is None:
            repo.create_snap(image, new)
            crash_point(f"{cmd}:snap")
        elif clone_of:
            repo.snap_protected(src_image, src_snap)
            crash_point(f"{cmd}:snap")
            repo.clone(src_image, src_snap, new)
            crash_point(f"{cmd}:clone")
        elif source is not None:
            repo.protect(image, source)
            repo.clone(image, source, plan["images_made"][0])
            repo.create_snap(plan["images_made"][0], new)
            crash_point(f"{cmd}:snap")
    repo.store.commit(put=records, done=[ident])
    crash_point(f"{cmd}:records")
    return records[-1]


# -- revert -----------------------------------------------------------------------------


def revert(repo: RbdRepo, snap: Snapshot, s: VdiRecord, target: VdiRecord) -> None:
    if snap_of(s) is None:
        raise VDISnapshot(f"VDI {s.uuid} is not a snapshot")
    if snap_of(target) is not None:  # the shared refusals: sm.chain.targets
        raise VDIInUse(f"VDI {target.uuid} is a snapshot: cannot revert it")
    repo.check_unwatched(image_of(target), f"revert of {target.uuid}")
    if image_of(s) == image_of(target):
        ident = repo.begin("revert", mode="rollback", snap=s.uuid, target=target.uuid,
                           revert_id=str(uuidlib.uuid4()))
    else:  # the snapshot lives on another image: the target becomes a clone of it
        keep = str(uuidlib.uuid4()) if children(snap, target.uuid) else None
        ident = repo.begin("revert", mode="reclone", snap=s.uuid, target=target.uuid,
                           old_image=image_of(target), keep=keep,
                           new_image=str(uuidlib.uuid4()), revert_id=str(uuidlib.uuid4()))
    crash_point("vdi_revert:journaled")
    now = repo.read()
    finish_revert(repo, now, ident, now.intents[ident])


def finish_revert(repo: RbdRepo, snap: Snapshot, ident: str, intent: Mapping[str, Any]) -> None:
    """Roll a revert forward (idempotent): the target ends with exactly the snapshot's data."""
    s, target = snap.vdis.get(intent["snap"]), snap.vdis.get(intent["target"])
    if s is None or target is None:
        repo.store.commit(done=[ident])
        return
    put: list[VdiRecord] = []
    size = s.virtual_size  # a snapshot's size never changes
    if intent["mode"] == "rollback":
        with ceph_errors(VDISnapshot, f"rollback of {target.uuid} to {s.uuid}"):
            with repo.image(image_of(target)) as im:
                im.rollback_to_snap(snap_of(s))
                if im.size() != size:
                    im.resize(size)
        crash_point("vdi_revert:rollback")
        put.append(target.replace(virtual_size=size).reverted(intent.get("revert_id", "")))
    else:
        old, new, keep = intent["old_image"], intent["new_image"], intent.get("keep")
        repo.protect(image_of(s), snap_of(s) or "")
        repo.clone(image_of(s), snap_of(s) or "", new, target.uuid)
        crash_point("vdi_revert:clone")
        if keep is not None:
            repo.set_vdi(old, keep)  # snapshots of the old content remain: keep it as a hidden base
            put.append(VdiRecord(uuid=keep, location=keep, read_only=True, hidden=True,
                                 managed=False, name_label="base copy", type=target.type,
                                 vdi_type="raw", virtual_size=target.virtual_size,
                                 parent=target.parent, sm_config={IMAGE_KEY: old}))
            for child in children(snap, target.uuid):
                put.append(child.replace(parent=keep))
        elif repo.image_exists(old) and old != new:
            for sn in repo.snaps(old):
                repo.remove_snap(old, sn)
            repo.remove_image(old)
        put.append(target.replace(virtual_size=size, parent=s.uuid,
                                  sm_config={**target.sm_config, IMAGE_KEY: new})
                   .reverted(intent.get("revert_id", "")))
    repo.store.commit(put=put, done=[ident])
    crash_point("vdi_revert:records")
    if intent["mode"] != "rollback":
        collect(repo)


# -- resize -----------------------------------------------------------------------------


def resize(repo: RbdRepo, snap: Snapshot, rec: VdiRecord, size: int) -> VdiRecord:
    if rec.hidden:
        raise VDIResize(f"VDI {rec.uuid} is a hidden base")
    if snap_of(rec) is not None or rec.is_a_snapshot or rec.read_only:
        raise VDIUnavailable(f"VDI {rec.uuid} is "
                             f"{'a snapshot' if rec.is_a_snapshot else 'read-only'}; snapshots "
                             "and read-only VDIs are never resized")
    size = max(512, check_vdi_size(size, fmt="raw", limit=MAX_SIZE, container="an RBD SR"))
    if size < rec.virtual_size:
        raise VDISize(f"shrinking {rec.uuid} from {rec.virtual_size} to {size} is refused")
    if size == rec.virtual_size:
        return rec
    repo.check_unwatched(image_of(rec), f"resize of {rec.uuid}")
    ident = repo.begin("resize", vdi=rec.uuid, size=size)
    finish_resize(repo, snap, ident, {"vdi": rec.uuid, "size": size})
    return rec.replace(virtual_size=size)


def finish_resize(repo: RbdRepo, snap: Snapshot, ident: str, intent: Mapping[str, Any]) -> None:
    rec = snap.vdis.get(intent["vdi"])
    if rec is None:
        repo.store.commit(done=[ident])
        return
    with ceph_errors(VDIResize, f"resize of {rec.uuid}"):
        with repo.image(image_of(rec)) as im:
            if im.size() < intent["size"]:
                im.resize(intent["size"])
            size = int(im.size())
    crash_point("vdi_resize:image")
    repo.store.commit(put=[rec.replace(virtual_size=size)], done=[ident])


# -- delete and the collector ------------------------------------------------------------


def delete(repo: RbdRepo, snap: Snapshot, rec: VdiRecord) -> None:
    if snap_of(rec) is None:
        repo.check_unwatched(image_of(rec), f"delete of {rec.uuid}")
    if children(snap, rec.uuid):
        if not rec.hidden:  # deferred: removed when its last dependant goes
            repo.store.commit(put=[rec.replace(hidden=True, managed=False)])
        return
    ident = repo.begin("delete", vdis=[rec.uuid])
    crash_point("vdi_delete:journaled")
    finish_delete(repo, snap, ident, {"vdis": [rec.uuid]})
    collect(repo)


def _remove_storage(repo: RbdRepo, rec: VdiRecord) -> None:
    s = snap_of(rec)
    if s is not None:
        repo.remove_snap(image_of(rec), s)
        return
    image = image_of(rec)
    for name in repo.snaps(image):
        repo.remove_snap(image, name)
    repo.remove_image(image)


def finish_delete(repo: RbdRepo, snap: Snapshot, ident: str, intent: Mapping[str, Any]) -> None:
    gone = []
    for uuid in intent["vdis"]:
        rec = snap.vdis.get(uuid)
        if rec is None:
            continue
        with ceph_errors(VDIInUse, f"removing VDI {uuid}"):
            _remove_storage(repo, rec)
        gone.append(uuid)
        crash_point("vdi_delete:storage")
    # parents of what went may now be unprotectable
    for uuid in gone:
        rec = snap.vdis[uuid]
        parent = snap.vdis.get(rec.parent) if rec.parent else None
        if parent is not None and snap_of(parent) is not None and snap_of(rec) is None:
            repo.unprotect_if_unused(image_of(parent), snap_of(parent) or "")
    repo.store.commit(remove=gone, done=[ident])


def collect(repo: RbdRepo) -> list[str]:
    """Remove hidden VDIs nothing depends on any more, repeatedly (a chain unwinds)."""
    removed: list[str] = []
    while True:
        snap = repo.read()
        garbage = [r for r in snap.vdis.values() if r.hidden and not children(snap, r.uuid)]
        if not garbage:
            return removed
        ident = repo.begin("delete", vdis=[r.uuid for r in garbage])
        finish_delete(repo, snap, ident, {"vdis": [r.uuid for r in garbage]})
        removed += [r.uuid for r in garbage]


def flatten_plan(snap: Snapshot) -> list[VdiRecord]:
    """Clones whose flattening frees deleted data: visible clones of a hidden snapshot that
    lives on a hidden (deleted) image. After `flatten` they read their own objects only, and
    the collector can remove the snapshot and the image."""
    out = []
    for base in snap.vdis.values():
        owner = snap.vdis.get(base.parent) if base.parent else None
        if not (base.hidden and snap_of(base) and owner is not None and owner.hidden):
            continue
        out += [c for c in children(snap, base.uuid) if snap_of(c) is None and not c.hidden]
    return out


def flatten(repo: RbdRepo, snap: Snapshot) -> list[str]:
    """The collector's flattening step (sr_scan): journaled, rolled forward if interrupted."""
    clones = flatten_plan(snap)
    if not clones:
        return []
    ident = repo.begin("flatten", vdis=[c.uuid for c in clones])
    finish_flatten(repo, snap, ident, {"vdis": [c.uuid for c in clones]})
    return [c.uuid for c in clones]


def finish_flatten(repo: RbdRepo, snap: Snapshot, ident: str,
                   intent: Mapping[str, Any]) -> None:
    rbd = repo.conn.rbd
    put = []
    for uuid in intent["vdis"]:
        rec = snap.vdis.get(uuid)
        if rec is None:
            continue
        with ceph_errors(VDIClone, f"flatten of {uuid}"):
            with repo.image(image_of(rec)) as im:
                try:
                    im.get_parent_image_spec()
                except rbd.ImageNotFound:
                    pass  # already flat
                else:
                    im.flatten()
        crash_point("flatten:image")
        repo.lease.renew()
        put.append(rec.replace(parent=""))
    repo.store.commit(put=put, done=[ident])


def ensure_exists(repo: RbdRepo, rec: VdiRecord) -> None:
    s = snap_of(rec)
    if s is None:
        if not repo.image_exists(image_of(rec)):
            raise VDIMissing(f"the image of VDI {rec.uuid} is missing")
    elif s not in repo.snaps(image_of(rec)):
        raise VDIMissing(f"the snapshot of VDI {rec.uuid} is missing")
