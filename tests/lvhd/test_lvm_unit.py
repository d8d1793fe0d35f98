"""srtypes.lvhd.lvm without lvm2: generated commands, config and report parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sm import errors
from sm.executor import RecordingExecutor, Result
from srtypes.lvhd.lvio import LvIoError, extents_from_segments
from srtypes.lvhd.lvm import Lvm, LvmError, Segment, render_config, write_config
from srtypes.lvhd.lvmreport import parse_lvs, parse_pv_segments, parse_pvs, parse_vgs

VG = "VG_XenStorage-1234"
MiB = 1024 * 1024


def report(key: str, *rows: dict[str, str]) -> bytes:
    return json.dumps({"report": [{key: list(rows)}]}).encode()


def result(argv: str, stdout: bytes) -> Result:
    return Result(tuple(argv.split()), 0, stdout, b"  WARNING: Activation disabled.\n")


# Real rows as printed by lvm 2.03.16 on Debian 12 (see machines.md).
SEG_ROWS = [
    {"pv_name": "/dev/loop0", "pe_start": "1048576", "lv_name": "a", "seg_start": "8388608",
     "seg_size": "8388608", "seg_pe_ranges": "/dev/loop0:3-4", "vg_extent_size": "4194304"},
    {"pv_name": "/dev/loop0", "pe_start": "1048576", "lv_name": "", "seg_start": "0",
     "seg_size": "0", "seg_pe_ranges": "", "vg_extent_size": "4194304"},
    {"pv_name": "/dev/loop0", "pe_start": "1048576", "lv_name": "a", "seg_start": "0",
     "seg_size": "8388608", "seg_pe_ranges": "/dev/loop0:0-1", "vg_extent_size": "4194304"},
    {"pv_name": "/dev/loop0", "pe_start": "1048576", "lv_name": "b", "seg_start": "0",
     "seg_size": "4194304", "seg_pe_ranges": "/dev/loop0:2-2", "vg_extent_size": "4194304"},
]
LV_ROWS = [
    {"lv_name": "a", "vg_name": VG, "lv_uuid": "u-a", "lv_size": "16777216", "lv_tags": "hidden,x"},
    {"lv_name": "b", "vg_name": VG, "lv_uuid": "u-b", "lv_size": "4194304", "lv_tags": ""},
]


def test_parse_segments_and_lvs() -> None:
    segs = parse_pv_segments(result("pvs --segments", report("pvseg", *SEG_ROWS)))
    assert set(segs) == {"a", "b"}  # free space rows are skipped
    a0, a1 = segs["a"]
    assert (a0.seg_start, a1.seg_start) == (0, 8 * MiB)  # sorted by LV offset
    assert a1 == Segment("/dev/loop0", 1 * MiB, 3, 4 * MiB, 8 * MiB, 8 * MiB)
    assert a1.pv_offset == 1 * MiB + 3 * 4 * MiB
    assert a1.to_pv(8 * MiB + 5) == a1.pv_offset + 5
    with pytest.raises(ValueError):
        a1.to_pv(0)
    lvs = parse_lvs(result("lvs", report("lv", *LV_ROWS)), segs)
    assert [(lv.name, lv.size, lv.tags, len(lv.segments)) for lv in lvs] == [
        ("a", 16 * MiB, ("hidden", "x"), 2),
        ("b", 4 * MiB, (), 1),
    ]
    extents = extents_from_segments(list(segs["a"]))
    assert [(e.lv_start, e.dev_offset) for e in extents] == [(0, 1 * MiB), (8 * MiB, 13 * MiB)]


def test_parse_refuses_striped_inconsistent_and_garbage() -> None:
    striped = dict(SEG_ROWS[0], seg_pe_ranges="/dev/loop0:3-4 /dev/loop1:0-1")
    with pytest.raises(LvmError, match="only linear"):
        parse_pv_segments(result("pvs --segments", report("pvseg", striped)))
    wrong = dict(SEG_ROWS[0], seg_size="4194304")
    with pytest.raises(LvmError, match="inconsistent"):
        parse_pv_segments(result("pvs --segments", report("pvseg", wrong)))
    with pytest.raises(LvmError, match="cannot parse the lv report"):
        parse_lvs(result("lvs", b"WARNING: not json"), {})
    with pytest.raises(LvmError, match="lv_size='12m'"):
        parse_lvs(result("lvs", report("lv", dict(LV_ROWS[0], lv_size="12m"))), {})
    with pytest.raises(LvIoError, match="not contiguous"):
        extents_from_segments([Segment("/dev/x", 0, 0, 4, 4, 4)])


def test_parse_vgs_folds_pvs_and_parse_pvs() -> None:
    row = {"vg_name": VG, "vg_uuid": "vu", "vg_size": "62914560", "vg_free": "41943040",
           "vg_extent_size": "4194304", "vg_extent_count": "15", "vg_free_count": "10",
           "vg_tags": "a,b", "pv_name": "/dev/loop0"}
    (vg,) = parse_vgs(result("vgs", report("vg", row, dict(row, pv_name="/dev/loop1"))))
    assert vg.pvs == ("/dev/loop0", "/dev/loop1") and vg.tags == ("a", "b")
    assert (vg.size, vg.free, vg.extent_size, vg.free_count) == (60 * MiB, 40 * MiB, 4 * MiB, 10)
    pv_row = {"pv_name": "/dev/loop2", "vg_name": "", "pv_size": "67108864",
              "dev_size": "67108864", "pe_start": "1048576", "pv_uuid": "pu"}
    (pv,) = parse_pvs(result("pvs", report("pv", pv_row)))
    assert pv.vg is None and pv.pe_start == MiB


def _with_lv(row: dict[str, str]) -> dict[str, str]:
    """A segment row of the one-command VG report (LV fields added)."""
    lv = next((r for r in LV_ROWS if r["lv_name"] == row["lv_name"]), None)
    extra = {"lv_size": "0", "lv_tags": "", "lv_uuid": "", "vg_name": VG}
    if lv is not None:
        extra = {k: lv[k] for k in ("lv_size", "lv_tags", "lv_uuid", "vg_name")}
    vg = {"vg_uuid": "vu", "vg_size": "62914560", "vg_free": "41943040",
          "vg_extent_count": "15", "vg_free_count": "10", "vg_tags": ""}
    return {**row, **extra, **vg}


VG_ROWS = [_with_lv(r) for r in SEG_ROWS]


def test_generated_commands(tmp_path: Path) -> None:
    rec = RecordingExecutor()
    lvm = Lvm(rec, tmp_path, devices=["/dev/sdb", "/dev/sdc"])
    rec.on(["lvcreate"])
    rec.on(["pvs", "--devices", "/dev/sdb,/dev/sdc", "--segments"], stdout=report("pvseg", *VG_ROWS))
    lv = lvm.lvcreate(VG, "b", 4 * MiB - 1, tags=["hidden"])
    assert lv.name == "b" and lv.segments[0].start_extent == 2
    assert rec.argvs[0] == (
        "lvcreate", "--devices", "/dev/sdb,/dev/sdc", "--yes", "--wipesignatures", "n",
        "--zero", "n", "--addtag", "hidden", "--name", "b", "--size", "8192s", VG,
    )
    assert rec.argvs[1][-2:] == ("--select", f'vg_name="{VG}"')  # one report for the VG
    env = rec.calls[0].env
    assert env is not None and env["LVM_SYSTEM_DIR"] == str(tmp_path)
    assert env["LVM_SUPPRESS_FD_WARNINGS"] == "1"
    # served from the cached reports until a command changes the metadata
    assert lvm.lv(VG, "a").size == 16 * MiB and lvm.lv_exists(VG, "b")
    assert not lvm.lv_exists(VG, "c") and len(lvm.segments(VG, "a")) == 2
    vg = lvm.vgs(VG)  # the same report carried the VG's fields
    assert (vg.free, vg.extent_size, vg.pvs) == (40 * MiB, 4 * MiB, ("/dev/loop0",))
    assert lvm.vg_exists(VG)
    assert len(rec.argvs) == 2 and lvm.commands == 2
    with pytest.raises(LvmError, match="Failed to find"):
        lvm.lv(VG, "c")
    # renames, tags and removals move no extents: the cached report is patched
    rec.on(["lvremove"]).on(["lvrename"]).on(["lvchange"])
    lvm.lvremove(VG, "b")
    lvm.lvrename(VG, "a", "z")
    lvm.lv_addtag(VG, "z", "t")
    assert [lv.name for lv in lvm.lvs(VG)] == ["z"] and lvm.lv(VG, "z").tags == ("hidden", "x", "t")
    assert [a[0] for a in rec.argvs[2:]] == ["lvremove", "lvrename", "lvchange"]


def test_lvresize_skips_a_no_op_and_reports_the_real_size(tmp_path: Path) -> None:
    rec = RecordingExecutor()
    lvm = Lvm(rec, tmp_path)
    seg = dict(VG_ROWS[2], seg_size="8388608", seg_pe_ranges="/dev/loop0:0-1", lv_size="8388608")
    vg = {"vg_name": VG, "vg_uuid": "vu", "vg_size": "62914560", "vg_free": "41943040",
          "vg_extent_size": "4194304", "vg_extent_count": "15", "vg_free_count": "10",
          "vg_tags": "", "pv_name": "/dev/loop0"}
    grown = dict(seg, seg_size="12582912", seg_pe_ranges="/dev/loop0:0-2", lv_size="12582912")
    rec.on(["pvs"], stdout=report("pvseg", seg)).on(["pvs"], stdout=report("pvseg", grown))
    rec.on(["vgs"], stdout=report("vg", vg))
    assert lvm.lvresize(VG, "a", 5 * MiB) == 8 * MiB
    assert [a[0] for a in rec.argvs] == ["pvs"]  # sizes and extent size from one report
    rec.on(["lvresize"])
    assert lvm.lvresize(VG, "a", 9 * MiB) == 12 * MiB  # rounded up to extents, not re-read
    assert rec.argvs[1] == ("lvresize", "--yes", "--force", "--size", "18432s", f"{VG}/a")
    assert lvm.lv(VG, "a").size == 12 * MiB and len(rec.argvs) == 3  # re-read when asked


def test_failures_map_to_lvm_errors_without_noise(tmp_path: Path) -> None:
    rec = RecordingExecutor()
    lvm = Lvm(rec, tmp_path)
    rec.on(["lvremove"], returncode=5, stderr=(
        "  WARNING: Activation disabled. No device-mapper interaction will be attempted.\n"
        '  Failed to find logical volume "VG_XenStorage-1234/a"\n'))
    with pytest.raises(LvmError) as info:
        lvm.lvremove(VG, "a")
    assert info.value.stderr_tail == 'Failed to find logical volume "VG_XenStorage-1234/a"'
    assert isinstance(info.value.to_sm_error(), errors.LVMDelete)
    assert info.value.to_sm_error().code == 51


def test_names_and_tags_are_validated(tmp_path: Path) -> None:
    lvm = Lvm(RecordingExecutor(), tmp_path)
    for bad in ("", "-x", "a b", 'a"b', "a/b", ".."):
        with pytest.raises(ValueError):
            lvm.lvremove(VG, bad)
    with pytest.raises(ValueError):
        lvm.lv_addtag(VG, "a", "bad tag")
    with pytest.raises(ValueError):
        lvm.lvcreate(VG, "a", 0)


def test_config(tmp_path: Path) -> None:
    text = render_config(["/dev/loop3", "/dev/disk/by-id/a.b+c"])
    assert 'global_filter = [ "a|^/dev/loop3$|", "a|^/dev/disk/by-id/a\\.b\\+c$|", "r|.*|" ]' in text
    for setting in ("use_devicesfile = 0", "obtain_device_list_from_udev = 0", 'hints = "none"',
                    "udev_sync = 0", "udev_rules = 0", "monitoring = 0", "activation = 0",
                    "use_lvmpolld = 0", "event_activation = 0", "backup = 0", "archive = 0"):
        assert setting in text
    assert "global_filter" not in render_config()  # production: devices passed per command
    assert "activation = 1" in render_config(activation=True)
    with pytest.raises(ValueError):
        render_config(["/dev/a|b"])
    path = write_config(tmp_path / "etc", ["/dev/loop3"])
    assert path.read_text() == render_config(["/dev/loop3"])
