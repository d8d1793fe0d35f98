"""Process management: the server outlives its starter, is found again, survives SIGKILL with
flushed data intact, and stale records are cleaned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import sm.vhd
from sm.errors import VDIInUse, VDIUnavailable
from sm.nbd import server
from tests.conftest import ROOT
from tests.nbd.conftest import nbd_tools, qemu_io


@pytest.fixture(autouse=True)
def _tools() -> None:
    nbd_tools()


@pytest.fixture
def vhd(work_dir: Path) -> str:
    path = str(work_dir / "disk.vhd")
    sm.vhd.create(path, 16 << 20)
    return path


def _gone(pid: int) -> bool:
    return not server._running(pid)


def test_start_find_idempotent_refusals_stop(vhd: str, run_dir: str) -> None:
    vdi = str(uuid.uuid4())
    info = server.start(vdi, vhd, writable=True, run_dir=run_dir)
    try:
        assert info.params_nbd == f"nbd:unix:{run_dir}/{vdi}.sock:exportname={vdi}"
        assert server.find(vdi, run_dir) == info
        assert server.start(vdi, vhd, writable=True, run_dir=run_dir) == info
        with pytest.raises(VDIInUse):
            server.start(vdi, vhd, writable=False, run_dir=run_dir)
        st = server.status(info)
        assert st["state"] == "running" and st["pid"] == info.pid and st["export"] == vdi
    finally:
        server.stop(info)
    assert _gone(info.pid)
    assert server.find(vdi, run_dir) is None
    assert os.listdir(run_dir) == []
    server.stop(vdi, run_dir=run_dir)  # idempotent


def test_missing_leaf_and_bad_image(work_dir: Path, run_dir: str) -> None:
    with pytest.raises(VDIUnavailable, match="does not exist"):
        server.start(str(uuid.uuid4()), str(work_dir / "nope.vhd"), writable=True,
                     run_dir=run_dir)
    junk = work_dir / "junk.vhd"
    junk.write_bytes(b"not a vhd" * 1000)
    with pytest.raises(VDIUnavailable, match="exited at start"):
        server.start(str(uuid.uuid4()), str(junk), writable=True, run_dir=run_dir)
    assert [n for n in os.listdir(run_dir) if not n.endswith(".log")] == []


def test_outlives_the_starting_process(vhd: str, run_dir: str) -> None:
    vdi = str(uuid.uuid4())
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from sm.nbd import server; "
            f"print(server.start({vdi!r}, {vhd!r}, writable=True, run_dir={run_dir!r}).pid)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    pid = int(proc.stdout)
    info = server.find(vdi, run_dir)
    try:
        assert info is not None and info.pid == pid
        assert os.getsid(pid) != os.getsid(0)  # a session of its own
        qemu_io(info.params_nbd, "write -P 0x21 0 64k", "read -P 0x21 0 64k")
    finally:
        server.stop(vdi, run_dir=run_dir)


def test_flushed_data_survives_sigkill(vhd: str, run_dir: str) -> None:
    vdi = str(uuid.uuid4())
    info = server.start(vdi, vhd, writable=True, run_dir=run_dir)
    qemu_io(info.params_nbd, "write -P 0x77 0 3M", "write -P 0x78 5M 4k", "flush")
    qemu_io(info.params_nbd, "write -f -P 0x79 9M 64k")  # FUA, no flush
    os.kill(info.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not _gone(info.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.find(vdi, run_dir) is None  # stale record recognised and removed
    assert not os.path.exists(f"{run_dir}/{vdi}.json")
    again = server.start(vdi, vhd, writable=True, run_dir=run_dir)
    try:
        assert again.pid != info.pid
        qemu_io(again.params_nbd, "read -P 0x77 0 3M", "read -P 0x78 5M 4k",
                "read -P 0x79 9M 64k")
    finally:
        server.stop(again)
    assert sm.vhd.check(vhd) == []


def test_socket_path_too_long(vhd: str) -> None:
    from sm.errors import InvalidArg

    with pytest.raises(InvalidArg):
        server.start(str(uuid.uuid4()), vhd, writable=True, run_dir="/tmp/" + "x" * 80)
