"""The long run of the model-based test of sm.api (tests/api/test_stateful.py, docs/api.md).

    .venv/bin/python benchmarks/stateful_long.py --minutes 25 file lvhd

Runs `pytest --hypothesis-profile=long` on each SR type given (file, nfs, lvhd, rbd), the
plain and the kill variant side by side, each until the time is up (a failing run is logged
and the next one starts with a new random seed), then prints the examples, steps, kills and
failures counted from the per-example lines of `SM_STATEFUL_STATS`. Logs and the stats file go
to `--out` (default: a new directory under /tmp).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("types", nargs="+", choices=["file", "nfs", "lvhd", "rbd"])
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="sm-stateful-"))
    out.mkdir(parents=True, exist_ok=True)
    stats = out / "stats.jsonl"
    deadline = time.monotonic() + args.minutes * 60
    env = {**os.environ, "SM_STATEFUL_STATS": str(stats)}
    running: dict[tuple[str, str], tuple[subprocess.Popen[bytes], int]] = {}
    runs = 0

    def start(kind: str, test: str) -> None:
        nonlocal runs
        runs += 1
        log = open(out / f"{kind}-{test}-{runs}.log", "wb")  # noqa: SIM115
        left = max(60, int(deadline - time.monotonic()))
        proc = subprocess.Popen(
            ["timeout", "-s", "INT", str(left), sys.executable, "-m", "pytest",
             "tests/api/test_stateful.py", "-q", "-x", "-p", "no:cacheprovider", "--timeout=0",
             "--hypothesis-profile=long", "-k", f"{test} and {kind}"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        running[(kind, test)] = (proc, runs)

    for kind in args.types:
        for test in ("invariants", "kills"):
            start(kind, test)
    while running:
        time.sleep(2)
        for key, (proc, n) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[key]
            if proc.returncode not in (0, 124, 130, 2):
                print(f"{key[0]} {key[1]} run {n}: exit {proc.returncode} (see its log)")
            if time.monotonic() < deadline - 60:
                start(*key)
    totals: dict[tuple[str, bool], dict[str, int]] = {}
    for line in stats.read_text().splitlines() if stats.exists() else []:
        row = json.loads(line)
        t = totals.setdefault((row["sr"], row["kill"]), {"examples": 0, "steps": 0, "kills": 0,
                                                           "refused": 0, "failed": 0})
        t["examples"] += 1
        for k in ("steps", "kills", "refused"):
            t[k] += row[k]
        t["failed"] += bool(row["failed"])
    for (kind, kill), t in sorted(totals.items()):
        print(f"{kind:5} {'kills' if kill else 'plain':5} " + " ".join(f"{k} {v}" for k, v in t.items()))
    print(f"logs and stats in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
