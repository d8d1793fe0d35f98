"""benchmarks/bench_filesr.py runs (in --quick mode), so it cannot rot. No timing assertions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_bench_filesr_quick(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_filesr.py"), "--quick",
         "--dir", str(tmp_path), "--vdis", "50", "--runs", "3"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for phase in ("process-snapshot", "snapshot", "revert", "scan-adopt", "scan", "snapshot-big"):
        assert f"\n{phase} " in proc.stdout, proc.stdout
    assert "ratio" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # cleaned up after itself
