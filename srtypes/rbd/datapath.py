"""Attachments of the RBD SR on this host, and their NBD servers.

Per host (`SM_RUN_DIR`): `<run_dir>/rbd/<sr_uuid>/<vdi>.json` = `{writable, active}` and the
server descriptor `<vdi>.desc.json` (cluster, pool, namespace, image, snapshot: what nbdkit's
`srtypes.rbd.nbddisk` opens through librbd). Servers live with the other SR types' in
`<run_dir>/nbd` (`srtypes.file.datapath.nbd_dir`). `live` pauses a running server (drained,
flushed, image closed) around a snapshot/clone/revert/resize and resumes it after, so the
snapshot holds every acknowledged write and the server reopens the changed image.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sm import atomic

from .config import RbdConfig

if TYPE_CHECKING:
    from sm.nbd.server import ServerInfo

__all__ = ["Host", "available"]

log = logging.getLogger(__name__)

OPENER = "srtypes.rbd.nbddisk:open_rbd"


def available() -> bool:
    if os.environ.get("SM_DATA_PATH", "nbd") == "none":
        return False
    return shutil.which("nbdkit") is not None


class Host:
    """This host's view of one SR's attachments."""

    def __init__(self, run_dir: Path, sr_uuid: str, config: RbdConfig) -> None:
        self.run_dir = run_dir
        self.dir = run_dir / "rbd" / sr_uuid
        self.config = config

    @property
    def nbd_dir(self) -> str:
        from srtypes.file.datapath import nbd_dir

        return nbd_dir(self.run_dir)

    def attachment(self, vdi: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.dir / f"{vdi}.json").read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        return data

    def attached(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.name[:-5] for p in self.dir.iterdir()
                      if p.name.endswith(".json") and not p.name.endswith(".desc.json"))

    def mark(self, vdi: str, **state: Any) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic.write_atomic(str(self.dir / f"{vdi}.json"),
                            json.dumps(state, sort_keys=True).encode(), mode=0o600)

    def forget(self, vdi: str) -> None:
        for name in (f"{vdi}.json", f"{vdi}.desc.json"):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / name).unlink()

    def descriptor(self, vdi: str, image: str, snap: str | None) -> str:
        path = self.dir / f"{vdi}.desc.json"
        self.dir.mkdir(parents=True, exist_ok=True)
        data = {**self.config.to_json(), "image": image, "snap": snap}
        atomic.write_atomic(str(path), json.dumps(data, sort_keys=True).encode(), mode=0o600)
        return str(path)

    # -- servers -------------------------------------------------------------------------

    def find(self, vdi: str) -> ServerInfo | None:
        from sm.nbd import server

        return server.find(vdi, self.nbd_dir)

    def start(self, vdi: str, image: str, snap: str | None, writable: bool) -> ServerInfo | None:
        from sm.errors import VDIInUse
        from sm.nbd import server

        if not available():
            return None
        existing = self.find(vdi)
        if existing is not None:
            if existing.writable or not writable:
                return existing
            raise VDIInUse(f"VDI {vdi} is attached read-only on this host; detach it first")
        desc = self.descriptor(vdi, image, snap)
        return server.start(vdi, desc, writable=writable, run_dir=self.nbd_dir, opener=OPENER)

    def stop(self, vdi: str) -> None:
        from sm.nbd import server

        server.stop(vdi, run_dir=self.nbd_dir)

    def resume(self, vdi: str) -> None:
        from sm.nbd import server

        info = self.find(vdi)
        if info is not None:
            server.resume(info, run_dir=self.nbd_dir)

    def pause(self, vdi: str) -> None:
        from sm.nbd import server

        info = self.find(vdi)
        if info is not None:
            server.pause(info)

    @contextlib.contextmanager
    def live(self, vdi: str, image: str | None = None) -> Iterator[None]:
        """Pause `vdi`'s running server around a change of its image; resume after (on
        `image` if the VDI's image was replaced), unless it was paused by vdi_deactivate."""
        from sm.nbd import server

        info = self.find(vdi) if self.attachment(vdi) else None
        if info is None:
            yield
            return
        was_running = server.status(info)["state"] == "running"
        server.pause(info)
        try:
            yield
        finally:
            if was_running:
                server.resume(info, run_dir=self.nbd_dir)

    def rewrite_descriptor(self, vdi: str, image: str, snap: str | None) -> None:
        if (self.dir / f"{vdi}.desc.json").exists():
            self.descriptor(vdi, image, snap)
