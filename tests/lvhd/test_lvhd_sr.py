"""The LVHD SR over the SMAPIv1 wire, on real lvm2 with loop devices (root)."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sm import vhd
from sm.executor import SubprocessExecutor
from srtypes.lvhd import LVHDSR
from srtypes.lvhd.lvm import VG_PREFIX, Lvm, write_config
from srtypes.lvhd.repo import full_vhd_size, metadata_size
from srtypes.lvhd.storage import LvStorage
from tests.smapi import ROOT, InProcess, Process, SMFault, request

from .conftest import LvmSandbox, MiB

pytestmark = pytest.mark.root


@dataclass
class Sr:
    """A device, a transport with its own run/state dirs, and a checker view of lvm."""

    device: str
    uuid: str
    transport: Any
    base: Path
    allocation: str = "thin"

    @property
    def vg(self) -> str:
        return VG_PREFIX + self.uuid

    def dconf(self) -> dict[str, str]:
        return {"device": self.device, "allocation": self.allocation}

    def call(self, command: str, args: list[Any] | None = None, **kw: Any) -> Any:
        struct = request(command, args or [], device_config=self.dconf(), sr_uuid=self.uuid,
                         **kw)
        return self.transport.call(struct)

    def lvm(self) -> Lvm:
        conf = self.base / "checker-lvm"
        write_config(conf, [self.device])
        return Lvm(SubprocessExecutor(), conf, devices=[self.device])

    def lv_sizes(self) -> dict[str, int]:
        return {lv.name: lv.size for lv in self.lvm().lvs(self.vg)}

    def storage(self) -> LvStorage:
        return LvStorage(self.lvm(), self.vg)

    def records(self) -> dict[str, dict[str, Any]]:
        return {r["uuid"]: r for r in self.call("sm_vdi_list")}

    def create_vdi(self, size: int, **sm_config: str) -> str:
        return str(self.call("vdi_create", [str(size), "disk"],
                             vdi_sm_config=sm_config)["uuid"])


def _transport(base: Path, *, process: bool = False) -> Any:
    env = {"SM_RUN_DIR": str(base / "run"), "SM_STATE_DIR": str(base / "state")}
    if process:
        return Process(env=env, executable=ROOT / "bin" / "LVHDSR")
    return InProcess(env=env, driver=LVHDSR)


def _extent_round(n: int, extent: int = 4 * MiB) -> int:
    return -(-n // extent) * extent


@pytest.fixture
def device(lvm_sandbox: LvmSandbox) -> Iterator[str]:
    dev, _ = lvm_sandbox.loop_device(128 * MiB)
    yield dev
    lvm_sandbox.detach(dev)


def _make(device: str, tmp_path: Path, allocation: str) -> Iterator[Sr]:
    sr = Sr(device, str(uuidlib.uuid4()), _transport(tmp_path / "a"), tmp_path, allocation)
    sr.call("sr_create", ["0"])
    sr.call("sr_attach")
    yield sr
    lvm = sr.lvm()
    if lvm.vg_exists(sr.vg):
        lvm.vgremove(sr.vg)
        lvm.pvremove([device])


@pytest.fixture
def sr(device: str, tmp_path: Path) -> Iterator[Sr]:
    yield from _make(device, tmp_path, "thin")


@pytest.fixture
def thick_sr(device: str, tmp_path: Path) -> Iterator[Sr]:
    yield from _make(device, tmp_path, "thick")


def test_lifecycle_probe_update(device: str, tmp_path: Path) -> None:
    sr = Sr(device, str(uuidlib.uuid4()), _transport(tmp_path), tmp_path)
    empty = sr.transport.call(request("sr_probe", device_config=sr.dconf()))
    assert "<UUID>" not in empty
    sr.call("sr_create", ["0"])
    with pytest.raises(SMFault) as err:
        sr.call("sr_create", ["0"])
    assert err.value.code == 42
    assert sr.lv_sizes() == {"MGT": 8 * MiB}
    listed = sr.transport.call(request("sr_probe", device_config=sr.dconf()))
    assert f"<UUID>{sr.uuid}</UUID>" in listed and listed.startswith("<?xml")
    sr.call("sr_attach")
    sr.call("sr_scan")
    sr.call("sr_update")
    vg = sr.lvm().vgs(sr.vg)
    sr.call("sr_detach")
    sr.call("sr_attach")
    assert vg.size > 100 * MiB
    sr.call("sr_detach")
    sr.call("sr_delete")
    assert not sr.lvm().vg_exists(sr.vg)
    assert "<UUID>" not in sr.transport.call(request("sr_probe", device_config=sr.dconf()))


def test_missing_device_is_90(tmp_path: Path) -> None:
    transport = _transport(tmp_path)
    with pytest.raises(SMFault) as err:
        transport.call(request("sr_create", ["0"], device_config={},
                               sr_uuid=str(uuidlib.uuid4())))
    assert err.value.code == 90


def test_thin_vdi_sizes_and_data(sr: Sr) -> None:
    size = 20 * MiB
    vdi = sr.create_vdi(size)
    lv = f"VHD-{vdi}"
    assert sr.lv_sizes()[lv] == _extent_round(metadata_size(size))
    rec = sr.records()[vdi]
    assert rec["virtual_size"] == str(size) and rec["vdi_type"] == "vhd"
    path = sr.call("vdi_attach", [True], vdi_uuid=vdi)["params"]
    assert path == f"/dev/{sr.vg}/{lv}"
    assert sr.lv_sizes()[lv] == _extent_round(full_vhd_size(size))
    disk = vhd.open_chain(path, writable=True, storage=sr.storage())
    try:
        disk.write(5 * MiB, b"lvhd" * 1024)
        disk.flush()
    finally:
        disk.close()
    sr.call("vdi_detach", vdi_uuid=vdi)
    physical = vhd.physical_size(path, storage=sr.storage())
    assert physical > 2 * MiB
    assert sr.lv_sizes()[lv] == _extent_round(physical)
    assert sr.records()[vdi]["physical_utilisation"] == str(_extent_round(physical))
    disk = vhd.open_chain(path, storage=sr.storage())
    try:
        assert disk.read(5 * MiB, 4096) == b"lvhd" * 1024
        assert disk.read(0, 512) == bytes(512)
    finally:
        disk.close()
    assert vhd.check(path, storage=sr.storage()) is not None
    with pytest.raises(SMFault) as err:
        sr.call("sr_delete")
    assert err.value.code == 39
    sr.call("vdi_delete", vdi_uuid=vdi)
    assert lv not in sr.lv_sizes() and vdi not in sr.records()


def test_thick_vdi_is_full_size(thick_sr: Sr) -> None:
    size = 10 * MiB
    vdi = thick_sr.create_vdi(size)
    full = _extent_round(full_vhd_size(size))
    assert thick_sr.lv_sizes()[f"VHD-{vdi}"] == full
    thick_sr.call("vdi_attach", [True], vdi_uuid=vdi)
    thick_sr.call("vdi_detach", vdi_uuid=vdi)
    assert thick_sr.lv_sizes()[f"VHD-{vdi}"] == full


def test_raw_vdi(sr: Sr) -> None:
    vdi = sr.create_vdi(6 * MiB, type="raw")
    assert sr.lv_sizes()[f"LV-{vdi}"] == 8 * MiB
    assert sr.records()[vdi]["vdi_type"] == "raw"
    sr.call("vdi_attach", [True], vdi_uuid=vdi)
    sr.call("vdi_detach", vdi_uuid=vdi)
    sr.call("vdi_delete", vdi_uuid=vdi)
    assert f"LV-{vdi}" not in sr.lv_sizes()


def test_out_of_space_is_44_and_changes_nothing(sr: Sr) -> None:
    vdi = sr.create_vdi(60 * MiB)
    sr.call("vdi_attach", [True], vdi_uuid=vdi)  # inflated: ~64 MiB of 120 used
    before = (sr.lv_sizes(), sr.records())
    with pytest.raises(SMFault) as err:
        sr.create_vdi(200 * MiB, type="raw")  # more than the whole VG: a size it never holds
    assert err.value.code == 79
    with pytest.raises(SMFault) as err:
        sr.create_vdi(100 * MiB, type="raw")  # fits the VG, not what is free in it now
    assert err.value.code == 44
    assert (sr.lv_sizes(), sr.records()) == before
    big = sr.create_vdi(100 * MiB)  # thin: only metadata now
    after_big = (sr.lv_sizes(), sr.records())
    with pytest.raises(SMFault) as err:
        sr.call("vdi_attach", [True], vdi_uuid=big)  # inflating needs ~100 MiB more
    assert err.value.code == 44
    assert (sr.lv_sizes(), sr.records()) == after_big
    sr.call("vdi_delete", vdi_uuid=big)
    assert (sr.lv_sizes(), sr.records()) == before
    sr.call("vdi_detach", vdi_uuid=vdi)
    sr.call("vdi_delete", vdi_uuid=vdi)


def test_records_survive_a_move(sr: Sr, tmp_path: Path) -> None:
    vdi = sr.create_vdi(8 * MiB)
    sr.call("vdi_attach", [True], vdi_uuid=vdi)
    path = f"/dev/{sr.vg}/VHD-{vdi}"
    disk = vhd.open_chain(path, writable=True, storage=sr.storage())
    disk.write(0, b"moved" * 100)
    disk.close()
    sr.call("vdi_detach", vdi_uuid=vdi)
    sr.call("sr_detach")
    # another host: fresh run and state directories, nothing but the VG on the device
    moved = Sr(sr.device, sr.uuid, _transport(tmp_path / "elsewhere"), tmp_path / "b")
    (tmp_path / "b").mkdir()
    moved.call("sr_attach")
    rec = moved.records()[vdi]
    assert rec["name_label"] == "disk" and rec["virtual_size"] == str(8 * MiB)
    disk = vhd.open_chain(path, storage=moved.storage())
    try:
        assert disk.read(0, 500) == b"moved" * 100
    finally:
        disk.close()
    moved.call("vdi_delete", vdi_uuid=vdi)


@pytest.mark.parametrize("point", ["vdi_delete:lv", "inflate:resized"])
def test_crash_then_attach_repairs(sr: Sr, tmp_path: Path, point: str) -> None:
    vdi = sr.create_vdi(8 * MiB)
    proc = Process(env={**sr.transport.env, "SM_TEST_FAULTS": "1", "SM_CRASH_AT": point},
                   executable=ROOT / "bin" / "LVHDSR")
    command = ("vdi_delete", []) if point.startswith("vdi_delete") else ("vdi_attach", [True])
    out = proc.send(_dumps(sr, command[0], command[1], vdi))
    assert out.signal == 9, out.stderr
    sr.call("sr_attach")
    records = sr.records()
    lvs = sr.lv_sizes()
    if point.startswith("vdi_delete"):
        assert vdi not in records and f"VHD-{vdi}" not in lvs
    else:
        assert records[vdi]["physical_utilisation"] == str(lvs[f"VHD-{vdi}"])
        sr.call("vdi_delete", vdi_uuid=vdi)


def _dumps(sr: Sr, command: str, args: list[Any], vdi: str) -> str:
    from tests.smapi import dumps

    return dumps(request(command, args, device_config=sr.dconf(), sr_uuid=sr.uuid,
                         vdi_uuid=vdi))


def _write(sr: Sr, vdi: str, offset: int, data: bytes) -> None:
    disk = vhd.open_chain(f"/dev/{sr.vg}/VHD-{vdi}", writable=True, storage=sr.storage())
    try:
        disk.write(offset, data)
        disk.flush()
    finally:
        disk.close()


def _read(sr: Sr, vdi: str, offset: int, length: int) -> bytes:
    disk = vhd.open_chain(f"/dev/{sr.vg}/VHD-{vdi}", storage=sr.storage())
    try:
        return disk.read(offset, length)
    finally:
        disk.close()


@pytest.mark.parametrize("command", ["vdi_snapshot", "vdi_clone"])
def test_snapshot_and_clone(sr: Sr, command: str) -> None:
    size = 8 * MiB
    vdi = sr.create_vdi(size)
    sr.call("vdi_attach", [True], vdi_uuid=vdi)
    _write(sr, vdi, 0, b"A" * 4096)
    new = sr.call(command, vdi_uuid=vdi)["uuid"]
    _write(sr, vdi, 0, b"B" * 4096)
    assert _read(sr, new, 0, 4096) == b"A" * 4096
    assert _read(sr, vdi, 0, 4096) == b"B" * 4096
    records = sr.records()
    base = records[vdi]["parent"]
    assert records[new]["parent"] == base and records[base]["hidden"]
    assert records[new]["is_a_snapshot"] == (command == "vdi_snapshot")
    lvs = sr.lvm().lvs(sr.vg)
    by_name = {lv.name: lv for lv in lvs}
    assert "sm_ro" in by_name[f"VHD-{base}"].tags
    base_path = f"/dev/{sr.vg}/VHD-{base}"
    assert by_name[f"VHD-{base}"].size == _extent_round(
        vhd.physical_size(base_path, storage=sr.storage()))  # deflated base
    assert by_name[f"VHD-{vdi}"].size == _extent_round(full_vhd_size(size))  # attached rw
    assert by_name[f"VHD-{new}"].size == _extent_round(metadata_size(size))  # thin leaf
    assert vhd.info(base_path, storage=sr.storage()).hidden
    sr.call("vdi_detach", vdi_uuid=vdi)
    sr.call("vdi_delete", vdi_uuid=vdi)
    assert _read(sr, new, 0, 4096) == b"A" * 4096
    sr.call("vdi_delete", vdi_uuid=new)
    assert set(sr.lv_sizes()) == {"MGT"} and sr.records() == {}


def test_snapshot_out_of_space_is_44(thick_sr: Sr) -> None:
    vdi = thick_sr.create_vdi(50 * MiB)
    before = (thick_sr.lv_sizes(), thick_sr.records())
    with pytest.raises(SMFault) as err:
        thick_sr.call("vdi_snapshot", vdi_uuid=vdi)
    assert err.value.code == 44
    assert (thick_sr.lv_sizes(), thick_sr.records()) == before


@pytest.mark.parametrize("step", ["journaled", "deflated", "renamed", "hidden", "leaf", "snap",
                                  "records"])
def test_snapshot_crash_then_attach(sr: Sr, step: str) -> None:
    vdi = sr.create_vdi(8 * MiB)
    _write(sr, vdi, 0, b"C" * 4096)
    proc = Process(env={**sr.transport.env, "SM_TEST_FAULTS": "1",
                        "SM_CRASH_AT": f"vdi_snapshot:{step}"},
                   executable=ROOT / "bin" / "LVHDSR")
    out = proc.send(_dumps(sr, "vdi_snapshot", [], vdi))
    assert out.signal == 9, out.stderr
    sr.call("sr_attach")
    records = sr.records()
    assert _read(sr, vdi, 0, 4096) == b"C" * 4096
    assert set(sr.lv_sizes()) == {"MGT"} | {f"VHD-{u}" for u in records}
    snaps = [u for u, r in records.items() if r["snapshot_of"] == vdi]
    if step in ("journaled", "deflated"):  # nothing renamed yet: rolled back
        assert snaps == [] and list(records) == [vdi]
    else:
        (snap,) = snaps
        assert _read(sr, snap, 0, 4096) == b"C" * 4096
