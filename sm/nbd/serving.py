"""The NBD servers of one host, as SR types use them (driver side).

Every SR type keeps its servers in one directory per host, `nbd_dir(run_dir)`: VDI uuids are
unique, so File, LVHD and RBD servers share it. `Servers` holds the rules the SR types share: a
read-only attach shares a running writable server, a writable attach over a read-only one is
VDIInUse (24), and `live` pauses a running server around a chain change and resumes it after
(a server paused by `vdi_deactivate` stays paused); `hold` / `release` answer the extension
commands `sm_vdi_pause` / `sm_vdi_resume` (`sm.vdipause`) the layer above pauses a data path
with.

`sm.nbd.server` (and hashlib, shutil) are imported on first use: drivers import this module
on every call.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sm.log import get_logger
from sm.settings import Settings

if TYPE_CHECKING:
    from sm.nbd.server import ServerInfo

__all__ = ["Servers", "available", "nbd_dir"]

log = get_logger(__name__)

_SOCK_NAME_LEN = len("00000000-0000-0000-0000-000000000000.sock") + 1


def nbd_dir(run_dir: str | os.PathLike[str]) -> str:
    """Where the servers of a host (run directory) live; socket paths stay < 108 bytes:
    `<run_dir>/nbd`, else `/tmp/sm-nbd-<hash of run_dir>` (deterministic, so later driver
    calls find them)."""
    preferred = os.path.join(os.path.abspath(run_dir), "nbd")
    if len(preferred.encode()) + _SOCK_NAME_LEN <= 107:
        return preferred
    import hashlib

    digest = hashlib.sha256(os.path.abspath(run_dir).encode()).hexdigest()[:16]
    return f"/tmp/sm-nbd-{digest}"


def available(settings: Settings | None = None) -> bool:
    """nbdkit is installed and the data path is not switched off (`SM_DATA_PATH=none`: attach
    hands out `params` only; the test suite sets it outside the data-path tests). Without
    `settings` (a driver's `context.settings`), those of the process environment."""
    if not (settings or Settings.from_environ()).nbd_enabled:
        return False
    import shutil

    return shutil.which("nbdkit") is not None


class Servers:
    """The servers of the host whose run directory is `run_dir`."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.dir = nbd_dir(Path(run_dir))

    @classmethod
    def in_dir(cls, directory: str) -> Servers:
        """The servers of the server directory `directory` itself (e.g. from a socket path)."""
        found = cls.__new__(cls)
        found.dir = directory
        return found

    def find(self, vdi: str) -> ServerInfo | None:
        from sm.nbd import server

        return server.find(vdi, self.dir)

    def start(self, vdi: str, leaf: str, *, writable: bool, opener: str | None = None,
              opener_arg: str | None = None) -> ServerInfo | None:
        """Start or find the server of `vdi` (None without nbdkit)."""
        from sm.errors import VDIInUse
        from sm.nbd import server

        if not available():
            log.info("nbdkit unavailable or SM_DATA_PATH=none: VDI %s without params_nbd", vdi)
            return None
        existing = self.find(vdi)
        if existing is not None:
            if existing.writable or not writable:
                return existing
            raise VDIInUse(f"VDI {vdi} is attached read-only on this host; detach it first")
        return server.start(vdi, leaf, writable=writable, run_dir=self.dir, opener=opener,
                            opener_arg=opener_arg)

    def stop(self, vdi: str) -> None:
        from sm.nbd import server

        server.stop(vdi, run_dir=self.dir)

    def pause(self, vdi: str) -> None:
        from sm.nbd import server

        info = self.find(vdi)
        if info is not None:
            server.pause(info)

    def resume(self, vdi: str, new_path: str | None = None) -> bool:
        """Resume the server of `vdi` (on `new_path` if given); False if there is none."""
        from sm.nbd import server

        info = self.find(vdi)
        if info is None:
            return False
        server.resume(info, new_path, run_dir=self.dir)
        return True

    def hold(self, vdi: str, owner: str) -> str:
        """`sm_vdi_pause` (`sm.vdipause`): pause `vdi`'s running server for `owner`; the answer
        says whether this call paused it ("paused"), found it paused ("held") or found no
        server ("none"). The caller holds the VDI's lock."""
        from sm import vdipause
        from sm.nbd import server

        info = self.find(vdi)
        if info is None:
            return vdipause.NONE
        if server.status(info)["state"] != "running":
            return vdipause.HELD
        server.pause(info, owner=owner)
        return vdipause.PAUSED

    def release(self, vdi: str, owner: str, *, active: bool, path: str | None = None) -> str:
        """`sm_vdi_resume` (`sm.vdipause`): resume `vdi`'s server (on `path` if given) if the
        attachment is `active` and `owner` paused it or its pause is orphaned; else leave it as
        it is (a deactivated VDI waits for `vdi_activate`). The caller holds the VDI's lock."""
        from sm import vdipause
        from sm.nbd import server

        info = self.find(vdi)
        if info is None:
            return vdipause.NONE
        st = server.status(info)
        if st["state"] == "running":
            return vdipause.RUNNING
        if not active or (st.get("paused_by") != owner and not server.pause_orphaned(st)):
            return vdipause.HELD
        server.resume(info, path, run_dir=self.dir)
        return vdipause.RESUMED

    @contextlib.contextmanager
    def live(self, vdi: str) -> Iterator[None]:
        """Pause `vdi`'s running server around a change of its chain or image; resume it
        after, even on error (a failed resume is logged: the server stays paused for the
        next recovery)."""
        from sm.nbd import server

        info = self.find(vdi)
        if info is None:
            yield
            return
        was_running = server.status(info)["state"] == "running"
        server.pause(info)
        try:
            yield
        finally:
            if was_running:
                try:
                    server.resume(info, run_dir=self.dir)
                except Exception as err:
                    log.error("VDI %s: resume of the data path failed (%s)", vdi, err)
