"""`LVHDSR`: the SMAPIv1 driver of the LVHD SR (docs/lvhd-sr.md).

Handlers validate, take the SR lock (a file under the run directory) and call
:mod:`.srops` / :mod:`.vdiops`. Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, ClassVar

from sm.capabilities import Capability
from sm.chain.resize import ResizeSteps
from sm.chain.snapshot import SnapshotSteps
from sm.chain.vdiops import DeleteSteps
from sm.driver import AttachResult, Command, SRDriver, VdiRef
from sm.repair import SRRepairRequest
from sm.requests import SRRequest, VDINamesRequest, VDIRequest
from sm.vdipause import VDIPauseRequest

from .provision import LvSizeSteps
from .revert import STEPS as REVERT_STEPS

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

    from .repo import LvhdRepo

__all__ = ["LVHDSR"]

C = Capability


class LVHDSR(SRDriver):
    """VDIs as VHD images in LVs `VHD-<uuid>` (raw: `LV-<uuid>`) of VG
    `VG_XenStorage-<sr uuid>`; records in the LV `MGT`."""

    TYPE = "lvhd"
    NAME = "LVHD"
    DESCRIPTION = "SR plugin which represents disks as VHD images on Logical Volumes"
    VENDOR = "sm project"
    COPYRIGHT = "(C) sm contributors, LGPL-2.1-only"
    DRIVER_VERSION = "1.0"
    REQUIRED_API_VERSION = "1.0"
    CAPABILITIES = frozenset({
        C.SR_PROBE, C.SR_UPDATE, C.SR_SCAN, C.VDI_CREATE, C.VDI_DELETE, C.VDI_ATTACH,
        C.VDI_DETACH, C.VDI_ACTIVATE, C.VDI_DEACTIVATE, C.VDI_SNAPSHOT, C.VDI_CLONE,
        C.VDI_REVERT, C.VDI_RESIZE, C.VDI_UPDATE, C.VDI_INTRODUCE, C.THIN_PROVISIONING,
    })
    CONFIGURATION = (
        ("device", "comma-separated block devices (required)"),
        ("allocation", "thin (default) or thick"),
    )
    CRASH_POINTS: ClassVar[Mapping[str, tuple[str, ...]]] = MappingProxyType({
        "vdi_snapshot": SnapshotSteps.names(), "vdi_clone": SnapshotSteps.names(),
        "vdi_delete": DeleteSteps.names(), "vdi_resize": ResizeSteps.names(),
        "inflate": LvSizeSteps.names(), "deflate": LvSizeSteps.names(),
        "vdi_revert": REVERT_STEPS,
    })
    EXTRA_COMMANDS = MappingProxyType({
        "sm_vdi_list": Command(SRRequest, "sm_vdi_list"),
        "sm_vdi_get": Command(VDIRequest, "sm_vdi_get"),
        "sm_gc_run": Command(SRRequest, "sm_gc_run"),
        "sm_gc_status": Command(SRRequest, "sm_gc_status"),
        "sm_vdi_set_names": Command(VDINamesRequest, "sm_vdi_set_names"),
        "sm_vdi_allocation": Command(VDIRequest, "sm_vdi_allocation"),
        "sm_sr_stats": Command(SRRequest, "sm_sr_stats"),
        "sm_sr_repair": Command(SRRepairRequest, "sm_sr_repair"),
        "sm_vdi_pause": Command(VDIPauseRequest, "sm_vdi_pause"),
        "sm_vdi_resume": Command(VDIPauseRequest, "sm_vdi_resume"),
    })

    @cached_property
    def repo(self) -> LvhdRepo:
        from .repo import LvhdRepo

        return LvhdRepo(self.context.sr_uuid or "", self.context.device_config,
                        self.context.executor, self.context.run_dir)

    def _open(self) -> LvhdRepo:
        self.repo.check()
        return self.repo

    @contextlib.contextmanager
    def _locked(self, purpose: str) -> Iterator[LvhdRepo]:
        from sm import locking

        from . import datapath, srops

        repo = self._open()
        repo.host_dir.mkdir(parents=True, exist_ok=True)
        with locking.lock(repo.host_dir / "chain.lock", purpose=purpose):
            # Holding the lock, every journal entry and every paused (not deactivated) server
            # was left by a driver that died: finish its work, then let the clients go on.
            if repo.read().journal:
                srops.recover(repo)
            datapath.resume_orphans(repo)
            yield repo

    # -- SR commands -------------------------------------------------------------------------

    def sr_create(self, request: SRCreateRequest) -> None:
        from . import srops

        repo = self.repo
        allocation = repo.allocation()
        repo.host_dir.mkdir(parents=True, exist_ok=True)
        srops.create(repo, allocation)

    def sr_delete(self, request: SRRequest) -> None:
        from . import gc, srops

        with gc.abort(self.repo, reason="sr_delete"):
            srops.delete(self.repo)

    def sr_attach(self, request: SRRequest) -> None:
        from . import gc, srops

        with self._locked("sr_attach") as repo:
            srops.attach(repo)
        gc.kick(self.repo)

    def sr_detach(self, request: SRRequest) -> None:
        from . import gc, srops

        with gc.abort(self.repo, reason="sr_detach"):
            srops.detach(self.repo)

    def sr_scan(self, request: SRRequest) -> None:
        from . import srops

        with self._locked("sr_scan") as repo:
            srops.scan(repo)

    def sr_update(self, request: SRRequest) -> None:
        from . import srops

        srops.update(self.repo)

    def sr_probe(self, request: SRProbeRequest) -> str:
        from . import srops

        return srops.probe(self.repo)

    def sr_content_type(self, request: SRRequest) -> str:
        return "vhd"

    # -- VDI commands ------------------------------------------------------------------------

    def vdi_create(self, request: VDICreateRequest) -> VdiRef:
        from sm.chain import vdiops

        with self._locked("vdi_create") as repo:
            uuid = vdiops.create(repo.chain, request)
        return VdiRef(uuid, uuid)

    def vdi_delete(self, request: VDIRequest) -> None:
        from sm.chain import vdiops

        from . import gc

        with self._locked("vdi_delete") as repo:
            vdiops.delete(repo.chain, request.vdi_uuid)
        gc.kick(repo)

    def vdi_snapshot(self, request: VDISnapshotRequest) -> VdiRef:
        return self._snapshot(request)

    def vdi_clone(self, request: VDISnapshotRequest) -> VdiRef:
        return self._snapshot(request)

    def _snapshot(self, request: VDISnapshotRequest) -> VdiRef:
        from sm.chain import snapshot

        from . import datapath

        with self._locked(request.command) as repo, datapath.live(repo, request.vdi_uuid):
            uuid = snapshot.run(repo.chain, request.command, request.vdi_uuid,
                                request.driver_params)
        return VdiRef(uuid, uuid)

    def vdi_revert(self, request: VDIRevertRequest) -> None:
        from . import datapath, revert

        with self._locked("vdi_revert") as repo:
            snap, target = revert.resolve(repo, request.snapshot.uuid, request.target)
            with datapath.live(repo, target.uuid):
                revert.run(repo, snap, target)

    def vdi_resize(self, request: VDIResizeRequest) -> VdiRef:
        from sm.chain import resize

        from . import datapath

        # a served VDI is paused and resumed, so its server reopens the chain at the new size
        with self._locked("vdi_resize") as repo, datapath.live(repo, request.vdi_uuid):
            rec = resize.run(repo.chain, request.vdi_uuid, request.new_size)
        return VdiRef(rec.uuid, rec.location)

    def vdi_update(self, request: VDIRequest) -> None:
        from sm.chain import vdiops

        with self._locked("vdi_update") as repo:
            vdiops.update(repo.chain, request.vdi_uuid)

    def vdi_introduce(self, request: VDIIntroduceRequest) -> VdiRef:
        from sm.chain import vdiops

        with self._locked("vdi_introduce") as repo:
            uuid = vdiops.introduce(repo.chain, request.vdi_uuid, request.vdi_location,
                                    request.sm_config)
        return VdiRef(uuid, uuid)

    def vdi_attach(self, request: VDIAttachRequest) -> AttachResult:
        from sm.errors import VDIInUse

        from . import datapath, vdiops

        uuid = request.vdi_uuid
        with self._locked("vdi_attach") as repo:
            marker = repo.host_dir / f"attached-vdi-{uuid}"
            if request.writable and marker.exists() and marker.read_text() == "rw":
                raise VDIInUse(f"VDI {uuid} is already attached writable on this host")
            path = vdiops.attach(repo, uuid, request.writable)
            try:
                info = datapath.start(repo, uuid, path, request.writable)
            except BaseException:
                vdiops.detach(repo, uuid)
                raise
        return AttachResult(params=path, params_nbd=info.params_nbd if info else None,
                            xenstore_data={"storage-type": "lvhd"})

    def vdi_detach(self, request: VDIRequest) -> None:
        from . import datapath, gc, vdiops

        # a collector step on this VDI (a leaf step) is stopped and undone first
        with gc.abort(self.repo, vdi=request.vdi_uuid, reason="vdi_detach"), \
                self._locked("vdi_detach") as repo:
            datapath.stop(repo, request.vdi_uuid)  # flushed before the LV is deflated
            vdiops.detach(repo, request.vdi_uuid)

    def vdi_activate(self, request: VDIAttachRequest) -> None:
        from sm.errors import VDIUnavailable

        from . import datapath, srops

        uuid = request.vdi_uuid
        with self._locked("vdi_activate") as repo:
            marker = repo.host_dir / f"attached-vdi-{uuid}"
            if not marker.exists():
                raise VDIUnavailable(f"VDI {uuid} is not attached on this host")
            rec = repo.read().vdis.get(uuid)
            if rec is None:
                raise VDIUnavailable(f"VDI {uuid} is not in the SR's records")
            srops.check_usable(repo, uuid)
            datapath.activate(repo, uuid, repo.path(rec), marker.read_text() == "rw")

    def vdi_deactivate(self, request: VDIRequest) -> None:
        from . import datapath

        with self._locked("vdi_deactivate") as repo:
            datapath.deactivate(repo, request.vdi_uuid)

    # -- extension commands ------------------------------------------------------------------

    def sm_vdi_list(self, request: SRRequest) -> object:
        from sm.recordwire import RecordList

        return RecordList(tuple(self._open().read().vdis.values()))

    def sm_vdi_get(self, request: VDIRequest) -> object:
        from sm.errors import VDIMissing
        from sm.recordwire import RecordResult

        repo = self._open()
        rec = repo.read().vdis.get(request.vdi_uuid)
        if rec is None:
            raise VDIMissing(f"no VDI {request.vdi_uuid}")
        try:
            mode = (repo.host_dir / f"attached-vdi-{rec.uuid}").read_text().strip()
        except FileNotFoundError:
            mode = ""
        return RecordResult(rec, mode)

    def sm_vdi_pause(self, request: VDIPauseRequest) -> str:
        """Pause the VDI's data path on this host for `owner` (`sm.vdipause`)."""
        from sm.errors import VDIMissing

        from . import datapath

        with self._locked("sm_vdi_pause") as repo:
            if request.vdi_uuid not in repo.read().vdis:
                raise VDIMissing(f"no VDI {request.vdi_uuid}")
            return datapath.hold(repo, request.vdi_uuid, request.owner)

    def sm_vdi_resume(self, request: VDIPauseRequest) -> str:
        """Resume the VDI's data path paused by `owner` (`sm.vdipause`)."""
        from sm.errors import VDIMissing

        from . import datapath, srops

        with self._locked("sm_vdi_resume") as repo:
            doc = repo.read()
            if request.vdi_uuid not in doc.vdis:
                raise VDIMissing(f"no VDI {request.vdi_uuid}")
            srops.check_usable(repo, request.vdi_uuid, doc=doc)
            return datapath.release(repo, request.vdi_uuid, request.owner)

    def sm_gc_run(self, request: SRRequest) -> str:
        """Run the garbage collector now, in this process (docs/gc.md); its summary as a JSON
        string."""
        import json

        from .gc import run

        return json.dumps(run(self.repo), sort_keys=True)

    def sm_gc_status(self, request: SRRequest) -> str:
        """Chains, pending merges and the collector's state (docs/gc.md) as a JSON string."""
        import json

        from .gc import report

        return json.dumps(report(self.repo), sort_keys=True)

    def sm_vdi_set_names(self, request: VDINamesRequest) -> None:
        """Set a VDI's name-label and name-description in the MGT volume."""
        from sm.errors import VDIMissing

        with self._locked("sm_vdi_set_names") as repo, repo.transaction("set names") as doc:
            rec = doc.vdis.get(request.vdi_uuid)
            if rec is None:
                raise VDIMissing(f"no VDI {request.vdi_uuid}")
            doc.vdis[rec.uuid] = rec.replace(name_label=request.name_label,
                                             name_description=request.name_description)

    def sm_vdi_allocation(self, request: VDIRequest) -> str:
        """Where the VDI's chain holds data (`sm.extents`), as a JSON string."""
        from sm import extents
        from sm.errors import VDIMissing

        with self._locked("sm_vdi_allocation") as repo:
            rec = repo.read().vdis.get(request.vdi_uuid)
            if rec is None:
                raise VDIMissing(f"no VDI {request.vdi_uuid}")
            if rec.vdi_type == "raw":
                return extents.raw_allocation(rec.uuid, rec.virtual_size)
            return extents.vhd_allocation(repo.path(rec), storage=repo.storage)

    def sm_sr_stats(self, request: SRRequest) -> str:
        """Sizes of the volume group (as `sr_update` stores them), JSON."""
        import json

        from .srops import stats

        return json.dumps(stats(self._open()), sort_keys=True)

    def sm_sr_repair(self, request: SRRepairRequest) -> str:
        """Show and resolve journal entries set aside by a failed replay (`sm.repair`), as a
        JSON string."""
        import json

        from sm import repair

        from .repair import LvhdRepairBackend

        backend = LvhdRepairBackend(self._open(), self._locked)
        return json.dumps(repair.run(backend, request), sort_keys=True)
