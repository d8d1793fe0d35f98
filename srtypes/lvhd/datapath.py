"""How nbdkit opens an LVHD SR's served images: the data path itself is the chain core's
(`sm.chain.datapath`), which hands the server this module's :func:`open_disk` as its
``opener`` (`LvhdVolumes.opener`) and the SR's lvm configuration as ``opener_arg``, so the
served chain resolves parents through :class:`~srtypes.lvhd.storage.LvStorage` exactly as the
driver does. The server's leaf is the LV's name ``/dev/<vg>/<lv>``: it keeps that name across
a chain change, so a resume reopens the same path, now the new leaf. The LV is read and written
through :mod:`.lvio` (device-mapper node when there is one, else the PV at the segments'
offsets).

:func:`open_disk` runs inside nbdkit's Python: it imports only the standard-library parts of
the project (its other imports happen inside it).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .lvio import LvBacking
    from .repo import LvhdRepo

__all__ = ["OPENER", "RawLvDisk", "open_disk", "opener_arg"]

OPENER = "srtypes.lvhd.datapath:open_disk"


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
