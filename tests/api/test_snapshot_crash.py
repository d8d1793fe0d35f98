"""`sm vdi snapshot` killed (SIGKILL) at points of the API layer and of the driver, then
repaired by the next command: the snapshot is in the VDI's tree under its name, or it does not
exist; never a snapshot VDI in no tree (found by tests/api/test_stateful.py: the driver rolls
its interrupted snapshot forward, and the API step that adds it to the tree was lost)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from sm.api import StorageManager
from sm.faults import crash_env

from .conftest import new_sr, run_sm

POINTS = ["api.vdi.snapshot.begun", "vdi_snapshot:journaled", "vdi_snapshot:renamed",
          "vdi_snapshot:snap", "vdi_snapshot:records", "api.vdi.snapshot.taken"]


@pytest.mark.parametrize("point", POINTS)
def test_killed_snapshot_is_in_the_tree_or_gone(env: dict[str, str], tmp_path: Path,
                                               point: str) -> None:
    with StorageManager(environ=env) as sm:
        sr = new_sr(sm, "file", tmp_path)
        disk = sm.vdi_create(1 << 20, "disk", sr=sr)
        sm.vdi_write("disk", 0, b"before", sr=sr)

    crashed = run_sm(env, "vdi", "snapshot", "disk", "--name", "s1", "--sr", sr,
                     extra=crash_env(point))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    shown = run_sm(env, "vdi", "show", "disk", "--sr", sr, "--json")
    assert shown.returncode == 0, shown.stderr.decode()
    assert json.loads(shown.stdout)["uuid"] == disk.uuid

    with StorageManager(environ=env) as sm:
        assert sm.state.journal() == []
        snaps = [v.uuid for v in sm.vdis(sr) if v.is_a_snapshot]
        tree = sm.vdi_tree("disk", sr=sr)
        assert [(n.uuid, n.name) for n in tree.walk()] == [(s, "s1") for s in snaps]
        assert tree.current == (snaps[0] if snaps else None)
        if snaps:
            assert sm.vdi_read(snaps[0], 0, 6, sr=sr) == b"before"
        # The disk goes on: a new snapshot joins the tree under the old one.
        s2 = sm.vdi_snapshot("disk", "s2", sr=sr)
        assert [n.name for n in sm.vdi_tree("disk", sr=sr).walk()] == [*(["s1"] if snaps else []),
                                                                        "s2"]
        assert sm.vdi(s2.uuid, sr).snapshot_of == disk.uuid
