#!/usr/bin/env python3
"""Data-path throughput: nbdkit + the VHD engine against local file copies, in one run.

    .venv/bin/python benchmarks/bench_nbd.py            # 1 GiB
    .venv/bin/python benchmarks/bench_nbd.py --quick    # 64 MiB, a few seconds

Phases (ratios against baselines measured in the same run, never absolute targets):
  seq-write   nbdcopy raw file -> NBD (a new dynamic VHD)    vs nbdcopy file -> file and
              os.copy_file_range of the same bytes
  seq-read    nbdcopy NBD -> raw file                        vs the same baselines
  rand-write  4 KiB writes at random 4 KiB-aligned offsets, one at a time (qemu-io), per
              second, vs os.pwrite of the same writes to a local raw file
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sm.vhd
from sm.nbd import server

MiB = 1024 * 1024


def timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def make_source(path: Path, size: int) -> None:
    pattern = os.urandom(4 * MiB)  # random so no tool can skip zeros
    with open(path, "wb") as f:
        for pos in range(0, size, len(pattern)):
            f.write(pattern[: min(len(pattern), size - pos)])


def copy_file_range(src: Path, dst: Path) -> None:
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        left = os.fstat(fi.fileno()).st_size
        while left:
            n = os.copy_file_range(fi.fileno(), fo.fileno(), min(left, 1 << 30))
            if n == 0:
                break
            left -= n
        os.fsync(fo.fileno())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 MiB and fewer random writes")
    ap.add_argument("--size-mib", type=int, default=None)
    ap.add_argument("--random-writes", type=int, default=None)
    ap.add_argument("--dir", default=None, help="work directory (default: a temp dir in /tmp)")
    args = ap.parse_args()
    size = (args.size_mib or (64 if args.quick else 1024)) * MiB
    nrand = args.random_writes or (300 if args.quick else 3000)

    work = Path(tempfile.mkdtemp(prefix="bench-nbd-", dir=args.dir or "/tmp"))
    run_dir = tempfile.mkdtemp(prefix="bnbd-", dir="/tmp")  # short: Unix socket paths
    info = None
    try:
        src = work / "src.raw"
        make_source(src, size)
        base_cfr = timed(copy_file_range, src, work / "cfr.raw")
        base_write = timed(run, "nbdcopy", "--flush", str(src), str(work / "w.raw"))
        base_read = timed(run, "nbdcopy", str(src), str(work / "r.raw"))
        for name in ("cfr.raw", "w.raw", "r.raw"):
            (work / name).unlink()

        leaf = str(work / "vdi.vhd")
        sm.vhd.create(leaf, size)
        info = server.start(str(uuid.uuid4()), leaf, writable=True, run_dir=run_dir)
        uri = f"nbd+unix:///{info.export_name}?socket={info.socket}"
        t_write = timed(run, "nbdcopy", "--flush", str(src), uri)
        t_read = timed(run, "nbdcopy", uri, str(work / "out.raw"))
        (work / "out.raw").unlink()

        rng = random.Random(42)
        offsets = [rng.randrange(size // 4096) * 4096 for _ in range(nrand)]
        cmds: list[str] = []
        for off in offsets:
            cmds += ["-c", f"write -P 0x5a {off} 4k"]
        t_rand = timed(run, "qemu-io", "-f", "raw", *cmds, info.params_nbd)
        server.stop(info)
        info = None

        local = work / "local.raw"
        with open(local, "wb") as f:
            f.truncate(size)
        block = b"\x5a" * 4096
        fd = os.open(local, os.O_WRONLY)
        t = time.perf_counter()
        for off in offsets:
            os.pwrite(fd, block, off)
        t_rand_local = time.perf_counter() - t
        os.close(fd)
    finally:
        if info is not None:
            server.stop(info)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)

    mb = size / MiB
    print(f"size {mb:.0f} MiB (page cache warm, as for every phase); baselines: "
          f"copy_file_range+fsync {mb / base_cfr:.0f} MiB/s, nbdcopy --flush file->file "
          f"{mb / base_write:.0f} MiB/s, nbdcopy file->file {mb / base_read:.0f} MiB/s")
    print(f"{'phase':<12}{'seconds':>9}{'MiB/s':>9}{'ratio/local-nbdcopy':>21}{'ratio/cfr':>11}")
    for name, secs, base in (("seq-write", t_write, base_write), ("seq-read", t_read, base_read)):
        print(f"{name:<12}{secs:9.2f}{mb / secs:9.0f}{base / secs:21.2f}{base_cfr / secs:11.2f}")
    iops, iops_local = nrand / t_rand, nrand / t_rand_local
    print(f"rand-write  {nrand} x 4 KiB at queue depth 1: {iops:.0f} writes/s "
          f"(local pwrite {iops_local:.0f}/s, ratio {iops / iops_local:.3f}; the qemu-io "
          f"process start is included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
