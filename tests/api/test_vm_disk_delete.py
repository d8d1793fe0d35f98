"""Defect 4 of issue 16: a disk of a VM is not deleted behind the VM's back, and a VM whose
disk vanished anyway stays usable.

`sm vdi delete` of a VM's disk was accepted, after which `sm vm snapshot` and `sm vm revert`
failed forever. Now the delete is refused with VDIInUse (24) naming the VM unless forced
(`--force` / force=True, which also removes the disk from the VM); a disk deleted through its
driver is skipped by VM snapshots and reverts with a `MissingDisk` warning (the CLI's
`Warning: ...` line) and listed in the result's `missing`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sm.api import StorageManager
from sm.api.vms import MissingDisk
from sm.errors import VDIInUse
from sm.server import methods

from .conftest import new_sr, run_sm

MiB = 1024 * 1024


def test_vm_disk_delete_refused_then_forced_and_vm_stays_usable(env: dict[str, str],
                                                                 tmp_path: Path) -> None:
    with StorageManager(environ=env) as sm:
        sr = new_sr(sm, "file", tmp_path)
        d1, d2, d3 = (sm.vdi_create(MiB, f"d{i}", sr=sr) for i in (1, 2, 3))
        sm.vm_create("web")
        for d in (d1, d2, d3):
            sm.vm_add_disk("web", d.uuid, sr=sr)
            sm.vdi_write(d.uuid, 0, b"v1", sr=sr)
        sm.vm_snapshot("web", "s1")
        before = (sm.vdis(sr, hidden=True), sm.vm("web"))

        with pytest.raises(VDIInUse) as err:
            sm.vdi_delete(d1.uuid, sr=sr)
        assert "VM web" in err.value.message and d1.uuid in err.value.message
        with pytest.raises(VDIInUse, match="VM web"):
            methods.call(lambda: sm, "vdi.delete", [d1.uuid, {"sr": sr}])  # type: ignore[arg-type]
        with pytest.raises(VDIInUse, match="VM web"):
            sm.vdi_delete(d1.uuid, sr=sr, scope="with-children")
        proc = run_sm(env, "vdi", "delete", "d1", "--sr", sr)
        lines = proc.stderr.decode().strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1, lines
        assert "VDIInUse (24)" in lines[0] and "VM web" in lines[0] and "--force" in lines[0]
        assert (sm.vdis(sr, hidden=True), sm.vm("web")) == before

        proc = run_sm(env, "vdi", "delete", "d1", "--sr", sr, "--force")
        assert proc.returncode == 0, proc.stderr
        assert [d.vdi for d in sm.vm("web").disks] == [d2.uuid, d3.uuid]

        # d2 vanishes through its driver (as a toolstack could do it).
        sm._client(sm._config(sr)).vdi_delete(sm.vdi(d2.uuid, sr).ref)
        sm.vdi_write(d3.uuid, 0, b"v2", sr=sr)
        with pytest.warns(MissingDisk, match=d2.uuid):
            s2 = sm.vm_snapshot("web", "s2")
        assert s2.missing == (d2.uuid,)
        assert [d.vdi for d in s2.disks] == [d3.uuid]

        with pytest.warns(MissingDisk) as caught:
            result = sm.vm_revert("web", "s1")
        assert {d1.uuid, d2.uuid} == set(result.missing)
        assert len(caught) == 2
        assert [d["vdi"] for d in result.disks] == [d3.uuid]
        assert sm.vdi_read(d3.uuid, 0, 2, sr=sr) == b"v1"
        assert sm.vm_revert("web", "s2").missing == ()

        proc = run_sm(env, "vm", "revert", "web", "s1")
        assert proc.returncode == 0, proc.stderr
        assert b"Warning: " in proc.stderr and d2.uuid.encode() in proc.stderr
