"""The in-place revert killed (SIGKILL) at every step, in this layer and in the driver.

The snapshot tree's current node must follow the data: after the repair, the VDI reads the
snapshot's content and the snapshot is current, or it reads what it read before and the
snapshot it was last taken from is still current. (A kill after the driver's point of no
return once left the data reverted and the tree marking the old snapshot, found by the
model-based test.)
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from sm.api import StorageManager
from sm.chain.revert import RevertSteps
from sm.faults import crash_env

from .conftest import new_sr, run_sm

SIZE = 1024 * 1024
A, B, C = (x.ljust(64, b".") for x in (b"content of s1", b"content of s2", b"live content"))

POINTS = ["api.revert.in-place.begun", *(f"vdi_revert:{s}" for s in RevertSteps.names()),
          "api.revert.in-place.reverted"]


@pytest.mark.parametrize("point", POINTS)
def test_kill_in_place_revert(env: dict[str, str], tmp_path: Path, point: str) -> None:
    with StorageManager(environ=env) as sm:
        sr = new_sr(sm, "file", tmp_path)
        disk = sm.vdi_create(SIZE, "disk", "", sr=sr)
        sm.vdi_write("disk", 0, A, sr=sr)
        s1 = sm.vdi_snapshot("disk", "s1", sr=sr)
        sm.vdi_write("disk", 0, B, sr=sr)
        s2 = sm.vdi_snapshot("disk", "s2", sr=sr)
        sm.vdi_write("disk", 0, C, sr=sr)
        key = (sm.vdi(disk.uuid, sr).sr, disk.uuid)
        assert sm.state.current(key) == (key[0], s2.uuid)

    crashed = run_sm(env, "vdi", "revert", "disk", "s1", "--sr", sr, extra=crash_env(point))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()

    shown = run_sm(env, "vdi", "show", "disk", "--sr", sr)  # the next command repairs
    assert shown.returncode == 0, shown.stderr.decode()
    with StorageManager(environ=env) as sm:
        assert sm.state.journal() == []
        data = sm.vdi_read("disk", 0, len(A), sr=sr)
        current = sm.state.current(key)
        assert (data, current) in ((A, (key[0], s1.uuid)), (C, (key[0], s2.uuid))), (data, current)
        if point == "api.revert.in-place.reverted":
            assert data == A  # past the driver's answer: it happened
        if point == "api.revert.in-place.begun":
            assert data == C
        # And the tree goes on: a snapshot now hangs under the current node.
        s3 = sm.vdi_snapshot("disk", "s3", sr=sr)
        node = sm.state.snapshot((key[0], s3.uuid))
        assert node is not None and node.parent == current
