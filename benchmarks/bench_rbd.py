"""RBD SR speed next to the File SR's, and the NBD data path against `rbd export`.

Phases (all figures from this run, on this machine; printed, never asserted):

| phase | what is timed | baseline |
|---|---|---|
| snapshot / clone / revert | one `vdi_snapshot` / `vdi_clone` / `vdi_revert` through `sm.dispatch.run` in-process (median), RBD SR | the same command on a File SR (VHD) in the same run |
| nbd-read | sequential read of a SIZE image through the SR's NBD server (`nbdcopy` to `null:`) | `rbd export` of the same image to /dev/null |

ratio = baseline seconds / RBD seconds for the commands (> 1: RBD faster), and NBD rate /
export rate for the copy (1.0 = as fast as Ceph's own tool).

    .venv/bin/python benchmarks/bench_rbd.py                # a fresh single-node cluster, 1 GiB
    .venv/bin/python benchmarks/bench_rbd.py --quick        # 64 MiB, 5 runs, a few seconds
    .venv/bin/python benchmarks/bench_rbd.py --conf /etc/ceph/ceph.conf --pool rbd
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
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

MiB = 1 << 20
SR_UUID = "5a1e0000-0000-4000-8000-0000000be0c5"


class Bench:
    """One SR driven in-process through the dispatcher."""

    def __init__(self, cls: type, dconf: dict[str, str], root: Path) -> None:
        self.cls = cls
        self.dconf = dconf
        self.env = {**os.environ, "SM_STATE_DIR": str(root / "state"),
                    "SM_RUN_DIR": str(root / "run")}

    def call(self, command: str, args: list[str] | None = None, vdi: str | None = None,
             **extra: Any) -> Any:
        from sm.dispatch import run

        s: dict[str, Any] = {
            "host_ref": "OpaqueRef:h", "session_ref": "OpaqueRef:s", "command": command,
            "args": args or [], "sr_uuid": SR_UUID, "sr_ref": "OpaqueRef:sr",
            "device_config": {"SRmaster": "true", **self.dconf},
        }
        if vdi:
            s.update(vdi_uuid=vdi, vdi_location=vdi, vdi_ref="OpaqueRef:v")
        s.update(extra)
        doc = xmlrpc.client.dumps((s,), methodname=command)
        (value,), _ = xmlrpc.client.loads(run(self.cls, doc, environ=self.env))
        return value

    def vdi_create(self, size: int) -> str:
        args = [str(size), "bench", "", "", "false", "", "", "false"]
        return str(self.call("vdi_create", args, vdi_type="user", vdi_sm_config={})["uuid"])


def commands(b: Bench, runs: int) -> dict[str, float]:
    """Median ms of each command, every run on a VDI of its own (File SR chains deepen with
    every snapshot of one VDI; RBD's do not, but both get the same treatment)."""
    def timed(prepare: Callable[[], Any], op: Callable[[Any], object]) -> float:
        times = []
        for _ in range(runs):
            arg = prepare()
            start = time.perf_counter()
            op(arg)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000

    def vdi_with_snapshot() -> tuple[str, str]:
        vdi = b.vdi_create(64 * MiB)
        return vdi, b.call("vdi_snapshot", vdi=vdi, driver_params={})["uuid"]

    new = lambda: b.vdi_create(64 * MiB)  # noqa: E731
    return {
        "snapshot": timed(new, lambda v: b.call("vdi_snapshot", vdi=v, driver_params={})),
        "clone": timed(new, lambda v: b.call("vdi_clone", vdi=v, driver_params={})),
        "revert": timed(vdi_with_snapshot,
                        lambda p: b.call("vdi_revert", [p[0]], vdi=p[1], driver_params={})),
    }


def nbd_read(b: Bench, conf: str, pool: str, ns: str, size: int) -> tuple[float, float]:
    """(rbd export seconds, NBD read seconds) of one image of `size` bytes of data."""
    from srtypes.rbd.ceph import load

    vdi = b.vdi_create(size)
    rados, rbd = load()
    cluster = rados.Rados(conffile=conf)
    cluster.connect(timeout=10)
    try:
        io = cluster.open_ioctx(pool)
        io.set_namespace(ns)
        chunk = os.urandom(4 * MiB)
        with rbd.Image(io, vdi) as im:
            for off in range(0, size, len(chunk)):
                im.write(chunk[: size - off], off)
        io.close()
    finally:
        cluster.shutdown()
    spec = f"{pool}/{ns}/{vdi}" if ns else f"{pool}/{vdi}"
    start = time.perf_counter()
    subprocess.run(["rbd", "--conf", conf, "export", "--no-progress", spec, "-"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    export_s = time.perf_counter() - start
    attached = b.call("vdi_attach", ["false"], vdi=vdi)
    b.call("vdi_activate", ["false"], vdi=vdi)
    sock = attached["params_nbd"].split(":")[2]
    try:
        start = time.perf_counter()
        subprocess.run(["nbdcopy", f"nbd+unix:///{vdi}?socket={sock}", "null:"], check=True,
                       capture_output=True)
        nbd_s = time.perf_counter() - start
    finally:
        b.call("vdi_deactivate", vdi=vdi)
        b.call("vdi_detach", vdi=vdi)
    return export_s, nbd_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conf", help="ceph.conf of an existing cluster (default: start one)")
    ap.add_argument("--pool", default="rbd")
    ap.add_argument("--quick", action="store_true", help="64 MiB image, 5 runs")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--size-mib", type=int)
    ap.add_argument("--dir", help="work directory parent (default /tmp: sockets need short paths)")
    opts = ap.parse_args()
    runs = opts.runs or (5 if opts.quick else 21)
    size = (opts.size_mib or (64 if opts.quick else 1024)) * MiB
    work = Path(tempfile.mkdtemp(prefix="bench-rbd-", dir=opts.dir or "/tmp"))
    cluster = None
    try:
        conf = opts.conf
        if conf is None:
            from tests.rbd.cluster import start_cluster

            cluster = start_cluster(work / "ceph")
            conf = cluster.conf
        from srtypes.file import FileSR
        from srtypes.rbd import RBDSR

        ns = "bench" + uuidlib.uuid4().hex[:8]
        rbd_b = Bench(RBDSR, {"conf": conf, "pool": opts.pool, "namespace": ns}, work / "rbd")
        file_b = Bench(FileSR, {"location": str(work / "filesr")}, work / "file")
        for b in (rbd_b, file_b):
            b.call("sr_create", ["0"])
            b.call("sr_attach")
        rbd_ms, file_ms = commands(rbd_b, runs), commands(file_b, runs)
        export_s, nbd_s = nbd_read(rbd_b, conf, opts.pool, ns, size)
        print(f"{'phase':<10} {'rbd':>10} {'file':>10}  ratio (file / rbd; > 1: rbd faster)")
        for phase in ("snapshot", "clone", "revert"):
            print(f"{phase:<10} {rbd_ms[phase]:>7.1f} ms {file_ms[phase]:>7.1f} ms  "
                  f"ratio {file_ms[phase] / rbd_ms[phase]:.2f} (median of {runs})")
        mb = size / 1e6
        print(f"{'nbd-read':<10} {mb / nbd_s:>6.0f} MB/s {mb / export_s:>6.0f} MB/s  ratio "
              f"{export_s / nbd_s:.2f} (NBD server / rbd export of {size // MiB} MiB)")
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
