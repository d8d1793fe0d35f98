"""`sm vdi delete` killed (SIGKILL) half-way is finished by the next command, and a refused
delete deletes nothing (found by tests/api/test_stateful.py): the driver's `vdi_delete` and
the removal of the tree node commit separately, and a kill in between left a node naming a
VDI that was gone (`sm vdi revert disk s1`: VDIMissing, for ever); a disk deleted with its
snapshots while attached lost its snapshots before the driver refused the disk."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from sm.api import StorageManager
from sm.errors import VDIInUse
from sm.faults import crash_env

from .conftest import new_sr, run_sm


def _setup(env: dict[str, str], tmp_path: Path) -> tuple[str, str, list[str]]:
    with StorageManager(environ=env) as sm:
        sr = new_sr(sm, "file", tmp_path)
        disk = sm.vdi_create(1 << 20, "disk", sr=sr)
        snaps = []
        for n in (1, 2):
            sm.vdi_write("disk", 0, f"content {n}".encode(), sr=sr)
            snaps.append(sm.vdi_snapshot("disk", f"s{n}", sr=sr).uuid)
        return sr, disk.uuid, snaps


def _after(env: dict[str, str], sr: str) -> tuple[list[str], list[str]]:
    """The next command repairs; (visible VDI uuids, tree node uuids of `disk`)."""
    shown = run_sm(env, "vdi", "list", "--sr", sr)
    assert shown.returncode == 0, shown.stderr.decode()
    with StorageManager(environ=env) as sm:
        assert sm.state.journal() == []
        uuids = [v.uuid for v in sm.vdis(sr)]
        tree = [n.uuid for n in sm.vdi_tree("disk", sr=sr).walk()] if any(
            not v.is_a_snapshot for v in sm.vdis(sr)) else []
        return uuids, tree


@pytest.mark.parametrize(("args", "point"), [
    (["s2"], "vdi_delete:file"),                     # inside the driver, past its commit
    (["s2"], "api.tree.delete.volume"),              # the volume gone, the node not yet
    (["s1", "--children"], "api.tree.delete.volume"),  # the first of two
])
def test_killed_snapshot_delete_is_finished(env: dict[str, str], tmp_path: Path,
                                            args: list[str], point: str) -> None:
    sr, disk, (s1, s2) = _setup(env, tmp_path)
    crashed = run_sm(env, "vdi", "delete", *args, "--sr", sr, extra=crash_env(point))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    uuids, tree = _after(env, sr)
    gone = {s2} if args == ["s2"] else {s1, s2}
    assert sorted(uuids) == sorted({disk, s1, s2} - gone)
    assert sorted(tree) == sorted({s1, s2} - gone)


def test_killed_disk_delete_with_its_snapshots_is_finished(env: dict[str, str],
                                                          tmp_path: Path) -> None:
    sr, _, _ = _setup(env, tmp_path)
    crashed = run_sm(env, "vdi", "delete", "disk", "--children", "--sr", sr,
                     extra=crash_env("api.tree.delete.volume"))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    assert _after(env, sr) == ([], [])


def test_killed_disk_delete_forgets_its_tree(env: dict[str, str], tmp_path: Path) -> None:
    """Killed after the driver deleted the disk: its tree goes too (its snapshots stay, in no
    tree, so a metadata-only delete of one is refused)."""
    sr, _, (s1, s2) = _setup(env, tmp_path)
    crashed = run_sm(env, "vdi", "delete", "disk", "--sr", sr,
                     extra=crash_env("api.tree.delete.disk"))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    uuids, tree = _after(env, sr)
    assert (sorted(uuids), tree) == (sorted([s1, s2]), [])
    refused = run_sm(env, "vdi", "delete", s2, "--metadata-only", "--sr", sr)
    assert refused.returncode != 0
    with StorageManager(environ=env) as sm:
        assert sm.state.snapshot((sm.sr(sr).uuid, s2)) is None


def test_attached_disk_keeps_its_snapshots(manager: StorageManager, tmp_path: Path) -> None:
    sr = new_sr(manager, "file", tmp_path)
    disk = manager.vdi_create(1 << 20, "disk", sr=sr)
    snap = manager.vdi_snapshot("disk", "s1", sr=sr)
    client = manager._client(manager._config(sr))
    client.vdi_attach(disk.ref, True)  # a toolstack's attachment
    with pytest.raises(VDIInUse):
        manager.vdi_delete("disk", sr=sr, scope="with-children")
    assert sorted(v.uuid for v in manager.vdis(sr)) == sorted([disk.uuid, snap.uuid])
    assert [n.uuid for n in manager.vdi_tree("disk", sr=sr).walk()] == [snap.uuid]
    client.vdi_detach(disk.ref)
