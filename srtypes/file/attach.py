"""Per-host attachment state: `<run_dir>/file/<sr_uuid>/<vdi_uuid>.json` = {writable, active}.

Rules: one writable attachment per VDI on a host (a second writable attach: VDIInUse 24);
read-only attaches are always allowed except of a missing image; writable attaches of a
read-only VDI, a hidden base, or a VDI other VDIs depend on are refused (VDIUnavailable 46):
writing there would change what its children read. Detach of a VDI not attached is a no-op.

The data path (`datapath`): attach starts the VDI's nbdkit server, activate resumes it,
deactivate pauses it, detach stops it; all under the VDI lock.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from sm.errors import VDIInUse, VDIMissing, VDIUnavailable
from sm.log import get_logger

from . import datapath
from .edge import require_sound

if TYPE_CHECKING:
    from sm.nbd.server import ServerInfo

    from .repo import FileRepo

__all__ = ["activate", "attach", "attach_from_config", "deactivate", "detach"]

log = get_logger(__name__)


def _unknown(repo: FileRepo, uuid: str) -> bool:
    """Neither a record, nor attachment state, nor a lock file: the request names a VDI this SR
    never had, and is answered without creating its lock file (a caller sending made-up uuids
    cannot grow `.sm/locks`). The answer is the one the command gives a VDI that does not
    exist at that moment, so it is correct even if the VDI is created right after."""
    from sm.locking import vdi_lock_path

    return (not vdi_lock_path(repo.layout.location, uuid).exists()
            and repo.records.find(uuid) is None and repo.attachment(uuid) is None)


def attach(repo: FileRepo, uuid: str, writable: bool) -> tuple[str, ServerInfo | None]:
    """Record the attachment and start the data path; returns the image path and the
    server (None without nbdkit)."""
    if _unknown(repo, uuid):
        raise VDIMissing(f"no VDI {uuid} in SR {repo.layout.sr_uuid}")
    repo.check_usable(uuid)
    with repo.vdi_lock(uuid, "vdi_attach"):
        record = repo.get(uuid)
        path = repo.path(record)
        if not os.path.exists(path):
            raise VDIUnavailable(f"the image of VDI {uuid} is missing: {path}")
        if writable and (record.read_only or record.hidden or record.is_a_snapshot
                         or repo.children_of(uuid)):
            raise VDIUnavailable(f"VDI {uuid} is read-only (a snapshot base or read-only VDI); "
                                 "attach it read-only")
        if writable and record.vdi_type == "vhd":
            require_sound(path)  # a damaged image is never written (46, nothing started)
        if record.sm_config.get("gc-busy") and (writable or record.hidden):
            raise VDIInUse(f"VDI {uuid} is being coalesced; try again shortly")
        state = repo.attachment(uuid)
        if state is not None and writable and state.get("writable"):
            raise VDIInUse(f"VDI {uuid} is already attached writable on this host")
        info = datapath.start(repo, uuid, path, writable)
        new = {"writable": bool(writable or (state or {}).get("writable")),
               "active": bool((state or {}).get("active"))}
        repo.set_attachment(uuid, new)
        return path, info


def attach_from_config(repo: FileRepo, uuid: str) -> tuple[str, ServerInfo | None]:
    if _unknown(repo, uuid):
        raise VDIMissing(f"no VDI {uuid} in SR {repo.layout.sr_uuid}")
    repo.check_usable(uuid)
    with repo.vdi_lock(uuid, "vdi_attach_from_config"):
        record = repo.get(uuid)
        path = repo.path(record)
        if not os.path.exists(path):
            raise VDIUnavailable(f"the image of VDI {uuid} is missing: {path}")
        if record.read_only or record.hidden:
            raise VDIUnavailable(f"VDI {uuid} is read-only")
        state = repo.attachment(uuid) or {}
        info = datapath.start(repo, uuid, path, True)
        repo.set_attachment(uuid, {"writable": True, "active": bool(state.get("active"))})
        return path, info


def detach(repo: FileRepo, uuid: str) -> None:
    from .gc import abort

    if _unknown(repo, uuid):
        log.info("vdi_detach: VDI %s is not attached on this host (nothing to do)", uuid)
        return
    with abort(repo, vdi=uuid, reason="vdi_detach"), repo.vdi_lock(uuid, "vdi_detach"):
        datapath.stop(repo, uuid)  # also a server a crashed attach left behind
        if repo.attachment(uuid) is None:
            log.info("vdi_detach: VDI %s is not attached on this host (nothing to do)", uuid)
            return
        repo.set_attachment(uuid, None)


def activate(repo: FileRepo, uuid: str, writable: bool) -> None:
    if _unknown(repo, uuid):
        raise VDIUnavailable(f"VDI {uuid} is not attached on this host")
    repo.check_usable(uuid)
    with repo.vdi_lock(uuid, "vdi_activate"):
        state = repo.attachment(uuid)
        if state is None:
            raise VDIUnavailable(f"VDI {uuid} is not attached on this host")
        if writable and not state.get("writable"):
            raise VDIUnavailable(f"VDI {uuid} is attached read-only; cannot activate writable")
        repo.set_attachment(uuid, {**state, "active": True})
        datapath.activate(repo, uuid, repo.path(repo.get(uuid)), bool(state.get("writable")))


def deactivate(repo: FileRepo, uuid: str) -> None:
    if _unknown(repo, uuid):
        log.info("vdi_deactivate: VDI %s is not active on this host", uuid)
        return
    with repo.vdi_lock(uuid, "vdi_deactivate"):
        state = repo.attachment(uuid)
        if state is None or not state.get("active"):
            log.info("vdi_deactivate: VDI %s is not active on this host", uuid)
            return
        datapath.deactivate(repo, uuid)
        repo.set_attachment(uuid, {**state, "active": False})
