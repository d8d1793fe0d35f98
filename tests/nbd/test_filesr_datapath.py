"""The File SR's data path with real clients: attach serves the VDI over NBD (nbdkit), live
snapshot / revert pause and resume it, detach stops it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import sm.vhd
from sm.nbd import server
from tests.contract.conftest import FILE
from tests.contract.harness import SRHarness
from tests.nbd.conftest import nbd_tools, nbd_uri, qemu_io, short_dir
from tests.smapi import SMFault

pytestmark = pytest.mark.nbd
MiB = 1 << 20
WRITES = 400
CH = 16384


@pytest.fixture
def sr() -> Iterator[SRHarness]:
    nbd_tools()
    d = Path(short_dir("smfd-"))
    harness = SRHarness.make(FILE, d).create()
    try:
        yield harness
    finally:  # every server of this SR stops (tests/conftest.py also kills leftovers)
        for name in os.listdir(d / "run" / "nbd") if (d / "run" / "nbd").is_dir() else []:
            if name.endswith(".json"):
                server.stop(name[:-5], run_dir=str(d / "run" / "nbd"))
        shutil.rmtree(d, ignore_errors=True)


def _attach(sr: SRHarness, vdi: str, writable: bool = True) -> dict[str, str]:
    res = sr.call("vdi_attach", ["true" if writable else "false"], vdi=vdi)
    assert isinstance(res, dict)
    return res


def _engine_read(path: str, offset: int, length: int) -> bytes:
    with sm.vhd.open_chain(path) as disk:
        return disk.read(offset, length)


def test_attach_serves_and_detach_stops(sr: SRHarness) -> None:
    v = sr.vdi_create(16 * MiB)
    res = _attach(sr, v)
    url = res["params_nbd"]
    assert url.startswith("nbd:unix:") and url.endswith(f":exportname={v}")
    assert res["params"].endswith(f"{v}.vhd")
    sr.call("vdi_activate", ["true"], vdi=v)
    qemu_io(url, "write -P 0xab 1M 64k", "write -P 0x5c 5M 4k", "flush")
    qemu_io(url, "read -P 0xab 1M 64k", "read -P 0x5c 5M 4k", "read -P 0 0 1M")
    sock = url.split(":")[2]
    info = subprocess.run(["nbdinfo", "--size", nbd_uri(sock, v)], capture_output=True,
                          text=True, check=True)
    assert int(info.stdout) == 16 * MiB
    assert _engine_read(res["params"], MiB, 65536) == b"\xab" * 65536
    sr.call("vdi_deactivate", vdi=v)  # paused: flushed, chain closed
    assert sm.vhd.check(res["params"]) == []
    sr.call("vdi_detach", vdi=v)
    assert not os.path.exists(sock)
    sr.call("vdi_detach", vdi=v)  # detach of a VDI not attached: no-op


def test_refusals(sr: SRHarness) -> None:
    v = sr.vdi_create(4 * MiB)
    _attach(sr, v)
    with pytest.raises(SMFault) as err:
        _attach(sr, v)
    assert err.value.code == 24
    ro = _attach(sr, v, writable=False)  # read-only attach shares the writable server
    assert "params_nbd" in ro
    with pytest.raises(SMFault) as err:
        _attach(sr, "00000000-0000-4000-8000-00000000dead")
    assert err.value.code == 144
    sr.call("vdi_detach", vdi=v)


def test_live_snapshot_and_revert(sr: SRHarness) -> None:
    v = sr.vdi_create(16 * MiB)
    res = _attach(sr, v)
    url = res["params_nbd"]
    sr.call("vdi_activate", ["true"], vdi=v)
    qemu_io(url, "write -P 0x11 0 1M", "flush")
    argv = ["qemu-io", "-f", "raw"]
    for i in range(WRITES):
        argv += ["-c", f"write -P {i % 250 + 1} {2 * MiB + i * 16384} 16k"]
    info = server.find(v, os.path.dirname(url.split(":")[2]))
    assert info is not None
    before = server.status(info)["requests"]
    writer = subprocess.Popen([*argv, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    deadline = time.monotonic() + 30
    while server.status(info)["requests"] < before + WRITES // 4:
        assert writer.poll() is None and time.monotonic() < deadline, "writer too fast/slow"
        time.sleep(0.002)
    snap = sr.call("vdi_snapshot", vdi=v)
    out, errs = writer.communicate(timeout=120)
    assert writer.returncode == 0 and "error" not in (out + errs).lower(), errs
    snap_uuid = snap["uuid"] if isinstance(snap, dict) else str(snap)
    # the client kept its connection; the VDI has everything
    qemu_io(url, "read -P 0x11 0 1M", f"read -P {399 % 250 + 1} {2 * MiB + 399 * 16384} 16k")
    # no write landed in a base: every image checks clean; the snapshot has the first write
    loc = Path(res["params"]).parent
    for img in loc.glob("*.vhd"):
        assert not sm.vhd.check(str(img)), img
    snap_path = str(loc / f"{snap_uuid}.vhd")
    assert _engine_read(snap_path, 0, MiB) == b"\x11" * MiB
    # the snapshot holds exactly the writes acknowledged before it: a prefix of them
    region = _engine_read(snap_path, 2 * MiB, WRITES * CH)
    done = [region[i * CH:(i + 1) * CH] == bytes([i % 250 + 1]) * CH for i in range(WRITES)]
    k = done.index(False) if False in done else WRITES
    assert not any(done[k:]) and region[k * CH:] == bytes(len(region) - k * CH)
    assert 0 < k < WRITES, k  # the snapshot really happened while the client wrote
    vdi_region = _engine_read(res["params"], 2 * MiB, WRITES * CH)
    assert all(vdi_region[i * CH:(i + 1) * CH] == bytes([i % 250 + 1]) * CH
               for i in range(WRITES))
    # revert while attached: the client reads the snapshot's content right after
    qemu_io(url, "write -P 0x22 0 1M", "flush")
    sr.call("vdi_revert", [v], vdi=snap_uuid)
    qemu_io(url, "read -P 0x11 0 1M")
    sr.call("vdi_deactivate", vdi=v)
    sr.call("vdi_detach", vdi=v)


def test_read_only_attaches_and_clients_agree(sr: SRHarness) -> None:
    v = sr.vdi_create(8 * MiB)
    res = _attach(sr, v)
    url = res["params_nbd"]
    qemu_io(url, "write -P 0x3c 0 1M", "write -P 0xc3 4M 4k", "flush")
    snap = sr.call("vdi_snapshot", vdi=v)
    snap_uuid = snap["uuid"] if isinstance(snap, dict) else str(snap)
    base = sr.record(v)["parent"]
    ro = _attach(sr, snap_uuid, writable=False)
    qemu_io(ro["params_nbd"], "read -P 0x3c 0 1M", "read -P 0xc3 4M 4k", readonly=True)
    assert qemu_io(ro["params_nbd"], "write -P 1 0 4k", check=False, readonly=True).returncode
    hidden = _attach(sr, base, writable=False)  # a hidden base, read-only
    sock = hidden["params_nbd"].split(":")[2]
    copy = Path(sock).with_name("copy.raw")
    subprocess.run(["nbdcopy", nbd_uri(sock, base), str(copy)], check=True)
    data = copy.read_bytes()
    assert data[:MiB] == b"\x3c" * MiB and data[4 * MiB:4 * MiB + 4096] == b"\xc3" * 4096
    from tests.vhd.oracle import pyvhdi_read

    chain = [str(Path(res["params"]).parent / f"{u}.vhd") for u in (snap_uuid, base)]
    assert pyvhdi_read(chain) == data
    for u in (snap_uuid, base, v):
        sr.call("vdi_detach", vdi=u)


def test_kill_9_after_flush(sr: SRHarness) -> None:
    v = sr.vdi_create(8 * MiB)
    res = _attach(sr, v)
    qemu_io(res["params_nbd"], "write -P 0x77 3M 128k", "flush")
    sock = res["params_nbd"].split(":")[2]
    info = server.find(v, os.path.dirname(sock))
    assert info is not None
    os.kill(info.pid, signal.SIGKILL)
    sr.call("vdi_detach", vdi=v)
    res = _attach(sr, v)
    qemu_io(res["params_nbd"], "read -P 0x77 3M 128k")
    sr.call("vdi_detach", vdi=v)


def test_clone_of_attached_and_deactivated_server_stays_paused(sr: SRHarness) -> None:
    v = sr.vdi_create(8 * MiB)
    res = _attach(sr, v)
    url = res["params_nbd"]
    sr.call("vdi_activate", ["true"], vdi=v)
    qemu_io(url, "write -P 0x61 0 64k", "flush")
    clone = sr.call("vdi_clone", vdi=v)  # live: paused and resumed
    clone_uuid = clone["uuid"] if isinstance(clone, dict) else str(clone)
    info = server.find(v, os.path.dirname(url.split(":")[2]))
    assert info is not None and server.status(info)["state"] == "running"
    qemu_io(url, "write -P 0x62 64k 64k", "read -P 0x61 0 64k", "flush")
    c = _attach(sr, clone_uuid)
    qemu_io(c["params_nbd"], "read -P 0x61 0 64k", "read -P 0 64k 64k")
    sr.call("vdi_deactivate", vdi=v)
    sr.call("vdi_snapshot", vdi=v)  # a deactivated (paused) server stays paused
    assert server.status(info)["state"] == "paused"
    sr.call("vdi_activate", ["true"], vdi=v)
    assert server.status(info)["state"] == "running"
    qemu_io(url, "read -P 0x61 0 64k", "read -P 0x62 64k 64k")
    for u in (clone_uuid, v):
        sr.call("vdi_detach", vdi=u)


def test_recovery_resumes_a_server_left_paused(sr: SRHarness) -> None:
    """A driver killed inside `_live` leaves its server paused; the next chain-changing
    command (journal replay under the SR lock) resumes it, the client never errs."""
    v = sr.vdi_create(8 * MiB)
    res = _attach(sr, v)
    sr.call("vdi_activate", ["true"], vdi=v)
    info = server.find(v, os.path.dirname(res["params_nbd"].split(":")[2]))
    assert info is not None
    # paused by a process that then exits, as `_live` leaves it when the driver dies
    subprocess.run([sys.executable, "-c", "import sys; from sm.nbd import server; "
                    "server.pause(server.find(sys.argv[1], sys.argv[2]))",
                    v, os.path.dirname(info.control)], check=True)
    reader = subprocess.Popen(["qemu-io", "-f", "raw", "-c", "read -P 0 0 64k",
                               res["params_nbd"]], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    assert reader.poll() is None  # held, not failed
    sr.vdi_create(MiB)  # any chain-changing command
    out, _ = reader.communicate(timeout=30)
    assert reader.returncode == 0 and "read 65536/65536" in out, out
    assert server.status(info)["state"] == "running"
    sr.call("vdi_detach", vdi=v)


def test_resize_of_a_served_vdi_serves_the_new_size(sr: SRHarness) -> None:
    """A VDI attached through the driver and grown: the next connection sees the new size."""
    v = sr.vdi_create(4 * MiB)
    res = _attach(sr, v)
    sr.call("vdi_activate", ["true"], vdi=v)
    qemu_io(res["params_nbd"], "write -P 0x41 0 64k", "flush")
    sr.call("vdi_resize", [str(6 * MiB)], vdi=v)
    sock = res["params_nbd"].split(":")[2]
    info = subprocess.run(["nbdinfo", "--size", nbd_uri(sock, v)], capture_output=True,
                          text=True, check=True)
    assert int(info.stdout) == 6 * MiB
    qemu_io(res["params_nbd"], "write -P 0x42 5M 1M", "read -P 0x41 0 64k", "flush")
    sr.call("vdi_deactivate", vdi=v)
    sr.call("vdi_detach", vdi=v)
    assert _engine_read(res["params"], 5 * MiB, MiB) == b"\x42" * MiB
