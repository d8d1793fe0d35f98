"""File SR speed: the driver as a process, snapshot/revert in-process, sr_scan of a large SR.

Phases (all figures from this run, on this machine):

| phase | what is timed | target |
|---|---|---|
| process-snapshot | `bin/FileSR vdi_snapshot` as a child process (median), as a ratio to `python -c pass` with the same interpreter | ratio <= 4 |
| snapshot | `vdi_snapshot` through `sm.dispatch.run` in-process, per operation (median) | reported (ms) |
| revert | `vdi_revert` through `sm.dispatch.run` in-process, per operation (median) | reported (ms) |
| scan-adopt | first `sr_scan` of an SR whose N VHD files were written behind its back | reported |
| scan | steady-state `sr_scan` of the same SR holding N VDIs (median of 3) | < 3 s at 10,000 |
| snapshot-big | in-process `vdi_snapshot` in that SR of N VDIs (median): the parent index keeps it close to `snapshot` | reported (ms) |

    .venv/bin/python benchmarks/bench_filesr.py                # 10,000 VDIs
    .venv/bin/python benchmarks/bench_filesr.py --quick        # 300 VDIs, a few seconds
    .venv/bin/python benchmarks/bench_filesr.py --dir /mnt/x --vdis 20000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
import xmlrpc.client
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import median_ms  # noqa: E402

MiB = 1 << 20
SR_UUID = "5a1e0000-0000-4000-8000-0000000be0c4"


class Bench:
    """One File SR under `root`, driven in-process through the dispatcher."""

    def __init__(self, root: Path) -> None:
        from srtypes.file import FileSR

        self.cls = FileSR
        root.mkdir(parents=True, exist_ok=True)
        self.location = root / "sr"
        self.env = {
            **os.environ,
            "SM_STATE_DIR": str(root / "state"),
            "SM_RUN_DIR": str(root / "run"),
        }

    def struct(self, command: str, args: list[str] | None = None, vdi: str | None = None,
               **extra: Any) -> dict[str, Any]:  # fmt: skip
        s: dict[str, Any] = {
            "host_ref": "OpaqueRef:h", "session_ref": "OpaqueRef:s", "command": command,
            "args": args or [], "sr_uuid": SR_UUID, "sr_ref": "OpaqueRef:sr",
            "device_config": {"SRmaster": "true", "location": str(self.location)},
        }  # fmt: skip
        if vdi:
            s.update(vdi_uuid=vdi, vdi_location=vdi, vdi_ref="OpaqueRef:v")
        s.update(extra)
        return s

    def document(self, command: str, args: list[str] | None = None, vdi: str | None = None,
                 **extra: Any) -> str:  # fmt: skip
        return xmlrpc.client.dumps((self.struct(command, args, vdi, **extra),), methodname=command)

    def call(self, command: str, args: list[str] | None = None, vdi: str | None = None,
             **extra: Any) -> Any:  # fmt: skip
        from sm.dispatch import run

        response = run(self.cls, self.document(command, args, vdi, **extra), environ=self.env)
        (value,), _ = xmlrpc.client.loads(response)  # raises on a Fault
        return value

    def vdi_create(self, size: int = 16 * MiB) -> str:
        args = [str(size), "bench", "", "", "false", "", "", "false"]
        return str(self.call("vdi_create", args, vdi_type="user", vdi_sm_config={})["uuid"])


def byte_compile() -> None:
    """Compile the checkout's modules to __pycache__, as installing a package does: with
    PYTHONDONTWRITEBYTECODE set (or a read-only tree), a driver process would otherwise compile
    every module edited since its last .pyc from source, on every start."""
    import compileall

    for package in ("sm", "srtypes"):
        compileall.compile_dir(ROOT / package, quiet=2)


def process_snapshot(b: Bench, runs: int) -> tuple[float, float]:
    vdis = [b.vdi_create() for _ in range(runs)]
    exe = [sys.executable, str(ROOT / "bin" / "FileSR")]
    env = dict(b.env)
    byte_compile()

    def baseline() -> None:
        subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)

    todo = iter(vdis)

    def snapshot() -> None:
        proc = subprocess.run([*exe, b.document("vdi_snapshot", vdi=next(todo), driver_params={})],
                              env=env, check=True, capture_output=True, text=True)  # fmt: skip
        xmlrpc.client.loads(proc.stdout)

    baseline()  # warm the interpreter's files
    # alternate the two, so that the machine's drift (shared, noisy) hits both alike
    base_t: list[float] = []
    snap_t: list[float] = []
    for _ in range(runs):
        for fn, out in ((baseline, base_t), (snapshot, snap_t)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(base_t) * 1000, statistics.median(snap_t) * 1000


def inprocess(b: Bench, runs: int) -> tuple[float, float]:
    vdis = [b.vdi_create() for _ in range(runs)]
    todo = iter(vdis)
    snaps: list[tuple[str, str]] = []

    def snapshot() -> None:
        vdi = next(todo)
        snaps.append((b.call("vdi_snapshot", vdi=vdi, driver_params={})["uuid"], vdi))

    snap_ms = median_ms(snapshot, runs)
    pairs = iter(snaps)

    def revert() -> None:
        snap, target = next(pairs)
        b.call("vdi_revert", [target], vdi=snap, driver_params={})

    return snap_ms, median_ms(revert, runs)


def with_uuid(blob: bytes, new: uuidlib.UUID) -> bytes:
    """A copy of a dynamic VHD with another uuid in both footer copies (what `sm.vhd.set_uuid`
    does, minus its fsync, which would dominate writing 10,000 files)."""
    out = bytearray(blob)
    for at in (0, len(out) - 512):
        footer = bytearray(out[at : at + 512])
        footer[68:84] = new.bytes
        footer[64:68] = bytes(4)
        footer[64:68] = struct.pack(">I", ~sum(footer) & 0xFFFFFFFF)
        out[at : at + 512] = footer
    return bytes(out)


def scan(b: Bench, n: int) -> tuple[float, float, float]:
    """Write n VHD files behind the SR's back, time the adopting scan, then steady scans."""
    from sm import vhd

    start = time.perf_counter()
    template = b.location.parent / "template.vhd"
    vhd.create(str(template), 8 * MiB)
    blob = template.read_bytes()
    for _ in range(n):
        new = uuidlib.uuid4()
        (b.location / f"{new}.vhd").write_bytes(with_uuid(blob, new))
    sample = next(b.location.glob("*.vhd"))
    assert not vhd.check(str(sample)), vhd.check(str(sample))
    made = time.perf_counter() - start
    start = time.perf_counter()
    b.call("sr_scan")
    adopt = time.perf_counter() - start
    listed = b.call("sm_vdi_list")
    assert len(listed) >= n, (len(listed), n)
    steady = median_ms(lambda: b.call("sr_scan"), 3) / 1000
    return made, adopt, steady


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", help="work directory (default: a new one under /var/tmp)")
    ap.add_argument("--quick", action="store_true", help="300 VDIs, 5 runs per phase")
    ap.add_argument("--vdis", type=int, help="VDIs in the scanned SR (default 10000)")
    ap.add_argument("--runs", type=int, help="runs per timed phase (default 21)")
    opts = ap.parse_args()
    n = opts.vdis or (300 if opts.quick else 10_000)
    runs = opts.runs or (5 if opts.quick else 21)
    work = Path(tempfile.mkdtemp(prefix="bench-filesr-", dir=opts.dir or "/var/tmp"))
    try:
        b = Bench(work)
        b.call("sr_create", ["0"])
        b.call("sr_attach")
        base, proc = process_snapshot(b, runs)
        snap_ms, revert_ms = inprocess(b, runs)
        # a fresh SR for the scan, so it holds exactly n VDIs
        s = Bench(work / "scan")
        s.call("sr_create", ["0"])
        s.call("sr_attach")
        made, adopt, steady = scan(s, n)
        big_ms, _ = inprocess(s, runs)
        print(f"{'phase':<17} {'figure':>12}  target")
        print(f"{'python -c pass':<17} {base:>9.1f} ms  baseline (ratio 1.00)")
        print(f"{'process-snapshot':<17} {proc:>9.1f} ms  ratio {proc / base:.2f} (target <= 4)")
        print(f"{'snapshot':<17} {snap_ms:>9.1f} ms  per operation, in-process (median of {runs})")
        print(f"{'revert':<17} {revert_ms:>9.1f} ms  per operation, in-process (median of {runs})")
        print(f"{'scan-adopt':<17} {adopt:>10.2f} s  first sr_scan adopting {n} VHD files "
              f"(written in {made:.2f} s)")  # fmt: skip
        target = (
            " (target < 3 s)" if n == 10_000 else f" (target < {3 * n / 10_000:.2f} s, pro rata)"
        )
        print(f"{'scan':<17} {steady:>10.2f} s  steady-state sr_scan of {n} VDIs{target}")
        print(f"{'snapshot-big':<17} {big_ms:>9.1f} ms  per operation in the SR of {n} VDIs "
              f"(ratio {big_ms / snap_ms:.2f} to snapshot)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
