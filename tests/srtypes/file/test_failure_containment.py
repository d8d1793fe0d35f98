"""Failure containment on a File SR (issue 15 §1): a failed operation never blocks the SR.

- sizes the format or the file system cannot hold answer VDISize (79) before anything is
  written, and every later operation works;
- an operation that fails in its own process (an injected failure at every step, a real
  ENOSPC) leaves no journal entry and the SR as it was (or the operation completed, past its
  point of no return);
- a replay that keeps failing is set aside: its VDIs answer VDIUnavailable (46) naming the
  entry and `sm sr repair`, every other VDI works, and `sm_sr_repair` shows, retries and
  discards it.
"""

from __future__ import annotations

import json
import os
import subprocess
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path

import pytest

from sm import faults, vhd
from srtypes.file import FileSR

from .conftest import FileSRClient, MiB, SMFault

ROOT = Path(__file__).resolve().parents[3]
TiB = 1024**4


def _journal(sr: FileSRClient) -> list[str]:
    d = sr.location / ".sm" / "journal"
    return sorted(n for n in os.listdir(d) if n.endswith(".json")) if d.is_dir() else []


def _state(sr: FileSRClient) -> tuple[dict, dict[str, bytes]]:
    """Records and, per image file, its content: what 'unchanged' compares."""
    records = sr.records()
    images = {n: (sr.location / n).read_bytes() for n in sorted(os.listdir(sr.location))
              if not n.startswith(".")}
    return records, images


def _still_works(sr: FileSRClient) -> None:
    """vdi_create, sr_scan, snapshot, write, revert, delete and gc on a new VDI."""
    v = sr.create_vdi(name="after")
    sr.call("sr_scan")
    sr.write(v, 0, b"one")
    s = sr.snapshot(v)
    sr.write(v, 0, b"two")
    sr.revert(s, v)
    assert sr.read(v, 0, 3) == b"one"
    sr.call("vdi_delete", vdi=s)
    sr.call("sm_gc_run")
    sr.call("vdi_resize", [str(16 * MiB)], vdi=v)
    assert _journal(sr) == []


# -- sizes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "vdi_type"), [
    (17 * TiB, "vhd"), (2**63 - 1, "vhd"), (2040 * 1024**3 + 512, "vhd"),
    (17 * TiB, "raw"), (2**63 - 1, "raw")])
def test_resize_beyond_format_or_fs_answers_79(sr: FileSRClient, size: int,
                                               vdi_type: str) -> None:
    extra = {"vdi_sm_config": {"type": "raw"}} if vdi_type == "raw" else {}
    x = sr.create_vdi(**extra)
    before = _state(sr)
    with pytest.raises(SMFault) as info:
        sr.call("vdi_resize", [str(size)], vdi=x)
    assert getattr(info.value, "code", None) == 79, info.value
    assert _journal(sr) == []
    assert _state(sr) == before
    _still_works(sr)


@pytest.mark.parametrize("size", [17 * TiB, 2**63 - 1])
def test_create_beyond_fs_answers_79(sr: FileSRClient, size: int) -> None:
    code = sr.fault("vdi_create", [str(size), "big"], vdi_sm_config={"type": "raw"})
    assert code == 79
    assert sr.records() == {}
    _still_works(sr)


def test_create_raw_at_the_fs_limit_is_refused_only_past_it(sr: FileSRClient) -> None:
    from sm.sizes import file_size_limit

    limit = file_size_limit(sr.location)
    if limit is None:
        pytest.skip(f"{sr.location} is on a file system without a known file size limit")
    assert sr.fault("vdi_create", [str(limit + 512)], vdi_sm_config={"type": "raw"}) == 79
    sr.create_vdi(size=limit - limit % 512, vdi_sm_config={"type": "raw"})


# -- operations failing in-process -----------------------------------------------------------


def _with_data(sr: FileSRClient) -> tuple[str, str]:
    x = sr.create_vdi()
    sr.write(x, 0, b"snap")
    s = sr.snapshot(x)
    sr.write(x, 0, b"xnew")
    return x, s


CASES = [
    *[("vdi_snapshot", step) for step in ("journaled", "renamed", "hidden", "leaf", "snap")],
    *[("vdi_clone", step) for step in ("renamed", "leaf")],
    *[("vdi_revert", step) for step in ("journaled", "renamed", "leaf")],
    ("vdi_delete", "journaled"),
    ("vdi_resize", "journaled"),
]


@pytest.mark.parametrize(("command", "step"), CASES)
def test_failure_before_the_point_of_no_return_changes_nothing(
        sr: FileSRClient, fail_at, command: str, step: str) -> None:  # type: ignore[no-untyped-def]
    x, s = _with_data(sr)
    before = _state(sr)
    fail_at(f"{command}:{step}")
    args, vdi = {"vdi_revert": ([x], s), "vdi_resize": ([str(64 * MiB)], x)}.get(
        command, ([], x))
    with pytest.raises(SMFault) as info:
        sr.call(command, args, vdi=vdi)
    assert "injected failure" in str(info.value)
    fail_at(None)
    assert _journal(sr) == []
    assert _state(sr) == before
    assert sr.read(x, 0, 4) == b"xnew" and sr.read(s, 0, 4) == b"snap"
    _still_works(sr)


@pytest.mark.parametrize(("command", "step"), [("vdi_snapshot", "records"),
                                               ("vdi_revert", "switched"),
                                               ("vdi_delete", "file")])
def test_failure_past_the_point_of_no_return_completes(
        sr: FileSRClient, fail_at, command: str, step: str) -> None:  # type: ignore[no-untyped-def]
    x, s = _with_data(sr)
    fail_at(f"{command}:{step}")
    args, vdi = {"vdi_revert": ([x], s), "vdi_delete": ([], s)}.get(command, ([], x))
    with pytest.raises(SMFault):
        sr.call(command, args, vdi=vdi)
    fail_at(None)
    assert _journal(sr) == []
    records = sr.records()
    if command == "vdi_snapshot":
        assert len([r for r in records.values() if r["snapshot_of"] == x]) == 2
    elif command == "vdi_revert":
        assert sr.read(x, 0, 4) == b"snap"
    else:
        assert s not in records or records[s]["hidden"]
    _still_works(sr)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB ext4 file system on a loop device."""
    img, mnt = tmp_path / "fs.img", tmp_path / "mnt"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(32 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", str(img)], check=True)
    subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _fill(path: Path) -> None:
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (1024 * 1024, 4096, 512):
            with __import__("contextlib").suppress(OSError):
                while True:
                    os.write(fd, bytes(chunk))
    finally:
        os.close(fd)


def test_enospc_mid_snapshot_leaves_the_sr_unchanged(small_fs: Path, tmp_path: Path) -> None:
    sr = FileSRClient(small_fs / "sr", tmp_path / "run")
    sr.call("sr_create", ["0"])
    sr.call("sr_attach")
    x = sr.create_vdi(size=100 * 1024**3)  # a BAT of 200 KiB: a new child needs that much
    sr.write(x, 0, b"data")
    before = _state(sr)
    _fill(small_fs)
    os.truncate(small_fs / "filler", os.stat(small_fs / "filler").st_size - 96 * 1024)
    with pytest.raises(SMFault) as info:
        sr.snapshot(x)
    assert getattr(info.value, "code", None) != 1200, info.value
    assert _journal(sr) == []
    assert _state(sr) == before
    (small_fs / "filler").unlink()
    assert sr.read(x, 0, 4) == b"data"
    _still_works(sr)


def test_a_full_file_system_can_free_itself(small_fs: Path, tmp_path: Path) -> None:
    """With not one byte left, the commands that free space still run (the lock files' holder
    lines are information only) and a command that needs space fails without 1200."""
    sr = FileSRClient(small_fs / "sr", tmp_path / "run")
    sr.call("sr_create", ["0"])
    sr.call("sr_attach")
    keep = sr.create_vdi()
    sr.write(keep, 0, b"keep")
    big = sr.create_vdi()
    sr.write(big, 0, bytes(4 * MiB))  # two 2 MiB blocks, freed by the delete
    _fill(small_fs)
    with pytest.raises(SMFault) as info:
        sr.snapshot(keep)
    assert getattr(info.value, "code", None) != 1200, info.value
    assert _journal(sr) == []
    sr.call("vdi_delete", vdi=big)
    sr.call("sr_scan")
    assert big not in sr.records()
    (small_fs / "filler").unlink()
    assert sr.read(keep, 0, 4) == b"keep"
    _still_works(sr)


# -- a replay that keeps failing is set aside ------------------------------------------------


def _killed(sr: FileSRClient, command: str, point: str, vdi: str) -> None:
    xml = xmlrpc.client.dumps((sr.struct(command, [], vdi=vdi),), methodname=command)
    env = {**os.environ, **sr.environ, **faults.crash_env(point)}
    proc = subprocess.run([str(ROOT / "bin" / "FileSR"), xml], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == -9, proc.stdout + proc.stderr


def _set_aside(sr: FileSRClient, fail_at) -> tuple[str, str, str]:  # type: ignore[no-untyped-def]
    """x's snapshot killed after `renamed`, its replay failing at `hidden`: set aside by the
    next chain operation (a vdi_create, which succeeds). Returns (x, other, entry id)."""
    x = sr.create_vdi(name="x")
    sr.write(x, 0, b"xxxx")
    other = sr.create_vdi(name="other")
    sr.write(other, 0, b"oooo")
    _killed(sr, "vdi_snapshot", "vdi_snapshot:renamed", x)
    assert len(_journal(sr)) == 1
    fail_at("vdi_snapshot:hidden:1+")
    sr.create_vdi(name="third")  # replays, fails, sets aside, goes on
    fail_at(None)
    assert _journal(sr) == []
    report = json.loads(sr.call("sm_sr_repair"))
    (entry,) = report["entries"]
    assert entry["op"] == "vdi_snapshot" and "injected failure" in entry["error"]
    assert x in entry["affected"] and report["unusable"][x] == entry["id"]
    return x, other, entry["id"]


def test_set_aside_vdi_refuses_use_others_work(sr: FileSRClient, fail_at) -> None:  # type: ignore[no-untyped-def]
    x, other, entry = _set_aside(sr, fail_at)
    for command, args in (("vdi_attach", ["false"]), ("vdi_snapshot", []), ("vdi_clone", []),
                          ("vdi_resize", [str(64 * MiB)]), ("vdi_delete", [])):
        with pytest.raises(SMFault) as info:
            sr.call(command, args, vdi=x)
        assert getattr(info.value, "code", None) == 46, (command, info.value)
        assert entry in str(info.value) and "sm sr repair" in str(info.value)
    # every other VDI and the SR keep working
    s = sr.snapshot(other)
    sr.write(other, 0, b"OOOO")
    sr.revert(s, other)
    assert sr.read(other, 0, 4) == b"oooo"
    sr.call("vdi_delete", vdi=s)
    sr.call("sr_scan")
    assert x in sr.records()  # scan leaves the held VDI's record alone
    sr.call("sm_gc_run")
    _still_works(sr)
    assert json.loads(sr.call("sm_sr_repair"))["unusable"].get(x) == entry


def test_repair_retry_resolves(sr: FileSRClient, fail_at) -> None:  # type: ignore[no-untyped-def]
    x, _other, entry = _set_aside(sr, fail_at)
    fail_at("vdi_snapshot:hidden:1+")
    report = json.loads(sr.call("sm_sr_repair", ["retry", entry]))
    assert "failed again" in report["done"][0] and report["unusable"][x] == entry
    fail_at(None)
    report = json.loads(sr.call("sm_sr_repair", ["retry", entry]))
    assert "replayed to the end" in report["done"][0]
    assert report["entries"] == [] and report["unusable"] == {}
    assert sr.read(x, 0, 4) == b"xxxx"
    snaps = [r for r in sr.records().values() if r["snapshot_of"] == x]
    assert len(snaps) == 1 and sr.read(snaps[0]["uuid"], 0, 4) == b"xxxx"
    sr.snapshot(x)
    assert vhd.check(str(sr.location / f"{x}.vhd")) == []


def test_repair_discard_checks_images(sr: FileSRClient, fail_at) -> None:  # type: ignore[no-untyped-def]
    x, _other, entry = _set_aside(sr, fail_at)
    # x's image was renamed to the base: a discard without --force is refused, says why
    with pytest.raises(SMFault) as info:
        sr.call("sm_sr_repair", ["discard", entry])
    assert getattr(info.value, "code", None) == 46 and "no image" in str(info.value)
    assert json.loads(sr.call("sm_sr_repair"))["unusable"][x] == entry
    report = json.loads(sr.call("sm_sr_repair", ["discard", entry, "true"]))
    assert "discarded entry" in report["done"][0] and "forced" in report["done"][0]
    assert report["entries"] == [] and report["unusable"] == {}


def test_repair_request_validation(sr: FileSRClient) -> None:
    assert sr.fault("sm_sr_repair", ["explode"]) == 1
    assert sr.fault("sm_sr_repair", ["retry", "../../etc"]) == 1
    assert sr.fault("sm_sr_repair", ["retry", "0000-1-abc"]) == 1
    assert json.loads(sr.call("sm_sr_repair")) == {"done": [], "entries": [], "unusable": {}}


def test_file_sr_driver_table_has_repair() -> None:
    assert "sm_sr_repair" in FileSR.EXTRA_COMMANDS


# -- the collector's steps failing in-process -------------------------------------------------


@pytest.mark.parametrize("point", ["gc_remove:journaled", "gc_merge:journaled",
                                   "gc_merge:copied", "gc_leafsnap:renamed",
                                   "gc_leafsnap:hidden", "gc_merge:merged"])
def test_collector_step_failing_leaves_no_entry(sr: FileSRClient, fail_at,  # type: ignore[no-untyped-def]
                                                monkeypatch: pytest.MonkeyPatch,
                                                point: str) -> None:
    from tests.gc.support import check_sr, gc_run

    monkeypatch.setenv("SM_GC_FINAL_BYTES", str(2 * MiB))
    a = sr.create_vdi(16 * MiB)
    sr.write(a, 0, b"a" * (2 * MiB))
    s = sr.snapshot(a)
    sr.write(a, 4 * MiB, b"b" * (8 * MiB))  # a big leaf: snapshotted in place, then merged
    sr.call("vdi_delete", vdi=s)
    if point.startswith("gc_remove"):
        sr.call("vdi_delete", vdi=a)  # its base is garbage
    model = {a: sr.read(a)} if not point.startswith("gc_remove") else {}
    fail_at(point)
    try:
        gc_run(sr)
    except SMFault:
        pass
    fail_at(None)
    assert _journal(sr) == []
    check_sr(sr, model, collected=False)
    assert gc_run(sr)["result"] == "done"
    check_sr(sr, model)
    assert _journal(sr) == []


@pytest.mark.parametrize("step", ["renamed", "hidden", "snapleaf", "leaf"])
def test_revert_to_a_vdi_with_data_failing_changes_nothing(sr: FileSRClient, fail_at,  # type: ignore[no-untyped-def]
                                                           step: str) -> None:
    """The B2 path: the source has data of its own (a clone), so it is snapshotted in place
    first; a failure at any step gives it back its image, name and uuid."""
    x = sr.create_vdi()
    sr.write(x, 0, b"xold")
    c = sr.clone(x)
    sr.write(c, 0, b"cdat")
    sr.write(x, 0, b"xnew")
    before = _state(sr)
    fail_at(f"vdi_revert:{step}")
    with pytest.raises(SMFault):
        sr.revert(c, x)
    fail_at(None)
    assert _journal(sr) == []
    assert _state(sr) == before
    sr.revert(c, x)
    assert sr.read(x, 0, 4) == b"cdat" and sr.read(c, 0, 4) == b"cdat"


@pytest.mark.parametrize("err", [OSError(27, "File too large"), OverflowError("too big")])
def test_an_oversize_write_is_79_not_1200(err: Exception) -> None:
    """Defence behind sm.sizes: a size only the storage can refuse (an NFS server's file
    system) answers VDISize, and an OverflowError never becomes 1200."""
    from sm.errors import VDIResize, VDISize
    from srtypes.file.edge import engine_errors

    with pytest.raises(VDISize), engine_errors(VDIResize, "resize"):
        raise err
