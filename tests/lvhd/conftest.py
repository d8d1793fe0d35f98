"""Real lvm2 on loop devices, isolated per pytest(-xdist) worker.

Every VG made here gets its own sparse file(s), loop device(s), lvm.conf directory (whose
global_filter accepts only those loop devices) and a unique ``VG_XenStorage-<uuid>`` name, so
parallel workers never see each other's volumes. Everything is torn down at the end even when
tests fail: vgremove, pvremove, losetup -d, files removed.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sm.executor import CommandError, SubprocessExecutor
from srtypes.lvhd.lvm import VG_PREFIX, Lvm, write_config
from tests.conftest import require_root, require_tool

log = logging.getLogger(__name__)
MiB = 1024 * 1024


@dataclass
class VgHandle:
    lvm: Lvm
    name: str
    devices: list[str]
    system_dir: Path
    extent_size: int
    files: list[Path] = field(default_factory=list)


class LvmSandbox:
    """Makes loop-backed VGs, each with its own isolated lvm configuration."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.executor = SubprocessExecutor(default_timeout=60)
        self.vgs: list[VgHandle] = []
        self.loops: list[tuple[str, Path]] = []

    def loop_device(self, size: int) -> tuple[str, Path]:
        path = self.base / f"pv-{uuid.uuid4().hex[:12]}.img"
        with open(path, "wb") as f:
            f.truncate(size)
        dev = self.executor.run(["losetup", "-f", "--show", str(path)]).text().strip()
        self.loops.append((dev, path))
        return dev, path

    def new_vg(
        self, *, pvs: int = 1, pv_size: int = 256 * MiB, extent_size: int | None = None
    ) -> VgHandle:
        loops = [self.loop_device(pv_size) for _ in range(pvs)]
        devices = [dev for dev, _ in loops]
        name = VG_PREFIX + str(uuid.uuid4())
        system_dir = self.base / f"lvm-{name}"
        write_config(system_dir, devices)
        lvm = Lvm(self.executor, system_dir, devices=devices)
        lvm.pvcreate(devices)
        lvm.vgcreate(name, devices, extent_size=extent_size)
        vg = VgHandle(lvm, name, devices, system_dir, lvm.vgs(name).extent_size)
        vg.files = [p for _, p in loops]
        self.vgs.append(vg)
        return vg

    def destroy(self, vg: VgHandle) -> None:
        try:
            vg.lvm.vgremove(vg.name)
        except CommandError as err:
            log.warning("lvm teardown of %s: %s", vg.name, err)
        try:
            vg.lvm.pvremove(vg.devices)
        except CommandError as err:
            log.warning("lvm teardown of %s: %s", vg.devices, err)
        for dev in vg.devices:
            self.detach(dev)
        self.vgs.remove(vg)

    def detach(self, dev: str) -> None:
        for entry in [e for e in self.loops if e[0] == dev]:
            try:
                self.executor.run(["losetup", "-d", dev])
            except CommandError as err:
                log.warning("losetup -d %s: %s", dev, err)
            entry[1].unlink(missing_ok=True)
            self.loops.remove(entry)

    def cleanup(self) -> None:
        for vg in list(self.vgs):
            self.destroy(vg)
        for dev, _ in list(self.loops):
            self.detach(dev)


@pytest.fixture(scope="session")
def lvm_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LvmSandbox]:
    require_root()
    require_tool("lvm", "losetup")
    if not os.path.exists("/dev/loop-control"):
        pytest.skip("no loop devices (/dev/loop-control missing)")
    # tmp_path_factory is per xdist worker, so worker directories never collide.
    sandbox = LvmSandbox(tmp_path_factory.mktemp("lvm"))
    try:
        yield sandbox
    finally:
        sandbox.cleanup()


@pytest.fixture(scope="session")
def lvm_vg(lvm_sandbox: LvmSandbox) -> VgHandle:
    """One shared VG (one 256 MiB PV, 4 MiB extents) per worker; tests use unique LV names
    and remove what they create."""
    return lvm_sandbox.new_vg()


@pytest.fixture
def fresh_vg(lvm_sandbox: LvmSandbox) -> Iterator[VgHandle]:
    """A VG of its own for a test that needs a predictable allocation."""
    vg = lvm_sandbox.new_vg(pv_size=64 * MiB)
    yield vg
    lvm_sandbox.destroy(vg)


@pytest.fixture
def lv_name() -> str:
    return f"VHD-{uuid.uuid4()}"
