"""srtypes.lvhd.lvm against real lvm2 on loop devices."""

from __future__ import annotations

import pytest

from sm import errors
from srtypes.lvhd.lvm import VG_PREFIX, LvmError

from .conftest import LvmSandbox, MiB, VgHandle

pytestmark = pytest.mark.root


def test_vg_and_pv_reports(lvm_vg: VgHandle) -> None:
    lvm = lvm_vg.lvm
    vg = lvm.vgs(lvm_vg.name)
    assert vg.name == lvm_vg.name and vg.pvs == tuple(lvm_vg.devices)
    assert vg.extent_size == 4 * MiB
    assert vg.size == vg.extent_count * vg.extent_size
    assert 0 < vg.free <= vg.size
    assert lvm.vg_exists(lvm_vg.name)
    assert not lvm.vg_exists(VG_PREFIX + "missing")
    assert [v.name for v in lvm.find_sr_vgs()] == [lvm_vg.name]
    (pv,) = lvm.pvs(lvm_vg.devices)
    assert pv.name == lvm_vg.devices[0] and pv.vg == lvm_vg.name
    assert pv.dev_size == 256 * MiB and pv.pe_start == 1 * MiB
    assert pv.size == vg.size


def test_lv_lifecycle(lvm_vg: VgHandle, lv_name: str) -> None:
    lvm, vg = lvm_vg.lvm, lvm_vg.name
    lv = lvm.lvcreate(vg, lv_name, 5 * MiB, tags=["hidden", "sm:x=1"])
    try:
        assert lv.size == 8 * MiB  # rounded up to whole 4 MiB extents
        assert set(lv.tags) == {"hidden", "sm:x=1"} and lv.vg == vg and lv.uuid
        assert sum(s.seg_size for s in lv.segments) == lv.size
        assert lv_name in {x.name for x in lvm.lvs(vg)}
        assert lvm.lv_exists(vg, lv_name)

        assert lvm.lvresize(vg, lv_name, 13 * MiB) == 16 * MiB
        assert lvm.lvresize(vg, lv_name, 16 * MiB) == 16 * MiB  # no-op, no lvm error
        assert lvm.lvresize(vg, lv_name, 1) == 4 * MiB  # shrink
        assert lvm.lv(vg, lv_name).size == 4 * MiB

        lvm.lv_addtag(vg, lv_name, "extra")
        lvm.lv_deltag(vg, lv_name, "hidden")
        assert set(lvm.lv(vg, lv_name).tags) == {"sm:x=1", "extra"}

        new = lv_name.replace("VHD-", "LV-")
        lvm.lvrename(vg, lv_name, new)
        assert not lvm.lv_exists(vg, lv_name)
        assert lvm.lv(vg, new).uuid == lv.uuid
        lv_name = new
    finally:
        lvm.lvremove(vg, lv_name)
    assert not lvm.lv_exists(vg, lv_name)


def test_failures_are_lvm_errors(lvm_vg: VgHandle, lv_name: str) -> None:
    lvm, vg = lvm_vg.lvm, lvm_vg.name
    lvm.lvcreate(vg, lv_name, 4 * MiB)
    try:
        with pytest.raises(LvmError) as info:
            lvm.lvcreate(vg, lv_name, 4 * MiB)
        err = info.value
        assert err.command == "lvcreate" and err.returncode == 5
        assert "already exists" in err.stderr_tail
        assert "Activation disabled" not in err.stderr_tail
        sm_err = err.to_sm_error()
        assert isinstance(sm_err, errors.LVMCreate) and sm_err.code == 50
        with pytest.raises(LvmError, match="Insufficient free space"):
            lvm.lvresize(vg, lv_name, 1024 * MiB)
    finally:
        lvm.lvremove(vg, lv_name)
    with pytest.raises(LvmError, match="Failed to find logical volume"):
        lvm.lv(vg, lv_name)
    with pytest.raises(LvmError):
        lvm.lvremove(vg, lv_name)
    with pytest.raises(LvmError, match="not found"):
        lvm.vgs(VG_PREFIX + "missing")


def test_vg_create_tags_remove_and_probe(lvm_sandbox: LvmSandbox) -> None:
    vg = lvm_sandbox.new_vg(pv_size=32 * MiB)
    lvm = vg.lvm
    lvm.vg_addtag(vg.name, "sr")
    assert lvm.vgs(vg.name).tags == ("sr",)
    lvm.vg_deltag(vg.name, "sr")
    lvm.lvcreate(vg.name, "MGT", 4 * MiB)
    assert [v.name for v in lvm.find_sr_vgs()] == [vg.name]
    assert [v.name for v in lvm.find_sr_vgs(vg.devices)] == [vg.name]
    assert lvm.find_sr_vgs(["/dev/null"]) == []
    lvm.vgremove(vg.name)  # with an LV still inside
    assert not lvm.vg_exists(vg.name)
    assert lvm.pvs(vg.devices)[0].vg is None
    lvm_sandbox.destroy(vg)  # tolerates the VG being gone already


def test_generated_config_is_valid_for_this_lvm(lvm_vg: VgHandle) -> None:
    lvm = lvm_vg.lvm
    out = lvm.executor.run(["lvmconfig", "--validate"], env=lvm.env)
    assert b"LVM configuration valid" in out.stdout
    merged = lvm.executor.run(["lvmconfig", "devices/global_filter", "global/activation"], env=lvm.env)
    assert lvm_vg.devices[0].encode() in merged.stdout and b"activation=0" in merged.stdout
