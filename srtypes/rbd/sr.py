"""`RBDSR`: the SMAPIv1 driver of the RBD SR (docs/rbd-sr.md).

Each handler connects to the cluster (bounded by device_config `timeout`), takes the
cluster-wide chain lock where the SR's chain changes, and calls `vdiops` / `srops`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING

from sm.capabilities import Capability
from sm.driver import AttachResult, Command, SRDriver, VdiRef
from sm.errors import SRInUse, VDIInUse, VDIUnavailable
from sm.recordwire import RecordList, RecordResult
from sm.requests import SRRequest, VDINamesRequest, VDIRequest
from sm.vdipause import VDIPauseRequest

if TYPE_CHECKING:
    from sm.requests import (
        SRCreateRequest,
        SRProbeRequest,
        VDIAttachRequest,
        VDICreateRequest,
        VDIIntroduceRequest,
        VDIResizeRequest,
        VDIRevertRequest,
        VDISnapshotRequest,
    )
    from sm.xmlrpc import Value

    from .config import RbdConfig
    from .conn import Connection
    from .datapath import Host
    from .repo import RbdRepo

__all__ = ["RBDSR"]

C = Capability


class RBDSR(SRDriver):
    """VDIs as raw RBD images of a Ceph pool (or one RBD namespace of it)."""

    TYPE = "rbd"
    NAME = "Ceph RBD"
    DESCRIPTION = ("SR plugin which represents disks as RBD images in a Ceph pool, with "
                   "native snapshots, layered clones and rollback")
    VENDOR = "sm project"
    COPYRIGHT = "(C) sm contributors, LGPL-2.1-only"
    DRIVER_VERSION = "1.0"
    REQUIRED_API_VERSION = "1.0"
    CAPABILITIES = frozenset({
        C.SR_PROBE, C.SR_UPDATE, C.SR_SCAN, C.SR_ATTACH, C.SR_DETACH, C.SR_METADATA,
        C.VDI_CREATE, C.VDI_DELETE, C.VDI_ATTACH, C.VDI_DETACH, C.VDI_ACTIVATE,
        C.VDI_DEACTIVATE, C.VDI_UPDATE, C.VDI_INTRODUCE, C.VDI_CLONE, C.VDI_SNAPSHOT,
        C.VDI_RESIZE, C.VDI_REVERT, C.VDI_GENERATE_CONFIG, C.THIN_PROVISIONING, C.LARGE_VDI,
    })
    CONFIGURATION = (
        ("conf", "path of a ceph.conf (or give monitors)"),
        ("monitors", "comma-separated monitor addresses (instead of conf)"),
        ("pool", "RADOS pool (required)"),
        ("namespace", "RBD namespace of the pool for this SR (default: none)"),
        ("user", "cephx client name without 'client.' (default admin)"),
        ("keyring", "keyring path (required with monitors and no conf)"),
        ("auth", "cephx (default) or none"),
        ("timeout", "seconds one cluster step may take (default 10)"),
    )
    EXTRA_COMMANDS = MappingProxyType({
        "sm_vdi_list": Command(SRRequest, "sm_vdi_list"),
        "sm_vdi_get": Command(VDIRequest, "sm_vdi_get"),
        "vdi_attach_from_config": Command(VDIRequest, "vdi_attach_from_config",
                                          C.VDI_GENERATE_CONFIG),
        "sm_vdi_set_names": Command(VDINamesRequest, "sm_vdi_set_names"),
        "sm_vdi_allocation": Command(VDIRequest, "sm_vdi_allocation"),
        "sm_sr_stats": Command(SRRequest, "sm_sr_stats"),
        "sm_vdi_pause": Command(VDIPauseRequest, "sm_vdi_pause"),
        "sm_vdi_resume": Command(VDIPauseRequest, "sm_vdi_resume"),
    })

    # -- plumbing ----------------------------------------------------------------------------

    @cached_property
    def config(self) -> RbdConfig:
        from .config import RbdConfig

        return RbdConfig.parse(self.context.device_config)

    @contextlib.contextmanager
    def _conn(self) -> Iterator[Connection]:
        from .conn import Connection

        with Connection(self.config) as conn:
            yield conn

    @contextlib.contextmanager
    def _repo(self) -> Iterator[RbdRepo]:
        from .lease import host_id
        from .repo import RbdRepo

        settings = self.context.settings
        with self._conn() as conn:
            yield RbdRepo(conn, self.context.sr_uuid, host_id(self.context.state_dir),
                          lease=settings.rbd_lease, wait=settings.rbd_lock_wait)

    @cached_property
    def host(self) -> Host:
        from .datapath import Host

        return Host(self.context.run_dir, str(self.context.sr_uuid), self.config)

    # -- SR commands -------------------------------------------------------------------------

    def sr_create(self, request: SRCreateRequest) -> None:
        from . import srops

        with self._conn() as conn:
            srops.create(conn, request.sr_uuid)

    def sr_delete(self, request: SRRequest) -> None:
        from . import srops

        if self.host.attached():
            raise SRInUse("VDIs of this SR are attached on this host")
        with self._repo() as repo:
            srops.delete(repo)

    def sr_attach(self, request: SRRequest) -> None:
        with self._repo() as repo, repo.chain_lock("sr_attach"):
            self.host.dir.mkdir(parents=True, exist_ok=True)

    def sr_detach(self, request: SRRequest) -> None:
        if self.host.attached():
            raise SRInUse("VDIs of this SR are attached on this host")

    def sr_scan(self, request: SRRequest) -> None:
        from . import srops

        with self._repo() as repo:
            srops.scan(repo)

    def sr_update(self, request: SRRequest) -> None:
        from . import srops

        with self._repo() as repo:
            srops.update(repo)

    def sr_probe(self, request: SRProbeRequest) -> str:
        from . import srops

        with self._conn() as conn:
            return srops.probe(conn)

    def sr_content_type(self, request: SRRequest) -> str:
        return "raw"

    # -- VDI commands ------------------------------------------------------------------------

    def vdi_create(self, request: VDICreateRequest) -> VdiRef:
        import uuid as uuidlib

        from . import vdiops

        with self._repo() as repo, repo.chain_lock("vdi_create") as snap:
            rec = vdiops.create(
                repo, snap, uuid=request.vdi_uuid or str(uuidlib.uuid4()), size=request.size,
                name_label=request.name_label, name_description=request.name_description,
                vdi_type=request.vdi_type, sm_config=request.sm_config,
                read_only=request.read_only)
        return VdiRef(rec.uuid, rec.location)

    def vdi_delete(self, request: VDIRequest) -> None:
        from . import vdiops

        with self._repo() as repo, repo.chain_lock("vdi_delete") as snap:
            rec = repo.resolve(snap, request.vdi_uuid, request.vdi_location)
            if self.host.attachment(rec.uuid):
                raise VDIInUse(f"VDI {rec.uuid} is attached on this host")
            vdiops.delete(repo, snap, rec)

    def vdi_update(self, request: VDIRequest) -> None:

        from .repo import image_of, snap_of

        with self._repo() as repo, repo.chain_lock("vdi_update") as snap:
            rec = repo.resolve(snap, request.vdi_uuid, request.vdi_location)
            used = 0
            with repo.image(image_of(rec), snapshot=snap_of(rec), read_only=True) as im:
                size = int(im.size())

                def count(offset: int, length: int, exists: bool) -> None:
                    nonlocal used
                    used += length if exists else 0

                im.diff_iterate(0, size, None, count)
            repo.store.commit(put=[rec.replace(virtual_size=size,
                                                       physical_utilisation=used)])

    def vdi_introduce(self, request: VDIIntroduceRequest) -> VdiRef:
        from . import srops

        with self._repo() as repo:
            rec = srops.introduce(repo, request.vdi_uuid, request.vdi_location)
        return VdiRef(rec.uuid, rec.location)

    def vdi_snapshot(self, request: VDISnapshotRequest) -> VdiRef:
        return self._snapshot(request, clone_of=False)

    def vdi_clone(self, request: VDISnapshotRequest) -> VdiRef:
        return self._snapshot(request, clone_of=True)

    def _snapshot(self, request: VDISnapshotRequest, *, clone_of: bool) -> VdiRef:
        from . import vdiops

        with self._repo() as repo, repo.chain_lock(request.command) as snap:
            rec = repo.resolve(snap, request.vdi_uuid, request.vdi_location)
            with self.host.live(rec.uuid):
                new = vdiops.snapshot(repo, snap, rec, clone_of=clone_of)
        return VdiRef(new.uuid, new.location)

    def vdi_revert(self, request: VDIRevertRequest) -> None:
        from sm.chain.targets import revert_target

        from . import vdiops
        from .repo import image_of, snap_of

        with self._repo() as repo, repo.chain_lock("vdi_revert") as snap:
            s = repo.resolve(snap, request.snapshot.uuid, request.snapshot.location)
            target = revert_target(s, request.target, lambda ref: snap.vdis.get(
                ref) or snap.find_location(ref))
            with self.host.live(target.uuid):
                vdiops.revert(repo, snap, s, target)
                new = repo.read().vdis[target.uuid]
                self.host.rewrite_descriptor(target.uuid, image_of(new), snap_of(new))

    def vdi_resize(self, request: VDIResizeRequest) -> VdiRef:
        from . import vdiops

        with self._repo() as repo, repo.chain_lock("vdi_resize") as snap:
            rec = repo.resolve(snap, request.vdi_uuid, request.vdi_location)
            with self.host.live(rec.uuid):
                rec = vdiops.resize(repo, snap, rec, request.new_size)
        return VdiRef(rec.uuid, rec.location)

    # -- data path ---------------------------------------------------------------------------

    def _attach(self, request: VDIRequest, writable: bool, *, recovery: bool) -> AttachResult:
        from . import vdiops
        from .repo import image_of, snap_of

        with self._repo() as repo:
            snap = repo.read()
            rec = repo.resolve(snap, request.vdi_uuid, request.vdi_location)
            vdiops.ensure_exists(repo, rec)
            if writable and (rec.read_only or rec.hidden or snap_of(rec) is not None):
                raise VDIUnavailable(f"VDI {rec.uuid} is read-only (a snapshot or hidden base)")
            current = self.host.attachment(rec.uuid)
            if current and current.get("writable") and writable and not recovery:
                raise VDIInUse(f"VDI {rec.uuid} is already attached writable on this host")
            if writable and not recovery and not current:
                # librbd watches images opened writable (read-only opens do not)
                repo.check_unwatched(image_of(rec), f"writable attach of {rec.uuid}")
        info = self.host.start(rec.uuid, image_of(rec), snap_of(rec), writable)
        keep_writable = bool(current and current.get("writable"))
        self.host.mark(rec.uuid, writable=writable or keep_writable,
                       active=bool(current and current.get("active")))
        cfg = self.config
        spec = f"rbd:{cfg.pool}/{cfg.namespace + '/' if cfg.namespace else ''}{image_of(rec)}"
        if snap_of(rec):
            spec += f"@{snap_of(rec)}"
        spec += f":id={cfg.user}"
        if cfg.conf:
            spec += f":conf={cfg.conf}"
        return AttachResult(params=spec, params_nbd=info.params_nbd if info else None,
                            xenstore_data={"storage-type": "rbd"})

    def vdi_attach(self, request: VDIAttachRequest) -> AttachResult:
        return self._attach(request, request.writable, recovery=False)

    def vdi_attach_from_config(self, request: VDIRequest) -> AttachResult:
        return self._attach(request, True, recovery=True)

    def vdi_detach(self, request: VDIRequest) -> None:
        self.host.stop(request.vdi_uuid)
        self.host.forget(request.vdi_uuid)

    def vdi_activate(self, request: VDIAttachRequest) -> None:
        state = self.host.attachment(request.vdi_uuid)
        if state is None:
            raise VDIUnavailable(f"VDI {request.vdi_uuid} is not attached on this host")
        self.host.mark(request.vdi_uuid, **{**state, "active": True})
        self.host.resume(request.vdi_uuid)

    def vdi_deactivate(self, request: VDIRequest) -> None:
        state = self.host.attachment(request.vdi_uuid)
        if state is None:
            return
        self.host.pause(request.vdi_uuid)
        self.host.mark(request.vdi_uuid, **{**state, "active": False})

    def vdi_generate_config(self, request: VDIRequest) -> str:
        from sm import xmlrpc

        with self._repo() as repo:
            rec = repo.resolve(repo.read(), request.vdi_uuid, request.vdi_location)
        call: dict[str, Value] = {
            "device_config": dict(self.context.device_config),
            "sr_uuid": request.sr_uuid, "vdi_uuid": rec.uuid,
            "command": "vdi_attach_from_config",
        }
        return xmlrpc.dumps_call("vdi_attach_from_config", [call])

    # -- extension commands ------------------------------------------------------------------

    def sm_vdi_list(self, request: SRRequest) -> RecordList:
        with self._repo() as repo:
            return RecordList(tuple(repo.read().vdis.values()))

    def sm_vdi_get(self, request: VDIRequest) -> RecordResult:
        with self._repo() as repo:
            rec = repo.resolve(repo.read(), request.vdi_uuid, request.vdi_location)
        state = self.host.attachment(rec.uuid)
        return RecordResult(rec, "" if state is None else
                            "rw" if state.get("writable") else "ro")

    def sm_vdi_pause(self, request: VDIPauseRequest) -> str:
        """Pause the VDI's data path on this host for `owner` (`sm.vdipause`)."""
        with self._repo() as repo:
            rec = repo.resolve(repo.read(), request.vdi_uuid, request.vdi_location)
        return self.host.hold(rec.uuid, request.owner)

    def sm_vdi_resume(self, request: VDIPauseRequest) -> str:
        """Resume the VDI's data path paused by `owner` (`sm.vdipause`)."""
        with self._repo() as repo:
            rec = repo.resolve(repo.read(), request.vdi_uuid, request.vdi_location)
        return self.host.release(rec.uuid, request.owner)

    def sm_vdi_set_names(self, request: VDINamesRequest) -> None:
        """Set a VDI's name-label and name-description in the SR's records."""
        with self._repo() as repo, repo.chain_lock("sm_vdi_set_names") as snap:
            rec = repo.resolve(snap, request.vdi_uuid, request.vdi_location)
            repo.store.commit(put=[rec.replace(name_label=request.name_label,
                                               name_description=request.name_description)])

    def sm_sr_stats(self, request: SRRequest) -> str:
        """Cluster and pool sizes (as `sr_update` stores them), JSON."""
        import json

        from .srops import stats

        with self._repo() as repo:
            return json.dumps(stats(repo), sort_keys=True)

    def sm_vdi_allocation(self, request: VDIRequest) -> str:
        """Where the VDI's image (or image snapshot) holds data, parent included
        (`diff_iterate`), as an `sm.extents` JSON string: one image per VDI."""
        from sm import extents

        from .repo import image_of, snap_of

        with self._repo() as repo:
            rec = repo.resolve(repo.read(), request.vdi_uuid, request.vdi_location)
            found: list[tuple[int, int]] = []
            with repo.image(image_of(rec), snapshot=snap_of(rec), read_only=True) as im:
                size = int(im.size())

                def add(offset: int, length: int, exists: bool) -> None:
                    if exists:
                        found.append((offset, length))

                im.diff_iterate(0, size, None, add)
        name = f"{image_of(rec)}@{snap_of(rec) or ''}"
        return extents.document(size, [(name, name, found)])
