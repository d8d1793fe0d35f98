"""srtypes.lvhd.lvio: LV bytes through the PVs, checked against lvm's own reports and the
loop devices read independently."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from srtypes.lvhd.lvio import LvIoError, LvRangeError, open_lv

from .conftest import LvmSandbox, MiB, VgHandle

pytestmark = pytest.mark.root


def raw_report(vg: VgHandle, *args: str) -> list[dict[str, str]]:
    """Run an lvm report directly (not through srtypes.lvhd.lvm's parser)."""
    env = {"LVM_SYSTEM_DIR": str(vg.system_dir), "LVM_SUPPRESS_FD_WARNINGS": "1"}
    out = vg.lvm.executor.run(
        [args[0], "--reportformat", "json", "--units", "b", "--nosuffix", *args[1:]], env=env
    )
    (report,) = json.loads(out.stdout)["report"]
    (rows,) = report.values()
    return list(rows)


def expected_map(vg: VgHandle, lv: str) -> list[tuple[int, int, str, int]]:
    """(seg_start, seg_size, pv, pv_offset) from lvs/pvs/vgs reports, per machines.md."""
    pe_start = {r["pv_name"]: int(r["pe_start"]) for r in raw_report(vg, "pvs", "-o", "pv_name,pe_start", *vg.devices)}
    (vgrow,) = raw_report(vg, "vgs", "-o", "vg_extent_size", vg.name)
    extent = int(vgrow["vg_extent_size"])
    out = []
    for r in raw_report(vg, "lvs", "--segments", "-o", "seg_pe_ranges,seg_start,seg_size", f"{vg.name}/{lv}"):
        pv, span = r["seg_pe_ranges"].rsplit(":", 1)
        first = int(span.split("-")[0])
        out.append((int(r["seg_start"]), int(r["seg_size"]), pv, pe_start[pv] + first * extent))
    return sorted(out)


def read_dev(dev: str, n: int, off: int) -> bytes:
    fd = os.open(dev, os.O_RDONLY)
    try:
        return os.pread(fd, n, off)
    finally:
        os.close(fd)


def check_against_loop_devices(vg: VgHandle, lv: str, data: bytes) -> None:
    """The LV's bytes [0, len(data)) as found on the PVs at the offsets lvm reports."""
    got = b""
    for seg_start, seg_size, pv, pv_off in expected_map(vg, lv):
        if seg_start >= len(data):
            break
        got += read_dev(pv, min(seg_size, len(data) - seg_start), pv_off)
    assert got == data


def test_mapping_matches_lvm_report_and_bytes_land_there(lvm_vg: VgHandle, lv_name: str) -> None:
    lvm, vg = lvm_vg.lvm, lvm_vg.name
    lvm.lvcreate(vg, lv_name, 8 * MiB)
    try:
        with open_lv(lvm, vg, lv_name, writable=True) as lv:
            mapping = [(e.lv_start, e.length, e.device, e.dev_offset) for e in lv.extents]
            assert mapping == expected_map(lvm_vg, lv_name)
            assert lv.capacity() == 8 * MiB
            data = os.urandom(8 * MiB)
            assert lv.pwrite(data, 0) == len(data)
            lv.fsync()
            assert lv.pread(4096, 4 * MiB - 100) == data[4 * MiB - 100 : 4 * MiB + 3996]
        check_against_loop_devices(lvm_vg, lv_name, data)
        with open_lv(lvm, vg, lv_name, writable=False) as ro:
            assert ro.pread(len(data), 0) == data
            with pytest.raises(LvIoError):
                ro.pwrite(b"x", 0)
    finally:
        lvm.lvremove(vg, lv_name)


def test_two_segments_and_io_across_the_boundary(fresh_vg: VgHandle) -> None:
    lvm, vg, ext = fresh_vg.lvm, fresh_vg.name, fresh_vg.extent_size
    lvm.lvcreate(vg, "A", ext)
    lvm.lvcreate(vg, "B", ext)
    with open_lv(lvm, vg, "B", writable=True) as b:
        b.pwrite(b"\xbb" * ext, 0)
    with open_lv(lvm, vg, "A", writable=True) as a:
        a.pwrite(b"\xaa" * ext, 0)
        assert lvm.lvresize(vg, "A", 2 * ext) == 2 * ext
        with pytest.raises(LvRangeError):  # the old mapping still says one extent
            a.pwrite(b"x", ext)
        a.refresh()
        assert a.capacity() == 2 * ext and len(a.extents) == 2
        assert a.extents[1].dev_offset != a.extents[0].dev_offset + ext  # B sits in between
        payload = os.urandom(3 * 4096)
        off = ext - 4096 - 5  # crosses the segment boundary
        a.pwrite(payload, off)
        assert a.pread(len(payload), off) == payload
        expected = bytearray(b"\xaa" * ext + b"\0" * ext)
        expected[off : off + len(payload)] = payload
        a.fsync()
    assert [s.seg_start for s in lvm.segments(vg, "A")] == [0, ext]
    check_against_loop_devices(fresh_vg, "A", bytes(expected[:ext]) + bytes(expected[ext : ext + 2 * 4096]))
    check_against_loop_devices(fresh_vg, "B", b"\xbb" * ext)  # untouched


def test_lv_spanning_two_pvs(lvm_sandbox: LvmSandbox) -> None:
    vg = lvm_sandbox.new_vg(pvs=2, pv_size=16 * MiB)
    try:
        lvm = vg.lvm
        free = lvm.vgs(vg.name).free
        lvm.lvcreate(vg.name, "big", free)
        with open_lv(lvm, vg.name, "big", writable=True) as lv:
            assert {e.device for e in lv.extents} == set(vg.devices)
            data = os.urandom(lv.capacity())
            lv.pwrite(data, 0)
            lv.fsync()
            assert lv.pread(len(data), 0) == data
            boundary = lv.extents[1].lv_start
            assert lv.pread(8192, boundary - 4096) == data[boundary - 4096 : boundary + 4096]
        check_against_loop_devices(vg, "big", data)
    finally:
        lvm_sandbox.destroy(vg)


def test_io_past_the_end_is_refused(lvm_vg: VgHandle, lv_name: str) -> None:
    lvm, vg = lvm_vg.lvm, lvm_vg.name
    lvm.lvcreate(vg, lv_name, 4 * MiB)
    try:
        with open_lv(lvm, vg, lv_name, writable=True) as lv:
            size = lv.capacity()
            assert len(lv.pread(1, size - 1)) == 1
            assert lv.pread(0, size) == b""
            with pytest.raises(LvRangeError) as info:
                lv.pwrite(b"xy", size - 1)
            assert info.value.errno == errno.ENOSPC and "past the end" in str(info.value)
            with pytest.raises(LvRangeError):
                lv.pread(2, size - 1)
            with pytest.raises(ValueError):
                lv.pread(1, -1)
            with pytest.raises(LvIoError, match="lvresize"):
                lv.truncate(size * 2)
        with pytest.raises(ValueError, match="closed"):
            lv.pread(1, 0)
    finally:
        lvm.lvremove(vg, lv_name)


def test_device_mapper_node_is_used_when_present(
    lvm_vg: VgHandle, lvm_sandbox: LvmSandbox, lv_name: str, tmp_path: Path
) -> None:
    # Stand in for /dev/<vg>/<lv> with another loop device: a real block device.
    lvm, vg = lvm_vg.lvm, lvm_vg.name
    lvm.lvcreate(vg, lv_name, 4 * MiB)
    dev, _ = lvm_sandbox.loop_device(4 * MiB)
    try:
        (tmp_path / vg).mkdir()
        (tmp_path / vg / lv_name).symlink_to(dev)
        with open_lv(lvm, vg, lv_name, writable=True, dev_root=str(tmp_path)) as lv:
            assert [(e.device, e.dev_offset) for e in lv.extents] == [(str(tmp_path / vg / lv_name), 0)]
            assert lv.capacity() == 4 * MiB
            lv.pwrite(b"dm!", 4096)
            lv.fsync()
        assert read_dev(dev, 3, 4096) == b"dm!"
        # A regular file at that path is not a device node: back to PV offsets.
        (tmp_path / vg / lv_name).unlink()
        (tmp_path / vg / lv_name).write_bytes(b"")
        with open_lv(lvm, vg, lv_name, writable=False, dev_root=str(tmp_path)) as lv:
            assert lv.extents[0].device == lvm_vg.devices[0]
    finally:
        lvm.lvremove(vg, lv_name)
        lvm_sandbox.detach(dev)
