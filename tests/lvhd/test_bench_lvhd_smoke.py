"""benchmarks/bench_lvhd.py runs (in --quick mode), so it cannot rot. No timing assertions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_root, require_tool

pytestmark = pytest.mark.root


def test_bench_lvhd_quick(tmp_path: Path) -> None:
    require_root()
    require_tool("lvm", "losetup")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_lvhd.py"), "--quick",
         "--dir", str(tmp_path), "--vdis", "10", "--runs", "1"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for phase in ("create", "attach", "detach", "snapshot", "clone", "revert", "resize"):
        assert f"\n{phase} " in proc.stdout, proc.stdout
    assert "scan-adopt" in proc.stdout and "process-snapshot" in proc.stdout
    assert "ratio" in proc.stdout
    assert "10 new LVs (" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # cleaned up after itself
