"""Defect 1 of issue 16: revert takes only snapshots of its own VDI.

`sm vdi revert DISK <uuid of a snapshot of ANOTHER disk>` overwrote DISK with the other disk's
data, in place and through the clone fallback. Every path (sm.api, `sm serve`'s `vdi.revert`,
the CLI, `vm revert`) now refuses it with InvalidArg naming both disks, and changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sm.api import StorageManager
from sm.errors import InvalidArg, VDIMissing
from sm.server import methods

from .conftest import new_sr, run_sm

MiB = 1024 * 1024


@pytest.mark.parametrize("revert", ["auto", "clone"])
def test_snapshot_of_another_disk_is_refused_everywhere(env: dict[str, str], tmp_path: Path,
                                                        revert: str) -> None:
    env = {**env, "SM_REVERT": revert}
    with StorageManager(environ=env) as sm:
        sr = new_sr(sm, "file", tmp_path)
        a = sm.vdi_create(MiB, "disk-a", sr=sr)
        b = sm.vdi_create(MiB, "disk-b", sr=sr)
        sm.vdi_write(a.uuid, 0, b"A" * 512, sr=sr)
        sm.vdi_write(b.uuid, 0, b"B" * 512, sr=sr)
        sa = sm.vdi_snapshot(a.uuid, "sa", sr=sr)
        sb = sm.vdi_snapshot(b.uuid, "sb", sr=sr)
        before = (sm.vdis(sr, hidden=True), sm.vdi_tree(a.uuid, sr=sr))

        with pytest.raises(InvalidArg) as err:
            sm.vdi_revert(a.uuid, sb.uuid, sr=sr)
        assert a.uuid in err.value.message and b.uuid in err.value.message
        assert "disk-b" in err.value.message and "disk-a" in err.value.message
        with pytest.raises(InvalidArg):
            methods.call(lambda: sm, "vdi.revert", [a.uuid, sb.uuid, {"sr": sr}])
        with pytest.raises(VDIMissing):  # a tree name is looked up in the target's tree only
            sm.vdi_revert(a.uuid, "sb", sr=sr)
        assert (sm.vdis(sr, hidden=True), sm.vdi_tree(a.uuid, sr=sr)) == before
        assert sm.vdi_read(a.uuid, 0, 512, sr=sr) == b"A" * 512
        assert sm.state.journal() == []

        proc = run_sm(env, "vdi", "revert", "disk-a", sb.uuid, "--sr", sr)
        assert proc.returncode != 0
        lines = proc.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "InvalidArg" in lines[0] and b.uuid in lines[0], lines
        assert sm.vdi_read(a.uuid, 0, 512, sr=sr) == b"A" * 512

        # Its own snapshot still works (and again after a revert by clone).
        assert sm.vdi_revert(a.uuid, sa.uuid, sr=sr).vdi.uuid == a.uuid
        assert sm.vdi_revert(a.uuid, "sa", sr=sr).vdi.uuid == a.uuid


def test_vm_revert_checks_each_disks_snapshot(env: dict[str, str], tmp_path: Path) -> None:
    """The VM path reverts through the same check: a VM snapshot record whose disk snapshot
    belongs to another disk is refused before any disk is touched."""
    with StorageManager(environ=env) as sm:
        sr = new_sr(sm, "file", tmp_path)
        a = sm.vdi_create(MiB, "disk-a", sr=sr)
        b = sm.vdi_create(MiB, "disk-b", sr=sr)
        sm.vm_create("vm")
        sm.vm_add_disk("vm", a.uuid, sr=sr)
        snap = sm.vm_snapshot("vm", "s")
        sb = sm.vdi_snapshot(b.uuid, "sb", sr=sr)
        sm.vdi_write(a.uuid, 0, b"after", sr=sr)
        # Corrupt the record: the disk snapshot now names B's snapshot.
        with sm.state.transaction() as db:
            db.execute("UPDATE vm_snapshot_disks SET snap=? WHERE snapshot=?",
                       (sb.uuid, snap.uuid))
        with pytest.raises(InvalidArg, match=b.uuid):
            sm.vm_revert("vm", "s")
        assert sm.vdi_read(a.uuid, 0, 5, sr=sr) == b"after"
