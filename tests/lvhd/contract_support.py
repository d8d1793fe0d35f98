"""The LVHD SR's configuration for the contract suite (tests/contract/conftest.py).

Each contract test gets its own loop device (a sparse file in a directory of its own, which is
the ``storage_root`` the suite snapshots for "nothing changed"); its path and a checker lvm
configuration directory travel in environment variables set by the ``lvhd_device`` fixture.
Data is reached through :class:`srtypes.lvhd.storage.LvStorage`, as the driver does.

NOT YET REGISTERED in tests/contract/conftest.py: with it, 37 contract tests pass and these
fail on assumptions of directory-based SRs (to settle in the suite or here): the storage root
must not exist before sr_create (a device always exists), "missing location" cases, raw VDI
sizes (LV sizes round up to extents), snapshot type=single. Register with::

    SRTypeConfig(name="lvhd", driver="srtypes.lvhd:LVHDSR", executable=ROOT / "bin" / "LVHDSR",
                 make_device_config=device_config, open_data=open_data, images=images,
                 check_image=check_image, storage_root=storage_root, unavailable=unavailable,
                 fixture="lvhd_device")   # plus a conftest fixture wrapping lvhd_device()
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
