"""`sm vm snapshot-delete` killed (SIGKILL) between two disks is finished by the next command
(found by tests/api/test_stateful.py): the disk snapshots were deleted one by one and the VM
snapshot last, unjournaled, so a kill left a VM snapshot whose revert failed for ever with
VDIMissing."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from sm.api import StorageManager
from sm.faults import crash_env

from .conftest import new_sr, run_sm


@pytest.mark.parametrize("point", [("api.tree.delete.volume", 2),
                                   ("api.vm.snapshot_delete.disk", 1)])
def test_killed_vm_snapshot_delete_is_finished(env: dict[str, str], tmp_path: Path,
                                               point: tuple[str, int]) -> None:
    with StorageManager(environ=env) as sm:
        sr = new_sr(sm, "file", tmp_path)
        disks = [sm.vdi_create(1 << 20, name, sr=sr).uuid for name in ("a", "b")]
        sm.vm_create("web")
        for d in disks:
            sm.vm_add_disk("web", d, sr=sr)
        sm.vm_snapshot("web", "v1")
    crashed = run_sm(env, "vm", "snapshot-delete", "web", "v1", extra=crash_env(*point))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    shown = run_sm(env, "vm", "show", "web")
    assert shown.returncode == 0, shown.stderr.decode()
    with StorageManager(environ=env) as sm:
        assert sm.state.journal() == []
        assert sm.vm_snapshots("web").walk() == []
        assert sorted(v.uuid for v in sm.vdis(sr)) == sorted(disks)
        for d in disks:
            assert sm.vdi_tree(d, sr=sr).walk() == []
        sm.vm_snapshot("web", "v2")  # and the VM goes on
        assert [s.name for s in sm.vm_snapshots("web").walk()] == ["v2"]
