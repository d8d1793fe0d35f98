"""Attach, detach, activate and deactivate of a chain SR's VDI on this host, written once.

Rules: one writable attachment per VDI on a host (a second writable attach: VDIInUse 24);
read-only attaches are always allowed except of a missing image; writable attaches of a
read-only VDI, a snapshot, a hidden base or a VDI other VDIs depend on are refused
(VDIUnavailable 46): writing there would change what its children read; a damaged image is
never attached writable (46, nothing changed); a VDI a set-aside journal entry makes unusable
is not attached nor activated (46) until `sm sr repair`. Detach of a VDI not attached is a
no-op, and so is deactivate of one not active.

    attach      make room for the leaf to grow (`Volumes.prepare_leaf`: an LV is inflated
                when writable), start its data path, record the attachment
    activate    mark it active, resume the data path (restart it if a crash lost it)
    deactivate  mark it inactive (first: a crash in between still counts as paused), pause
    detach      stop the data path, give back the room not used (`Volumes.release_leaf`: a
                thin LV is deflated), forget the attachment

Each runs under the VDI's lock (`Host.vdi_lock`), which orders it with a chain change's
`sm.chain.datapath.live`. The attachment state lives with the SR type (`Host`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sm.errors import VDIInUse, VDIMissing, VDIUnavailable
from sm.log import get_logger

from . import datapath
from .host import Attachment

if TYPE_CHECKING:
    from sm.nbd.server import ServerInfo
    from sm.records import VdiRecord

    from .protocols import ChainSR

__all__ = ["activate", "attach", "attach_from_config", "deactivate", "detach"]

log = get_logger(__name__)

GC_BUSY = "gc-busy"
"""`sm_config` key of a VDI the collector is copying (attach refuses it writable)."""


def _record(sr: ChainSR, uuid: str) -> tuple[VdiRecord, str]:
    """The record and its image path; VDIUnavailable (46) if the image is missing."""
    record = sr.meta.get(uuid)
    path = sr.volumes.path(uuid, record.vdi_type)
    if not sr.volumes.exists(uuid, record.vdi_type):
        raise VDIUnavailable(f"the image of VDI {uuid} is missing: {path}")
    return record, path


def attach(sr: ChainSR, uuid: str, writable: bool) -> tuple[str, ServerInfo | None]:
    """Prepare the leaf, start the data path, record the attachment; returns the image path
    and the server (None without nbdkit)."""
    if not sr.host.known(uuid):
        raise VDIMissing(f"no VDI {uuid} in SR {sr.meta.sr_uuid}")
    sr.meta.check_usable(uuid)
    with sr.host.vdi_lock(uuid, "vdi_attach"):
        record, path = _record(sr, uuid)
        if writable and (record.read_only or record.hidden or record.is_a_snapshot
                         or sr.meta.children_of(uuid)):
            raise VDIUnavailable(f"VDI {uuid} is read-only (a snapshot base or read-only VDI); "
                                 "attach it read-only")
        if writable and record.vdi_type == sr.format.name:
            sr.format.check(path)  # a damaged image is never written (46, nothing changed)
        if record.sm_config.get(GC_BUSY) and (writable or record.hidden):
            raise VDIInUse(f"VDI {uuid} is being coalesced; try again shortly")
        state = sr.host.attachment(uuid)
        if state is not None and writable and state.writable:
            raise VDIInUse(f"VDI {uuid} is already attached writable on this host")
        return path, _attach(sr, record, state, writable)


def attach_from_config(sr: ChainSR, uuid: str) -> tuple[str, ServerInfo | None]:
    """`vdi_attach_from_config`: writable, idempotent, no VDIInUse for an existing
    attachment (the toolstack's recovery path)."""
    if not sr.host.known(uuid):
        raise VDIMissing(f"no VDI {uuid} in SR {sr.meta.sr_uuid}")
    sr.meta.check_usable(uuid)
    with sr.host.vdi_lock(uuid, "vdi_attach_from_config"):
        record, path = _record(sr, uuid)
        if record.read_only or record.hidden:
            raise VDIUnavailable(f"VDI {uuid} is read-only")
        return path, _attach(sr, record, sr.host.attachment(uuid), True)


def _attach(sr: ChainSR, record: VdiRecord, state: Attachment | None,
            writable: bool) -> ServerInfo | None:
    sr.volumes.prepare_leaf(record, writable)
    try:
        info = datapath.start(sr, record.uuid, record.vdi_type, writable)
    except BaseException:
        if state is None:
            sr.volumes.release_leaf(record)
        raise
    sr.host.set_attachment(record.uuid, Attachment(
        writable=writable or (state is not None and state.writable),
        active=state is None or state.active))
    return info


def detach(sr: ChainSR, uuid: str) -> None:
    if not sr.host.known(uuid):
        log.info("vdi_detach: VDI %s is not attached on this host (nothing to do)", uuid)
        return
    with sr.host.vdi_lock(uuid, "vdi_detach"):
        datapath.stop(sr, uuid)  # flushed first; also a server a crashed attach left behind
        record = sr.meta.find(uuid)
        if record is not None:
            sr.volumes.release_leaf(record)
        if sr.host.attachment(uuid) is None:
            log.info("vdi_detach: VDI %s is not attached on this host (nothing to do)", uuid)
            return
        sr.host.set_attachment(uuid, None)


def activate(sr: ChainSR, uuid: str, writable: bool) -> None:
    if not sr.host.known(uuid):
        raise VDIUnavailable(f"VDI {uuid} is not attached on this host")
    sr.meta.check_usable(uuid)
    with sr.host.vdi_lock(uuid, "vdi_activate"):
        state = sr.host.attachment(uuid)
        if state is None:
            raise VDIUnavailable(f"VDI {uuid} is not attached on this host")
        if writable and not state.writable:
            raise VDIUnavailable(f"VDI {uuid} is attached read-only; cannot activate writable")
        sr.meta.get(uuid)  # VDIMissing (144) before anything changes
        sr.host.set_attachment(uuid, state.replace(active=True))
        datapath.activate(sr, uuid, state.writable)


def deactivate(sr: ChainSR, uuid: str) -> None:
    if not sr.host.known(uuid):
        log.info("vdi_deactivate: VDI %s is not active on this host", uuid)
        return
    with sr.host.vdi_lock(uuid, "vdi_deactivate"):
        state = sr.host.attachment(uuid)
        if state is None or not state.active:
            log.info("vdi_deactivate: VDI %s is not active on this host", uuid)
            return
        sr.host.set_attachment(uuid, state.replace(active=False))
        datapath.deactivate(sr, uuid)
