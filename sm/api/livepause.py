"""Pausing the data paths of several disks together (a VM snapshot's consistency point).

A disk is *live* when an NBD server of `sm.nbd` serves it on this host (the File SR's data
path: `<run_dir>/nbd/<backing uuid>.sock`). Pausing goes through SMAPIv1 where it can:
`vdi_deactivate` pauses the server of an active attachment (drained, flushed, chain closed;
clients stay connected and their requests wait) and marks it inactive, so the driver's own
snapshot code neither resumes it (`_live`) nor treats it as orphaned (`resume_orphans`);
`vdi_activate` resumes it. A server that runs without an active attachment is paused and
resumed over its control socket directly.

All servers are paused before the first snapshot and resumed after the last: every snapshot
then holds exactly the writes acknowledged before the common pause, so the set is
crash-consistent across disks. Records of what was paused go into the state journal, so a
crash in between is resumed by the next API operation (`resume`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sm.capabilities import Capability

if TYPE_CHECKING:
    from .client import SRClient
    from .manager import StorageManager

__all__ = ["pause_all", "resume_all"]

log = logging.getLogger(__name__)


def _nbd_dirs(mgr: StorageManager) -> list[str]:
    """Where this host's servers can be: the run directory of in-process drivers (our
    environment) and of executed ones (the drivers' environment)."""
    from sm.nbd.serving import nbd_dir
    from sm.settings import DEFAULT_RUN_DIR, Settings

    out: list[str] = []
    for env in (os.environ, mgr.driver_environ):
        found = nbd_dir(Path(Settings.from_environ(env).run_dir or DEFAULT_RUN_DIR))
        if found not in out:
            out.append(found)
    return out


def _server(dirs: list[str], backing: str) -> Any:
    from sm.nbd import server

    for directory in dirs:
        if os.path.isdir(directory):
            info = server.find(backing, directory)
            if info is not None:
                return info
    return None


def pause_all(mgr: StorageManager, disks: list[tuple[SRClient, tuple[str, str]]],
              record: list[dict[str, Any]], on_change: Callable[[], None]) -> None:
    """Pause every running server of `disks` ((client, backing ref) pairs). Each pause is
    appended to `record` and `on_change` called (to journal it) *before* it happens, so a
    crash half-way is undone by resuming (a no-op for a server that was not paused yet)."""
    dirs = _nbd_dirs(mgr)
    if not dirs:
        return
    from sm.nbd import server

    for client, ref in disks:
        info = _server(dirs, ref[0])
        if info is None or server.status(info)["state"] != "running":
            continue
        deactivate = client.has(Capability.VDI_DEACTIVATE)
        entry = {"sr": client.sr.uuid, "ref": list(ref), "writable": info.writable,
                 "dir": os.path.dirname(info.control),
                 "how": "deactivate" if deactivate else "direct"}
        record.append(entry)
        on_change()
        if deactivate:
            client.call("vdi_deactivate", vdi=ref)
        if server.status(info)["state"] == "running":
            entry["how"] = "direct"  # running without an active attachment
            on_change()
            server.pause(info)
        log.info("paused the data path of %s (%s)", ref[0], entry["how"])


def resume_all(mgr: StorageManager, record: list[dict[str, Any]]) -> list[str]:
    """Resume what `pause_all` paused; returns the errors (logged), never raises."""
    from sm.nbd import server

    errors: list[str] = []
    for entry in record:
        ref = (str(entry["ref"][0]), str(entry["ref"][1]))
        try:
            if entry["how"] == "deactivate":
                cfg = next(c for c in mgr._configs() if c.uuid == entry["sr"])
                mgr._client(cfg).call("vdi_activate", [str(bool(entry["writable"])).lower()],
                                      vdi=ref)
            else:
                info = server.find(ref[0], str(entry["dir"]))
                if info is not None:
                    server.resume(info)
        except Exception as err:
            log.error("could not resume the data path of %s: %s", ref[0], err)
            errors.append(f"{ref[0]}: {err}")
    return errors
