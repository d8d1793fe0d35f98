"""benchmarks/bench_server.py runs (--quick), so it cannot rot. No timing assertions here."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_bench_server_quick() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_server.py"),
                           "--quick", "--seconds", "0.3"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert " 1 client(s):" in out and "16 client(s):" in out and "sm.ping" in out
    assert "VM snapshot of 4 disks" in out and "ratio" in out
