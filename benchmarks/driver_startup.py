"""Start-up cost of a driver executable, as a ratio against `python3 -c pass`.

Runs `sr_get_driver_info` through the test SR type's executable (tests/testdist/bin/SmtestSR,
written exactly like bin/FileSR) and an error request through bin/FileSR, N times each, and
prints the median wall time of each divided by the median of the bare interpreter measured in
the same run. Target: a ratio of at most 4.

    .venv/bin/python benchmarks/driver_startup.py [N]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTDIST = ROOT / "tests" / "testdist"


def median_runtime(argv: list[str], runs: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    env = dict(os.environ, PYTHONPATH=str(TESTDIST), SM_STATE_DIR="/tmp/sm-bench-state")
    info = xmlrpc.client.dumps(({"command": "sr_get_driver_info"},), "sr_get_driver_info")
    import compileall  # byte-compile as an installed package is (see bench_filesr.byte_compile)

    for package in ("sm", "srtypes"):
        compileall.compile_dir(ROOT / package, quiet=2)
    base = median_runtime([sys.executable, "-c", "pass"], runs, env)
    cases = {
        "SmtestSR sr_get_driver_info": [sys.executable, str(TESTDIST / "bin" / "SmtestSR"), info],
        "FileSR sr_get_driver_info": [sys.executable, str(ROOT / "bin" / "FileSR"), info],
    }
    print(f"python -c pass: {base * 1000:.1f} ms (baseline, ratio 1.00)")
    for name, argv in cases.items():
        t = median_runtime(argv, runs, env)
        print(f"{name}: {t * 1000:.1f} ms, ratio {t / base:.2f} (target <= 4)")


if __name__ == "__main__":
    main()
