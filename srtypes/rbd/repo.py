"""`RbdRepo`: one connected SR (records, chain lock, intents) and the RBD primitives its
operations are made of. Naming: a VDI whose data is an RBD image has the image `<uuid>`; a VDI
that is an RBD snapshot is the snapshot `<uuid>` of the image named in its sm_config
`rbd-image` (so the cluster alone says which image/snapshot is which VDI).

Intent protocol: an operation records `intent.<id>` (with the lock held, fenced) BEFORE its
first change to the cluster, and removes it in the same atomic write that commits its records.
A pending intent therefore means "its records were never committed"; `recover` (run under the
lock before every chain-changing command and at sr_attach/sr_scan) rolls creations back and
deletions/reverts/resizes forward. Every step checks before acting, so recovery is idempotent.
"""

from __future__ import annotations

import contextlib
import logging
import uuid as uuidlib
from collections.abc import Iterator, Mapping
from typing import Any

from sm.errors import SRUnavailable, VDIMissing
from sm.faults import crash_point
from sm.records import VdiRecord

from .conn import Connection, ceph_errors
from .lease import Lease
from .names import IMAGE_KEY, SNAP_KEY, VDI_META, image_of, snap_of
from .store import Snapshot, Store

__all__ = ["IMAGE_KEY", "SNAP_KEY", "VDI_META", "RbdRepo", "image_of", "snap_of"]

log = logging.getLogger(__name__)


class RbdRepo:
    def __init__(self, conn: Connection, sr_uuid: str | None, host: str, *,
                 lease: float, wait: float) -> None:
        self.conn = conn
        self.sr_uuid = sr_uuid
        self.store = Store(conn)
        self.lease = Lease(self.store, host, lease=lease, wait=wait)
        self.host = host

    # -- records -------------------------------------------------------------------------

    def read(self) -> Snapshot:
        snap = self.store.read()
        if snap.sr is None:
            raise SRUnavailable(f"no SR in pool {self.conn.config.pool!r} namespace "
                                f"{self.conn.config.namespace!r}")
        if self.sr_uuid is not None and snap.sr.uuid != self.sr_uuid:
            raise SRUnavailable(f"the SR here is {snap.sr.uuid}, not {self.sr_uuid}")
        return snap

    def resolve(self, snap: Snapshot, uuid: str, location: str | None = None) -> VdiRecord:
        rec = snap.vdis.get(uuid) or snap.find_location(location)
        if rec is None:
            raise VDIMissing(f"no VDI {uuid} in this SR")
        return rec

    @contextlib.contextmanager
    def chain_lock(self, purpose: str) -> Iterator[Snapshot]:
        """The cluster-wide lock; pending intents are recovered first. Yields fresh records."""
        self.read()
        self.lease.acquire(purpose)
        try:
            snap = self.read()
            if snap.intents:
                self.recover(snap)
                snap = self.read()
            yield snap
        finally:
            self.lease.release()

    def begin(self, op: str, **data: Any) -> str:
        """Record an intent (fenced; the lease is renewed first); returns its id."""
        self.lease.renew()
        ident = uuidlib.uuid4().hex
        self.store.commit(intent=(ident, {"op": op, "host": self.host, **data}))
        return ident

    # -- RBD primitives (each tolerates having been done already) -------------------------

    def image(self, name: str, **kw: Any) -> Any:
        return self.conn.image(name, **kw)

    def list_images(self) -> list[str]:
        with ceph_errors(SRUnavailable, "listing images"):
            return sorted(self.conn.rbd.RBD().list(self.conn.ioctx))

    def image_exists(self, name: str) -> bool:
        return name in self.list_images()

    def create_image(self, name: str, size: int) -> None:
        with ceph_errors(SRUnavailable, f"creating image {name}"):
            self.conn.rbd.RBD().create(self.conn.ioctx, name, size, old_format=False)

    def set_vdi(self, image: str, vdi: str) -> None:
        """Image metadata `sm-vdi`: the VDI an image belongs to, written only where that is
        not the image's name (a revert replaced the VDI's image)."""
        with ceph_errors(SRUnavailable, f"metadata of {image}"):
            with self.image(image) as im:
                im.metadata_set(VDI_META, vdi)

    def remove_image(self, name: str) -> None:
        rbd = self.conn.rbd
        with ceph_errors(SRUnavailable, f"removing image {name}"):
            try:
                rbd.RBD().remove(self.conn.ioctx, name)
            except rbd.ImageNotFound:
                pass

    def snaps(self, image: str) -> dict[str, dict[str, Any]]:
        rbd = self.conn.rbd
        with ceph_errors(SRUnavailable, f"listing snapshots of {image}"):
            try:
                with self.image(image, read_only=True) as im:
                    return {s["name"]: s for s in im.list_snaps()}
            except rbd.ImageNotFound:
                return {}

    def create_snap(self, image: str, snap: str) -> None:
        with ceph_errors(SRUnavailable, f"snapshot {image}@{snap}"):
            with self.image(image) as im:
                if not im.snap_exists(snap):
                    im.create_snap(snap)

    def snap_protected(self, image: str, snap: str) -> None:
        """Create (if missing) and protect `image@snap`, with one open of the image."""
        with ceph_errors(SRUnavailable, f"snapshot {image}@{snap}"):
            with self.image(image) as im:
                if not im.snap_exists(snap):
                    im.create_snap(snap)
                if not im.is_protected_snap(snap):
                    im.protect_snap(snap)

    def protect(self, image: str, snap: str) -> bool:
        """Protect `image@snap` (clones need it); returns whether it was protected before."""
        with ceph_errors(SRUnavailable, f"protect {image}@{snap}"):
            with self.image(image) as im:
                if im.is_protected_snap(snap):
                    return True
                im.protect_snap(snap)
                return False

    def remove_snap(self, image: str, snap: str) -> None:
        rbd = self.conn.rbd
        with ceph_errors(SRUnavailable, f"removing {image}@{snap}"):
            try:
                with self.image(image) as im:
                    if not im.snap_exists(snap):
                        return
                    if im.is_protected_snap(snap):
                        im.unprotect_snap(snap)
                    im.remove_snap(snap)
            except rbd.ImageNotFound:
                pass

    def unprotect_if_unused(self, image: str, snap: str) -> None:
        rbd = self.conn.rbd
        with ceph_errors(SRUnavailable, f"unprotect {image}@{snap}"):
            try:
                with self.image(image) as im:
                    if not im.snap_exists(snap) or not im.is_protected_snap(snap):
                        return
                    im.set_snap(snap)
                    if list(im.list_children2()):
                        return
                    im.set_snap(None)
                    im.unprotect_snap(snap)
            except rbd.ImageNotFound:
                pass

    def clone(self, image: str, snap: str, name: str, vdi: str | None = None) -> None:
        rbd = self.conn.rbd
        with ceph_errors(SRUnavailable, f"clone {image}@{snap} -> {name}"):
            try:
                rbd.RBD().clone(self.conn.ioctx, image, snap, self.conn.ioctx, name)
            except rbd.ImageExists:
                pass
        if vdi is not None and vdi != name:
            self.set_vdi(name, vdi)

    def check_unwatched(self, image: str, what: str) -> None:
        """VDIInUse if a client has `image` open (a data path on another host: ours are paused
        or stopped when this is called), so its data does not change under a live reader."""
        rbd = self.conn.rbd
        with ceph_errors(SRUnavailable, f"watchers of {image}"):
            try:
                with self.image(image, read_only=True) as im:
                    watchers = list(im.watchers_list())
            except rbd.ImageNotFound:
                return
        if watchers:
            from sm.errors import VDIInUse

            raise VDIInUse(f"{what}: image {image} is open on another host "
                           f"({', '.join(str(w.get('addr')) for w in watchers)})")

    def size(self, image: str, snap: str | None = None) -> int:
        with ceph_errors(VDIMissing, f"size of {image}"):
            with self.image(image, snapshot=snap, read_only=True) as im:
                return int(im.size())

    # -- recovery ------------------------------------------------------------------------

    def recover(self, snap: Snapshot) -> None:
        for ident, intent in snap.intents.items():
            log.warning("recovering an interrupted %s (%s)", intent.get("op"), ident)
            self._recover_one(snap, ident, intent)

    def _recover_one(self, snap: Snapshot, ident: str, intent: Mapping[str, Any]) -> None:
        op = intent.get("op")
        from . import vdiops

        if op in ("create", "snapshot", "clone"):
            # records never committed: undo what was created, clones before their parents
            for name in reversed(intent.get("images_made", [])):
                for s in self.snaps(name):
                    self.remove_snap(name, s)
                self.remove_image(name)
            for image, snapname in reversed(intent.get("snaps_made", [])):
                self.remove_snap(image, snapname)
            for image, snapname in intent.get("protected", []):
                self.unprotect_if_unused(image, snapname)
            self.store.commit(done=[ident])
        elif op == "revert":
            vdiops.finish_revert(self, snap, ident, intent)
        elif op == "resize":
            vdiops.finish_resize(self, snap, ident, intent)
        elif op == "delete":
            vdiops.finish_delete(self, snap, ident, intent)
        elif op == "flatten":
            vdiops.finish_flatten(self, snap, ident, intent)
        else:
            log.error("unknown intent %s: %s; dropped", ident, intent)
            self.store.commit(done=[ident])
        crash_point(f"recover:{op}")
