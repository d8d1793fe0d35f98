"""An RBD image (or snapshot) as the nbdkit plugin's disk, through librbd (`opener=`).

    nbdkit python sm/nbd/plugin.py leaf=<descriptor.json> opener=srtypes.rbd.nbddisk:open_rbd

The descriptor (written by the driver, `datapath`) names the cluster, pool, namespace, image and
snapshot. Runs inside nbdkit's Python (Debian's /usr/bin/python3, which has python3-rados and
python3-rbd): standard library plus those two. `close` (the plugin's pause) closes the image
and the cluster connection, so a paused server holds nothing open and the driver can snapshot,
roll back or resize the image; resume reopens it.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from srtypes.rbd.ceph import load

__all__ = ["RbdDisk", "open_rbd"]


class RbdDisk:
    def __init__(self, descriptor: str, writable: bool) -> None:
        rados, rbd = load()
        with open(descriptor) as f:
            d: dict[str, Any] = json.load(f)
        self._cluster = rados.Rados(conffile=d.get("conf") or None, rados_id=d["user"],
                                    conf=dict(d["options"]))
        opts = d["options"]
        self._cluster.connect(timeout=int(opts.get("client_mount_timeout", "10")))
        try:
            self._ioctx = self._cluster.open_ioctx(d["pool"])
            self._ioctx.set_namespace(d.get("namespace", ""))
            self._image = rbd.Image(self._ioctx, d["image"], snapshot=d.get("snap") or None,
                                    read_only=not writable)
        except BaseException:
            self._cluster.shutdown()
            raise
        self._writable = writable
        self.size = int(self._image.size())
        self.paths = [f"{d['pool']}/{d.get('namespace', '')}/{d['image']}"
                      + (f"@{d['snap']}" if d.get("snap") else "")]
        self.depth = 1
        self.closed = False
        self._lock = threading.Lock()

    def read(self, offset: int, length: int) -> bytes:
        data: bytes = self._image.read(offset, length)
        return data + bytes(length - len(data))

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if not self._writable:
            raise OSError(30, "read-only VDI")
        self._image.write(bytes(data), offset)

    def flush(self) -> None:
        self._image.flush()

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            try:
                self._image.close()
                self._ioctx.close()
            finally:
                self._cluster.shutdown()

    def __enter__(self) -> RbdDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_rbd(path: str, *, writable: bool = False, arg: str | None = None) -> RbdDisk:
    return RbdDisk(path, writable)
