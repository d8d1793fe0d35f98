"""Everyday VDI and SR workflows of `StorageManager` (a mixin): names, copy and move to another
SR, serving a VDI over NBD, probing for SRs and SR free space. The logic lives in
`sm.api.names`, `sm.api.copy` and `sm.api.exports`; docs/api.md has the table."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from sm.errors import SMError, Unimplemented
from sm.options import checked

from . import copy as copy_ops
from . import exports, names
from .config import SrConfig

if TYPE_CHECKING:
    from .copy import CopyResult
    from .exports import Export
    from .manager import StorageManager
    from .models import VDI

__all__ = ["WorkflowMethods"]

_HOST_REF = "OpaqueRef:sm-api-host"


class WorkflowMethods:
    def _wsm(self) -> StorageManager:
        return cast("StorageManager", self)

    # -- names --------------------------------------------------------------------------------

    @checked
    def vdi_set(self, ref: str, *, name: str | None = None, description: str | None = None,
                sr: str | None = None) -> VDI:
        """Set the name-label and/or name-description of a VDI, or the name and/or description
        of a snapshot (in its tree and its record). A name another VDI of the SR has warns
        (`sm.api.names.DuplicateName`); a snapshot name the tree has already is refused."""
        mgr = self._wsm()
        cfg = mgr._config(sr)
        with mgr._locked("vdi set"):
            vdis = mgr.vdis(cfg.name, hidden=True)
            vdi = mgr._find(vdis, ref)
            names.set_names(mgr.state, mgr._client(cfg), vdi, vdis, name=name,
                            description=description)
        return mgr.vdi(vdi.uuid, cfg.name)

    @checked
    def vdi_rename(self, ref: str, name: str, *, sr: str | None = None) -> VDI:
        """`vdi_set(ref, name=name)`."""
        return self.vdi_set(ref, name=name, sr=sr)

    # -- copy and move ------------------------------------------------------------------------

    @checked
    def vdi_copy(self, ref: str, dest_sr: str, *, sr: str | None = None,
                 snapshots: bool = False, name: str | None = None,
                 progress: Callable[[int, int], None] | None = None) -> CopyResult:
        """Copy a VDI (or a snapshot, as a plain VDI) to SR `dest_sr` (any type, the same SR
        too); only allocated data travels. `snapshots`: rebuild its snapshot tree there too.
        A failure removes everything made at the destination. `progress(done, total)` bytes."""
        return self._copy(ref, dest_sr, sr, snapshots, name, False, progress)

    @checked
    def vdi_move(self, ref: str, dest_sr: str, *, sr: str | None = None,
                 snapshots: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> CopyResult:
        """`vdi_copy`, then delete the source (with its snapshots if `snapshots`). A failure
        before the copy is complete leaves the source intact and removes the copy."""
        return self._copy(ref, dest_sr, sr, snapshots, None, True, progress)

    def _copy(self, ref: str, dest_sr: str, sr: str | None, snapshots: bool,
              name: str | None, move: bool,
              progress: Callable[[int, int], None] | None) -> CopyResult:
        mgr = self._wsm()
        src, dst = mgr._config(sr), mgr._config(dest_sr)
        with mgr._locked("vdi move" if move else "vdi copy"):
            return copy_ops.copy(mgr, src, ref, dst, with_snapshots=snapshots, name=name,
                                 move=move, progress=progress)

    # -- NBD ----------------------------------------------------------------------------------

    @checked
    def vdi_attach(self, ref: str, *, writable: bool = False, sr: str | None = None) -> Export:
        """Serve a VDI over NBD (the driver's `vdi_attach` + `vdi_activate`) until
        `vdi_detach`; the result's `url` is an `nbd+unix://` URI."""
        mgr = self._wsm()
        cfg = mgr._config(sr)
        with mgr._locked("vdi attach"):
            return exports.attach(mgr.state, mgr._client(cfg), mgr.vdi(ref, cfg.name),
                                  writable)

    @checked
    def vdi_detach(self, ref: str, *, sr: str | None = None) -> Export:
        """Stop serving a VDI that `vdi_attach` serves."""
        mgr = self._wsm()
        cfg = mgr._config(sr)
        with mgr._locked("vdi detach"):
            return exports.detach(mgr.state, mgr._client(cfg), mgr.vdi(ref, cfg.name))

    def vdi_attachments(self) -> list[Export]:
        """The VDIs `vdi_attach` serves, oldest first."""
        return exports.exports(self._wsm().state)

    # -- SRs ----------------------------------------------------------------------------------

    @checked
    def sr_probe(self, type: str, device_config: Mapping[str, str],
                 sm_config: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The driver's `sr_probe`: which SRs exist at `device_config`. `srs` lists them
        (`uuid` and whatever else the driver says), each with the registry `name` it has here
        ("" if none); `xml` is the driver's answer."""
        from defusedxml import ElementTree

        mgr = self._wsm()
        struct = {"command": "sr_probe", "args": [], "host_ref": _HOST_REF,
                  "session_ref": "OpaqueRef:sm-api-session",
                  "device_config": {"SRmaster": "true", **device_config},
                  "sr_sm_config": dict(sm_config or {})}
        xml = str(mgr.transport.call(type.lower(), "sr_probe", struct))
        known = {c.uuid: c.name for c in mgr._configs()}
        srs = []
        try:
            root = ElementTree.fromstring(xml.encode())
        except Exception as err:
            raise SMError(f"sr_probe of type {type} answered unreadable XML: {err}") from err
        for node in root.iter("SR"):
            item = {child.tag.lower(): (child.text or "").strip() for child in node}
            item["name"] = known.get(item.get("uuid", ""), "")
            srs.append(item)
        return {"type": type.lower(), "srs": srs, "xml": xml}

    @checked
    def sr_stats(self, name: str | None = None) -> dict[str, int]:
        """The SR's physical size, utilisation and free space from its driver
        (`sm_sr_stats`); {} for an SR type that does not say."""
        mgr = self._wsm()
        cfg: SrConfig = mgr._config(name)
        try:
            raw = json.loads(mgr._client(cfg).call("sm_sr_stats"))
        except Unimplemented:
            return {}
        return {k: int(v) for k, v in raw.items() if str(v).isdigit()}
