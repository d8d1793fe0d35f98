"""The benchmark script runs (in --quick mode), so it cannot rot. No timing assertions here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_bench_vhd_quick(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_vhd.py"), "--quick", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for phase in ("coalesce", "chain-read", "write", "snapshot"):
        assert phase in proc.stdout
    assert "ratio" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # cleaned up after itself
