"""The LVHD SR's data path: one nbdkit per attached VDI, reading and writing the LV through
:mod:`.lvio` (device-mapper node when there is one, else the PV at the segments' offsets).

    vdi_attach      start (or find) the server, read-only or writable (after inflate)
    vdi_activate    resume it (restart it if a crash lost it)
    vdi_deactivate  pause it: drained, flushed, chain closed; clients stay connected
    vdi_detach      stop it (before deflate)
    live(uuid)      pause around a chain change (snapshot, clone, revert), resume after
    sm_vdi_pause    `hold`: pause it for an owner (`sm.vdipause`); sm_vdi_resume: `release`

The server's leaf is the LV's name ``/dev/<vg>/<lv>``; the plugin opens it with
:func:`open_disk` (``opener=``), handed the SR's lvm configuration as ``opener_arg``, so the
served chain resolves parents through :class:`~srtypes.lvhd.storage.LvStorage` exactly as the
driver does. Servers share the File SR's directory (``nbd_dir(run_dir)``): VDI uuids are unique.
Without nbdkit (or with ``SM_DATA_PATH=none``) attach hands out ``params`` only.

:func:`open_disk` runs inside nbdkit's Python: it imports only the standard-library parts of
the project (this module keeps its driver-side imports inside functions).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sm.nbd.server import ServerInfo
    from sm.nbd.serving import Servers

    from .lvio import LvBacking
    from .repo import LvhdRepo

__all__ = ["OPENER", "activate", "deactivate", "hold", "live", "open_disk", "release",
           "resume_orphans", "servers", "start", "stop"]

log = logging.getLogger(__name__)

OPENER = "srtypes.lvhd.datapath:open_disk"


# -- inside nbdkit ------------------------------------------------------------------------------


class RawLvDisk:
    """A raw LV (``LV-<uuid>``) as the plugin's disk (size, read, write, flush, close)."""

    def __init__(self, path: str, backing: LvBacking, writable: bool) -> None:
        self._lv = backing
        self._writable = writable
        self.size = backing.size
        self.paths = [path]
        self.depth = 1
        self.closed = False
        self._lock = threading.Lock()

    def read(self, offset: int, length: int) -> bytes:
        return self._lv.pread(length, offset)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if not self._writable:
            raise OSError(30, "read-only VDI")
        self._lv.pwrite(bytes(data), offset)

    def flush(self) -> None:
        self._lv.fsync()

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self._lv.close()
                self.closed = True

    def __enter__(self) -> RawLvDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def opener_arg(repo: LvhdRepo) -> str:
    return json.dumps({"conf": str(repo.host_dir / "lvm"), "devices": list(repo.devices),
                       "vg": repo.vg, "dev_root": repo.dev_root}, separators=(",", ":"))


def open_disk(path: str, *, writable: bool, arg: str) -> Any:
    """Open the served image ``/dev/<vg>/<lv>`` (the plugin's ``opener``)."""
    from sm import vhd
    from sm.executor import SubprocessExecutor

    from .lvio import open_lv
    from .lvm import Lvm
    from .storage import LvStorage

    cfg = json.loads(arg)
    lvm = Lvm(SubprocessExecutor(default_timeout=60), Path(cfg["conf"]),
              devices=list(cfg["devices"]))
    lv = os.path.basename(path)
    if lv.startswith("LV-"):
        backing = open_lv(lvm, cfg["vg"], lv, writable=writable, dev_root=cfg["dev_root"])
        return RawLvDisk(path, backing, writable)
    storage = LvStorage(lvm, cfg["vg"], cfg["dev_root"])
    return vhd.open_chain(path, writable=writable, storage=storage)


# -- driver side --------------------------------------------------------------------------------


def servers(repo: LvhdRepo) -> Servers:
    from sm.nbd.serving import Servers

    return Servers(repo.host_dir.parent.parent)


def start(repo: LvhdRepo, uuid: str, path: str, writable: bool) -> ServerInfo | None:
    """Start or find the server of `uuid` (None without nbdkit)."""
    return servers(repo).start(uuid, path, writable=writable, opener=OPENER,
                               opener_arg=opener_arg(repo))


def _deactivated(repo: LvhdRepo, uuid: str) -> Path:
    return repo.host_dir / f"deactivated-vdi-{uuid}"


def stop(repo: LvhdRepo, uuid: str) -> None:
    servers(repo).stop(uuid)
    _deactivated(repo, uuid).unlink(missing_ok=True)


def activate(repo: LvhdRepo, uuid: str, path: str, writable: bool) -> None:
    from sm.nbd.serving import available

    _deactivated(repo, uuid).unlink(missing_ok=True)
    if available() and not servers(repo).resume(uuid):
        # killed, or the host restarted: serve again (clients reconnect)
        log.warning("VDI %s: data path lost; restarting it", uuid)
        start(repo, uuid, path, writable)


def deactivate(repo: LvhdRepo, uuid: str) -> None:
    _deactivated(repo, uuid).touch()  # first: a crash in between still counts as paused
    servers(repo).pause(uuid)


def hold(repo: LvhdRepo, uuid: str, owner: str) -> str:
    """`sm_vdi_pause` (`sm.vdipause`); the caller holds the chain lock."""
    from sm.vdipause import NONE

    if not (repo.host_dir / f"attached-vdi-{uuid}").exists():
        return NONE
    return servers(repo).hold(uuid, owner)


def release(repo: LvhdRepo, uuid: str, owner: str) -> str:
    """`sm_vdi_resume` (`sm.vdipause`); the caller holds the chain lock and has checked that
    the VDI is usable. The leaf keeps its LV name: resumed on the same path."""
    from sm.vdipause import NONE

    if not (repo.host_dir / f"attached-vdi-{uuid}").exists():
        return NONE
    return servers(repo).release(uuid, owner, active=not _deactivated(repo, uuid).exists())


def live(repo: LvhdRepo, uuid: str) -> contextlib.AbstractContextManager[None]:
    """Pause a running server of `uuid` around a chain change (caller holds the SR lock): the
    leaf keeps its LV name, so resume reopens the same path, now the new leaf, with a fresh
    segment map."""
    return servers(repo).live(uuid)


def resume_orphans(repo: LvhdRepo) -> None:
    """Resume the servers a driver killed inside `live` left paused (caller holds the chain
    lock, so no `live` of a living process is in progress): every attached VDI's server that
    is paused although `vdi_deactivate` did not pause it."""
    from sm.nbd import server
    from sm.nbd.serving import available

    if not available():
        return
    from .srops import unusable

    held: dict[str, Any] | None = None
    for marker in repo.host_dir.glob("attached-vdi-*"):
        uuid = marker.name.removeprefix("attached-vdi-")
        if _deactivated(repo, uuid).exists():
            continue
        if held is None:  # one MGT read, only where something is attached
            doc = repo.read()
            held = unusable(repo, doc) if doc.failed else {}
        if uuid in held:  # its chain is in an unknown state: never served until repaired
            log.error("VDI %s: data path kept paused: %s", uuid, held[uuid].error)
            continue
        try:
            info = servers(repo).find(uuid)
            if info is not None and server.pause_orphaned(server.status(info)):
                log.warning("VDI %s: resuming a data path left paused", uuid)
                server.resume(info, run_dir=servers(repo).dir)
        except Exception as err:
            log.error("VDI %s: could not check its data path (%s)", uuid, err)
