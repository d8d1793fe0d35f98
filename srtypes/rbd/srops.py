"""SR-level operations of the RBD SR: create, delete, probe, update, scan, introduce."""

from __future__ import annotations

import datetime
import re
from xml.sax.saxutils import escape

from sm.errors import SMError, SRExists, SRNotEmpty, SRUnavailable, VDIExists, VDIMissing
from sm.records import SrRecord, VdiRecord

from .conn import Connection, ceph_errors
from .repo import RbdRepo, image_of, snap_of
from .store import Snapshot, Store

__all__ = ["create", "delete", "introduce", "probe", "scan", "update"]

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def create(conn: Connection, sr_uuid: str) -> None:
    """Claim the pool (or the namespace, created if missing) for the SR `sr_uuid`."""
    cfg = conn.config
    rbd = conn.rbd
    created_ns = False
    if cfg.namespace:
        with ceph_errors(SRUnavailable, f"namespace {cfg.namespace!r}"):
            default = conn.namespace_ioctx("")
            try:
                if not rbd.RBD().namespace_exists(default, cfg.namespace):
                    rbd.RBD().namespace_create(default, cfg.namespace)
                    created_ns = True
            finally:
                default.close()
    store = Store(conn)
    existing = store.read()
    if existing.sr is not None:
        raise SRExists(f"pool {cfg.pool!r} namespace {cfg.namespace!r} already holds SR "
                       f"{existing.sr.uuid}")
    with ceph_errors(SRUnavailable, "listing images"):
        images = rbd.RBD().list(conn.ioctx)
    if images:
        raise SMError(f"pool {cfg.pool!r} namespace {cfg.namespace!r} holds {len(images)} "
                      "RBD images of no SR; use an empty pool or namespace")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    record = SrRecord(uuid=sr_uuid, type="rbd", created=now,
                      sm_config={"pool": cfg.pool, "namespace": cfg.namespace,
                                 "namespace_created": "true" if created_ns else "false"})
    if not store.create(record):
        raise SRExists("another host created an SR here at the same time")


def delete(repo: RbdRepo) -> None:
    from . import vdiops

    conn = repo.conn
    if repo.store.read().sr is None:
        return  # nothing here: idempotent
    with repo.chain_lock("sr_delete") as snap:
        visible = [r.uuid for r in snap.vdis.values() if not r.hidden]
        if visible:
            raise SRNotEmpty(f"the SR holds {len(visible)} VDIs")
        known = {image_of(r) for r in snap.vdis.values()}
        foreign = [i for i in repo.list_images() if i not in known]
        if foreign:
            raise SRNotEmpty(f"the SR holds {len(foreign)} images without records "
                             "(sr_scan would adopt them)")
        vdiops.collect(repo)
    repo.store.destroy()
    sr = snap.sr
    if conn.config.namespace and sr is not None and \
            sr.sm_config.get("namespace_created") == "true":
        with ceph_errors(SRUnavailable, "removing the namespace"):
            default = conn.namespace_ioctx("")
            try:
                conn.rbd.RBD().namespace_remove(default, conn.config.namespace)
            except conn.rbd.Error:
                pass  # something else lives there: leave it
            finally:
                default.close()


def probe(conn: Connection) -> str:
    """`<SRlist>` of the SRs in the pool (every namespace, or the one given)."""
    cfg = conn.config
    if cfg.namespace:
        spaces = [cfg.namespace]
    else:
        with ceph_errors(SRUnavailable, "listing namespaces"):
            spaces = ["", *sorted(conn.rbd.RBD().namespace_list(conn.ioctx))]
    out = ["<SRlist>"]
    for ns in spaces:
        conn.ioctx.set_namespace(ns)
        sr = Store(conn).read().sr
        if sr is None:
            continue
        out.append(f"<SR><UUID>{escape(sr.uuid)}</UUID><pool>{escape(cfg.pool)}</pool>"
                   f"<namespace>{escape(ns)}</namespace></SR>")
    conn.ioctx.set_namespace(cfg.namespace)
    out.append("</SRlist>")
    return "".join(out) if len(out) > 2 else "<SRlist/>"


def stats(repo: RbdRepo, snap: Snapshot | None = None) -> dict[str, str]:
    """Cluster and pool sizes and the SR's virtual allocation (decimal strings)."""
    conn = repo.conn
    with ceph_errors(SRUnavailable, "cluster statistics"):
        cluster = conn.cluster.get_cluster_stats()
        pool = conn.ioctx.get_stats()
    snap = snap or repo.read()
    virtual = sum(r.virtual_size for r in snap.vdis.values() if not snap_of(r)
                  and not r.hidden)
    return {"physical_size": str(int(cluster["kb"]) * 1024),
            "physical_utilisation": str(int(cluster["kb_used"]) * 1024),
            "free_space": str(int(cluster["kb_avail"]) * 1024),
            "pool_bytes_used": str(int(pool.get("num_bytes", 0))),
            "virtual_allocation": str(virtual)}


def update(repo: RbdRepo) -> None:
    with repo.chain_lock("sr_update") as snap:
        assert snap.sr is not None
        sm_config = {**snap.sr.sm_config, **stats(repo, snap)}
        repo.store.commit(sr=snap.sr.replace(sm_config=sm_config))


def _adopt(repo: RbdRepo, image: str) -> VdiRecord:
    size = repo.size(image)
    return VdiRecord(uuid=image, location=image, name_label=image, vdi_type="raw",
                     virtual_size=size)


def scan(repo: RbdRepo) -> None:
    """Recover, adopt images named by a uuid that no record knows (and have no parent), forget
    records whose image or snapshot vanished, flatten clones that keep deleted images alive,
    collect garbage."""
    from . import vdiops

    with repo.chain_lock("sr_scan") as snap:
        images = set(repo.list_images())
        known = {image_of(r) for r in snap.vdis.values()}
        put = [_adopt(repo, i) for i in sorted(images - known)
               if _UUID.match(i) and _parentless(repo, i)]
        gone = _vanished(repo, snap, images)
        if put or gone:
            repo.store.commit(put=put, remove=gone)
        vdiops.flatten(repo, repo.read())
        vdiops.collect(repo)


def _parentless(repo: RbdRepo, image: str) -> bool:
    rbd = repo.conn.rbd
    with repo.image(image, read_only=True) as im:
        try:
            im.get_parent_image_spec()
        except rbd.ImageNotFound:
            return True
    return False


def _vanished(repo: RbdRepo, snap: Snapshot, images: set[str]) -> list[str]:
    gone = []
    snaps: dict[str, set[str]] = {}
    for r in snap.vdis.values():
        img = image_of(r)
        if img not in images:
            gone.append(r.uuid)
            continue
        s = snap_of(r)
        if s is not None:
            if img not in snaps:
                snaps[img] = set(repo.snaps(img))
            if s not in snaps[img]:
                gone.append(r.uuid)
    return gone


def introduce(repo: RbdRepo, uuid: str, location: str) -> VdiRecord:
    from sm.errors import InvalidArg

    if location != uuid:
        raise InvalidArg("an RBD VDI's location is its uuid, the name of its image")
    with repo.chain_lock("vdi_introduce") as snap:
        if uuid in snap.vdis:
            raise VDIExists(f"VDI {uuid} exists")
        if not repo.image_exists(uuid):
            raise VDIMissing(f"no RBD image {uuid}")
        rec = _adopt(repo, uuid)
        repo.store.commit(put=[rec])
        return rec
