"""A VM snapshot of two disks served over NBD while a client writes to both is crash-consistent
(two File SR disks; a File SR disk and an LVHD SR disk on a loop device).

The writer (`sm.nbd.client`, one connection per disk) makes dependent writes: sector n of
disk A, and only once that is acknowledged,
sector n of disk B, then n+1 of A... In any crash-consistent cut B holds no more sectors than
A, and at most one fewer. Snapshotting the disks one after the other with the data path
running in between (each driver pausing only its own server) breaks that: the writer goes on
between the two snapshots and B's snapshot holds sectors A's does not.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest

from sm import vhd
from sm.api import StorageManager
from sm.nbd.client import NbdClient
from tests.api.conftest import env, new_sr  # noqa: F401
from tests.api.test_vms import _lv_open_read, _lvhd_sr, lv_read
from tests.lvhd.conftest import MiB, lvm_sandbox  # noqa: F401
from tests.nbd.conftest import nbd_tools

pytestmark = pytest.mark.nbd
SECTOR = 512


def _prefix(path: str, limit: int) -> int:
    """How many leading sectors hold the pattern (the writes the image has)."""
    with vhd.open_chain(path) as disk:
        return _count(disk.read(0, limit * SECTOR))


def _count(data: bytes) -> int:
    limit = len(data) // SECTOR
    n = 0
    while n < limit and data[n * SECTOR:(n + 1) * SECTOR] == b"\x5a" * SECTOR:
        n += 1
    assert data[n * SECTOR:] == bytes(len(data) - n * SECTOR), "writes out of order"
    return n


@pytest.mark.parametrize("second", ["file", "lvhd"])
def test_vm_snapshot_pauses_all_disks_together(env: dict[str, str],  # noqa: F811
                                               tmp_path: Path, second: str,
                                               request: pytest.FixtureRequest,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    nbd_tools()
    run = Path("/tmp") / f"smvm-{tmp_path.name[-12:]}"
    monkeypatch.setenv("SM_RUN_DIR", str(run))  # in-process drivers: short socket paths
    env["SM_RUN_DIR"] = str(run)
    with StorageManager(environ=env) as sm, contextlib.ExitStack() as stack:
        first = new_sr(sm, "file", tmp_path, "s0")
        if second == "lvhd":
            lv = stack.enter_context(_lvhd_sr(sm, request.getfixturevalue("lvm_sandbox"),
                                              tmp_path, 128 * MiB, "thin"))
            srs = [first, lv.name]
        else:
            srs = [first, new_sr(sm, "file", tmp_path, "s1")]
        disks = [sm.vdi_create(4 << 20, f"d{i}", sr=sr) for i, sr in enumerate(srs)]
        sm.vm_create("vm")
        for d, sr in zip(disks, srs):
            sm.vm_add_disk("vm", d.uuid, sr=sr)
        clients = [sm._client(sm._config(sr)) for sr in srs]
        urls = [str(c.vdi_attach(d.ref, True)["params_nbd"]) for c, d in zip(clients, disks)]
        done, stop, errors = [0], threading.Event(), []

        def writer() -> None:
            try:
                with NbdClient.from_url(urls[0]) as one, NbdClient.from_url(urls[1]) as two:
                    while not stop.is_set() and done[0] < (4 << 20) // SECTOR:
                        one.write(done[0] * SECTOR, b"\x5a" * SECTOR, fua=True)
                        two.write(done[0] * SECTOR, b"\x5a" * SECTOR, fua=True)
                        done[0] += 1
            except Exception as err:
                errors.append(err)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            deadline = time.monotonic() + 60
            while done[0] < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            snap = sm.vm_snapshot("vm", "live", for_export=True)
            at_snapshot = done[0]
            while done[0] < at_snapshot + 3 and time.monotonic() < deadline and thread.is_alive():
                time.sleep(0.01)
        finally:
            stop.set()
            thread.join(60)
        assert not errors, errors
        by_disk = {d.vdi: d.snapshot for d in snap.disks}
        limit = done[0] + 1
        a = _prefix(str(Path(sm._config(first).device_config["location"])
                        / f"{by_disk[disks[0].uuid]}.vhd"), limit)
        if second == "lvhd":
            b = _count(_lv_open_read(lv, f"/dev/{lv.vg}/VHD-{by_disk[disks[1].uuid]}",
                                     limit * SECTOR))
        else:
            b = _prefix(str(Path(sm._config(srs[1]).device_config["location"])
                            / f"{by_disk[disks[1].uuid]}.vhd"), limit)
        assert a >= 3, (a, b)
        assert a - 1 <= b <= a, f"not crash-consistent: disk A has {a} writes, disk B {b}"
        # An export snapshot is served read-only over NBD: a backup tool reads the same.
        for d, n in zip(snap.disks, (a, b) if snap.disks[0].vdi == disks[0].uuid else (b, a)):
            assert d.export_path.startswith("nbd:unix:"), d.export_path
            with NbdClient.from_url(d.export_path) as reader:
                assert _count(reader.read(0, limit * SECTOR)) == n
        sm.vm_snapshot_delete("vm", "live")  # detaches the exports, deletes the snapshots
        assert not [v for sr in srs for v in sm.vdis(sr) if v.is_a_snapshot]
        # The live disks kept every write (the servers ran again after the snapshot).
        for c, d in zip(clients, disks):
            c.vdi_detach(d.ref)
        want = b"\x5a" * SECTOR * done[0]
        assert sm.vdi_read(disks[0].uuid, 0, len(want), sr=first) == want
        if second == "lvhd":
            assert lv_read(sm, lv, disks[1].uuid, len(want)) == want
        else:
            assert sm.vdi_read(disks[1].uuid, 0, len(want), sr=srs[1]) == want
