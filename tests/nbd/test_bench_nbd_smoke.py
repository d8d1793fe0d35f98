"""benchmarks/bench_nbd.py runs in --quick mode, so it cannot rot. No timing assertions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.nbd.conftest import nbd_tools


def test_bench_nbd_quick(tmp_path: Path) -> None:
    nbd_tools()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_nbd.py"), "--quick", "--size-mib", "16",
         "--random-writes", "50", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    for phase in ("seq-write", "seq-read", "rand-write", "ratio"):
        assert phase in proc.stdout
    assert list(tmp_path.iterdir()) == []
