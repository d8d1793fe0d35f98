"""Helpers the benchmark scripts share (run them as scripts: each puts the checkout first on
sys.path, so `benchmarks.common` imports)."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable


def drop_caches() -> bool:
    """Write back and drop the page cache (root only); False when not allowed."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def median_ms(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of `runs` calls of `fn`, in milliseconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000
