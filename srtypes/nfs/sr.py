"""`NFSSR`: a File SR on the directory ``<serverpath>/<sr_uuid>`` of an NFS export (docs/nfs-sr.md).

The SR directory is created and removed through the server (:mod:`srtypes.nfs.server`), mounted
at ``<run_dir>/sr-mount/<sr_uuid>`` by a :class:`~srtypes.nfs.mounter.Mounter`, and in between
everything is the File SR with ``location`` = the mount point. The File SR keeps its records,
journal and locks under ``<location>/.sm/``, i.e. on the export, which is what makes one SR
safe to use from several hosts; only attachment state is per host (``run_dir``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from sm.errors import (
    ConfigServerMissing,
    ConfigServerPathMissing,
    FileSRRmDir,
    InvalidArg,
    SRExists,
    SRNotEmpty,
    SRUnavailable,
)
from srtypes.file import FileSR
from srtypes.nfs import server as nfs

if TYPE_CHECKING:
    from sm.driver import AttachResult
    from sm.requests import SRCreateRequest, SRProbeRequest, SRRequest, VDIRequest
    from srtypes.file.layout import SRLayout
    from srtypes.file.repo import FileRepo
    from srtypes.nfs.mounter import Mounter

__all__ = ["NFSSR", "NFSConfig"]

log = logging.getLogger(__name__)

MOUNT_DIR = "sr-mount"  # under DriverContext.run_dir, as the original's /run/sr-mount


@dataclass(frozen=True)
class NFSConfig:
    """The NFS part of ``device_config`` (``server`` 102, ``nfsversion`` 72, mount settings)."""

    server: str
    serverpath: str | None
    mount: nfs.MountConfig

    @classmethod
    def from_device_config(cls, dc: Mapping[str, str]) -> NFSConfig:
        server = dc.get("server", "").strip()
        if not server:
            raise ConfigServerMissing("device_config server is required")
        raw = dc.get("serverpath", "").strip()
        if "\0" in raw or any(part == ".." for part in raw.split("/")):
            raise InvalidArg(f"bad serverpath {raw[:100]!r}")
        serverpath = "/" + raw.strip("/") if raw else None
        return cls(server, serverpath, nfs.MountConfig.from_device_config(dc))

    def require_path(self) -> str:
        if self.serverpath is None:
            raise ConfigServerPathMissing("device_config serverpath is required")
        return self.serverpath


def _names(cfg: NFSConfig, path: str) -> set[str]:
    """Names in ``server:path``, read through the server."""
    return {e.name for e in nfs.list_dir(cfg.server, path, version=cfg.mount.version)}


class NFSSR(FileSR):
    """VDIs as VHD files in ``server:serverpath/<sr_uuid>``, mounted on this host."""

    TYPE = "nfs"
    NAME = "NFS VHD"
    DESCRIPTION = "SR plugin which stores disks as VHD files on a remote NFS filesystem"
    # The File SR's set: VDI_RESET_ON_BOOT/2 is not implemented, so not advertised.
    CAPABILITIES = FileSR.CAPABILITIES
    # (FileSR's own declaration is inferred as a 1-tuple, hence the ignore.)
    CONFIGURATION: ClassVar[Sequence[tuple[str, str]]] = (  # type: ignore[assignment]
        ("server", "hostname or IP address of the NFS server (required)"),
        ("serverpath", "path on the NFS server (required)"),
        ("nfsversion", "NFS version: 3 (default), 4, 4.0 or 4.1"),
        ("options", "extra mount options, appended verbatim"),
        ("nfs-timeout", "timeo, in deciseconds (default 200)"),
        ("nfs-retrans", "retrans (default 4)"),
        ("hard", "true: mount hard instead of soft"),
    )

    # -- plumbing ----------------------------------------------------------------------------

    @cached_property
    def nfs_config(self) -> NFSConfig:
        return NFSConfig.from_device_config(self.context.device_config)

    @cached_property
    def mounter(self) -> Mounter:
        from .mounter import select_mounter

        return select_mounter(self.context.executor, settings=self.context.settings)

    @cached_property
    def mountpoint(self) -> Path:
        from srtypes.file.layout import is_uuid

        sr_uuid = self.context.sr_uuid or ""
        if not is_uuid(sr_uuid):
            raise InvalidArg(f"not an SR uuid: {sr_uuid[:60]!r}")
        return self.context.run_dir / MOUNT_DIR / sr_uuid

    @cached_property
    def layout(self) -> SRLayout:
        from srtypes.file.layout import SRLayout

        return SRLayout(self.mountpoint, self.context.sr_uuid, self.context.run_dir)

    def _mounted(self) -> bool:
        return self.mountpoint.is_dir() and self.mounter.is_mounted(str(self.mountpoint))

    def _reachable(self, cfg: NFSConfig) -> None:
        nfs.check_reachable(cfg.server, version=cfg.mount.version, executor=self.context.executor)

    def _mount(self, cfg: NFSConfig) -> bool:
        """Mount the SR directory unless it is mounted already; True if mounted now."""
        if self._mounted():
            return False
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        export = f"{cfg.require_path()}/{self.context.sr_uuid}"
        self.mounter.mount(cfg.server, export, str(self.mountpoint), nfs.mount_options(cfg.mount))
        return True

    def _unmount(self) -> None:
        if self._mounted():
            self.mounter.unmount(str(self.mountpoint))
        with contextlib.suppress(OSError):
            self.mountpoint.rmdir()

    def _check_writable(self) -> None:
        probe = self.mountpoint / f".sm-write-check-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise SRUnavailable(f"cannot write to the NFS SR at {self.mountpoint}: {err}") from err

    def _open(self) -> FileRepo:
        self.nfs_config.require_path()
        if not self._mounted():
            raise SRUnavailable(f"SR {self.context.sr_uuid} is not attached on this host")
        return super()._open()

    # -- SR commands -------------------------------------------------------------------------

    def sr_create(self, request: SRCreateRequest) -> None:
        cfg = self.nfs_config
        path = cfg.require_path()
        self._reachable(cfg)
        existed = request.sr_uuid in _names(cfg, path)
        nfs.make_dir(cfg.server, path, request.sr_uuid, exist_ok=True, version=cfg.mount.version)
        mounted_now = False
        try:
            mounted_now = self._mount(cfg)
            if any(os.scandir(self.mountpoint)):
                raise SRExists(f"{cfg.server}:{path}/{request.sr_uuid} is not empty")
            self._check_writable()
            super().sr_create(request)
        except BaseException:
            if mounted_now:
                self._unmount()
                if not existed:
                    with contextlib.suppress(Exception):
                        nfs.remove_dir(cfg.server, path, request.sr_uuid,
                                       version=cfg.mount.version)
            raise
        if mounted_now:
            self._unmount()

    def sr_delete(self, request: SRRequest) -> None:
        cfg = self.nfs_config
        path = cfg.require_path()
        self._reachable(cfg)
        if request.sr_uuid not in _names(cfg, path):
            log.info("sr_delete: %s:%s/%s does not exist (nothing to do)",
                     cfg.server, path, request.sr_uuid)
            self._unmount()
            return
        mounted_now = self._mount(cfg)
        try:
            super().sr_delete(request)  # the File SR's rules: 39 while VDIs exist
        except FileSRRmDir:
            # Its last step, rmdir of the location, meets the mount point (EBUSY); the
            # directory on the export is removed through the server below.
            pass
        except BaseException:
            if mounted_now:
                self._unmount()
            raise
        self._unmount()
        try:
            nfs.remove_dir(cfg.server, path, request.sr_uuid, missing_ok=True,
                           version=cfg.mount.version)
        except SRNotEmpty:
            log.info("sr_delete: %s:%s/%s keeps files that are not the SR's",
                     cfg.server, path, request.sr_uuid)

    def sr_attach(self, request: SRRequest) -> None:
        cfg = self.nfs_config
        cfg.require_path()
        self._reachable(cfg)
        mounted_now = self._mount(cfg)
        try:
            self.repo.check()  # 47 before the write check writes anywhere that holds no SR
            self._check_writable()
            super().sr_attach(request)  # journal replay
        except BaseException:
            if mounted_now:
                self._unmount()
            raise

    def sr_detach(self, request: SRRequest) -> None:
        self.nfs_config.require_path()
        super().sr_detach(request)
        self._unmount()

    def sr_update(self, request: SRRequest) -> None:
        self._open()
        super().sr_update(request)

    def sr_probe(self, request: SRProbeRequest) -> str:
        cfg = self.nfs_config
        if cfg.serverpath is None:
            exports = nfs.exports_xml(cfg.server, nfs.list_exports(cfg.server))
            log.info("sr_probe: exports of %s:\n%s", cfg.server, exports)
            sys.stderr.write(exports)  # as the original; the fault string carries it as well
            raise ConfigServerPathMissing(
                f"device_config serverpath is required; the exports of {cfg.server}:\n{exports}"
            )
        uuids = nfs.sr_uuids(
            nfs.list_dir(cfg.server, cfg.serverpath, version=cfg.mount.version))
        supported = nfs.supported_versions(cfg.server, executor=self.context.executor)
        return nfs.srlist_xml(uuids, supported)

    # -- VDI commands that may run without sr_attach on this host ----------------------------

    def vdi_attach_from_config(self, request: VDIRequest) -> AttachResult:
        """Recovery path (HA statefile, redo log): mount the SR if this host has not."""
        cfg = self.nfs_config
        if not self._mounted():
            self._reachable(cfg)
            self._mount(cfg)
        return super().vdi_attach_from_config(request)
