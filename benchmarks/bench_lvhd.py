"""LVHD SR speed on real lvm2 (root, loop devices): per-operation latency with the number of
lvm2 commands each one runs, and sr_scan of an SR holding many VDIs.

| phase | what is timed | reported |
|---|---|---|
| lvm | one `pvs --segments` report of the SR's VG (the cheapest lvm2 command sm runs) | ms (the baseline) |
| create, attach, detach, snapshot, clone, revert, resize | the command through `sm.dispatch.run` in-process, median | ms, lvm commands, ratio to `lvm` |
| process-snapshot | `bin/LVHDSR vdi_snapshot` as a child process, median | ms, ratio to `python -c pass` |
| scan-adopt | first `sr_scan` of N image LVs written behind the SR's back | s |
| scan | steady-state `sr_scan` of the SR holding N VDIs (median of 3) | s, ratio to one report of that VG |

The N LVs are made with one `vgcfgrestore` of generated metadata (one extent each, a VHD
header written into each through the PV), so setting up 1,000 VDIs takes seconds, not minutes.

    sudo .venv/bin/python benchmarks/bench_lvhd.py                # 1,000 VDIs, 9 runs
    sudo .venv/bin/python benchmarks/bench_lvhd.py --quick        # 50 VDIs, 3 runs
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import median_ms  # noqa: E402

MiB = 1 << 20
SR_UUID = "5a1e0000-0000-4000-8000-0000000b1ed0"


class Counter:
    """Counts the lvm2 commands the driver runs (wraps the one subprocess executor)."""

    def __init__(self) -> None:
        from sm.executor import SubprocessExecutor

        self.counts: collections.Counter[str] = collections.Counter()
        original = SubprocessExecutor.run
        counts = self.counts

        def run(self_: Any, argv: Any, **kw: Any) -> Any:
            counts[str(argv[0])] += 1
            return original(self_, argv, **kw)

        SubprocessExecutor.run = run  # type: ignore[method-assign]

    def total(self) -> int:
        return sum(self.counts.values())


class Bench:
    def __init__(self, root: Path, pv_size: int) -> None:
        from srtypes.lvhd import LVHDSR

        self.cls = LVHDSR
        self.root = root
        self.image = root / "pv.img"
        with open(self.image, "wb") as f:
            f.truncate(pv_size)
        self.device = subprocess.run(["losetup", "-f", "--show", str(self.image)], check=True,
                                     capture_output=True, text=True).stdout.strip()
        os.environ["SM_DATA_PATH"] = "none"  # NBD start-up is bench_nbd.py's subject
        self.env = {**os.environ, "SM_STATE_DIR": str(root / "state"),
                    "SM_RUN_DIR": str(root / "run"), "SM_DATA_PATH": "none"}
        self.vg = f"VG_XenStorage-{SR_UUID}"

    def lvm(self) -> Any:
        from sm.executor import SubprocessExecutor
        from srtypes.lvhd.lvm import Lvm, write_config

        conf = self.root / "bench-lvm"
        write_config(conf, [self.device])
        return Lvm(SubprocessExecutor(), conf, devices=[self.device])

    def call(self, command: str, args: list[str] | None = None, vdi: str | None = None,
             **extra: Any) -> Any:  # fmt: skip
        from sm.dispatch import run

        s: dict[str, Any] = {
            "host_ref": "OpaqueRef:h", "session_ref": "OpaqueRef:s", "command": command,
            "args": args or [], "sr_uuid": SR_UUID, "sr_ref": "OpaqueRef:sr",
            "device_config": {"SRmaster": "true", "device": self.device},
        }  # fmt: skip
        if vdi:
            s.update(vdi_uuid=vdi, vdi_location=vdi, vdi_ref="OpaqueRef:v")
        s.update(extra)
        doc = xmlrpc.client.dumps((s,), methodname=command)
        (value,), _ = xmlrpc.client.loads(run(self.cls, doc, environ=self.env))
        return value

    def vdi_create(self, size: int = 16 * MiB) -> str:
        args = [str(size), "bench", "", "", "false", "", "", "false"]
        return str(self.call("vdi_create", args, vdi_type="user", vdi_sm_config={})["uuid"])

    def close(self) -> None:
        lvm = self.lvm()
        try:
            if lvm.vg_exists(self.vg):
                lvm.vgremove(self.vg)
            lvm.pvremove([self.device])
        finally:
            subprocess.run(["losetup", "-d", self.device], check=False)


def _lvm_id(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits
    raw = "".join(rng.choice(alphabet) for _ in range(32))
    parts, pos = [], 0
    for n in (6, 4, 4, 4, 4, 4, 6):
        parts.append(raw[pos:pos + n])
        pos += n
    return "-".join(parts)


def bulk_lvs(b: Bench, count: int) -> list[str]:
    """`count` one-extent LVs VHD-<uuid> with a 4 MiB dynamic VHD each, behind the SR's back:
    one vgcfgbackup, generated LV sections, one vgcfgrestore."""
    from sm import vhd
    from srtypes.lvhd.storage import LvStorage

    lvm = b.lvm()
    backup = b.root / "vg.txt"
    lvm.run("vgcfgbackup", "-f", str(backup), b.vg)
    text = backup.read_text()
    extent = lvm.vgs(b.vg).extent_size
    used = max(seg.start_extent + seg.seg_size // extent
               for lv in lvm.lvs(b.vg) for seg in lv.segments)  # new LVs go after the last
    rng = random.Random(1)
    uuids = [str(uuidlib.uuid4()) for _ in range(count)]
    sections = []
    for i, u in enumerate(uuids):
        sections.append(
            f'VHD-{u} {{\nid = "{_lvm_id(rng)}"\nstatus = ["READ", "WRITE", "VISIBLE"]\n'
            f'flags = []\nsegment_count = 1\nsegment1 {{\nstart_extent = 0\n'
            f'extent_count = 1\ntype = "striped"\nstripe_count = 1\n'
            f'stripes = ["pv0", {used + i}]\n}}\n}}\n')
    marker = "\tlogical_volumes {\n"
    head, _, tail = text.partition(marker)
    text = head + marker + "".join(sections) + tail
    backup.write_text(text)
    lvm.run("vgcfgrestore", "-f", str(backup), b.vg)
    storage = LvStorage(lvm, b.vg)
    for u in uuids:
        vhd.create(storage.path(f"VHD-{u}"), 4 * MiB, uuid=uuidlib.UUID(u), storage=storage)
    return uuids


def process_snapshot(b: Bench, vdis: list[str], runs: int) -> None:
    """The driver as a toolstack runs it: one process per request (modules byte-compiled
    first, as an installed package is)."""
    import compileall

    for package in ("sm", "srtypes"):
        compileall.compile_dir(ROOT / package, quiet=2)
    exe = [sys.executable, str(ROOT / "bin" / "LVHDSR")]
    todo = iter(vdis)

    def snapshot() -> None:
        s = {"host_ref": "OpaqueRef:h", "session_ref": "OpaqueRef:s", "command": "vdi_snapshot",
             "args": [], "sr_uuid": SR_UUID, "sr_ref": "OpaqueRef:sr", "driver_params": {},
             "device_config": {"SRmaster": "true", "device": b.device}}
        vdi = next(todo)
        s.update(vdi_uuid=vdi, vdi_location=vdi, vdi_ref="OpaqueRef:v")
        doc = xmlrpc.client.dumps((s,), methodname="vdi_snapshot")
        proc = subprocess.run([*exe, doc], env=b.env, check=True, capture_output=True,
                              text=True)
        xmlrpc.client.loads(proc.stdout)

    def baseline() -> None:
        subprocess.run([sys.executable, "-c", "pass"], env=b.env, check=True)

    baseline()
    base = median_ms(baseline, runs)
    ms = median_ms(snapshot, runs)
    print(f"process-snapshot {ms:.1f} ms, python -c pass {base:.1f} ms: ratio {ms / base:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 VDIs, 3 runs")
    parser.add_argument("--vdis", type=int, help="VDIs for the scan phases (default 1000)")
    parser.add_argument("--runs", type=int, help="runs per latency (default 9)")
    parser.add_argument("--dir", type=Path, help="work directory (default: a new temp dir)")
    opts = parser.parse_args()
    count = opts.vdis or (50 if opts.quick else 1000)
    runs = opts.runs or (3 if opts.quick else 9)
    if os.geteuid() != 0:
        sys.exit("bench_lvhd needs root (loop devices, lvm2)")
    work = Path(tempfile.mkdtemp(prefix="bench-lvhd-", dir=opts.dir))
    counter = Counter()
    b = Bench(work, (count + 8 * runs + 16) * 4 * MiB + 64 * MiB)
    try:
        b.call("sr_create", ["0"])
        b.call("sr_attach")
        lvm = b.lvm()

        def report() -> None:
            lvm.invalidate()
            lvm.lvs(b.vg)

        base = median_ms(report, runs)
        print(f"lvm2: one pvs --segments report {base:.1f} ms (baseline), {runs} runs")
        print(f"{'phase':10s} {'median ms':>10s} {'lvm cmds':>9s} {'ratio':>6s}  commands")
        vdis: list[str] = []
        snaps: list[str] = []

        def op(name: str, fn: Callable[[], object]) -> None:
            samples: list[float] = []
            cmds: list[int] = []
            last: dict[str, int] = {}
            for _ in range(runs):
                counter.counts.clear()
                start = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - start)
                cmds.append(counter.total())
                last = dict(counter.counts)
            ms = statistics.median(samples) * 1000
            print(f"{name:10s} {ms:10.1f} {statistics.median(cmds):9.0f} {ms / base:6.1f}  "
                  + " ".join(f"{k}={v}" for k, v in sorted(last.items())))

        op("create", lambda: vdis.append(b.vdi_create()))
        it = iter(vdis)
        op("attach", lambda: b.call("vdi_attach", ["true"], vdi=next(it)))
        it = iter(vdis)
        op("detach", lambda: b.call("vdi_detach", vdi=next(it)))
        it = iter(vdis)
        op("snapshot", lambda: snaps.append(
            b.call("vdi_snapshot", vdi=next(it), driver_params={})["uuid"]))
        it = iter(vdis)
        op("clone", lambda: b.call("vdi_clone", vdi=next(it), driver_params={}))
        pairs = iter(zip(snaps, vdis, strict=True))

        def revert() -> None:
            snap, target = next(pairs)
            b.call("vdi_revert", [target], vdi=snap, driver_params={})

        op("revert", revert)
        it = iter(vdis)
        op("resize", lambda: b.call("vdi_resize", [str(32 * MiB)], vdi=next(it)))
        process_snapshot(b, vdis, runs)

        start = time.perf_counter()
        bulk_lvs(b, count)
        setup = time.perf_counter() - start
        start = time.perf_counter()
        b.call("sr_scan")
        adopt = time.perf_counter() - start
        vg_report = median_ms(report, 3) / 1000
        counter.counts.clear()
        scans = []
        for _ in range(3):
            start = time.perf_counter()
            b.call("sr_scan")
            scans.append(time.perf_counter() - start)
        scan = statistics.median(scans)
        records = len(b.call("sm_vdi_list"))
        print(f"setup: {count} image LVs by vgcfgrestore + VHD headers in {setup:.1f} s")
        print(f"scan-adopt {adopt:.2f} s for {count} new LVs ({records} records after)")
        print(f"scan {scan:.3f} s with {records} VDIs, {counter.total() / 3:.0f} lvm commands "
              f"per scan; one report of that VG {vg_report * 1000:.0f} ms: "
              f"ratio {scan / vg_report:.1f}")
    finally:
        b.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
