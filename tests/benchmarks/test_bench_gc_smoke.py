"""benchmarks/bench_gc.py runs (--quick), so it cannot rot. No timing assertions here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_bench_gc_quick(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gc.py"), "--quick",
                           "--warm", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "merge-ext4" in out and "ratio" in out, out
    assert "merge-xfs" in out and "leaf-pause" in out, out
    assert list(tmp_path.iterdir()) == []  # cleaned up after itself
