#!/usr/bin/env python3
"""Speed of the garbage collector (docs/gc.md).

    python benchmarks/bench_gc.py [--dir DIR] [--size-mib 1024] [--quick]

Phases (SIZE = --size-mib, default 1 GiB; --quick = 64 MiB):
  merge-ext4    a collector run on a File SR in DIR whose only work is merging a hidden base
                holding SIZE of full 2 MiB blocks into its empty parent; ratio = time of
                `os.copy_file_range` of a SIZE file to a new file on the same file system (then
                fsync) / time of the run (target >= 0.9)
  merge-xfs     the same merge on xfs (reflink=1) on a loop device in DIR (root only): full
                blocks are cloned, not copied; as % of the merge-ext4 time (target < 5 %)
  leaf-pause    a leaf of SIZE/4 whose VDI is served over NBD while qemu-io writes 16 KiB
                blocks to it without stopping: the collector moves the bulk while it runs and
                pauses the server for the final step; prints that pause and the longest
                client write (nbdkit and qemu-io needed)

The page cache is dropped before every timed run when allowed (root), else inputs are read
once on both sides. Figures are printed, never asserted (tests run `--quick` as a smoke test).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from sm import vhd  # noqa: E402
from tests.srtypes.file.conftest import FileSRClient  # noqa: E402

MiB = 1024 * 1024
CHUNK = 8 * MiB


WARM = False  # --warm: never drop the page cache (smoke runs on a shared machine)


def drop_caches() -> bool:
    return False if WARM else common.drop_caches()


def warm(*paths: Path) -> None:
    for p in paths:
        with open(p, "rb") as f:
            while f.read(CHUNK):
                pass


def fill(path: str, size: int, byte: int) -> None:
    with vhd.open_chain(path, writable=True) as disk:
        buf = bytes([byte]) * CHUNK
        for off in range(0, size, CHUNK):
            disk.write(off, buf[:min(CHUNK, size - off)])
        disk.flush()


def make_sr(where: Path) -> FileSRClient:
    sr = FileSRClient(where / "sr", where / "run")
    sr.call("sr_create", ["0"])
    sr.call("sr_attach")
    return sr


def merge_setup(where: Path, size: int) -> tuple[FileSRClient, Path]:
    """An empty root base, a hidden base over it with SIZE of full blocks, two leaves."""
    sr = make_sr(where)
    a = sr.create_vdi(size)
    s1 = sr.snapshot(a)
    fill(str(sr.location / f"{a}.vhd"), size, 0x5A)
    sr.snapshot(a)
    sr.call("vdi_delete", vdi=s1)
    full = sr.location / f"{sr.record(a)['parent']}.vhd"
    return sr, full


def timed_gc(sr: FileSRClient, inputs: list[Path], dropped: bool) -> tuple[float, dict]:
    if not dropped:
        warm(*inputs)
    t0 = time.perf_counter()
    summary = json.loads(sr.call("sm_gc_run"))
    return time.perf_counter() - t0, summary


def copy_baseline(src: Path, dst: Path, dropped: bool) -> float:
    if not dropped:
        warm(src)
    else:
        drop_caches()
    t0 = time.perf_counter()
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        left = os.fstat(fi.fileno()).st_size
        while left:
            n = os.copy_file_range(fi.fileno(), fo.fileno(), left)
            if n == 0:
                break
            left -= n
        os.fsync(fo.fileno())
    return time.perf_counter() - t0


def phase_merge(base_dir: Path, size: int, repeat: int) -> float:
    """Alternating gc / copy_file_range runs (a shared disk is noisy); medians."""
    gcs, cps, kinds, dropped = [], [], [], False
    for i in range(repeat):
        work = Path(tempfile.mkdtemp(prefix="bench-gc-", dir=base_dir))
        try:
            sr, full = merge_setup(work, size)
            raw = work / "baseline.src"
            with open(raw, "wb") as f:
                for _ in range(0, size, CHUNK):
                    f.write(b"\x5a" * CHUNK)
                os.fsync(f.fileno())
            dropped = drop_caches()
            if i % 2:
                cps.append(copy_baseline(raw, work / "baseline.dst", dropped))
                drop_caches()
            t, summary = timed_gc(sr, [full], dropped)
            gcs.append(t)
            kinds = [a["kind"] for a in summary["actions"]]
            if not i % 2:
                cps.append(copy_baseline(raw, work / "baseline.dst", dropped))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    t_gc, t_cp = statistics.median(gcs), statistics.median(cps)
    print(f"merge-ext4  {size // MiB} MiB of full blocks, median of {repeat}: gc run "
          f"{t_gc:.3f} s ({size / MiB / t_gc:.0f} MiB/s), copy_file_range {t_cp:.3f} s "
          f"({size / MiB / t_cp:.0f} MiB/s) -> ratio {t_cp / t_gc:.2f} (target >= 0.9); "
          f"steps {kinds}; {'drop_caches' if dropped else 'warm inputs'}; runs gc "
          f"{', '.join(f'{x:.2f}' for x in gcs)} s, copy {', '.join(f'{x:.2f}' for x in cps)} s")
    return t_gc


@contextlib.contextmanager
def xfs_mount(base_dir: Path, size: int) -> Iterator[Path | None]:
    if os.geteuid() != 0 or shutil.which("mkfs.xfs") is None:
        yield None
        return
    work = Path(tempfile.mkdtemp(prefix="bench-gc-xfs-", dir=base_dir))
    img, mnt = work / "xfs.img", work / "mnt"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(max(512 * MiB, 3 * size))
    subprocess.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(img)], check=True)
    subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        shutil.rmtree(work, ignore_errors=True)


def phase_xfs(base_dir: Path, size: int, ext4_time: float, repeat: int) -> None:
    times = []
    for _ in range(repeat):
        with xfs_mount(base_dir, size) as mnt:
            if mnt is None:
                print("merge-xfs   skipped (needs root and mkfs.xfs)")
                return
            sr, full = merge_setup(mnt, size)
            dropped = drop_caches()
            times.append(timed_gc(sr, [full], dropped)[0])
    t = statistics.median(times)
    print(f"merge-xfs   {size // MiB} MiB of full blocks with reflinks, median of {repeat}: "
          f"{t:.3f} s = {100 * t / ext4_time:.1f} % of the ext4 merge (target < 5 %); runs "
          f"{', '.join(f'{x:.3f}' for x in times)} s")


def phase_pause(size: int) -> None:
    if not (shutil.which("nbdkit") and shutil.which("qemu-io")):
        print("leaf-pause  skipped (needs nbdkit and qemu-io)")
        return
    work = Path(tempfile.mkdtemp(prefix="bgc-", dir="/tmp"))  # short socket paths
    try:
        env = {**os.environ, "SM_DATA_PATH": "nbd", "SM_GC_AUTO": "0"}
        os.environ.update(env)
        sr = make_sr(work)
        vsize = max(64 * MiB, size)
        a = sr.create_vdi(vsize)
        url = sr.call("vdi_attach", ["true"], vdi=a)["params_nbd"]
        sr.call("vdi_activate", ["true"], vdi=a)
        subprocess.run(["qemu-io", "-f", "raw", "-c", f"write -P 1 0 {vsize // 2}", url],
                       check=True, capture_output=True)
        s = sr.snapshot(a)
        subprocess.run(["qemu-io", "-f", "raw", "-c",
                        f"write -P 2 {vsize // 2} {max(32 * MiB, vsize // 4)}", url],
                       check=True, capture_output=True)
        sr.call("vdi_delete", vdi=s)
        writes = 20000  # more than it gets through: stopped after the run
        argv = ["qemu-io", "-f", "raw"]
        for i in range(writes):
            argv += ["-c", f"write -P {i % 250 + 3} {(i * 7919) % (vsize // 16384) * 16384} 16k"]
        writer = subprocess.Popen([*argv, url], stdout=subprocess.PIPE, text=True)
        time.sleep(0.2)
        t0 = time.perf_counter()
        summary = json.loads(sr.call("sm_gc_run"))
        t_gc = time.perf_counter() - t0
        time.sleep(0.5)  # the writer goes on after the final step too
        writer.terminate()
        out, _ = writer.communicate()
        lat = [1 / float(x) for x in re.findall(r"and ([0-9.]+) ops/sec", out)]
        final = [x for x in summary["actions"] if x["kind"] == "leaf-merge"]
        pause = final[-1]["pause_seconds"] if final else float("nan")
        snaps = [x["pause_seconds"] for x in summary["actions"] if x["kind"] == "leaf-snapshot"]
        lat.sort()
        print(f"leaf-pause  {vsize // MiB} MiB VDI, steady qemu-io writer ({len(lat)} writes of "
              f"16 KiB): final step paused {pause * 1000:.1f} ms, leaf snapshots paused "
              f"{', '.join(f'{p * 1000:.1f}' for p in snaps) or '-'} ms; client write latency "
              f"median {lat[len(lat) // 2] * 1000:.2f} ms, max {lat[-1] * 1000:.1f} ms; "
              f"gc run {t_gc:.2f} s, steps {[x['kind'] for x in summary['actions']]}")
        sr.call("vdi_deactivate", vdi=a)
        sr.call("vdi_detach", vdi=a)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="/var/tmp", help="where to work (ext4 for the ratio)")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--quick", action="store_true", help="64 MiB, one run (a smoke run)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each merge (median)")
    ap.add_argument("--warm", action="store_true",
                    help="do not drop the page cache (inputs are read once instead)")
    args = ap.parse_args()
    global WARM
    WARM = args.warm
    os.environ.setdefault("SM_GC_AUTO", "0")
    os.environ.setdefault("SM_DATA_PATH", "none")
    size = (64 if args.quick else args.size_mib) * MiB
    base = Path(args.dir)
    repeat = 1 if args.quick else max(1, args.repeat)
    t_ext4 = phase_merge(base, size, repeat)
    phase_xfs(base, size, t_ext4, repeat)
    phase_pause(size // 4 if not args.quick else 64 * MiB)


if __name__ == "__main__":
    main()
