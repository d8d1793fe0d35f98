"""Attachments of the RBD SR on this host, and their NBD servers.

Per host (`SM_RUN_DIR`): `<run_dir>/rbd/<sr_uuid>/<vdi>.json` = `{writable, active}` and the
server descriptor `<vdi>.desc.json` (cluster, pool, namespace, image, snapshot: what nbdkit's
`srtypes.rbd.nbddisk` opens through librbd). Servers live with the other SR types' in
`sm.nbd.serving.nbd_dir(run_dir)`. `live` pauses a running server (drained,
flushed, image closed) around a snapshot/clone/revert/resize and resumes it after, so the
snapshot holds every acknowledged write and the server reopens the changed image; `hold` /
`release` answer `sm_vdi_pause` / `sm_vdi_resume` (`sm.vdipause`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sm import atomic
from sm.nbd.serving import available
from sm.vdipause import NONE

from .config import RbdConfig

if TYPE_CHECKING:
    from sm.nbd.server import ServerInfo
    from sm.nbd.serving import Servers

__all__ = ["Host", "available"]

log = logging.getLogger(__name__)

OPENER = "srtypes.rbd.nbddisk:open_rbd"


class Host:
    """This host's view of one SR's attachments."""

    def __init__(self, run_dir: Path, sr_uuid: str, config: RbdConfig) -> None:
        self.run_dir = run_dir
        self.dir = run_dir / "rbd" / sr_uuid
        self.config = config

    @property
    def nbd_dir(self) -> str:
        return self.servers.dir

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

    # -- servers (the rules are sm.nbd.serving.Servers') --------------------------------

    @property
    def servers(self) -> Servers:
        from sm.nbd.serving import Servers

        return Servers(self.run_dir)

    def find(self, vdi: str) -> ServerInfo | None:
        return self.servers.find(vdi)

    def start(self, vdi: str, image: str, snap: str | None, writable: bool) -> ServerInfo | None:
        if not available():
            return None
        return self.servers.start(vdi, self.descriptor(vdi, image, snap), writable=writable,
                                  opener=OPENER)

    def stop(self, vdi: str) -> None:
        self.servers.stop(vdi)

    def resume(self, vdi: str) -> None:
        self.servers.resume(vdi)

    def pause(self, vdi: str) -> None:
        self.servers.pause(vdi)

    def hold(self, vdi: str, owner: str) -> str:
        """`sm_vdi_pause` (`sm.vdipause`)."""
        if self.attachment(vdi) is None:
            return NONE
        return self.servers.hold(vdi, owner)

    def release(self, vdi: str, owner: str) -> str:
        """`sm_vdi_resume` (`sm.vdipause`)."""
        state = self.attachment(vdi)
        if state is None:
            return NONE
        return self.servers.release(vdi, owner, active=bool(state.get("active")))

    def live(self, vdi: str) -> contextlib.AbstractContextManager[None]:
        """Pause `vdi`'s running server around a change of its image; resume after, unless
        it was paused by vdi_deactivate."""
        if self.attachment(vdi) is None:
            return contextlib.nullcontext()
        return self.servers.live(vdi)

    def rewrite_descriptor(self, vdi: str, image: str, snap: str | None) -> None:
        if (self.dir / f"{vdi}.desc.json").exists():
            self.descriptor(vdi, image, snap)
