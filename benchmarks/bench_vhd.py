#!/usr/bin/env python3
"""Speed of the VHD engine as ratios against `os.copy_file_range` of the same bytes.

    python benchmarks/bench_vhd.py [--dir DIR] [--size-mib 1024] [--quick] [--repeat N]

Phases (SIZE = --size-mib, default 1 GiB; --quick = 64 MiB):
  coalesce    a child holding SIZE of full 2 MiB blocks merged into its empty parent
  chain-read  a 3-deep chain (base full, mid and leaf each own a third of the blocks) read to a
              raw file in 8 MiB requests (the loop of `sm vhd read --output`)
  write       SIZE written into a new dynamic disk in 2 MiB requests from memory
  snapshot    `snapshot()` of a 100 GiB dynamic disk: median latency in ms over several runs

Method. Every timed phase ends with fsync of what it wrote, on both sides. The baseline is
`os.copy_file_range` of a SIZE-byte file to a new file on the SAME file system in the same run
(then fsync); a ratio is baseline time / engine time, so 1.0 means "as fast as the kernel's
copy" and the targets are coalesce and chain-read >= 0.8, snapshot < 5 ms. Before each timed
run (engine and baseline alike) the page cache is dropped (`sync; echo 3 >
/proc/sys/vm/drop_caches`, needs root); when that is impossible, the inputs of both sides are
read once instead so that both start equally warm, and the output says which method was used.
Use a file system without reflinks (ext4, the default /var/tmp here) for meaningful copy
ratios: on xfs/btrfs both copy_file_range and the engine's block copies may share extents.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import drop_caches
from sm import vhd
from sm.cli.vhd import copy_out

MiB = 1024 * 1024
BLOCK = 2 * MiB
GiB = 1024 * MiB


class Cache:
    """Drops the page cache if allowed, else warms the named files (both sides the same)."""

    def __init__(self) -> None:
        self.can_drop = self._drop()
        self.method = "drop_caches before every timed run" if self.can_drop else "warm (inputs read once)"

    @staticmethod
    def _drop() -> bool:
        return drop_caches()

    def prepare(self, *inputs: str) -> None:
        if self.can_drop:
            self._drop()
            return
        for path in inputs:
            with open(path, "rb") as f:
                while f.read(8 * MiB):
                    pass


def block_data(index: int) -> bytes:
    # Distinct content per block so that nothing along the way can deduplicate it.
    seed = index.to_bytes(8, "big")
    return (seed + os.urandom(4088)) * (BLOCK // 4096)


def fill(disk: vhd.Disk, blocks: list[int]) -> None:
    for i in blocks:
        disk.write(i * BLOCK, block_data(i))
    disk.flush()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def baseline(work: Path, size: int, cache: Cache) -> float:
    """Seconds for copy_file_range of `size` bytes file to file, then fsync."""
    src = work / "baseline.src"
    dst = work / "baseline.dst"
    if not src.exists():
        with open(src, "wb") as f:
            for i in range(size // BLOCK):
                f.write(block_data(i))
            os.fsync(f.fileno())
    dst.unlink(missing_ok=True)
    cache.prepare(str(src))

    def copy() -> None:
        with open(src, "rb") as fi, open(dst, "wb") as fo:
            done = 0
            while done < size:
                n = os.copy_file_range(fi.fileno(), fo.fileno(), size - done)
                if n == 0:
                    break
                done += n
            os.fsync(fo.fileno())

    seconds = timed(copy)
    dst.unlink()
    return seconds


def bench_coalesce(work: Path, size: int, cache: Cache) -> float:
    parent, child = str(work / "c-parent.vhd"), str(work / "c-child.vhd")
    vhd.create(parent, size)
    vhd.snapshot(parent, child)
    with vhd.open_chain(child, writable=True) as disk:
        fill(disk, list(range(size // BLOCK)))
    cache.prepare(child, parent)
    seconds = timed(lambda: vhd.coalesce(child))
    os.unlink(parent)
    os.unlink(child)
    return seconds


def bench_chain_read(work: Path, size: int, cache: Cache) -> float:
    names = [str(work / f"r-{n}.vhd") for n in ("base", "mid", "leaf")]
    vhd.create(names[0], size)
    blocks = list(range(size // BLOCK))
    with vhd.open_chain(names[0], writable=True) as disk:
        fill(disk, blocks)
    for level, name in enumerate(names[1:], start=1):
        vhd.snapshot(names[level - 1], name)
        with vhd.open_chain(name, writable=True) as disk:
            fill(disk, blocks[level::3])
    out = work / "r-out.raw"
    cache.prepare(*names)

    def read() -> None:
        with vhd.open_chain(names[2]) as disk, open(out, "wb") as f:
            copy_out(disk, f, 0, disk.size)
            os.fsync(f.fileno())

    seconds = timed(read)
    for name in [*names, str(out)]:
        os.unlink(name)
    return seconds


def bench_write(work: Path, size: int, cache: Cache) -> float:
    path = str(work / "w.vhd")
    vhd.create(path, size)
    data = [block_data(i) for i in range(min(8, size // BLOCK))]
    cache.prepare()

    def write() -> None:
        with vhd.open_chain(path, writable=True) as disk:
            for i in range(size // BLOCK):
                disk.write(i * BLOCK, data[i % len(data)])
            disk.flush()

    seconds = timed(write)
    os.unlink(path)
    return seconds


def bench_snapshot(work: Path, runs: int) -> list[float]:
    base = str(work / "s-base.vhd")
    vhd.create(base, 100 * GiB)
    latencies = []
    for n in range(runs):
        child = str(work / f"s-child{n}.vhd")
        latencies.append(timed(lambda child=child: vhd.snapshot(base, child)) * 1000)
        os.unlink(child)
    os.unlink(base)
    return latencies


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", help="Work directory (default: a new one under /var/tmp).")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--quick", action="store_true", help="64 MiB and fewer snapshot runs.")
    ap.add_argument("--repeat", type=int, default=1,
                    help="Alternate engine and baseline N times per phase; report the median "
                         "ratio (the machines are shared: single runs drift).")
    args = ap.parse_args(argv)
    size = (64 if args.quick else args.size_mib) * MiB
    size -= size % BLOCK
    runs = 5 if args.quick else 21
    work = Path(tempfile.mkdtemp(prefix="sm-bench-", dir=args.dir or "/var/tmp"))
    cache = Cache()
    try:
        fs = os.statvfs(work)
        print(f"dir {work} ({fs.f_bsize}-byte blocks), size {size // MiB} MiB, cache: {cache.method}")
        rows = []
        for name, fn in [
            ("coalesce", bench_coalesce),
            ("chain-read", bench_chain_read),
            ("write", bench_write),
        ]:
            pairs = []
            for _ in range(max(1, args.repeat)):
                engine_s = fn(work, size, cache)
                pairs.append((engine_s, baseline(work, size, cache)))
            # the pair with the median ratio, so the printed seconds belong to that ratio
            pairs.sort(key=lambda p: p[1] / p[0])
            engine_s, base_s = pairs[len(pairs) // 2]
            rows.append((name, engine_s, base_s))
        print(f"{'phase':<12} {'engine s':>9} {'MB/s':>7} {'baseline s':>11} {'MB/s':>7} {'ratio':>6}  target")
        targets = {"coalesce": ">= 0.8", "chain-read": ">= 0.8", "write": "-"}
        for name, engine_s, base_s in rows:
            print(
                f"{name:<12} {engine_s:9.3f} {size / engine_s / 1e6:7.0f} {base_s:11.3f} "
                f"{size / base_s / 1e6:7.0f} {base_s / engine_s:6.2f}  {targets[name]}"
            )
        lat = bench_snapshot(work, runs)
        print(
            f"snapshot of a 100 GiB disk: median {statistics.median(lat):.2f} ms "
            f"(min {min(lat):.2f}, max {max(lat):.2f}, {runs} runs)  target < 5 ms"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
