"""Pausing the data paths of several disks together (a VM snapshot's consistency point).

A disk is *live* when its SR type serves it on this host (an NBD server of `sm.nbd`). This
layer never talks to a data path itself: it asks each disk's driver with the extension command
`sm_vdi_pause` (`sm.vdipause`), as the owner of the pause, and lifts it with `sm_vdi_resume`.
While this process lives, a paused data path stays paused through the drivers' own chain
changes (the snapshots) and their recovery; should it die, the pause is orphaned and the SR's
recovery resumes it. An SR type without the commands has no live disks to pause.

All data paths are paused before the first snapshot and resumed after the last: every snapshot
then holds exactly the writes acknowledged before the common pause, so the set is
crash-consistent across disks. Records of what was paused go into the state journal, so a
crash in between is resumed by the next API operation (`resume_all`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sm import vdipause
from sm.owner import this_process

if TYPE_CHECKING:
    from .client import SRClient
    from .manager import StorageManager

__all__ = ["pause_all", "resume_all"]

log = logging.getLogger(__name__)


def pause_all(mgr: StorageManager, disks: list[tuple[SRClient, tuple[str, str]]],
              record: list[dict[str, Any]], on_change: Callable[[], None]) -> None:
    """Pause the data path of every live disk of `disks` ((client, backing ref) pairs). Each
    pause is appended to `record` and `on_change` called (to journal it) *before* it happens,
    so a crash half-way is undone by resuming (a no-op for a data path not paused by us); a
    disk that turns out not to be live is taken out of `record` again."""
    owner = this_process()
    for client, ref in disks:
        entry = {"sr": client.sr.uuid, "ref": list(ref), "how": "pause", "owner": owner}
        record.append(entry)
        on_change()
        answer = client.vdi_pause(ref, owner)
        if answer != vdipause.PAUSED:  # not live here, or paused by someone else
            record.remove(entry)
            on_change()
            continue
        log.info("paused the data path of %s", ref[0])


def resume_all(mgr: StorageManager, record: list[dict[str, Any]]) -> list[str]:
    """Resume what `pause_all` paused; returns the errors (logged), never raises. A record of
    a process that died is resumed too (its pause is orphaned)."""
    errors: list[str] = []
    for entry in record:
        ref = (str(entry["ref"][0]), str(entry["ref"][1]))
        try:
            cfg = next(c for c in mgr._configs() if c.uuid == entry["sr"])
            client = mgr._client(cfg)
            if entry["how"] == "deactivate":  # a record of an older version: it deactivated
                client.call("vdi_activate", [str(bool(entry["writable"])).lower()], vdi=ref)
            else:
                client.vdi_resume(ref, str(entry.get("owner") or this_process()))
        except Exception as err:
            log.error("could not resume the data path of %s: %s", ref[0], err)
            errors.append(f"{ref[0]}: {err}")
    return errors
