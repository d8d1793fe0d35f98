"""Copy and move of a VDI to another SR (issue 16, workflows): sparse (only allocated blocks
travel; the destination stays small), the snapshot tree rebuilt (names, descriptions, shape,
current, each snapshot's content), File <-> LVHD, failures and crashes that leave the source
intact and no partial destination; checked with qemu-img compare on exported raw images."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid as uuidlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sm import faults
from sm.api import StorageManager
from sm.errors import InvalidArg, SMError, SRNoSpace, VDISize
from sm.faults import crash_env
from tests.conftest import require_tool

from .conftest import new_sr, run_sm

MiB = 1 << 20
GiB = 1 << 30
NO_NBD = {"SM_DATA_PATH": "none"}  # the CLI children: data opened in-process, as the suite does


def _same(sm: StorageManager, a: tuple[str, str], b: tuple[str, str], tmp: Path) -> None:
    """The two VDIs (ref, sr) read the same bytes: exported raw, compared by qemu-img."""
    require_tool("qemu-img")
    paths = []
    for ref, sr in (a, b):
        path = tmp / f"cmp-{uuidlib.uuid4().hex[:8]}.raw"
        sm.vdi_export(ref, str(path), "raw", sr=sr)
        paths.append(path)
    proc = subprocess.run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "raw",
                           *map(str, paths)], capture_output=True, check=False)
    for path in paths:
        path.unlink()
    assert proc.returncode == 0, (a, b, proc.stdout, proc.stderr)


def _tree(sm: StorageManager, ref: str, sr: str) -> list[tuple[str, str, str | None, bool]]:
    """(name, description, parent name, current) of every snapshot, tree order."""
    tree = sm.vdi_tree(ref, sr=sr)
    out: list[tuple[str, str, str | None, bool]] = []

    def walk(nodes: Any, parent: str | None) -> None:
        for n in nodes:
            out.append((n.name, n.description, parent, n.current))
            walk(n.children, n.name)

    walk(tree.roots, None)
    return out


def _branchy(sm: StorageManager, sr: str, size: int) -> str:
    """A VDI with data at the start, middle and end, and a tree with a branch:
    one -> two, one -> three (current)."""
    disk = sm.vdi_create(size, "disk1", "the disk", sr=sr).uuid
    sm.vdi_write(disk, 0, b"A" * 5000, sr=sr)
    sm.vdi_write(disk, size - 4096, b"E" * 4096, sr=sr)
    sm.vdi_snapshot(disk, "one", "first", sr=sr)
    sm.vdi_write(disk, size // 3, b"B" * 70000, sr=sr)
    sm.vdi_snapshot(disk, "two", "second", sr=sr)
    sm.vdi_revert(disk, "one", sr=sr)
    sm.vdi_write(disk, size * 2 // 3, b"C" * 3000, sr=sr)
    sm.vdi_snapshot(disk, "three", "branch", sr=sr)
    sm.vdi_write(disk, 0, b"D" * 100, sr=sr)
    return disk


def _check_tree_copy(sm: StorageManager, src: tuple[str, str], dst: tuple[str, str],
                     tmp: Path) -> None:
    assert _tree(sm, *src) == _tree(sm, *dst) == [
        ("one", "first", None, False), ("two", "second", "one", False),
        ("three", "branch", "one", True)]
    _same(sm, src, dst, tmp)
    new = {n.name: n.uuid for n in sm.vdi_tree(dst[0], sr=dst[1]).walk()}
    old = {n.name: n.uuid for n in sm.vdi_tree(src[0], sr=src[1]).walk()}
    assert not set(new.values()) & set(old.values())  # new uuids
    for name in old:
        snap = sm.vdi(new[name], dst[1])
        assert snap.is_a_snapshot and snap.snapshot_of == dst[0]
        _same(sm, (old[name], src[1]), (new[name], dst[1]), tmp)


def _image_bytes(location: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in location.glob("*.vhd"))


def test_copy_is_sparse_and_equal(manager: StorageManager, tmp_path: Path) -> None:
    sm = manager
    a, b = new_sr(sm, "file", tmp_path, "a"), new_sr(sm, "file", tmp_path, "b")
    disk = sm.vdi_create(GiB, "big", "mostly empty", sr=a).uuid
    sm.vdi_write(disk, 0, b"x" * 4096, sr=a)
    sm.vdi_write(disk, 512 * MiB, b"y" * 3 * MiB, sr=a)
    sm.vdi_write(disk, GiB - 512, b"z" * 512, sr=a)
    seen: list[tuple[int, int]] = []
    result = sm.vdi_copy(disk, b, sr=a, progress=lambda d, t: seen.append((d, t)))
    assert result.copied <= 12 * MiB  # 4 blocks of 2 MiB (or 5), not 1 GiB
    assert seen and seen[-1][0] == seen[-1][1] == result.copied
    new = result.vdi
    assert (new.name_label, new.name_description, new.virtual_size) == \
        ("big", "mostly empty", GiB)
    assert new.sr == sm.sr(b).uuid and new.uuid != disk
    assert _image_bytes(tmp_path / "sr-b") < 16 * MiB
    _same(sm, (disk, a), (new.uuid, b), tmp_path)
    assert sm.vdi(disk, a).uuid == disk  # the source stays

    named = sm.vdi_copy(disk, a, sr=a, name="big-copy")  # within one SR too
    assert named.vdi.name_label == "big-copy" and named.vdi.sr == sm.sr(a).uuid


def test_copy_and_move_with_snapshots_keep_the_tree(manager: StorageManager,
                                                    tmp_path: Path) -> None:
    sm = manager
    a, b, c = (new_sr(sm, "file", tmp_path, n) for n in "abc")
    disk = _branchy(sm, a, 64 * MiB)
    copied = sm.vdi_copy(disk, b, sr=a, snapshots=True)
    assert len(copied.snapshots) == 3
    _check_tree_copy(sm, (disk, a), (copied.vdi.uuid, b), tmp_path)

    before = _tree(sm, copied.vdi.uuid, b)
    moved = sm.vdi_move(copied.vdi.uuid, c, sr=b, snapshots=True)
    assert moved.moved and _tree(sm, moved.vdi.uuid, c) == before
    assert sm.vdis(b) == []  # nothing left behind
    _check_tree_copy(sm, (disk, a), (moved.vdi.uuid, c), tmp_path)


def test_move_refusals_change_nothing(manager: StorageManager, tmp_path: Path) -> None:
    sm = manager
    a, b = new_sr(sm, "file", tmp_path, "a"), new_sr(sm, "file", tmp_path, "b")
    disk = sm.vdi_create(8 * MiB, "d", sr=a).uuid
    snap = sm.vdi_snapshot(disk, "s", sr=a).uuid
    with pytest.raises(InvalidArg, match="already on SR"):
        sm.vdi_move(disk, a, sr=a)
    with pytest.raises(InvalidArg, match="is a snapshot"):
        sm.vdi_move(snap, b, sr=a)
    sm.vm_create("web")
    sm.vm_add_disk("web", disk, sr=a)
    with pytest.raises(InvalidArg, match="disk of VM"):
        sm.vdi_move(disk, b, sr=a)
    assert sm.vdis(b) == []
    assert {v.uuid for v in sm.vdis(a)} == {disk, snap}
    copy = sm.vdi_copy(snap, b, sr=a)  # a snapshot copies to a plain VDI
    assert not copy.vdi.is_a_snapshot


def test_failure_mid_copy_removes_the_destination(manager: StorageManager, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    sm = manager
    a, b = new_sr(sm, "file", tmp_path, "a"), new_sr(sm, "file", tmp_path, "b")
    disk = _branchy(sm, a, 16 * MiB)
    monkeypatch.setattr(faults, "_ARMED", True)
    for point in ("api.copy.created:2", "api.copy.copied"):
        monkeypatch.setattr(faults, "_hits", {})
        monkeypatch.setenv(faults.FAIL_VAR, point)
        with pytest.raises(faults.InjectedFailure):
            sm.vdi_move(disk, b, sr=a, snapshots=True)
        assert sm.vdis(b) == [] and sm.state.journal() == []
        assert len(_tree(sm, disk, a)) == 3
    _same(sm, (disk, a), (disk, a), tmp_path)


@contextmanager
def _tiny_file_sr(sm: StorageManager, base: Path, size: int) -> Iterator[str]:
    """A File SR on a tmpfs of `size` bytes."""
    mnt = base / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                   check=True)
    try:
        (mnt / "sr").mkdir()
        sm.sr_create("tiny", "file", {"location": str(mnt / "sr")})
        yield "tiny"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.root
def test_destination_too_small_is_refused_up_front(manager: StorageManager,
                                                   tmp_path: Path) -> None:
    sm = manager
    a = new_sr(sm, "file", tmp_path, "a")
    disk = sm.vdi_create(64 * MiB, "d", sr=a).uuid
    for i in range(6):
        sm.vdi_write(disk, i * 8 * MiB, bytes([65 + i]) * 3 * MiB, sr=a)
    with _tiny_file_sr(sm, tmp_path, 8 * MiB) as tiny:
        with pytest.raises(SRNoSpace, match=r"tiny has .* free"):
            sm.vdi_move(disk, tiny, sr=a)
        assert sm.vdis(tiny) == [] and sm.state.journal() == []
        assert sorted(p.name for p in (tmp_path / "tiny" / "sr").iterdir()) == [".sm"]
        small = sm.vdi_create(8 * MiB, "small", sr=a).uuid
        sm.vdi_write(small, 0, b"fits", sr=a)
        assert sm.vdi_read(sm.vdi_copy(small, tiny, sr=a).vdi.uuid, 0, 4, sr=tiny) == b"fits"
    assert sm.vdi_read(disk, 40 * MiB, 3, sr=a) == b"FFF"


def test_crash_during_copy_is_undone_and_move_rolls_forward(env: dict[str, str],
                                                            tmp_path: Path) -> None:
    env = {**env, **NO_NBD}
    with StorageManager(environ=env) as sm:
        a, b = new_sr(sm, "file", tmp_path, "a"), new_sr(sm, "file", tmp_path, "b")
        disk = _branchy(sm, a, 16 * MiB)
    crashed = run_sm(env, "vdi", "move", disk, "--sr", "a", "--to", "b", "--snapshots",
                     extra={"SM_TEST_FAULTS": "1", **crash_env("api.copy.created", 2)})
    assert crashed.returncode == -9, crashed.stderr
    with StorageManager(environ=env) as sm:
        assert sm.repair() == 1
        assert sm.vdis(b) == [] and len(_tree(sm, disk, a)) == 3
    crashed = run_sm(env, "vdi", "move", disk, "--sr", "a", "--to", "b", "--snapshots",
                     extra={"SM_TEST_FAULTS": "1", **crash_env("api.copy.copied")})
    assert crashed.returncode == -9, crashed.stderr
    listed = run_sm(env, "vdi", "list", "--sr", "a", "--json")  # repairs first
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    with StorageManager(environ=env) as sm:
        [moved] = [v for v in sm.vdis(b) if not v.is_a_snapshot]
        assert [n for n, *_ in _tree(sm, moved.uuid, b)] == ["one", "two", "three"]
        assert sm.vdi_read(moved.uuid, 0, 2, sr=b) == b"DD"


def test_cli_copy_prints_a_summary(env: dict[str, str], tmp_path: Path) -> None:
    env = {**env, **NO_NBD}
    with StorageManager(environ=env) as sm:
        b = new_sr(sm, "file", tmp_path, "b")
        disk = sm.vdi_create(8 * MiB, "d").uuid
        sm.vdi_write(disk, 0, b"hello")
    out = run_sm(env, "vdi", "copy", "d", "--to", b, "--name", "d-copy")
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().startswith(f"copied {disk} (SR default) to ") and not out.stderr
    shown = run_sm(env, "vdi", "read", "d-copy", "--sr", b, "--length", "5")
    assert shown.stdout == b"hello"


# -- LVHD (data through its NBD server: no device-mapper here) --------------------------------


@contextmanager
def _lvhd(sm: StorageManager, sandbox: Any, size: int) -> Iterator[str]:
    dev, _ = sandbox.loop_device(size)
    try:
        sm.sr_create("lv", "lvhd", {"device": dev}, uuid=str(uuidlib.uuid4()))
        yield "lv"
        sm.sr_delete("lv")
    finally:
        sandbox.detach(dev)


@pytest.mark.root
@pytest.mark.nbd
def test_copy_file_to_lvhd_and_back_with_snapshots(env: dict[str, str], tmp_path: Path,
                                                   lvm_sandbox: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SM_RUN_DIR", env["SM_RUN_DIR"])
    with StorageManager(environ=env) as sm, _lvhd(sm, lvm_sandbox, 128 * MiB) as lv:
        a = new_sr(sm, "file", tmp_path, "a")
        disk = _branchy(sm, a, 12 * MiB)
        there = sm.vdi_move(disk, lv, sr=a, snapshots=True)
        assert sm.vdis(a) == []
        assert [n for n, *_ in _tree(sm, there.vdi.uuid, lv)] == ["one", "two", "three"]
        assert sm.vdi(there.vdi.uuid, lv).physical_utilisation < 12 * MiB  # thin, sparse
        export = sm.vdi_attach(there.vdi.uuid, sr=lv)  # served from LVM, read with qemu-io
        read = subprocess.run(["qemu-io", "-r", "-f", "raw", "-c", "read -P 0x44 0 100",
                               export.url], capture_output=True, text=True, check=False)
        assert read.returncode == 0 and "verification failed" not in read.stdout, read
        back = sm.vdi_copy(there.vdi.uuid, a, sr=lv, snapshots=True)  # through the export
        sm.vdi_detach(there.vdi.uuid, sr=lv)
        assert _tree(sm, there.vdi.uuid, lv) == _tree(sm, back.vdi.uuid, a)
        _same(sm, (there.vdi.uuid, lv), (back.vdi.uuid, a), tmp_path)
        two = [n.uuid for n in sm.vdi_tree(back.vdi.uuid, sr=a).walk() if n.name == "two"]
        _same(sm, ("two", lv), (two[0], a), tmp_path)
        sm.vdi_delete(there.vdi.uuid, sr=lv, scope="with-children")


@pytest.mark.root
@pytest.mark.nbd
def test_failed_copies_to_lvhd_leave_nothing(env: dict[str, str], tmp_path: Path,
                                             lvm_sandbox: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SM_RUN_DIR", env["SM_RUN_DIR"])
    with StorageManager(environ=env) as sm, _lvhd(sm, lvm_sandbox, 64 * MiB) as lv:
        a = new_sr(sm, "file", tmp_path, "a")
        big = sm.vdi_create(GiB, "big", sr=a).uuid
        sm.vdi_write(big, 0, b"keep", sr=a)
        with pytest.raises(SMError) as err:  # larger than the VG: SRNoSpace or VDISize
            sm.vdi_move(big, lv, sr=a)
        assert err.value.code in (SRNoSpace.code, VDISize.code)
        assert sm.vdis(lv) == [] and sm.state.journal() == []
        assert sm.vdi_read(big, 0, 4, sr=a) == b"keep"

        disk = _branchy(sm, a, 8 * MiB)  # fails after two snapshots were made on LVM
        monkeypatch.setattr(faults, "_ARMED", True)
        monkeypatch.setattr(faults, "_hits", {})
        monkeypatch.setenv(faults.FAIL_VAR, "api.copy.created:2")
        with pytest.raises(faults.InjectedFailure):
            sm.vdi_move(disk, lv, sr=a, snapshots=True)
        monkeypatch.delenv(faults.FAIL_VAR)
        assert sm.vdis(lv) == [] and sm.state.journal() == []
        assert [n for n, *_ in _tree(sm, disk, a)] == ["one", "two", "three"]
        assert sm.vdi_read(disk, 0, 2, sr=a) == b"DD"


# -- NFS (a File SR on a mounted export) -------------------------------------------------------


@pytest.mark.root
def test_nfs_copy_rename_stats_and_probe(env: dict[str, str], tmp_path: Path, ganesha: Any,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from srtypes.nfs.mounter import BIND_EXPORTS_ENV
    from tests.nfs.sr_support import bind_env, nfs_device_config

    mounts = bind_env(ganesha, monkeypatch, tmp_path)
    next(mounts)
    env = {**env, "SM_RUN_DIR": str(tmp_path / "r"), BIND_EXPORTS_ENV: os.environ[BIND_EXPORTS_ENV]}
    monkeypatch.setenv("SM_RUN_DIR", env["SM_RUN_DIR"])
    dconf = nfs_device_config(ganesha)
    try:
        with StorageManager(environ=env) as sm:
            a = new_sr(sm, "file", tmp_path, "a")
            nfs = sm.sr_create("nfs", "nfs", dconf)
            assert [s["uuid"] for s in sm.sr_probe("nfs", dconf)["srs"]] == [nfs.uuid]
            assert sm.sr_stats("nfs")["free_space"] > 0
            disk = _branchy(sm, a, 16 * MiB)
            moved = sm.vdi_move(disk, "nfs", sr=a, snapshots=True)
            assert sm.vdis(a) == []
            assert [n for n, *_ in _tree(sm, moved.vdi.uuid, "nfs")] == ["one", "two", "three"]
            sm.vdi_rename(moved.vdi.uuid, "on-nfs", sr="nfs")
            sm.vdi_set("two", description="renamed on nfs", sr="nfs")
            assert sm.vdi("on-nfs", "nfs").uuid == moved.vdi.uuid
            back = sm.vdi_copy("on-nfs", a, sr="nfs", snapshots=True)
            assert back.vdi.name_label == "on-nfs"
            assert ("two", "renamed on nfs", "one", False) in _tree(sm, back.vdi.uuid, a)
            _same(sm, (moved.vdi.uuid, "nfs"), (back.vdi.uuid, a), tmp_path)
            sm.vdi_delete(moved.vdi.uuid, sr="nfs", scope="with-children")
            sm.sr_delete("nfs")
    finally:
        next(mounts, None)


def test_a_copy_journal_never_blocks_other_commands(env: dict[str, str],
                                                     tmp_path: Path) -> None:
    env = {**env, **NO_NBD}
    with StorageManager(environ=env) as sm:
        a = new_sr(sm, "file", tmp_path, "a")
        new_sr(sm, "file", tmp_path, "b")
        disk = sm.vdi_create(4 * MiB, "d", sr=a).uuid
        sm.vdi_snapshot(disk, "s", sr=a)
    crashed = run_sm(env, "vdi", "copy", disk, "--sr", "a", "--to", "b", "--snapshots",
                     extra={"SM_TEST_FAULTS": "1", **crash_env("api.copy.created")})
    assert crashed.returncode == -9, crashed.stderr
    shutil.rmtree(tmp_path / "sr-b")  # the destination is gone before the repair
    listed = run_sm(env, "vdi", "list", "--sr", "a", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {v["uuid"] for v in json.loads(listed.stdout) if not v["is_a_snapshot"]} == {disk}
    with StorageManager(environ=env) as sm:
        assert sm.state.journal() == []


# -- RBD (allocation from diff_iterate, one image per VDI) ------------------------------------


@pytest.mark.root
@pytest.mark.nbd  # an RBD image is reached through its NBD server
def test_rbd_copy_names_and_stats(env: dict[str, str], tmp_path: Path, rbd_namespace: str,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.rbd.support import device_config

    monkeypatch.setenv("SM_RUN_DIR", env["SM_RUN_DIR"])
    with StorageManager(environ=env) as sm:
        a = new_sr(sm, "file", tmp_path, "a")
        sm.sr_create("rbd", "rbd", device_config())
        assert {"physical_size", "free_space", "virtual_allocation"} <= set(sm.sr_stats("rbd"))
        disk = _branchy(sm, a, 32 * MiB)
        there = sm.vdi_move(disk, "rbd", sr=a, snapshots=True)
        assert sm.vdis(a) == []
        sm.vdi_set("two", description="on ceph", sr="rbd")
        sm.vdi_rename(there.vdi.uuid, "on-rbd", sr="rbd")
        assert _tree(sm, there.vdi.uuid, "rbd") == [
            ("one", "first", None, False), ("two", "on ceph", "one", False),
            ("three", "branch", "one", True)]
        assert sm.vdi_read("on-rbd", 0, 2, sr="rbd") == b"DD"
        assert sm.vdi_read("two", 32 * MiB // 3, 2, sr="rbd") == b"BB"
        back = sm.vdi_copy("on-rbd", a, sr="rbd")  # sparse from RBD too (diff_iterate)
        assert back.copied <= 16 * MiB  # at most 4 objects of 4 MiB, not 32 MiB
        assert sm.vdi_read(back.vdi.uuid, 32 * MiB * 2 // 3, 2, sr=a) == b"CC"
        sm.vdi_delete(there.vdi.uuid, sr="rbd", scope="with-children")
        sm.sr_delete("rbd")


@pytest.mark.nbd  # the dead process's read-only NBD server would refuse a writable attach
def test_crash_mid_transfer_releases_the_source(env: dict[str, str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    require_tool("nbdkit")
    monkeypatch.setenv("SM_RUN_DIR", env["SM_RUN_DIR"])
    with StorageManager(environ=env) as sm:
        a, b = new_sr(sm, "file", tmp_path, "a"), new_sr(sm, "file", tmp_path, "b")
        disk = sm.vdi_create(8 * MiB, "d", sr=a).uuid
        sm.vdi_write(disk, 0, b"x" * 3 * MiB, sr=a)
    crashed = run_sm(env, "vdi", "move", disk, "--sr", "a", "--to", "b",
                     extra={"SM_TEST_FAULTS": "1", **crash_env("api.copy.chunk")})
    assert crashed.returncode == -9, crashed.stderr
    with StorageManager(environ=env) as sm:
        assert sm.repair() == 1
        assert sm.vdis(b) == []
        sm.vdi_write(disk, 1, b"y", sr=a)  # not left attached (read-only) by the dead process
        assert sm.vdi_read(disk, 0, 3, sr=a) == b"xyx"
        assert sm.vdi_delete(disk, sr=a) == [disk]
