"""The reflink fast path: on file systems that share extents (xfs, btrfs; loop-mounted here)
a merge clones full blocks into the base instead of copying their bytes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from sm.faults import crash_env
from tests.conftest import require_tool
from tests.gc.fsmount import loop_mount
from tests.gc.support import MiB, check_sr, gc_process, gc_run, make_sr

pytestmark = pytest.mark.root


def _shared_bytes(path: Path) -> int:
    """Bytes of `path` in extents shared with another file (filefrag's `shared` flag)."""
    out = subprocess.run(["filefrag", "-v", "-b1", str(path)], capture_output=True, text=True,
                         check=True).stdout
    total = 0
    for line in out.splitlines():
        m = re.match(r"\s*\d+:\s+\d+\.\.\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+):.*shared", line)
        if m:
            total += int(m.group(1))
    return total


@pytest.mark.parametrize("fstype", ["xfs", "btrfs"])
def test_merge_clones_extents(tmp_path: Path, fstype: str) -> None:
    require_tool("filefrag")
    with loop_mount(tmp_path, fstype, 512 * MiB) as mnt:
        sr = make_sr(mnt)
        a = sr.create_vdi(32 * MiB)
        sr.write(a, 0, bytes(range(256)) * (16 * MiB // 256))
        s1 = sr.snapshot(a)                          # B1: 8 full blocks
        sr.write(a, 16 * MiB, b"\x5a" * (16 * MiB))
        s2 = sr.snapshot(a)                          # B2: 8 full blocks, parent B1
        model = {a: sr.read(a), s2: sr.read(s2)}
        b2 = sr.record(a)["parent"]
        b1 = sr.record(b2)["parent"]
        sr.call("vdi_delete", vdi=s1)                # B2 into B1 (up: B1 is a root)
        # stop right after the copy, while both images still exist
        assert gc_process(sr, crash_env("gc_merge:copied")).returncode == -9
        shared = _shared_bytes(mnt / "sr" / f"{b1}.vhd")
        assert shared >= 16 * MiB, f"only {shared} bytes of the base share extents"
        print(f"{fstype}: {shared} bytes shared")
        assert gc_run(sr)["result"] == "done"
        check_sr(sr, model)
        assert b2 not in sr.records() and b1 in sr.records()
