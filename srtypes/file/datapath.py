"""The File SR's data path: one nbdkit server per attached VDI (`sm.nbd.server`).

    vdi_attach      start (or find) the server, read-only or writable
    vdi_activate    resume it (restart it if a crash lost it)
    vdi_deactivate  pause it: drained, flushed, chain closed; clients stay connected
    vdi_detach      stop it
    _live(vdi)      pause around a chain change, resume on the leaf in a `finally`
    sm_vdi_pause    `hold`: pause it for an owner (`sm.vdipause`); sm_vdi_resume: `release`

Servers live in `sm.nbd.serving.nbd_dir(run_dir)` with every SR type's; without nbdkit
installed (or with SM_DATA_PATH=none), attach hands out `params` only.

Recovery: a driver that dies inside `_live` leaves the server paused (chain closed, requests
held), so journal replay under the SR lock never races a write. `resume_orphans` (run after
every replay, under the SR lock) resumes, under each VDI's lock, every server whose VDI is still
marked active and whose pause is orphaned (its pauser, recorded by the server, is gone): a
server paused by `vdi_deactivate` has `active` false and stays paused, one paused by a live
process (an in-process writer of the API) stays paused until that process resumes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from sm.log import get_logger
from sm.nbd.serving import available
from sm.vdipause import NONE

if TYPE_CHECKING:
    from sm.nbd.server import ServerInfo
    from sm.nbd.serving import Servers

    from .repo import FileRepo

__all__ = ["activate", "available", "deactivate", "find", "hold", "live", "release",
           "resume_orphans", "start", "stop"]

log = get_logger(__name__)

RAW_OPENER = "sm.nbd.rawdisk:open_raw"
VHD_OPENER = "srtypes.file.confine:open_disk"  # every image of the chain inside the SR


def _servers(repo: FileRepo) -> Servers:
    from sm.nbd.serving import Servers

    return Servers(repo.layout.host_dir.parent.parent)


def find(repo: FileRepo, uuid: str) -> ServerInfo | None:
    return _servers(repo).find(uuid)


def start(repo: FileRepo, uuid: str, path: str, writable: bool) -> ServerInfo | None:
    """Start or find the server of `uuid` (None without nbdkit); the sharing rules are
    `sm.nbd.serving.Servers.start`'s."""
    opener = RAW_OPENER if path.endswith(".raw") else VHD_OPENER
    return _servers(repo).start(uuid, path, writable=writable, opener=opener)


def stop(repo: FileRepo, uuid: str) -> None:
    _servers(repo).stop(uuid)


def activate(repo: FileRepo, uuid: str, path: str, writable: bool) -> None:
    if available() and not _servers(repo).resume(uuid):
        # killed or host crash: serve again (clients reconnect)
        log.warning("VDI %s: data path lost; restarting it", uuid)
        start(repo, uuid, path, writable)


def deactivate(repo: FileRepo, uuid: str) -> None:
    _servers(repo).pause(uuid)


def hold(repo: FileRepo, uuid: str, owner: str) -> str:
    """`sm_vdi_pause` (`sm.vdipause`), under the VDI lock."""
    if not repo.layout.attachment(uuid).exists():
        return NONE
    with repo.vdi_lock(uuid, "sm_vdi_pause"):
        return _servers(repo).hold(uuid, owner)


def release(repo: FileRepo, uuid: str, owner: str) -> str:
    """`sm_vdi_resume` (`sm.vdipause`), under the VDI lock, on the VDI's leaf; an unusable VDI
    stays paused (VDIUnavailable)."""
    if not repo.layout.attachment(uuid).exists():
        return NONE
    repo.check_usable(uuid)
    with repo.vdi_lock(uuid, "sm_vdi_resume"):
        state = repo.attachment(uuid) or {}
        return _servers(repo).release(uuid, owner, active=bool(state.get("active")),
                                      path=repo.path(repo.get(uuid)))


@contextlib.contextmanager
def live(repo: FileRepo, uuid: str) -> Iterator[None]:
    """Pause a running server of `uuid` around a chain change; resume on the leaf after, even
    on error. Caller holds the SR lock; the VDI lock keeps activate/deactivate out."""
    if not repo.layout.attachment(uuid).exists():
        yield
        return
    from sm.nbd import server

    with repo.vdi_lock(uuid, "live"):
        info = find(repo, uuid)
        if info is None:
            yield
            return
        state = repo.attachment(uuid) or {}
        before = server.status(info)
        # a pause we may undo: none, or one whose pauser is gone; never a live one's
        ours = before["state"] == "running" or server.pause_orphaned(before)
        server.pause(info)
        try:
            yield
        finally:
            if before["state"] == "running" or (ours and state.get("active")):
                _resume_leaf(repo, uuid, info)


def _resume_leaf(repo: FileRepo, uuid: str, info: ServerInfo) -> None:
    """Resume on the VDI's leaf; if that fails, replay the journal (an operation that failed
    half-way) and try once more; else stay paused for the next `resume_orphans`."""
    from sm.nbd import server

    for attempt in range(2):
        try:
            record = repo.get(uuid)
            server.resume(info, repo.path(record), run_dir=_servers(repo).dir)
            return
        except Exception as err:
            log.error("VDI %s: resume of the data path failed (%s)", uuid, err)
            if attempt == 0:
                with contextlib.suppress(Exception):
                    repo.recover()


def resume_orphans(repo: FileRepo) -> None:
    """Resume servers left paused by a driver that died inside `live` (caller holds the SR
    lock): every attached, active VDI whose server's pause is orphaned (`pause_orphaned`)."""
    attached = repo.attached_vdis()
    if not attached:
        return  # the common case: no sm.nbd import on a driver's start-up path
    from sm.nbd import server

    held = repo.unusable()
    for uuid in attached:
        state = repo.attachment(uuid) or {}
        if not state.get("active"):
            continue
        if uuid in held:  # its chain is in an unknown state: never served until repaired
            log.error("VDI %s: data path kept paused: %s", uuid, held[uuid].error)
            continue
        try:
            with repo.vdi_lock(uuid, "resume_orphans"):  # decided and done under the lock
                info = find(repo, uuid)
                state = repo.attachment(uuid) or {}
                if info is None or not state.get("active"):
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
                _resume_leaf(repo, uuid, info)
        except Exception as err:
            log.error("VDI %s: could not check its data path (%s)", uuid, err)
