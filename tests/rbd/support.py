"""What the RBD tests share: device_config for the session cluster, independent readers of
the cluster (librados/librbd in the test process, `rbd export`), the contract-suite entry."""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.rbd.cluster import Cluster, missing_tools

CONF_VAR = "SM_TEST_RBD_CONF"
NS_VAR = "SM_TEST_RBD_NAMESPACE"
POOL = "rbd"


def ceph_available() -> str | None:
    missing = missing_tools()
    if missing:
        return f"Ceph tools missing: {', '.join(missing)} (scripts/setup.sh installs them)"
    try:
        from srtypes.rbd.ceph import load

        load()
    except ImportError as err:
        return str(err)
    if os.geteuid() != 0:
        return "the test cluster needs root (daemons, /tmp)"
    return None


def new_namespace(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> str:
    ns = "t" + uuid.uuid4().hex[:12]
    monkeypatch.setenv(CONF_VAR, cluster.conf)
    monkeypatch.setenv(NS_VAR, ns)
    return ns


def device_config(tmp: Path | None = None) -> dict[str, str]:
    # conf first: the contract suite drops the first key to test "missing cluster" (102)
    return {"conf": os.environ[CONF_VAR], "pool": POOL, "namespace": os.environ[NS_VAR],
            "user": "admin"}


class Rados:
    """librados/librbd on the SR's namespace, in the test process (not through the SR)."""

    def __init__(self, dconf: Mapping[str, str]) -> None:
        from srtypes.rbd.ceph import load

        self.rados, self.rbd = load()
        conf = dconf.get("conf") or os.environ[CONF_VAR]  # a test may have dropped it
        self.cluster = self.rados.Rados(conffile=conf, rados_id="admin")
        self.cluster.connect(timeout=10)
        self.ioctx = self.cluster.open_ioctx(dconf.get("pool", POOL))
        self.ioctx.set_namespace(dconf.get("namespace", ""))

    def close(self) -> None:
        self.ioctx.close()
        self.cluster.shutdown()

    def __enter__(self) -> Rados:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def objects(self) -> dict[str, str]:
        """Every object of the namespace: a hash of its data, omap and xattrs (lock xattrs,
        which librbd's exclusive lock leaves behind on image headers, excluded)."""
        out: dict[str, str] = {}
        for obj in self.ioctx.list_objects():
            name = obj.key
            h = hashlib.sha256()
            size, _ = self.ioctx.stat(name)
            h.update(self.ioctx.read(name, size) if size else b"")
            with self.rados.ReadOpCtx() as op:
                it, _ = self.ioctx.get_omap_vals(op, "", "", 100000)
                self.ioctx.operate_read_op(op, name)
                for k, v in sorted(it):
                    h.update(k.encode() + b"=" + (v or b"") + b";")
            for k, v in sorted(self.ioctx.get_xattrs(name)):
                if not k.startswith("lock."):
                    h.update(k.encode() + b"=" + (v or b"") + b";")
            out[name] = h.hexdigest()
        return out

    def images(self) -> dict[str, Any]:
        """uuid -> ImageFacts for every image (its `sm-vdi`) and every snapshot (its name)."""
        from tests.contract.harness import ImageFacts

        out: dict[str, Any] = {}
        for name in self.rbd.RBD().list(self.ioctx):
            with self.rbd.Image(self.ioctx, name, read_only=True) as im:
                try:
                    vdi = im.metadata_get("sm-vdi")
                except KeyError:
                    vdi = name
                try:
                    parent = im.get_parent_image_spec()["snap_name"]
                except self.rbd.ImageNotFound:
                    parent = None
                out[vdi] = ImageFacts(vdi, f"{name}", "raw", int(im.size()), parent)
                for s in im.list_snaps():
                    out[s["name"]] = ImageFacts(s["name"], f"{name}@{s['name']}", "raw",
                                                int(s["size"]), vdi)
        return out


def export(dconf: Mapping[str, str], spec: str) -> bytes:
    """`rbd export` of `image[@snap]` of the namespace: an independent reader."""
    path = f"/tmp/rbd-export-{uuid.uuid4().hex}"
    try:
        subprocess.run(["rbd", "--conf", dconf["conf"], "export", "--no-progress",
                        f"{dconf['pool']}/{dconf['namespace']}/{spec}", path],
                       check=True, capture_output=True, timeout=120)
        with open(path, "rb") as f:
            return f.read()
    finally:
        if os.path.exists(path):
            os.unlink(path)


def parse_params(params: str) -> tuple[str, str, str, str | None, dict[str, str]]:
    """`rbd:pool/ns/image@snap:id=..:conf=..` -> (pool, ns, image, snap, options)."""
    assert params.startswith("rbd:"), params
    path, *opts = params[4:].split(":")
    options = dict(o.split("=", 1) for o in opts)
    parts = path.split("/")
    pool, ns, rest = (parts[0], "", parts[1]) if len(parts) == 2 else parts
    image, _, snap = rest.partition("@")
    return pool, ns, image, snap or None, options


class ImageHandle:
    """An attached VDI reached through librbd from its `params` (the rbd: spec)."""

    def __init__(self, params: str, writable: bool) -> None:
        pool, ns, image, snap, options = parse_params(params)
        self._r = Rados({"conf": options.get("conf", ""), "pool": pool, "namespace": ns})
        self._im = self._r.rbd.Image(self._r.ioctx, image, snapshot=snap, read_only=not writable)
        self.size = int(self._im.size())

    def read(self, offset: int, length: int) -> bytes:
        data: bytes = self._im.read(offset, length)
        return data

    def write(self, offset: int, data: bytes) -> None:
        assert offset + len(data) <= self.size
        self._im.write(bytes(data), offset)

    def flush(self) -> None:
        self._im.flush()

    def close(self) -> None:
        self._im.close()
        self._r.close()


def open_data(attached: Mapping[str, Any], writable: bool) -> ImageHandle:
    return ImageHandle(str(attached["params"]), writable)


def state(dconf: Mapping[str, str]) -> dict[str, str]:
    with Rados(dconf) as r:
        return r.objects()


def images(dconf: Mapping[str, str]) -> dict[str, Any]:
    with Rados(dconf) as r:
        return r.images()


def check_image(facts: Any) -> list[str]:
    return []


def adopt(dconf: Mapping[str, str], size: int, writes: list[tuple[int, bytes]]) -> str:
    """An administrator creates an image named by a fresh uuid in the SR's namespace."""
    new = str(uuid.uuid4())
    with Rados(dconf) as r:
        r.rbd.RBD().create(r.ioctx, new, size)
        with r.rbd.Image(r.ioctx, new) as im:
            for offset, data in writes:
                im.write(data, offset)
    return new


def remove(dconf: Mapping[str, str], vdi: str) -> None:
    with Rados(dconf) as r:
        for name in r.rbd.RBD().list(r.ioctx):
            with r.rbd.Image(r.ioctx, name, read_only=True) as im:
                try:
                    owner = im.metadata_get("sm-vdi")
                except KeyError:
                    owner = name
                snaps = [s["name"] for s in im.list_snaps()]
            if owner == vdi:
                assert not snaps, snaps
                r.rbd.RBD().remove(r.ioctx, name)


def independent_read(dconf: Mapping[str, str], attached: Mapping[str, Any]) -> bytes:
    _, _, image, snap, _ = parse_params(str(attached["params"]))
    return export(dconf, image + (f"@{snap}" if snap else ""))


def unavailable() -> str | None:
    return ceph_available()


def contract_config() -> Any:
    """The RBD SR's entry of the contract suite (tests/contract/conftest.py)."""
    from tests.contract.harness import SRTypeConfig
    from tests.smapi import ROOT

    return SRTypeConfig(
        name="rbd", driver="srtypes.rbd:RBDSR", executable=ROOT / "bin" / "RBDSR",
        make_device_config=device_config, open_data=open_data, images=images,
        check_image=check_image, storage_root=lambda dconf: Path("/nonexistent/rbd"),
        adopt=adopt, remove=remove, unavailable=unavailable, fixture="rbd_namespace",
        state=state, independent_read=independent_read, snapshots_raw=True,
        snapshot_is_base=False, depth_grows_by="clone",
    )
