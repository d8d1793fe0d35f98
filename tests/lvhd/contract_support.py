"""The LVHD SR's configuration for the contract suite (tests/contract/conftest.py).

Each contract test gets its own loop device (a sparse file in a directory of its own, which is
the ``storage_root`` the suite snapshots for "nothing changed"); its path and a checker lvm
configuration directory travel in environment variables set by the ``lvhd_device`` fixture.
Data is reached through :class:`srtypes.lvhd.storage.LvStorage`, as the driver does.

Registered in tests/contract/conftest.py with :data:`CONFIG` and the ``lvhd_device`` fixture.
"Nothing changed" compares :func:`state` (every LV's size, tags and bytes), not a directory
tree: the device exists before sr_create, so an empty state means "no SR storage".
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

DEVICE_VAR = "SM_TEST_LVHD_DEVICE"
DIR_VAR = "SM_TEST_LVHD_DIR"
MiB = 1024 * 1024


def device_config(tmp: Path) -> dict[str, str]:
    return {"device": os.environ[DEVICE_VAR]}


def storage_root(dconf: Mapping[str, str]) -> Path:
    return Path(os.environ[DIR_VAR]) / "pv"


def _lvm() -> Any:
    from sm.executor import SubprocessExecutor
    from srtypes.lvhd.lvm import Lvm, write_config

    conf = Path(os.environ[DIR_VAR]) / "checker-lvm"
    write_config(conf, [os.environ[DEVICE_VAR]])
    return Lvm(SubprocessExecutor(), conf, devices=[os.environ[DEVICE_VAR]])


def _storage_for(path: str) -> Any:
    from srtypes.lvhd.storage import LvStorage

    return LvStorage(_lvm(), os.path.basename(os.path.dirname(path)))


class LvRawHandle:
    def __init__(self, path: str, writable: bool) -> None:
        self.image = _storage_for(path).open(path, writable)
        self.size: int = self.image.size()

    def read(self, offset: int, length: int) -> bytes:
        data: bytes = self.image.pread(length, offset)
        return data

    def write(self, offset: int, data: bytes) -> None:
        self.image.pwrite(data, offset)

    def flush(self) -> None:
        self.image.fsync()

    def close(self) -> None:
        self.image.close()


def open_data(attached: Mapping[str, Any], writable: bool) -> Any:
    from sm import vhd

    path = str(attached["params"])
    if os.path.basename(path).startswith("LV-"):
        return LvRawHandle(path, writable)
    return vhd.open_chain(path, writable=writable, storage=_storage_for(path))


def images(dconf: Mapping[str, str]) -> dict[str, Any]:
    from sm import vhd
    from srtypes.lvhd.storage import LvStorage
    from tests.contract.harness import ImageFacts

    lvm = _lvm()
    out: dict[str, Any] = {}
    for vg in lvm.find_sr_vgs():
        storage = LvStorage(lvm, vg.name)
        for lv in lvm.lvs(vg.name):
            kind, _, uuid = lv.name.partition("-")
            path = storage.path(lv.name)
            if kind == "LV":
                out[uuid] = ImageFacts(uuid, path, "raw", lv.size)
            elif kind == "VHD":
                info = vhd.info(path, storage=storage)
                parent = str(info.parent_uuid) if info.parent_uuid else None
                out[uuid] = ImageFacts(uuid, path, "vhd", info.virtual_size, parent,
                                       info.hidden)
    return out


def check_image(facts: Any) -> list[str]:
    from sm import vhd

    if facts.format == "raw":
        return []
    return [str(p) for p in vhd.check(facts.path, storage=_storage_for(facts.path))]


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (lvm2 on loop devices)"
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices"
    return None


def lvhd_device(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A 256 MiB loop device of the test's own; removed (with any VG on it) afterwards."""
    from sm.executor import CommandError, SubprocessExecutor

    ex = SubprocessExecutor(default_timeout=60)
    base = tmp_path / "lvhd"
    (base / "pv").mkdir(parents=True)
    image = base / "pv" / "pv.img"
    with open(image, "wb") as f:
        f.truncate(256 * MiB)
    dev = ex.run(["losetup", "-f", "--show", str(image)]).text().strip()
    monkeypatch.setenv(DEVICE_VAR, dev)
    monkeypatch.setenv(DIR_VAR, str(base))
    try:
        yield
    finally:
        lvm = _lvm()
        try:
            for vg in lvm.find_sr_vgs():
                lvm.vgremove(vg.name)
            if lvm.pvs([dev]):
                lvm.pvremove([dev])
        except CommandError:
            pass
        ex.run(["losetup", "-d", dev], check=False)


def state(dconf: Mapping[str, str]) -> dict[str, str]:
    """Every LV of every SR VG on the test's device: size, tags and a hash of its bytes (the
    "nothing changed" check; empty when no SR exists on the device)."""
    import hashlib

    from srtypes.lvhd.storage import LvStorage

    lvm = _lvm()
    out: dict[str, str] = {}
    for vg in lvm.find_sr_vgs():
        storage = LvStorage(lvm, vg.name)
        for lv in lvm.lvs(vg.name):
            image = storage.open(storage.path(lv.name), False)
            try:
                digest = hashlib.sha256(image.pread(lv.size, 0)).hexdigest()
            finally:
                image.close()
            out[f"{vg.name}/{lv.name}"] = f"{lv.size}:{','.join(lv.tags)}:{digest}"
    return out


def chain_paths(attached: Mapping[str, Any]) -> list[str]:
    """The chain's images copied out of the LVs into files named like the LVs (the parent
    locators are relative, ``./VHD-<uuid>``), for libvhdi, which reads files only."""
    import tempfile

    from sm import vhd

    path = str(attached["params"])
    storage = _storage_for(path)
    out_dir = Path(tempfile.mkdtemp(prefix="chain-", dir=os.environ[DIR_VAR]))
    paths = []
    for info in vhd.chain(path, storage=storage):
        name = os.path.basename(str(info.path))
        image = storage.open(str(info.path), False)
        try:
            (out_dir / name).write_bytes(image.pread(info.physical_size, 0))
        finally:
            image.close()
        paths.append(str(out_dir / name))
    return paths


def _sr_vg() -> str:
    (vg,) = _lvm().find_sr_vgs()
    return str(vg.name)


def adopt(dconf: Mapping[str, str], size: int, writes: list[tuple[int, bytes]]) -> str:
    """An administrator writes a VHD into a new LV (under another name, then renamed in)."""
    import uuid as uuidlib

    from sm import vhd
    from srtypes.lvhd.repo import full_vhd_size
    from srtypes.lvhd.storage import LvStorage

    new = str(uuidlib.uuid4())
    lvm, vg = _lvm(), _sr_vg()
    staging = f"staging-{new}"
    lvm.lvcreate(vg, staging, full_vhd_size(size))
    storage = LvStorage(lvm, vg)
    vhd.create(storage.path(staging), size, storage=storage, uuid=uuidlib.UUID(new))
    with vhd.open_chain(storage.path(staging), writable=True, storage=storage) as disk:
        for offset, data in writes:
            disk.write(offset, data)
        disk.flush()
    lvm.lvrename(vg, staging, f"VHD-{new}")
    return new


def remove(dconf: Mapping[str, str], uuid: str) -> None:
    lvm, vg = _lvm(), _sr_vg()
    for kind in ("VHD", "LV"):
        if lvm.lv_exists(vg, f"{kind}-{uuid}"):
            lvm.lvremove(vg, f"{kind}-{uuid}")


CONFIG: dict[str, Any] = {
    "state": state,
    "chain_paths": chain_paths,
    "adopt": adopt,
    "remove": remove,
    "make_device_config": device_config,
    "open_data": open_data,
    "images": images,
    "check_image": check_image,
    "storage_root": storage_root,
    "unavailable": unavailable,
}
"""The type-specific fields of the contract suite's SRTypeConfig for lvhd."""
