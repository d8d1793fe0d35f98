"""A VM snapshot of two disks served over NBD while a client writes to both is crash-consistent.

The writer makes dependent writes: sector n of disk A, and only once that is acknowledged,
sector n of disk B, then n+1 of A... In any crash-consistent cut B holds no more sectors than
A, and at most one fewer. Snapshotting the disks one after the other with the data path
running in between (each driver pausing only its own server) breaks that: the writer goes on
between the two snapshots and B's snapshot holds sectors A's does not.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from sm import vhd
from sm.api import StorageManager
from tests.api.conftest import env, new_sr  # noqa: F401
from tests.nbd.conftest import nbd_tools

pytestmark = pytest.mark.nbd
SECTOR = 512


def _write(url: str, n: int) -> None:
    proc = subprocess.run(["qemu-io", "-f", "raw", "-c", f"write -P 0x5a {n * SECTOR} {SECTOR}",
                           url], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "wrote" in proc.stdout, proc.stdout + proc.stderr


def _prefix(path: str, limit: int) -> int:
    """How many leading sectors hold the pattern (the writes the image has)."""
    with vhd.open_chain(path) as disk:
        data = disk.read(0, limit * SECTOR)
    n = 0
    while n < limit and data[n * SECTOR:(n + 1) * SECTOR] == b"\x5a" * SECTOR:
        n += 1
    assert data[n * SECTOR:] == bytes(len(data) - n * SECTOR), "writes out of order"
    return n


def test_vm_snapshot_pauses_all_disks_together(env: dict[str, str],  # noqa: F811
                                               tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    nbd_tools()
    run = Path("/tmp") / f"smvm-{tmp_path.name[-12:]}"
    monkeypatch.setenv("SM_RUN_DIR", str(run))  # in-process drivers: short socket paths
    env["SM_RUN_DIR"] = str(run)
    with StorageManager(environ=env) as sm:
        srs = [new_sr(sm, "file", tmp_path, f"s{i}") for i in range(2)]
        disks = [sm.vdi_create(4 << 20, f"d{i}", sr=sr) for i, sr in enumerate(srs)]
        sm.vm_create("vm")
        for d, sr in zip(disks, srs):
            sm.vm_add_disk("vm", d.uuid, sr=sr)
        clients = [sm._client(sm._config(sr)) for sr in srs]
        urls = [str(c.vdi_attach(d.ref, True)["params_nbd"]) for c, d in zip(clients, disks)]
        done, stop, errors = [0], threading.Event(), []

        def writer() -> None:
            try:
                while not stop.is_set() and done[0] < 2000:
                    _write(urls[0], done[0])
                    _write(urls[1], done[0])
                    done[0] += 1
            except Exception as err:
                errors.append(err)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            deadline = time.monotonic() + 60
            while done[0] < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            snap = sm.vm_snapshot("vm", "live")
            at_snapshot = done[0]
            while done[0] < at_snapshot + 3 and time.monotonic() < deadline and thread.is_alive():
                time.sleep(0.01)
        finally:
            stop.set()
            thread.join(60)
        assert not errors, errors
        by_disk = {d.vdi: d.snapshot for d in snap.disks}
        limit = done[0] + 1
        paths = [str(Path(sm._config(sr).device_config["location"]) / f"{by_disk[d.uuid]}.vhd")
                 for d, sr in zip(disks, srs)]
        a, b = (_prefix(p, limit) for p in paths)
        assert a >= 3, (a, b)
        assert a - 1 <= b <= a, f"not crash-consistent: disk A has {a} writes, disk B {b}"
        # The live disks kept every write (the servers ran again after the snapshot).
        for c, d, sr in zip(clients, disks, srs):
            c.vdi_detach(d.ref)
            assert sm.vdi_read(d.uuid, 0, done[0] * SECTOR, sr=sr) == b"\x5a" * SECTOR * done[0]
