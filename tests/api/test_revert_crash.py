"""The clone fallback killed (SIGKILL) at every step, then repaired by the next command.

Each case runs the installed `sm` command in a child process with `sm.faults.crash_env`, so the
process dies exactly at the named point. The next `sm` command (here `sm vdi show`) repairs;
afterwards the VDI has its identity and reads either its old content or the snapshot's, never
anything else, no orphan is left, and a new revert works.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from sm.api import StorageManager
from sm.faults import crash_env

from .conftest import new_sr, run_sm

SIZE = 1024 * 1024
OLD, SNAP = b"old content".ljust(64, b"."), b"snapshot content".ljust(64, b"!")

# (crash point, what the VDI reads after the repair)
POINTS = [
    ("api.revert.begun", OLD),
    ("vdi_clone:journaled", OLD),   # inside the driver's clone (its own journal repairs it)
    ("vdi_clone:renamed", OLD),
    ("vdi_clone:leaf", OLD),
    ("vdi_clone:snap", OLD),
    ("vdi_clone:records", OLD),
    ("api.revert.clone", OLD),      # the clone exists, nobody recorded it: rolled back
    ("api.revert.cloned", SNAP),    # recorded: rolled forward
    ("api.revert.switched", SNAP),
    ("api.revert.deleted", SNAP),
]


@pytest.mark.parametrize(("point", "expected"), POINTS, ids=[p for p, _ in POINTS])
def test_crash_then_repair(env: dict[str, str], tmp_path: Path, point: str,
                           expected: bytes) -> None:
    with StorageManager(environ=env) as sm:
        sr = new_sr(sm, "norevert", tmp_path)
        disk = sm.vdi_create(SIZE, "disk", "crash test disk", sr=sr)
        sm.vdi_write("disk", 0, SNAP, sr=sr)
        snap = sm.vdi_snapshot("disk", "s1", sr=sr)
        sm.vdi_write("disk", 0, OLD, sr=sr)

    crashed = run_sm(env, "vdi", "revert", "disk", "s1", "--sr", sr, extra=crash_env(point))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()

    shown = run_sm(env, "vdi", "show", "disk", "--sr", sr, "--json")
    assert shown.returncode == 0, shown.stderr.decode()
    vdi = json.loads(shown.stdout)
    assert (vdi["uuid"], vdi["location"], vdi["name_label"], vdi["name_description"]) == (
        disk.uuid, disk.location, "disk", "crash test disk")

    with StorageManager(environ=env) as sm:
        assert sm.state.journal() == []
        assert sm.vdi_read("disk", 0, len(OLD), sr=sr) == expected
        visible = sorted((v.uuid, v.is_a_snapshot) for v in sm.vdis(sr))
        assert visible == sorted([(disk.uuid, False), (snap.uuid, True)])
        assert sm.vdi(snap.uuid, sr).snapshot_of == disk.uuid
        assert sm.vdi_read(snap.uuid, 0, len(SNAP), sr=sr) == SNAP
        # And the revert can be done (again).
        assert sm.vdi_revert("disk", "s1", sr=sr).path == "clone-fallback"
        assert sm.vdi_read("disk", 0, len(SNAP), sr=sr) == SNAP
        assert sm.vdi("disk", sr).uuid == disk.uuid
        assert len([v for v in sm.vdis(sr) if not v.is_a_snapshot]) == 1
