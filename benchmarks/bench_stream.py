"""Memory of `sm vdi write` / `sm vdi import` streaming from a pipe (issue 16).

Runs the installed `sm` command with SM_HOME in a fresh directory and feeds SIZE bytes into
its stdin (a pipe: 1 MiB of `x` every 64 MiB, zeros between, so the VDI stays sparse); reports
each child's peak resident set (`wait4` ru_maxrss) next to the baseline `sm vdi list`, and the
time per GiB.

    .venv/bin/python benchmarks/bench_stream.py                 # 1 GiB, work dir under /var/tmp
    .venv/bin/python benchmarks/bench_stream.py --size-mib 256  # what the test suite runs

Target: every streaming command's peak RSS < 64 MiB whatever SIZE (2 MiB chunks).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SM = ROOT / ".venv" / "bin" / "sm"
MiB = 1 << 20
LIMIT_MIB = 64


def feed(env: dict[str, str], args: list[str], size: int) -> tuple[int, float]:
    """Run `sm ARGS` with SIZE bytes on its stdin; (peak RSS in MiB, seconds)."""
    proc = subprocess.Popen([str(SM), *args], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None
    zero = bytes(MiB)
    marked = (b"x" * MiB)
    start = time.monotonic()
    try:
        for i in range(size // MiB):
            proc.stdin.write(marked if i % 64 == 0 else zero)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"sm {' '.join(args)} failed: {err.decode()}")
    return usage.ru_maxrss // 1024, time.monotonic() - start


def run(size: int, work: Path) -> dict[str, tuple[int, float]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.update({"SM_HOME": str(work / "home"), "SM_RUN_DIR": str(work / "run"),
                "SM_GC_AUTO": "0", "SM_DATA_PATH": "none",
                "PYTHONPATH": str(ROOT)})  # this checkout's sm, whatever is installed
    subprocess.run([str(SM), "vdi", "create", "disk", "--size", str(size)], env=env,
                   check=True, capture_output=True)
    return {
        "baseline: sm vdi list": feed(env, ["vdi", "list"], 0),
        "sm vdi write (stdin)": feed(env, ["vdi", "write", "disk"], size),
        "sm vdi import --input - (existing)": feed(env, ["vdi", "import", "disk", "--input",
                                                         "-"], size),
        "sm vdi import --input - (new)": feed(env, ["vdi", "import", "new", "--input", "-",
                                                    "--size", str(size)], size),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--dir", default="/var/tmp")
    args = parser.parse_args(argv)
    size = args.size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="sm-bench-stream-", dir=args.dir))
    try:
        results = run(size, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = results["baseline: sm vdi list"][0]
    print(f"streaming {args.size_mib} MiB through a pipe; peak RSS (limit {LIMIT_MIB} MiB)")
    worst = 0
    for name, (rss, seconds) in results.items():
        rate = f"{seconds / (size / 1024**3):.1f} s/GiB" if name != "baseline: sm vdi list" \
            else ""
        print(f"  {name:38} {rss:4d} MiB  x{rss / base:.2f} of the baseline  {rate}")
        worst = max(worst, rss)
    return 0 if worst < LIMIT_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
