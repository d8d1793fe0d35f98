"""`FileSR`: the SMAPIv1 driver of the File SR (docs/file-sr.md).

Handlers are thin: validate, take the right lock, call the operation module. Imports of the
engine, records, journal and locking happen inside the handlers that need them, so that
`bin/FileSR` starts fast.
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
from sm.errors import VDIUnavailable
from sm.recordwire import RecordList, RecordResult
from sm.repair import SRRepairRequest
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

    from .layout import SRLayout
    from .repo import FileRepo

__all__ = ["FileSR"]

C = Capability


class FileSR(SRDriver):
    """VDIs as VHD files (`<uuid>.vhd`, raw: `<uuid>.raw`) in the directory `location`."""

    TYPE = "file"
    NAME = "Local Path VHD"
    DESCRIPTION = "SR plugin which represents disks as VHD files stored on a local path"
    VENDOR = "sm project"
    COPYRIGHT = "(C) sm contributors, LGPL-2.1-only"
    DRIVER_VERSION = "1.0"
    REQUIRED_API_VERSION = "1.0"
    CAPABILITIES = frozenset({
        C.SR_PROBE, C.SR_UPDATE, C.SR_SCAN, C.VDI_CREATE, C.VDI_DELETE, C.VDI_ATTACH,
        C.VDI_DETACH, C.VDI_ACTIVATE, C.VDI_DEACTIVATE, C.VDI_UPDATE, C.VDI_INTRODUCE,
        C.VDI_CLONE, C.VDI_SNAPSHOT, C.VDI_RESIZE, C.VDI_REVERT, C.VDI_GENERATE_CONFIG,
        C.THIN_PROVISIONING,
    })
    CONFIGURATION = (("location", "local directory path (required)"),)
    EXTRA_COMMANDS = MappingProxyType({
        "sm_vdi_list": Command(SRRequest, "sm_vdi_list"),
        "sm_vdi_get": Command(VDIRequest, "sm_vdi_get"),
        "vdi_attach_from_config": Command(VDIRequest, "vdi_attach_from_config",
                                          C.VDI_GENERATE_CONFIG),
        "sm_gc_run": Command(SRRequest, "sm_gc_run"),
        "sm_gc_status": Command(SRRequest, "sm_gc_status"),
        "sm_sr_repair": Command(SRRepairRequest, "sm_sr_repair"),
        "sm_vdi_set_names": Command(VDINamesRequest, "sm_vdi_set_names"),
        "sm_vdi_allocation": Command(VDIRequest, "sm_vdi_allocation"),
        "sm_sr_stats": Command(SRRequest, "sm_sr_stats"),
        "sm_vdi_pause": Command(VDIPauseRequest, "sm_vdi_pause"),
        "sm_vdi_resume": Command(VDIPauseRequest, "sm_vdi_resume"),
    })
    CRASH_POINTS: ClassVar[Mapping[str, tuple[str, ...]]] = MappingProxyType({
        "vdi_snapshot": SnapshotSteps.names(), "vdi_clone": SnapshotSteps.names(),
        "vdi_revert": ("journaled", "renamed", "hidden", "snapleaf", "leaf", "switched",
                       "records"),
        "vdi_delete": DeleteSteps.names(), "vdi_resize": ResizeSteps.names(),
    })
    """Crash points per command: `sm.faults.crash_point(f"{command}:{step}")` is hit after
    each step, on every path: a step that a particular request does not need (revert's
    renamed/hidden/snapleaf when the snapshot has no data of its own; snapshot's
    renamed/hidden/leaf of a VDI that already has children) still hits its point."""

    # -- plumbing ----------------------------------------------------------------------------

    @cached_property
    def layout(self) -> SRLayout:
        from .layout import SRLayout, location_from_config

        return SRLayout(location_from_config(self.context.device_config),
                        self.context.sr_uuid, self.context.run_dir)

    @cached_property
    def repo(self) -> FileRepo:
        from .repo import FileRepo

        return FileRepo(self.layout)

    def _open(self) -> FileRepo:
        self.repo.check()
        return self.repo

    @contextlib.contextmanager
    def _live(self, vdi_uuid: str) -> Iterator[None]:
        """Around a chain change of `vdi_uuid`: pause a running data path, resume it on the
        leaf after (`datapath.live`)."""
        from .datapath import live

        with live(self.repo, vdi_uuid):
            yield

    def _gc_kick(self) -> None:
        from .gc import kick

        kick(self.repo)

    # -- SR commands -------------------------------------------------------------------------

    def sr_create(self, request: SRCreateRequest) -> None:
        from . import srops

        srops.create(self.layout, request.sr_uuid)

    def sr_delete(self, request: SRRequest) -> None:
        from . import srops

        srops.delete(self.repo)

    def sr_attach(self, request: SRRequest) -> None:
        from . import srops

        srops.attach(self.repo)
        self._gc_kick()

    def sr_detach(self, request: SRRequest) -> None:
        from . import srops

        srops.detach(self.repo)

    def sr_scan(self, request: SRRequest) -> None:
        from .scan import scan

        scan(self._open())

    def sr_update(self, request: SRRequest) -> None:
        from . import srops

        srops.update(self.repo)

    def sr_probe(self, request: SRProbeRequest) -> str:
        from . import srops

        return srops.probe(self.layout)

    def sr_content_type(self, request: SRRequest) -> str:
        return "vhd"  # as the original: the SR's VDI type

    # -- VDI commands ------------------------------------------------------------------------

    def vdi_create(self, request: VDICreateRequest) -> VdiRef:
        from sm.chain import vdiops

        repo = self._open()
        with repo.chain_lock("vdi_create"):
            uuid = vdiops.create(repo.chain, request)
        return VdiRef(uuid, uuid)

    def vdi_delete(self, request: VDIRequest) -> None:
        from sm.chain import vdiops

        repo = self._open()
        with repo.chain_lock("vdi_delete"):
            vdiops.delete(repo.chain, request.vdi_uuid)
        self._gc_kick()

    def vdi_update(self, request: VDIRequest) -> None:
        from sm.chain import vdiops
        from sm.locking import sr_lock

        repo = self._open()
        with sr_lock(self.layout.location, shared=True, purpose="vdi_update"):
            vdiops.update(repo.chain, request.vdi_uuid)

    def vdi_introduce(self, request: VDIIntroduceRequest) -> VdiRef:
        from sm.chain import vdiops

        repo = self._open()
        with repo.chain_lock("vdi_introduce"):
            uuid = vdiops.introduce(repo.chain, request.vdi_uuid, request.vdi_location,
                                    request.sm_config)
        return VdiRef(uuid, uuid)

    def vdi_snapshot(self, request: VDISnapshotRequest) -> VdiRef:
        return self._snapshot(request)

    def vdi_clone(self, request: VDISnapshotRequest) -> VdiRef:
        return self._snapshot(request)

    def _snapshot(self, request: VDISnapshotRequest) -> VdiRef:
        from sm.chain import snapshot

        repo = self._open()
        with repo.chain_lock(request.command), self._live(request.vdi_uuid):
            uuid = snapshot.run(repo.chain, request.command, request.vdi_uuid,
                                request.driver_params)
        return VdiRef(uuid, uuid)

    def vdi_revert(self, request: VDIRevertRequest) -> None:
        from . import revert

        repo = self._open()
        with repo.chain_lock("vdi_revert"):
            snap, target = revert.resolve(repo, request)
            with self._live(target.uuid):
                revert.run(repo, snap, target)
        self._gc_kick()

    def vdi_resize(self, request: VDIResizeRequest) -> VdiRef:
        from sm.chain import resize

        repo = self._open()
        with repo.chain_lock("vdi_resize"), self._live(request.vdi_uuid):
            record = resize.run(repo.chain, request.vdi_uuid, request.new_size)
        return VdiRef(record.uuid, record.location)

    def vdi_attach(self, request: VDIAttachRequest) -> AttachResult:
        from . import attach

        path, info = attach.attach(self._open(), request.vdi_uuid, request.writable)
        return AttachResult(params=path, params_nbd=info.params_nbd if info else None,
                            xenstore_data={"storage-type": "file"})

    def vdi_detach(self, request: VDIRequest) -> None:
        from . import attach

        attach.detach(self._open(), request.vdi_uuid)  # 47 where no SR is: nothing written

    def vdi_activate(self, request: VDIAttachRequest) -> None:
        from . import attach

        attach.activate(self._open(), request.vdi_uuid, request.writable)

    def vdi_deactivate(self, request: VDIRequest) -> None:
        from . import attach

        attach.deactivate(self._open(), request.vdi_uuid)  # 47 where no SR is: nothing written

    def vdi_generate_config(self, request: VDIRequest) -> str:
        import os

        from sm import xmlrpc

        repo = self._open()
        record = repo.get(request.vdi_uuid)
        if not os.path.exists(repo.path(record)):
            raise VDIUnavailable(f"the image of VDI {record.uuid} is missing")
        call: dict[str, Value] = {
            "device_config": dict(self.context.device_config),
            "sr_uuid": request.sr_uuid, "vdi_uuid": record.uuid,
            "command": "vdi_attach_from_config",
        }
        return xmlrpc.dumps_call("vdi_attach_from_config", [call])

    def vdi_attach_from_config(self, request: VDIRequest) -> AttachResult:
        """The document `vdi_generate_config` returned, handed back by a toolstack that lost
        its own state (HA statefile, redo log): attach writable. Idempotent, and no VDIInUse
        for an existing attachment (this is the recovery path)."""
        from . import attach

        path, info = attach.attach_from_config(self._open(), request.vdi_uuid)
        return AttachResult(params=path, params_nbd=info.params_nbd if info else None,
                            xenstore_data={"storage-type": "file"})

    # -- extension commands ------------------------------------------------------------------

    def sm_vdi_list(self, request: SRRequest) -> RecordList:
        """Every VDI record of the SR (hidden bases included)."""
        return RecordList(tuple(self._open().records.all()))

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

    def sm_sr_repair(self, request: SRRepairRequest) -> str:
        """Show and resolve journal entries set aside by a failed replay (`sm.repair`), as a
        JSON string."""
        import json

        from sm import repair

        from .repair import FileRepairBackend

        return json.dumps(repair.run(FileRepairBackend(self._open()), request), sort_keys=True)

    def sm_vdi_get(self, request: VDIRequest) -> RecordResult:
        """The record of one VDI (VDIMissing 144 if none), and its attachment on this host."""
        repo = self._open()
        record = repo.resolve(request.vdi_uuid, request.vdi_location)
        state = repo.attachment(record.uuid)
        return RecordResult(record, "" if state is None else
                            "rw" if state.get("writable") else "ro")

    def sm_vdi_set_names(self, request: VDINamesRequest) -> None:
        """Set a VDI's name-label and name-description in its record."""
        repo = self._open()
        record = repo.resolve(request.vdi_uuid, request.vdi_location)
        repo.records.update(record.uuid, name_label=request.name_label,
                            name_description=request.name_description)

    def sm_vdi_pause(self, request: VDIPauseRequest) -> str:
        """Pause the VDI's data path on this host for `owner` (`sm.vdipause`)."""
        from .datapath import hold

        repo = self._open()
        return hold(repo, repo.resolve(request.vdi_uuid, request.vdi_location).uuid,
                    request.owner)

    def sm_vdi_resume(self, request: VDIPauseRequest) -> str:
        """Resume the VDI's data path paused by `owner` (`sm.vdipause`)."""
        from .datapath import release

        repo = self._open()
        return release(repo, repo.resolve(request.vdi_uuid, request.vdi_location).uuid,
                       request.owner)

    def sm_vdi_allocation(self, request: VDIRequest) -> str:
        """Where the VDI's chain holds data (`sm.extents`), as a JSON string."""
        from sm import extents

        repo = self._open()
        record = repo.resolve(request.vdi_uuid, request.vdi_location)
        if record.vdi_type == "raw":
            return extents.raw_allocation(record.uuid, record.virtual_size)
        return extents.vhd_allocation(repo.path(record))

    def sm_sr_stats(self, request: SRRequest) -> str:
        """Sizes of the SR's file system and images (as `sr_update` stores them), JSON."""
        import json

        from .scan import sr_stats

        return json.dumps(sr_stats(self._open()), sort_keys=True)
