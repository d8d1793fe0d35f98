"""Live snapshot under a writing client, the way the File SR does it: pause the server, rename
the leaf to a base, create a new empty leaf over it at the old path, resume on it."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import sm.vhd
from sm.nbd import server
from tests.nbd.conftest import nbd_tools, nbd_uri

CHUNK = 32 * 1024
WRITES = 1000


@pytest.fixture(autouse=True)
def _tools() -> None:
    nbd_tools()


def _snapshot(info: server.ServerInfo, leaf: str, base: str) -> tuple[server.ServerInfo, int]:
    """Returns the updated record and the number of requests served before the pause."""
    st = server.pause(info)
    os.rename(leaf, base)
    sm.vhd.snapshot(base, leaf)
    sm.vhd.set_hidden(base)
    return server.resume(info, leaf), st["requests"]


def _pattern(i: int) -> int:
    return i % 255 + 1


def test_snapshot_while_qemu_io_writes(work_dir: Path, run_dir: str) -> None:
    leaf, base = str(work_dir / "vdi.vhd"), str(work_dir / "base.vhd")
    sm.vhd.create(leaf, 64 << 20)
    info = server.start(str(uuid.uuid4()), leaf, writable=True, run_dir=run_dir)
    try:
        argv = ["qemu-io", "-f", "raw"]
        for i in range(WRITES):
            argv += ["-c", f"write -P {_pattern(i)} {i * CHUNK} {CHUNK}"]
        writer = subprocess.Popen([*argv, info.params_nbd], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while server.status(info)["requests"] < WRITES // 4:
            assert writer.poll() is None and time.monotonic() < deadline, "writer too fast/slow"
            time.sleep(0.002)
        info, _ = _snapshot(info, leaf, base)
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        assert out.count("wrote") == WRITES and "error" not in (out + err).lower()
        st = server.status(info)
        assert st["state"] == "running" and st["generation"] == 1
    finally:
        server.stop(info)

    with sm.vhd.open_chain(base) as d:
        in_base = [d.read(i * CHUNK, CHUNK) for i in range(WRITES)]
    k = sum(1 for c in in_base if c != bytes(CHUNK))
    assert WRITES // 4 <= k < WRITES
    for i, c in enumerate(in_base):  # a clean prefix: nothing after the pause, nothing torn
        assert c == (bytes([_pattern(i)]) * CHUNK if i < k else bytes(CHUNK)), i
    with sm.vhd.open_chain(leaf) as d:
        assert d.depth == 2
        for i in range(WRITES):
            assert d.read(i * CHUNK, CHUNK) == bytes([_pattern(i)]) * CHUNK, i
    assert sm.vhd.check(base) == [] and sm.vhd.check(leaf) == []
    assert sm.vhd.info(leaf).parent_path == base


def test_repeated_snapshots_under_nbdcopy(work_dir: Path, run_dir: str) -> None:
    size = 32 << 20
    leaf = str(work_dir / "vdi.vhd")
    sm.vhd.create(leaf, size)
    src = work_dir / "src.raw"
    data = os.urandom(size)
    src.write_bytes(data)
    info = server.start(str(uuid.uuid4()), leaf, writable=True, run_dir=run_dir)
    bases = []
    try:
        copier = subprocess.Popen(
            ["nbdcopy", "-C", "4", "--request-size=65536", str(src),
             nbd_uri(info.socket, info.export_name)],
            stderr=subprocess.PIPE, text=True)
        writes = size // 65536
        served_at_pause = []
        for n, threshold in enumerate((writes // 8, writes // 3, writes // 2)):
            while server.status(info)["requests"] < threshold and copier.poll() is None:
                time.sleep(0.001)
            base = str(work_dir / f"base{n}.vhd")
            info, served = _snapshot(info, leaf, base)
            served_at_pause.append(served)
            bases.append(base)
        _, err = copier.communicate(timeout=120)
        assert copier.returncode == 0, err
        assert served_at_pause[0] < writes  # the copy was under way
        subprocess.run(["nbdcopy", nbd_uri(info.socket, info.export_name),
                        str(work_dir / "out.raw")], check=True)
        assert (work_dir / "out.raw").read_bytes() == data
    finally:
        server.stop(info)
    with sm.vhd.open_chain(leaf) as d:
        assert d.depth == 4 and d.read(0, size) == data
    for path in [leaf, *bases]:
        assert sm.vhd.check(path) == [], path
