"""benchmarks/bench_rbd.py runs (in --quick mode, on the session's test cluster), so it
cannot rot. No timing assertions."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, require_tool
from tests.rbd.cluster import Cluster


@pytest.mark.nbd
def test_bench_rbd_quick(ceph_cluster: Cluster) -> None:
    require_tool("nbdkit", "nbdcopy")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_rbd.py"), "--quick", "--runs", "3",
         "--size-mib", "16", "--conf", ceph_cluster.conf],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for phase in ("snapshot", "clone", "revert", "nbd-read"):
        assert f"\n{phase} " in proc.stdout, proc.stdout
    assert proc.stdout.count("ratio") >= 4
