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
from sm.chain.commands import ChainCommands
from sm.chain.resize import ResizeSteps
from sm.chain.revert import RevertSteps
from sm.chain.snapshot import SnapshotSteps
from sm.chain.vdiops import DeleteSteps
from sm.driver import AttachResult, Command, SRDriver, VdiRef
from sm.requests import SRRequest, VDIRequest

from .provision import LvSizeSteps

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

    from .repo import LvhdRepo

__all__ = ["LVHDSR"]

C = Capability


class LVHDSR(ChainCommands, SRDriver):
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
        "vdi_revert": RevertSteps.names(),
    })
    EXTRA_COMMANDS = MappingProxyType({
        **ChainCommands.COMMANDS,
        "sm_gc_run": Command(SRRequest, "sm_gc_run"),
        "sm_gc_status": Command(SRRequest, "sm_gc_status"),
        "sm_sr_stats": Command(SRRequest, "sm_sr_stats"),
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
        from sm.chain.datapath import resume_orphans

        repo = self._open()
        repo.host_dir.mkdir(parents=True, exist_ok=True)
        with locking.lock(repo.host_dir / "chain.lock", purpose=purpose):
            # Holding the lock, every journal entry and every paused (not deactivated) server
            # was left by a driver that died: finish its work, then let the clients go on.
            repo.chain.meta.recover()
            resume_orphans(repo.chain)
            yield repo

    def _chain_read(self) -> ChainSR:
        return self._open().chain

    @contextlib.contextmanager
    def _chain_locked(self, purpose: str) -> Iterator[ChainSR]:
        with self._locked(purpose) as repo:
            yield repo.chain

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
        from sm.chain.datapath import live

        with self._locked(request.command) as repo, live(repo.chain, request.vdi_uuid):
            uuid = snapshot.run(repo.chain, request.command, request.vdi_uuid,
                                request.driver_params)
        return VdiRef(uuid, uuid)

    def vdi_revert(self, request: VDIRevertRequest) -> None:
        from sm.chain import revert
        from sm.chain.datapath import live
        from sm.chain.targets import revert_target

        with self._locked("vdi_revert") as repo:
            snap = repo.chain.meta.get(request.snapshot.uuid)
            target = revert_target(snap, request.target, repo.chain.meta.find)
            with live(repo.chain, target.uuid):
                revert.run(repo.chain, snap, target)

    def vdi_resize(self, request: VDIResizeRequest) -> VdiRef:
        from sm.chain import resize
        from sm.chain.datapath import live

        # a served VDI is paused and resumed, so its server reopens the chain at the new size
        with self._locked("vdi_resize") as repo, live(repo.chain, request.vdi_uuid):
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
        from sm.chain import attach

        with self._locked("vdi_attach") as repo:
            path, info = attach.attach(repo.chain, request.vdi_uuid, request.writable)
        return AttachResult(params=path, params_nbd=info.params_nbd if info else None,
                            xenstore_data={"storage-type": "lvhd"})

    def vdi_detach(self, request: VDIRequest) -> None:
        from sm.chain import attach

        from . import gc

        # a collector step on this VDI (a leaf step) is stopped and undone first
        with gc.abort(self.repo, vdi=request.vdi_uuid, reason="vdi_detach"), \
                self._locked("vdi_detach") as repo:
            attach.detach(repo.chain, request.vdi_uuid)

    def vdi_activate(self, request: VDIAttachRequest) -> None:
        from sm.chain import attach

        with self._locked("vdi_activate") as repo:
            attach.activate(repo.chain, request.vdi_uuid, request.writable)

    def vdi_deactivate(self, request: VDIRequest) -> None:
        from sm.chain import attach

        with self._locked("vdi_deactivate") as repo:
            attach.deactivate(repo.chain, request.vdi_uuid)

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
        """Sizes of the volume group (as `sr_update` stores them), JSON."""
        import json

        from .srops import stats

        return json.dumps(stats(self._open()), sort_keys=True)
