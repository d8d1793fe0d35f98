"""The data path of a chain SR: one nbdkit server per attached VDI (`sm.nbd.serving`), written
once for the File, NFS and LVHD SRs.

    start / stop    start (or find) the server of an attachment; stop it
    activate        resume it (restart it if a crash lost it)
    deactivate      pause it: drained, flushed, chain closed; clients stay connected
    live(vdi)       pause around a chain change, resume on the leaf in a `finally`
    hold / release  `sm_vdi_pause` / `sm_vdi_resume` (`sm.vdipause`): a pause for an owner
    resume_orphans  resume what a killed driver left paused (after every journal replay)

The SR supplies where its servers live (`Host.run_dir`), how nbdkit opens its images
(`Volumes.opener`), its attachment state and the per-VDI lock (`Host`). Without nbdkit (or
with the data path switched off) attach hands out `params` only.

Recovery: a driver that dies inside `live` leaves the server paused (chain closed, requests
held), so journal replay under the SR lock never races a write. `resume_orphans` (run after
every replay, under the SR lock) resumes, under each VDI's lock, every server whose attachment
is active and whose pause is orphaned (its pauser, recorded by the server, is gone): a server
paused by `vdi_deactivate` stays paused, one paused by a live process (an in-process writer of
the API, an `sm_vdi_pause` owner) stays paused until that process resumes it, and one of a VDI
a set-aside journal entry makes unusable stays paused until `sm sr repair`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from sm.log import get_logger
from sm.vdipause import NONE

if TYPE_CHECKING:
    from sm.nbd.server import ServerInfo
    from sm.nbd.serving import Servers

    from .protocols import ChainSR

__all__ = ["activate", "deactivate", "find", "hold", "live", "release", "resume_orphans",
           "start", "stop"]

log = get_logger(__name__)


def _servers(sr: ChainSR) -> Servers:
    from sm.nbd.serving import Servers

    return Servers(sr.host.run_dir)


def _leaf(sr: ChainSR, uuid: str) -> str:
    record = sr.meta.get(uuid)
    return sr.volumes.path(record.uuid, record.vdi_type)


def find(sr: ChainSR, uuid: str) -> ServerInfo | None:
    return _servers(sr).find(uuid)


def start(sr: ChainSR, uuid: str, vdi_type: str, writable: bool) -> ServerInfo | None:
    """Start or find the server of `uuid` (None without nbdkit); the sharing rules are
    `sm.nbd.serving.Servers.start`'s."""
    opener, arg = sr.volumes.opener(vdi_type)
    return _servers(sr).start(uuid, sr.volumes.path(uuid, vdi_type), writable=writable,
                              opener=opener, opener_arg=arg)


def stop(sr: ChainSR, uuid: str) -> None:
    _servers(sr).stop(uuid)


def activate(sr: ChainSR, uuid: str, writable: bool) -> None:
    from sm.nbd.serving import available

    if available() and not _servers(sr).resume(uuid):
        # killed, or the host restarted: serve again (clients reconnect)
        log.warning("VDI %s: data path lost; restarting it", uuid)
        start(sr, uuid, sr.meta.get(uuid).vdi_type, writable)


def deactivate(sr: ChainSR, uuid: str) -> None:
    _servers(sr).pause(uuid)


def hold(sr: ChainSR, uuid: str, owner: str) -> str:
    """`sm_vdi_pause` (`sm.vdipause`), under the VDI lock."""
    if sr.host.attachment(uuid) is None:
        return NONE
    with sr.host.vdi_lock(uuid, "sm_vdi_pause"):
        return _servers(sr).hold(uuid, owner)


def release(sr: ChainSR, uuid: str, owner: str) -> str:
    """`sm_vdi_resume` (`sm.vdipause`), under the VDI lock, on the VDI's leaf; an unusable VDI
    stays paused (VDIUnavailable)."""
    if sr.host.attachment(uuid) is None:
        return NONE
    sr.meta.check_usable(uuid)
    with sr.host.vdi_lock(uuid, "sm_vdi_resume"):
        state = sr.host.attachment(uuid)
        return _servers(sr).release(uuid, owner, active=state is not None and state.active,
                                    path=_leaf(sr, uuid))


@contextlib.contextmanager
def live(sr: ChainSR, uuid: str) -> Iterator[None]:
    """Pause a running server of `uuid` around a chain change; resume it on the leaf after,
    even on error. Caller holds the SR lock; the VDI lock keeps activate/deactivate out."""
    if sr.host.attachment(uuid) is None:
        yield
        return
    from sm.nbd import server

    with sr.host.vdi_lock(uuid, "live"):
        info = find(sr, uuid)
        if info is None:
            yield
            return
        state = sr.host.attachment(uuid)
        before = server.status(info)
        # a pause we may undo: none, or one whose pauser is gone; never a live one's
        ours = before["state"] == "running" or server.pause_orphaned(before)
        server.pause(info)
        try:
            yield
        finally:
            if before["state"] == "running" or (ours and state is not None and state.active):
                _resume_leaf(sr, uuid, info)


def _resume_leaf(sr: ChainSR, uuid: str, info: ServerInfo) -> None:
    """Resume on the VDI's leaf; if that fails, replay the journal (an operation that failed
    half-way) and try once more; else stay paused for the next `resume_orphans`."""
    from sm.nbd import server

    for attempt in range(2):
        try:
            server.resume(info, _leaf(sr, uuid), run_dir=_servers(sr).dir)
            return
        except Exception as err:
            log.error("VDI %s: resume of the data path failed (%s)", uuid, err)
            if attempt == 0:
                with contextlib.suppress(Exception):
                    sr.meta.recover()


def resume_orphans(sr: ChainSR) -> None:
    """Resume servers left paused by a driver that died inside `live` (caller holds the SR
    lock): every attached, active VDI whose server's pause is orphaned (`pause_orphaned`)."""
    attached = sr.host.attached()
    if not attached:
        return  # the common case: no sm.nbd import on a driver's start-up path
    from sm.nbd import server

    held = None
    for uuid in attached:
        state = sr.host.attachment(uuid)
        if state is None or not state.active:
            continue
        if held is None:  # one read of the set-aside entries, only where something is served
            held = sr.meta.unusable()
        if uuid in held:  # its chain is in an unknown state: never served until repaired
            log.error("VDI %s: data path kept paused: %s", uuid, held[uuid].error)
            continue
        try:
            with sr.host.vdi_lock(uuid, "resume_orphans"):  # decided and done under the lock
                info = find(sr, uuid)
                state = sr.host.attachment(uuid)
                if info is None or state is None or not state.active:
                    continue
                st = server.status(info)
                if st["state"] != "paused":
                    continue
                if not server.pause_orphaned(st):
                    log.info("VDI %s: data path paused by live process %s; left paused",
                             uuid, st.get("paused_by"))
                    continue
                log.warning("VDI %s: resuming a data path left paused by %s", uuid,
                            st.get("paused_by") or "an unknown process")
                _resume_leaf(sr, uuid, info)
        except Exception as err:
            log.error("VDI %s: could not check its data path (%s)", uuid, err)
