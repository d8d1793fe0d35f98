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
from sm.chain.commands import ChainCommands
from sm.chain.resize import ResizeSteps
from sm.chain.revert import RevertSteps
from sm.chain.snapshot import SnapshotSteps
from sm.chain.vdiops import DeleteSteps
from sm.driver import AttachResult, Command, SRDriver, VdiRef
from sm.errors import VDIUnavailable
from sm.requests import SRRequest, VDIRequest

if TYPE_CHECKING:
    from sm.chain.protocols import ChainSR
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


class FileSR(ChainCommands, SRDriver):
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
        **ChainCommands.COMMANDS,
        "vdi_attach_from_config": Command(VDIRequest, "vdi_attach_from_config",
                                          C.VDI_GENERATE_CONFIG),
        "sm_gc_run": Command(SRRequest, "sm_gc_run"),
        "sm_gc_status": Command(SRRequest, "sm_gc_status"),
        "sm_sr_stats": Command(SRRequest, "sm_sr_stats"),
    })
    CRASH_POINTS: ClassVar[Mapping[str, tuple[str, ...]]] = MappingProxyType({
        "vdi_snapshot": SnapshotSteps.names(), "vdi_clone": SnapshotSteps.names(),
        "vdi_revert": RevertSteps.names(),
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

    def _live(self, vdi_uuid: str) -> contextlib.AbstractContextManager[None]:
        """Around a chain change of `vdi_uuid`: pause a running data path, resume it on the
        leaf after (`sm.chain.datapath.live`)."""
        from sm.chain.datapath import live

        return live(self.repo.chain, vdi_uuid)

    def _chain_read(self) -> ChainSR:
        return self._open().chain

    @contextlib.contextmanager
    def _chain_locked(self, purpose: str) -> Iterator[ChainSR]:
        repo = self._open()
        with repo.chain_lock(purpose):
            yield repo.chain

    def _chain_vdi(self, purpose: str) -> contextlib.AbstractContextManager[ChainSR]:
        return contextlib.nullcontext(self._open().chain)  # the record store and VDI locks

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
        from sm.chain import revert
        from sm.chain.targets import revert_target

        repo = self._open()
        with repo.chain_lock("vdi_revert"):
            snap = repo.resolve(request.snapshot.uuid, request.snapshot.location)
            target = revert_target(snap, request.target, lambda ref: repo.records.find(
                ref) or repo.records.find_by_location(ref))
            with self._live(target.uuid):
                revert.run(repo.chain, snap, target)
        self._gc_kick()

    def vdi_resize(self, request: VDIResizeRequest) -> VdiRef:
        from sm.chain import resize

        repo = self._open()
        with repo.chain_lock("vdi_resize"), self._live(request.vdi_uuid):
            record = resize.run(repo.chain, request.vdi_uuid, request.new_size)
        return VdiRef(record.uuid, record.location)

    def vdi_attach(self, request: VDIAttachRequest) -> AttachResult:
        from sm.chain import attach

        path, info = attach.attach(self._open().chain, request.vdi_uuid, request.writable)
        return AttachResult(params=path, params_nbd=info.params_nbd if info else None,
                            xenstore_data={"storage-type": "file"})

    def vdi_detach(self, request: VDIRequest) -> None:
        from sm.chain import attach

        from .gc import abort

        repo = self._open()  # 47 where no SR is: nothing written
        # a collector step on this VDI (a leaf step) is stopped and undone first
        with abort(repo, vdi=request.vdi_uuid, reason="vdi_detach"):
            attach.detach(repo.chain, request.vdi_uuid)

    def vdi_activate(self, request: VDIAttachRequest) -> None:
        from sm.chain import attach

        attach.activate(self._open().chain, request.vdi_uuid, request.writable)

    def vdi_deactivate(self, request: VDIRequest) -> None:
        from sm.chain import attach

        attach.deactivate(self._open().chain, request.vdi_uuid)  # 47 where no SR is

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
        from sm.chain import attach

        path, info = attach.attach_from_config(self._open().chain, request.vdi_uuid)
        return AttachResult(params=path, params_nbd=info.params_nbd if info else None,
                            xenstore_data={"storage-type": "file"})

    # -- extension commands ------------------------------------------------------------------

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

    def sm_sr_stats(self, request: SRRequest) -> str:
        """Sizes of the SR's file system and images (as `sr_update` stores them), JSON."""
        import json

        from .scan import sr_stats

        return json.dumps(sr_stats(self._open()), sort_keys=True)
