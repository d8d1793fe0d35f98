"""The collector on a File SR: garbage, merges in both directions, leaf merges keeping the
VDI's identity, the space check, status, background runs and aborts."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from sm import vhd
from tests.gc.support import MiB, check_sr, depth, gc_run, gc_status, make_sr
from tests.srtypes.file.conftest import FileSRClient


@pytest.fixture
def sr(tmp_path: Path) -> FileSRClient:
    return make_sr(tmp_path)


def _data(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def test_snapshot_deleted_leaf_merged_identity_kept(sr: FileSRClient) -> None:
    a = sr.create_vdi(16 * MiB, "A")
    sr.write(a, 0, _data(1, 5 * MiB))
    s1 = sr.snapshot(a)
    sr.write(a, 3 * MiB, _data(2, 3 * MiB))
    s2 = sr.snapshot(a)
    sr.write(a, 15 * MiB, b"tail")
    rec = sr.record(a)
    model = {a: sr.read(a), s2: sr.read(s2)}
    sr.call("vdi_delete", vdi=s1)
    assert depth(sr, a) == 3
    st = gc_status(sr)
    assert [v["depth"] for v in st["vdis"] if v["uuid"] == a] == [3]
    assert st["pending"] and st["collector"]["running"] is False
    summary = gc_run(sr)
    assert summary["result"] == "done" and summary["actions"]
    check_sr(sr, model)
    assert depth(sr, a) == 2  # its base still has two children (a and s2)
    sr.call("vdi_delete", vdi=s2)
    del model[s2]
    summary = gc_run(sr)
    assert [a_["kind"] for a_ in summary["actions"]] == ["leaf-merge"]
    check_sr(sr, model)
    assert depth(sr, a) == 1 and set(sr.records()) == {a}
    after = sr.record(a)
    for key in ("uuid", "location", "name_label", "name_description", "virtual_size"):
        assert after[key] == rec[key]
    st = gc_status(sr)
    assert st["pending"] == [] and st["garbage"] == [] and st["reclaimable_bytes"] == 0
    assert st["collector"]["last_run"]["result"] == "done"


def test_garbage_removed(sr: FileSRClient) -> None:
    a = sr.create_vdi(8 * MiB)
    sr.write(a, 0, _data(3, MiB))
    s = sr.snapshot(a)
    sr.call("vdi_delete", vdi=s)
    sr.call("vdi_delete", vdi=a)
    (base,) = sr.records()
    assert sr.record(base)["sm_config"].get("gc") == "garbage"
    assert gc_status(sr)["garbage"] == [base]
    summary = gc_run(sr)
    assert [x["kind"] for x in summary["actions"]] == ["remove"]
    assert sr.records() == {} and os.listdir(sr.location) == [".sm"]


def test_down_merge_when_the_base_is_smaller(sr: FileSRClient) -> None:
    c = sr.create_vdi(16 * MiB)
    sr.write(c, 0, _data(4, 8 * MiB))
    t1 = sr.snapshot(c)                     # B1: 4 blocks
    sr.write(c, 0, _data(5, 100))
    t2 = sr.snapshot(c)                     # B2: block 0 only, parent B1
    sr.write(c, 4 * MiB, _data(6, 4 * MiB))
    t3 = sr.snapshot(c)                     # B3: blocks 2, 3, parent B2
    b3 = sr.record(t3)["parent"]
    b2 = sr.record(b3)["parent"]
    model = {u: sr.read(u) for u in (c, t1, t3)}
    sr.call("vdi_delete", vdi=t2)
    [act] = gc_status(sr)["pending"]
    assert (act["kind"], act["base"], act["child"], act["direction"]) == ("merge", b2, b3,
                                                                          "down")
    summary = gc_run(sr)
    assert [x["direction"] for x in summary["actions"]] == ["down"]
    assert b2 not in sr.records() and sr.record(b3)["parent"] == sr.record(t1)["parent"]
    check_sr(sr, model)


def test_single_snapshot_base_keeps_its_identity(sr: FileSRClient) -> None:
    a = sr.create_vdi(8 * MiB)
    sr.write(a, 0, _data(7, 3 * MiB))
    s = sr.snapshot(a)
    sr.write(a, MiB, _data(8, MiB))
    single = sr.snapshot(a, driver_params={"type": "single"})  # visible base with child a
    sr.write(a, 2 * MiB, _data(9, MiB))
    model = {u: sr.read(u) for u in (a, single)}
    sr.call("vdi_delete", vdi=s)
    summary = gc_run(sr)
    assert summary["actions"]
    check_sr(sr, model)
    rec = sr.record(single)
    assert not rec["hidden"] and rec["is_a_snapshot"] and rec["parent"] == ""
    assert sr.record(a)["parent"] == single


def test_big_leaf_is_snapshotted_then_merged(sr: FileSRClient, monkeypatch:
                                              pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SM_GC_FINAL_BYTES", str(2 * MiB))
    a = sr.create_vdi(16 * MiB)
    sr.write(a, 0, _data(10, 2 * MiB))
    s = sr.snapshot(a)
    sr.write(a, 4 * MiB, _data(11, 8 * MiB))
    model = {a: sr.read(a)}
    sr.call("vdi_delete", vdi=s)
    summary = gc_run(sr)
    assert [x["kind"] for x in summary["actions"]] == ["leaf-snapshot", "merge", "leaf-merge"]
    check_sr(sr, model)
    assert depth(sr, a) == 1


def test_space_check_skips_with_a_clear_message(sr: FileSRClient, monkeypatch:
                                                 pytest.MonkeyPatch) -> None:
    from srtypes.file import gc as file_gc

    a = sr.create_vdi(16 * MiB)
    sr.write(a, 0, _data(12, MiB))
    s = sr.snapshot(a)
    sr.write(a, 6 * MiB, _data(13, 6 * MiB))
    model = {a: sr.read(a)}
    sr.call("vdi_delete", vdi=s)
    # a unit check of the one branch: the SR "has" 1 MiB free (the real-file-system version
    # is test_space_check_on_a_full_file_system)
    monkeypatch.setattr(file_gc.FileGc, "free_bytes", lambda self: MiB)
    summary = gc_run(sr)
    assert summary["actions"] == []
    [skip] = summary["skipped"]
    assert "skipping leaf-merge" in skip["reason"] and "free space" in skip["reason"]
    assert f"{MiB} available" in skip["reason"]
    check_sr(sr, model, collected=False)


@pytest.mark.root
def test_space_check_on_a_full_file_system(tmp_path: Path) -> None:
    from tests.gc.fsmount import loop_mount

    with loop_mount(tmp_path, "ext4", 128 * MiB) as mnt:
        sr = make_sr(mnt)
        a = sr.create_vdi(64 * MiB)
        sr.write(a, 0, _data(14, 2 * MiB))
        s = sr.snapshot(a)
        sr.write(a, 2 * MiB, bytes([7]) * (24 * MiB))
        model = {a: sr.read(a)}
        sr.call("vdi_delete", vdi=s)
        with open(mnt / "filler", "wb") as f:  # leave less than the merge needs
            free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
            f.write(bytes(max(0, free - 4 * MiB)))
        summary = gc_run(sr)
        assert summary["actions"] == [] and "free space" in summary["skipped"][0]["reason"]
        check_sr(sr, model, collected=False)
        os.unlink(mnt / "filler")
        assert gc_run(sr)["actions"]
        check_sr(sr, model)


def test_one_collector_per_sr(sr: FileSRClient) -> None:
    from sm.gc.state import GCLock
    from srtypes.file.gc import gc_dir

    lock = GCLock(gc_dir(sr_repo(sr)))
    assert lock.acquire()
    try:
        assert gc_run(sr)["result"] == "busy"
    finally:
        lock.release()
    assert gc_run(sr)["result"] == "done"


def sr_repo(sr: FileSRClient):  # type: ignore[no-untyped-def]
    from srtypes.file.layout import SRLayout
    from srtypes.file.repo import FileRepo

    return FileRepo(SRLayout(sr.location, sr.sr_uuid, sr.run_dir))


def test_background_run_after_delete(sr: FileSRClient, monkeypatch: pytest.MonkeyPatch) -> None:
    a = sr.create_vdi(8 * MiB)
    sr.write(a, 0, _data(15, MiB))
    s = sr.snapshot(a)
    model = {a: sr.read(a)}
    monkeypatch.setenv("SM_GC_AUTO", "1")
    sr.call("vdi_delete", vdi=s)  # returns at once; the collector runs detached
    deadline = time.monotonic() + 30
    while len(sr.records()) > 1:
        assert time.monotonic() < deadline, "the background collector did not run"
        time.sleep(0.05)
    while gc_status(sr)["collector"]["running"]:
        time.sleep(0.05)
    check_sr(sr, model)
    log = (sr.location / ".sm" / "gc" / "gc.log").read_text()
    assert "gc run" in log


def test_status_json_shape(sr: FileSRClient) -> None:
    a = sr.create_vdi(8 * MiB)
    st = gc_status(sr)
    assert json.loads(json.dumps(st)) == st
    assert st["vdis"] == [{"uuid": a, "depth": 1, "depth_after_gc": 1, "pending_merges": 0,
                           "attached": False, "reclaimable_bytes": 0}]
    assert st["depth_limit"] == 30 and st["warnings"] == [] and st["free_bytes"] > 0


def test_sr_delete_removes_what_the_collector_left(sr: FileSRClient) -> None:
    a = sr.create_vdi(8 * MiB)
    sr.snapshot(a)
    for u, r in sr.records().items():
        if not r["hidden"]:
            sr.call("vdi_delete", vdi=u)
    sr.call("sr_delete")
    assert not sr.location.exists()


def test_chain_check_every_image_after_gc(sr: FileSRClient) -> None:
    a = sr.create_vdi(8 * MiB)
    snaps = []
    for i in range(5):
        sr.write(a, i * MiB, _data(20 + i, MiB // 2))
        snaps.append(sr.snapshot(a))
    model = {a: sr.read(a)}
    for s in snaps:
        sr.call("vdi_delete", vdi=s)
    assert depth(sr, a) == 6
    gc_run(sr)
    check_sr(sr, model)
    assert depth(sr, a) == 1
    assert vhd.check(str(sr.location / f"{a}.vhd"), bitmaps=True) == []


def test_work_added_during_a_run_is_not_lost(sr: FileSRClient, monkeypatch:
                                              pytest.MonkeyPatch) -> None:
    import subprocess

    from tests.gc.support import gc_argv, gc_env

    a = sr.create_vdi(16 * MiB)
    sr.write(a, 0, _data(30, 8 * MiB))
    s1 = sr.snapshot(a)
    sr.write(a, 0, _data(31, 8 * MiB))
    s2 = sr.snapshot(a)
    b = sr.create_vdi(8 * MiB)
    sr.write(b, 0, _data(32, MiB))
    t = sr.snapshot(b)
    model = {a: sr.read(a), s2: sr.read(s2), b: sr.read(b)}
    sr.call("vdi_delete", vdi=s1)
    proc = subprocess.Popen(gc_argv(sr), env=gc_env({"SM_GC_RATE": str(8 * MiB)}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (gc_status(sr)["collector"]["current"] or {}).get("done"):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    monkeypatch.setenv("SM_GC_AUTO", "1")
    sr.call("vdi_delete", vdi=t)  # the kick finds the collector busy: it asks for a rerun
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    st = gc_status(sr)
    assert st["pending"] == [] and st["garbage"] == [] and not st["collector"]["running"]
    check_sr(sr, model)


def test_shared_sr_merges_a_leaf_only_where_it_is_attached(
        sr: FileSRClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from srtypes.file import gc as file_gc

    # a unit check of the branch: the SR "is" on NFS (tests/nfs runs real shared SRs)
    monkeypatch.setattr(file_gc, "fs_type", lambda path: "nfs4")
    a = sr.create_vdi(8 * MiB)
    sr.write(a, 0, _data(40, MiB))
    s1 = sr.snapshot(a)
    sr.write(a, MiB, _data(41, MiB))
    s2 = sr.snapshot(a)
    model = {a: sr.read(a)}
    sr.call("vdi_delete", vdi=s1)
    sr.call("vdi_delete", vdi=s2)
    summary = gc_run(sr)
    assert [x["kind"] for x in summary["actions"]] == ["merge"]  # hidden bases: safe anywhere
    [skip] = summary["skipped"]
    assert "shared SR" in skip["reason"] and skip["kind"] == "leaf-merge"
    check_sr(sr, model, collected=False)
    assert depth(sr, a) == 2


def test_merge_into_a_smaller_base_grows_it(sr: FileSRClient) -> None:
    a = sr.create_vdi(8 * MiB)
    sr.write(a, 0, _data(50, 2 * MiB))
    s1 = sr.snapshot(a)                            # B1: 8 MiB
    sr.call("vdi_resize", [str(16 * MiB)], vdi=a)
    sr.write(a, 12 * MiB, _data(51, MiB))
    s2 = sr.snapshot(a)                            # B2: 16 MiB, parent B1
    model = {a: sr.read(a), s2: sr.read(s2)}
    sr.call("vdi_delete", vdi=s1)                  # B2 into B1 (up: B1 is a root)
    assert [x["kind"] for x in gc_run(sr)["actions"]] == ["merge"]
    check_sr(sr, model)                            # B1's record says 16 MiB, as its image
    base = sr.record(a)["parent"]
    assert int(sr.record(base)["virtual_size"]) == 16 * MiB
