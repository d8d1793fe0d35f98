"""Defect 3 of issue 16: unknown options and option values are refused, not ignored.

`vdi.delete(disk, {"scope": "bogus"})` over XML-RPC deleted the disk. Options are now parsed
by one mechanism (`sm.options`, from each method's annotations) that sm.api, `sm serve` and
the CLI share: an unknown option, a value outside a Literal's values, or a non-boolean flag is
InvalidArg (1) naming the option and what is allowed, and nothing changes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sm.api import StorageManager
from sm.errors import InvalidArg
from sm.options import DeleteScope, allowed
from sm.server import methods

from .conftest import new_sr

MiB = 1024 * 1024


def test_bad_options_change_nothing(env: dict[str, str], tmp_path: Path) -> None:
    with StorageManager(environ=env) as sm:
        sr = new_sr(sm, "file", tmp_path)
        disk = sm.vdi_create(MiB, "disk", sr=sr)
        s1 = sm.vdi_snapshot(disk.uuid, "s1", sr=sr)
        sm.vm_create("vm")
        sm.vm_add_disk("vm", disk.uuid, sr=sr)
        sm.vm_snapshot("vm", "v1")
        before = (sm.vdis(sr, hidden=True), sm.vm_snapshots("vm"))

        def call(method: str, *params: object) -> InvalidArg:
            with pytest.raises(InvalidArg) as err:
                methods.call(lambda: sm, method, list(params))  # type: ignore[arg-type]
            return err.value

        err = call("vdi.delete", s1.uuid, {"sr": sr, "scope": "bogus"})  # it deleted s1
        assert "scope='bogus'" in err.message
        err = call("vdi.delete", disk.uuid, {"sr": sr, "scope": "bogus"})
        assert "scope='bogus'" in err.message
        assert all(v in err.message for v in allowed(DeleteScope))
        err = call("vdi.delete", disk.uuid, {"sr": sr, "scop": "one"})
        assert "'scop'" in err.message and "scope" in err.message
        assert "metadata_only" in err.message
        err = call("vdi.delete", disk.uuid, {"sr": sr, "metadata_only": "false"})
        assert "metadata_only" in err.message
        call("vdi.revert", disk.uuid, "s1", {"sr": sr, "safety": "yes"})
        call("vdi.list", sr, {"hidden": 1})
        call("vm.snapshot_delete", "vm", "v1", {"scope": "all"})
        call("vm.snapshot", "vm", "v2", "", {"for_backup": "true"})
        call("vm.add_disk", "vm", disk.uuid, {"cdrom": "no"})

        # The Python API: the same parser (InvalidArg, not a TypeError or a silent default).
        with pytest.raises(InvalidArg, match="scope='bogus'"):
            sm.vdi_delete(disk.uuid, sr=sr, scope="bogus")  # type: ignore[arg-type]
        with pytest.raises(InvalidArg, match="unknown option 'force_it'"):
            sm.vdi_delete(disk.uuid, sr=sr, force_it=True)  # type: ignore[call-arg]
        with pytest.raises(InvalidArg, match="fmt='qcow2'"):
            sm.vdi_export(disk.uuid, str(tmp_path / "x"), "qcow2", sr=sr)  # type: ignore[arg-type]
        assert not (tmp_path / "x").exists()
        with pytest.raises(InvalidArg, match="scope='children'"):
            sm.vm_snapshot_delete("vm", "v1", scope="children")  # type: ignore[arg-type]
        # Every public method, the ones without Literal or bool options too.
        with pytest.raises(InvalidArg, match="unknown option 'size'"):
            sm.vdi_snapshot(disk.uuid, "s2", sr=sr, size=1)  # type: ignore[call-arg]
        with pytest.raises(InvalidArg, match="unknown option 'disk'"):
            sm.vm_create("vm2", disk=disk.uuid)  # type: ignore[call-arg]
        with pytest.raises(InvalidArg, match="missing a required argument"):
            sm.vdi_revert(disk.uuid)  # type: ignore[call-arg]

        assert (sm.vdis(sr, hidden=True), sm.vm_snapshots("vm")) == before
        # Good options still work.
        sm.vm_remove_disk("vm", disk.uuid, sr=sr)
        assert methods.call(lambda: sm, "vdi.delete",  # type: ignore[arg-type]
                            [disk.uuid, {"sr": sr, "scope": "with-children"}])
