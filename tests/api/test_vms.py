"""VM (multi-disk) snapshots across a File SR and an LVHD SR (real lvm2 on a loop device).

Every disk's content is checked through its own data path: File SR VDIs through the API,
LVHD VDIs through the driver's attach and the engine over `LvStorage` (the LVs are never
activated on these machines). A full LVHD SR makes the second disk's snapshot fail: the first
disk's snapshot must be gone again. A `sm vm snapshot` killed between disks is rolled back by
the next command.
"""

from __future__ import annotations

import contextlib
import json
import signal
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sm import vhd
from sm.api import StorageManager
from sm.errors import InvalidArg, SRNoSpace
from sm.executor import SubprocessExecutor
from sm.faults import crash_env
from srtypes.lvhd.lvm import VG_PREFIX, Lvm, write_config
from srtypes.lvhd.storage import LvStorage
from tests.lvhd.conftest import LvmSandbox, MiB

from .conftest import new_sr, run_sm


@dataclass
class LvSr:
    name: str
    uuid: str
    device: str
    base: Path

    @property
    def vg(self) -> str:
        return VG_PREFIX + self.uuid

    @property
    def lvm(self) -> Lvm:
        """A fresh checker view (an `Lvm` caches its reports)."""
        return _checker_lvm(self.device, self.base)


def _checker_lvm(device: str, base: Path) -> Lvm:
    conf = base / "checker-lvm"
    write_config(conf, [device])
    return Lvm(SubprocessExecutor(), conf, devices=[device])


@contextlib.contextmanager
def _lvhd_sr(sm: StorageManager, sandbox: LvmSandbox, base: Path, size: int,
             allocation: str) -> Iterator[LvSr]:
    dev, _ = sandbox.loop_device(size)
    sr_uuid = str(uuidlib.uuid4())
    try:
        sm.sr_create("lv", "lvhd", {"device": dev, "allocation": allocation}, uuid=sr_uuid)
        yield LvSr("lv", sr_uuid, dev, base)
    finally:
        lvm = _checker_lvm(dev, base)
        if lvm.vg_exists(VG_PREFIX + sr_uuid):
            lvm.vgremove(VG_PREFIX + sr_uuid)
            lvm.pvremove([dev])
        sandbox.detach(dev)


@pytest.fixture
def run_dir(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process drivers read os.environ: give them the test's run directory too.
    monkeypatch.setenv("SM_RUN_DIR", env["SM_RUN_DIR"])


def lv_read(sm: StorageManager, lv: LvSr, ref: str, length: int) -> bytes:
    cfg = sm._config(lv.name)
    client = sm._client(cfg)
    vdi = sm.vdi(ref, lv.name)
    attached = client.vdi_attach(vdi.ref, False)
    try:
        return _lv_open_read(lv, str(attached["params"]), length)
    finally:
        client.vdi_detach(vdi.ref)


def _lv_open_read(lv: LvSr, path: str, length: int) -> bytes:
    with vhd.open_chain(path, storage=LvStorage(lv.lvm, lv.vg)) as disk:
        return disk.read(0, length)


def lv_write(sm: StorageManager, lv: LvSr, ref: str, data: bytes) -> None:
    cfg = sm._config(lv.name)
    client = sm._client(cfg)
    vdi = sm.vdi(ref, lv.name)
    attached = client.vdi_attach(vdi.ref, True)
    try:
        with vhd.open_chain(str(attached["params"]), writable=True,
                            storage=LvStorage(lv.lvm, lv.vg)) as disk:
            disk.write(0, data)
            disk.flush()
    finally:
        client.vdi_detach(vdi.ref)


def _visible_snapshots(sm: StorageManager, sr: str) -> set[str]:
    return {v.uuid for v in sm.vdis(sr) if v.is_a_snapshot}


NO_NBD = {"SM_DATA_PATH": "none"}  # the suite serves over NBD only in tests marked nbd
A = [f"file disk v{i}".encode().ljust(32, b".") for i in range(4)]
B = [f"lvhd disk v{i}".encode().ljust(32, b"!") for i in range(4)]


@pytest.mark.root
def test_snapshot_revert_delete_across_file_and_lvhd(
        manager: StorageManager, lvm_sandbox: LvmSandbox, tmp_path: Path, run_dir: None) -> None:
    sm = manager
    fsr = new_sr(sm, "file", tmp_path, "fs")
    with _lvhd_sr(sm, lvm_sandbox, tmp_path, 128 * MiB, "thin") as lv:
        a = sm.vdi_create(8 * MiB, "web-a", "system disk", sr=fsr)
        b = sm.vdi_create(8 * MiB, "web-b", "data disk", sr=lv.name)
        iso = sm.vdi_create(1 * MiB, "install.iso", sr=fsr)
        sm.vm_create("web", "a web server")
        sm.vm_add_disk("web", a.uuid, sr=fsr)
        sm.vm_add_disk("web", b.uuid, sr=lv.name)
        sm.vm_add_disk("web", iso.uuid, sr=fsr, cdrom=True)
        with pytest.raises(InvalidArg):
            sm.vm_add_disk("web", a.uuid, sr=fsr)  # twice
        assert [d.kind for d in sm.vm("web").disks] == ["disk", "disk", "cdrom"]

        def write(i: int) -> None:
            sm.vdi_write(a.uuid, 0, A[i], sr=fsr)
            lv_write(sm, lv, b.uuid, B[i])

        def check(i: int) -> None:
            assert sm.vdi_read(a.uuid, 0, 32, sr=fsr) == A[i]
            assert lv_read(sm, lv, b.uuid, 32) == B[i]

        write(1)
        s1 = sm.vm_snapshot("web", "s1", "first", for_backup=True)
        assert len(s1.disks) == 2  # the CD-ROM is skipped
        assert {d.vdi for d in s1.disks} == {a.uuid, b.uuid}
        assert s1.for_backup and not s1.for_export and s1.current
        write(2)
        s2 = sm.vm_snapshot("web", "s2", for_export=True)
        assert s2.parent == s1.uuid
        # An export snapshot: each disk snapshot is attached read-only; its path reads it.
        paths = {d.vdi: d.export_path for d in s2.disks}
        with vhd.open_chain(paths[a.uuid]) as disk:
            assert disk.read(0, 32) == A[2]
        assert _lv_open_read(lv, paths[b.uuid], 32) == B[2]
        write(3)

        result = sm.vm_revert("web", "s1")
        assert {d["vdi"]: d["path"] for d in result.disks}[a.uuid] == "in-place"
        check(1)
        for before in (a, b):
            after = sm.vdi(before.uuid, before.sr)
            assert (after.uuid, after.name_label, after.name_description, after.location) == (
                before.uuid, before.name_label, before.name_description, before.location)
        tree = sm.vm_snapshots("web")
        assert [(s.name, s.current) for s in tree.walk()] == [("s1", True), ("s2", False)]
        assert tree.roots[0].children[0].snapshot.uuid == s2.uuid

        # The clone fallback, per disk, keeps every identity too.
        sm.set_setting("revert", "clone")
        result = sm.vm_revert("web", s2.uuid)
        sm.set_setting("revert", None)
        assert [d["path"] for d in result.disks] == ["clone-fallback"] * 2
        check(2)
        for before in (a, b):
            after = sm.vdi(before.uuid, before.sr)
            assert (after.uuid, after.name_label, after.location) == (
                before.uuid, before.name_label, before.location)
            assert after.backing != before.uuid  # the data lives in the clone now
        assert sm.vm("web").current == s2.uuid

        # One snapshot: its disk snapshots go, its child moves up.
        s1_vdis = {(d.snapshot_sr, d.snapshot) for d in s1.disks}
        assert sm.vm_snapshot_delete("web", "s1") == [s1.uuid]
        left = {(v.sr, v.uuid) for sr in (fsr, lv.name) for v in sm.vdis(sr)}
        assert not s1_vdis & left
        tree = sm.vm_snapshots("web")
        assert [(s.name, s.parent) for s in tree.walk()] == [("s2", None)]
        check(2)

        s3 = sm.vm_snapshot("web", "s3")
        assert s3.parent == s2.uuid
        assert sm.vm_snapshot_delete("web", "s2", scope="with-children") == [s3.uuid, s2.uuid]
        assert sm.vm_snapshots("web").roots == ()
        assert sm.vm("web").current is None
        assert _visible_snapshots(sm, fsr) == set() and _visible_snapshots(sm, lv.name) == set()
        check(2)
        assert sm.state.journal() == []


@pytest.mark.root
def test_in_place_revert_back_and_forth(manager: StorageManager, lvm_sandbox: LvmSandbox,
                                        tmp_path: Path, run_dir: None) -> None:
    """Revert to one snapshot, then to another, then back: every disk reads each one."""
    sm = manager
    fsr = new_sr(sm, "file", tmp_path, "fs")
    with _lvhd_sr(sm, lvm_sandbox, tmp_path, 128 * MiB, "thin") as lv:
        a = sm.vdi_create(8 * MiB, "a", sr=fsr)
        b = sm.vdi_create(8 * MiB, "b", sr=lv.name)
        sm.vm_create("vm")
        sm.vm_add_disk("vm", a.uuid, sr=fsr)
        sm.vm_add_disk("vm", b.uuid, sr=lv.name)
        for i in (1, 2):
            sm.vdi_write(a.uuid, 0, A[i], sr=fsr)
            lv_write(sm, lv, b.uuid, B[i])
            sm.vm_snapshot("vm", f"s{i}")
        sm.vdi_write(a.uuid, 0, A[3], sr=fsr)
        lv_write(sm, lv, b.uuid, B[3])
        for i in (1, 2, 1):
            result = sm.vm_revert("vm", f"s{i}")
            assert [d["path"] for d in result.disks] == ["in-place"] * 2
            got = (sm.vdi_read(a.uuid, 0, 32, sr=fsr), lv_read(sm, lv, b.uuid, 32))
            assert got == (A[i], B[i]), f"after reverting to s{i}"


@pytest.mark.root
def test_full_sr_fails_the_second_disk_and_leaves_nothing(
        manager: StorageManager, lvm_sandbox: LvmSandbox, tmp_path: Path, run_dir: None) -> None:
    sm = manager
    fsr = new_sr(sm, "file", tmp_path, "fs")
    with _lvhd_sr(sm, lvm_sandbox, tmp_path, 64 * MiB, "thick") as lv:
        a = sm.vdi_create(4 * MiB, "a", sr=fsr)
        b = sm.vdi_create(24 * MiB, "b", sr=lv.name)  # thick: a snapshot needs 2 more LVs
        sm.vm_create("db")
        sm.vm_add_disk("db", a.uuid, sr=fsr)
        sm.vm_add_disk("db", b.uuid, sr=lv.name)
        sm.vdi_write(a.uuid, 0, A[0], sr=fsr)
        before = {sr: {v.uuid for v in sm.vdis(sr, hidden=True)} for sr in (fsr, lv.name)}

        with pytest.raises(SRNoSpace) as err:
            sm.vm_snapshot("db", "s1")
        assert b.uuid in err.value.message and "lv" in err.value.message
        assert a.uuid not in err.value.message

        after = {sr: {v.uuid for v in sm.vdis(sr, hidden=False)} for sr in (fsr, lv.name)}
        assert all(after[sr] <= before[sr] for sr in after), "a snapshot was left behind"
        assert _visible_snapshots(sm, fsr) == set()
        assert sm.vm("db").snapshots == 0 and sm.vm("db").current is None
        assert sm.vdi_tree(a.uuid, sr=fsr).roots == ()
        assert sm.state.journal() == []
        assert sm.vdi_read(a.uuid, 0, 32, sr=fsr) == A[0]


def _three_disk_vm(env: dict[str, str], tmp_path: Path) -> tuple[str, list[str]]:
    with StorageManager(environ=env) as sm:
        sr = new_sr(sm, "file", tmp_path, "fs")
        disks = [sm.vdi_create(1 * MiB, f"d{i}", sr=sr).uuid for i in range(3)]
        sm.vm_create("app")
        for i, uuid in enumerate(disks):
            sm.vm_add_disk("app", uuid, sr=sr)
            sm.vdi_write(uuid, 0, A[i], sr=sr)
        sm.vm_snapshot("app", "base")
    return sr, disks


@pytest.mark.parametrize("point", ["api.vm.snapshot.taken:2", "api.vm.snapshot.resumed",
                                   "api.vm.snapshot.exported"])
def test_crash_mid_snapshot_is_rolled_back(env: dict[str, str], tmp_path: Path,
                                           point: str) -> None:
    sr, disks = _three_disk_vm(env, tmp_path)
    with StorageManager(environ=env) as sm:
        known = {v.uuid for v in sm.vdis(sr)}
    name, _, nth = point.partition(":")
    crashed = run_sm(env, "vm", "snapshot", "app", "--name", "doomed", "--for-export",
                     extra={**NO_NBD, **crash_env(name, int(nth) if nth else None)})
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    with StorageManager(environ=env) as sm:
        assert [e.op for e in sm.state.journal()] == ["vm-snapshot"]

    listed = run_sm(env, "vm", "snapshots", "app", "--json", extra=NO_NBD)  # repairs first
    assert listed.returncode == 0, listed.stderr.decode()
    assert [n["snapshot"]["name"] for n in json.loads(listed.stdout)["roots"]] == ["base"]
    with StorageManager(environ=env) as sm:
        assert sm.state.journal() == []
        assert {v.uuid for v in sm.vdis(sr)} == known  # hidden bases wait for the GC
        for i, uuid in enumerate(disks):
            assert sm.vdi_read(uuid, 0, 32, sr=sr) == A[i]
            assert [n.name for n in sm.vdi_tree(uuid, sr=sr).walk()] == ["base"]
        again = sm.vm_snapshot("app", "doomed")
        assert len(again.disks) == 3 and again.parent is not None


def test_delete_scopes_and_metadata_only(manager: StorageManager, tmp_path: Path) -> None:
    sm = manager
    sr = new_sr(sm, "file", tmp_path, "fs")
    disk = sm.vdi_create(1 * MiB, "d", sr=sr)
    sm.vm_create("vm")
    sm.vm_add_disk("vm", disk.uuid, sr=sr)
    s1 = sm.vm_snapshot("vm", "s1")
    s2 = sm.vm_snapshot("vm", "s2")
    s3 = sm.vm_snapshot("vm", "s3")
    with pytest.raises(InvalidArg):
        sm.vm_snapshot("vm", "s3")  # names are unique per VM
    assert sm.vm_snapshot_delete("vm", "s1", scope="children-only") == [s3.uuid, s2.uuid]
    assert [s.name for s in sm.vm_snapshots("vm").walk()] == ["s1"]
    assert sm.vm("vm").current == s1.uuid  # current was inside: it ends on the snapshot
    assert _visible_snapshots(sm, sr) == {s1.disks[0].snapshot}

    kept = s1.disks[0].snapshot
    assert sm.vm_snapshot_delete("vm", "s1", metadata_only=True) == [s1.uuid]
    assert sm.vm_snapshots("vm").roots == ()
    assert _visible_snapshots(sm, sr) == {kept}  # the disk snapshot stays, in the VDI tree
    assert [n.uuid for n in sm.vdi_tree(disk.uuid, sr=sr).walk()] == [kept]

    with pytest.raises(InvalidArg):
        sm.vm_snapshot(sm.vm_remove_disk("vm", disk.uuid, sr=sr).name)  # no disks left
    sm.vm_delete("vm")
    assert sm.vms() == []


def test_cli(env: dict[str, str], tmp_path: Path) -> None:
    def sm(*args: str) -> Any:
        proc = run_sm(env, *args, extra=NO_NBD)
        assert proc.returncode == 0, proc.stderr.decode()
        return proc.stdout.decode()

    with StorageManager(environ=env) as api:
        api.vdi_create(1 * MiB, "d1")
        api.vdi_create(1 * MiB, "cd")
    sm("vm", "create", "vm1", "--description", "test vm")
    sm("vm", "add-disk", "vm1", "d1")
    shown = sm("vm", "add-disk", "vm1", "cd", "--cdrom")
    assert "cdrom" in shown and "d1" in shown
    out = sm("vm", "snapshot", "vm1", "--name", "clean", "--for-backup")
    assert "of 1 disks" in out
    sm("vdi", "write", "d1", "changed")
    assert "[in-place]" in sm("vm", "revert", "vm1", "clean")
    assert sm("vdi", "read", "d1", "--length", "7") == "\0" * 7
    sm("vm", "snapshot", "vm1", "--name", "two")
    tree = sm("vm", "snapshots", "vm1")
    assert "clean" in tree and "[backup]" in tree and "two" in tree
    assert tree.splitlines()[-1].endswith("<- current")
    listed = json.loads(sm("vm", "list", "--json"))
    assert [(v["name"], v["snapshots"]) for v in listed] == [("vm1", 2)]
    assert len(sm("vm", "snapshot-delete", "vm1", "clean", "--children").split()) == 4
    assert "(no snapshots)" in sm("vm", "snapshots", "vm1")
    bad = run_sm(env, "vm", "snapshots", "nope", extra=NO_NBD)
    assert bad.returncode == 1 and b"InvalidArg (1)" in bad.stderr
    left = json.loads(sm("vm", "remove-disk", "vm1", "d1", "--json"))
    assert [d["name_label"] for d in left["disks"]] == ["cd"]
