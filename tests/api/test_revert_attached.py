"""Defect 2 of issue 16: reverting a VDI that is attached, and journals that cannot finish.

Before: the clone fallback of a VDI attached through its driver (as a toolstack does) failed
with VDIInUse AFTER the identity was switched, every later command on any SR failed while
"rolling forward an interrupted revert", and after the detach the roll-forward deleted the
volume the toolstack had written to; the in-place path allowed the same revert.

The rule now, for both paths: a VDI attached on this host is not reverted (VDIInUse 24 naming
the attachment, nothing changes). The clone path deletes the old volume before it switches, so
a driver that refuses (the old volume attached after a crash) rolls the revert back. A state
journal entry that cannot progress is set aside: commands on other SRs go on.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from sm.api import StorageManager
from sm.errors import SRUnavailable, VDIInUse
from sm.faults import crash_env
from sm.server import methods

from .conftest import new_sr, run_sm

MiB = 1024 * 1024
OLD, SNAP = b"old content".ljust(64, b"."), b"snapshot content".ljust(64, b"!")


@pytest.fixture(autouse=True)
def _one_host(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process drivers (this test's) and the `sm` commands' see the same host state."""
    monkeypatch.setenv("SM_RUN_DIR", env["SM_RUN_DIR"])


def _disk(sm: StorageManager, sr: str) -> tuple[str, str]:
    disk = sm.vdi_create(MiB, "disk", sr=sr)
    sm.vdi_write(disk.uuid, 0, SNAP, sr=sr)
    snap = sm.vdi_snapshot(disk.uuid, "s1", sr=sr)
    sm.vdi_write(disk.uuid, 0, OLD, sr=sr)
    return disk.uuid, snap.uuid


@pytest.mark.parametrize(("srtype", "revert"), [("file", "auto"), ("file", "clone"),
                                                ("norevert", "auto")])
def test_attached_vdi_is_not_reverted_on_either_path(env: dict[str, str], tmp_path: Path,
                                                     srtype: str, revert: str) -> None:
    env = {**env, "SM_REVERT": revert}
    with StorageManager(environ=env) as sm:
        sr = new_sr(sm, srtype, tmp_path)
        other = new_sr(sm, "file", tmp_path, "other")
        disk, snap = _disk(sm, sr)
        client = sm._client(sm._config(sr))
        ref = sm.vdi(disk, sr).ref
        client.vdi_attach(ref, True)  # a toolstack attaches (and activates) it
        before = sm.vdis(sr, hidden=True), sm.vdi_tree(disk, sr=sr)

        with pytest.raises(VDIInUse, match="attached read-write") as err:
            sm.vdi_revert(disk, snap, sr=sr)
        assert disk in err.value.message
        with pytest.raises(VDIInUse):
            sm.vdi_revert(disk, "s1", sr=sr, safety=True)
        with pytest.raises(VDIInUse):
            methods.call(lambda: sm, "vdi.revert", [disk, snap, {"sr": sr}])  # type: ignore[arg-type]
        proc = run_sm(env, "vdi", "revert", disk, "s1", "--sr", sr)
        lines = proc.stderr.decode().strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and "VDIInUse (24)" in lines[0], lines

        assert (sm.vdis(sr, hidden=True), sm.vdi_tree(disk, sr=sr)) == before
        assert sm.state.journal() == []
        sm.vdi_create(MiB, "elsewhere", sr=other)  # nothing blocks the other SR
        client.vdi_detach(ref)
        assert sm.vdi_read(disk, 0, len(OLD), sr=sr) == OLD
        assert sm.vdi_revert(disk, snap, sr=sr).vdi.uuid == disk  # detached: it works
        assert sm.vdi_read(disk, 0, len(SNAP), sr=sr) == SNAP


def test_roll_forward_never_deletes_an_attached_volume(env: dict[str, str],
                                                       tmp_path: Path) -> None:
    """Killed after the clone was recorded; a toolstack then attaches the old volume and
    writes to it. The next command (on another SR) must not fail, and the repair must not
    delete the volume in use: it rolls the revert back."""
    with StorageManager(environ=env) as sm:
        sr = new_sr(sm, "norevert", tmp_path)
        other = new_sr(sm, "file", tmp_path, "other")
        disk, snap = _disk(sm, sr)
    crashed = run_sm(env, "vdi", "revert", disk, "s1", "--sr", sr,
                     extra=crash_env("api.revert.cloned"))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()

    with StorageManager(environ=env) as sm:
        client = sm._client(sm._config(sr))
        old = next(r for r in client.records() if r["uuid"] == disk)
        ref = (str(old["uuid"]), str(old["location"]))
        client.vdi_attach(ref, True)
    proc = run_sm(env, "vdi", "list", "--sr", other)
    assert proc.returncode == 0, proc.stderr.decode()
    proc = run_sm(env, "vdi", "create", "more", "--size", "1M", "--sr", other)
    assert proc.returncode == 0, proc.stderr.decode()

    with StorageManager(environ=env) as sm:
        assert sm.state.journal() == []
        client = sm._client(sm._config(sr))
        client.vdi_detach(ref)
        assert sm.vdi_read(disk, 0, len(OLD), sr=sr) == OLD  # the volume is still there
        visible = sorted((v.uuid, v.is_a_snapshot) for v in sm.vdis(sr))
        assert visible == sorted([(disk, False), (snap, True)])  # the clone is gone
        assert sm.vdi_revert(disk, "s1", sr=sr).path == "clone-fallback"
        assert sm.vdi_read(disk, 0, len(SNAP), sr=sr) == SNAP


def test_stuck_journal_entry_is_set_aside(env: dict[str, str], tmp_path: Path) -> None:
    """A revert journal whose SR became unreachable never blocks commands on another SR; once
    the SR is back, the next command finishes it."""
    with StorageManager(environ=env) as sm:
        sr = new_sr(sm, "norevert", tmp_path)
        other = new_sr(sm, "file", tmp_path, "other")
        disk, _ = _disk(sm, sr)
    crashed = run_sm(env, "vdi", "revert", disk, "s1", "--sr", sr,
                     extra=crash_env("api.revert.cloned"))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    location = tmp_path / f"sr-{sr}"
    location.rename(tmp_path / "away")
    try:
        with StorageManager(environ=env) as sm:
            assert sm.vdi_create(MiB, "fine", sr=other).name_label == "fine"
            assert [e.data.get("aside") for e in sm.state.journal()] != [None]
            with pytest.raises(SRUnavailable):  # that SR's own error, nothing else
                sm.vdi_revert(disk, "s1", sr=sr)
        proc = run_sm(env, "vdi", "list", "--sr", other)
        assert proc.returncode == 0, proc.stderr.decode()
        assert b"set aside" in proc.stderr
    finally:
        (tmp_path / "away").rename(location)
    with StorageManager(environ=env) as sm:
        assert sm.vdi_read(disk, 0, len(SNAP), sr=sr) == SNAP  # rolled forward now
        assert sm.state.journal() == []


@pytest.mark.root
@pytest.mark.nbd  # an LVM volume is reached through its NBD server (no device-mapper here)
@pytest.mark.parametrize("revert", ["auto", "clone"])
def test_attached_lvhd_vdi_is_not_reverted(env: dict[str, str], tmp_path: Path,
                                           lvm_sandbox: Any, revert: str) -> None:
    dev, _ = lvm_sandbox.loop_device(64 * MiB)
    try:
        with StorageManager(environ={**env, "SM_REVERT": revert}) as sm:
            sm.sr_create("lv", "lvhd", {"device": dev})
            disk, snap = _disk(sm, "lv")
            client = sm._client(sm._config("lv"))
            ref = sm.vdi(disk, "lv").ref
            client.vdi_attach(ref, False)  # read-only counts too
            with pytest.raises(VDIInUse, match="attached read-only"):
                sm.vdi_revert(disk, snap, sr="lv")
            assert sm.state.journal() == []
            client.vdi_detach(ref)
            assert sm.vdi_read(disk, 0, len(OLD), sr="lv") == OLD
            sm.vdi_revert(disk, snap, sr="lv")
            assert sm.vdi_read(disk, 0, len(SNAP), sr="lv") == SNAP
            sm.vdi_delete(disk, sr="lv", scope="with-children")
            sm.sr_delete("lv")
    finally:
        lvm_sandbox.detach(dev)


def test_vm_revert_refuses_before_touching_any_disk(env: dict[str, str],
                                                    tmp_path: Path) -> None:
    """A VM revert with one attached disk reverts none of them (not the disks before it)."""
    with StorageManager(environ=env) as sm:
        sr = new_sr(sm, "file", tmp_path)
        a, b = (sm.vdi_create(MiB, name, sr=sr).uuid for name in ("a", "b"))
        sm.vm_create("vm")
        for d in (a, b):
            sm.vm_add_disk("vm", d, sr=sr)
            sm.vdi_write(d, 0, SNAP, sr=sr)
        sm.vm_snapshot("vm", "s")
        for d in (a, b):
            sm.vdi_write(d, 0, OLD, sr=sr)
        client = sm._client(sm._config(sr))
        client.vdi_attach(sm.vdi(b, sr).ref, True)
        with pytest.raises(VDIInUse, match=f"VM vm, disk b \\({b}\\)"):
            sm.vm_revert("vm", "s")
        assert sm.vdi_read(a, 0, len(OLD), sr=sr) == OLD
        client.vdi_detach(sm.vdi(b, sr).ref)
        sm.vm_revert("vm", "s")
        assert [sm.vdi_read(d, 0, len(SNAP), sr=sr) for d in (a, b)] == [SNAP, SNAP]
