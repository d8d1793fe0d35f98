"""sm.nbd.client against real servers: nbdkit's memory plugin (checked with qemu-io) and our
own VHD server (checked by opening the image with the engine afterwards)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import sm.vhd
from sm.nbd import server
from sm.nbd.client import NbdClient, NbdError, parse_url
from tests.nbd.conftest import nbd_tools, qemu_io

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _tools() -> None:
    nbd_tools()


@pytest.fixture
def memory_server(run_dir: str) -> Iterator[str]:
    """nbdkit's own memory plugin (not our code) with export name `mem`."""
    sock = os.path.join(run_dir, "mem.sock")
    pidfile = os.path.join(run_dir, "mem.pid")
    proc = subprocess.Popen(["nbdkit", "-f", "-U", sock, "-P", pidfile, "-e", "mem",
                             "memory", "size=12M"], stderr=subprocess.PIPE)
    try:
        for _ in range(500):
            if os.path.exists(pidfile):
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            subprocess.run(["sleep", "0.01"], check=True)
        yield f"nbd:unix:{sock}:exportname=mem"
    finally:
        proc.terminate()
        proc.wait(10)


def test_parse_url() -> None:
    assert parse_url("nbd:unix:/run/x.sock:exportname=ab") == ("/run/x.sock", "ab")
    assert parse_url("nbd:unix:/run/x.sock") == ("/run/x.sock", "")
    with pytest.raises(NbdError):
        parse_url("nbd://host/x")


def test_read_write_against_nbdkit_memory(memory_server: str) -> None:
    pattern = os.urandom(5 * MiB + 123)
    with NbdClient.from_url(memory_server) as c:
        assert c.size == 12 * MiB and not c.read_only
        c.write(MiB - 7, pattern)          # unaligned, larger than one request chunk
        c.write(11 * MiB, b"\x5a" * MiB, fua=True)
        c.flush()
        assert c.read(MiB - 7, len(pattern)) == pattern
        assert c.read(0, 4096) == bytes(4096)
        with pytest.raises(ValueError):
            c.read(12 * MiB - 1, 2)
    # An independent client sees what ours wrote.
    qemu_io(memory_server, f"read -P 0x5a {11 * MiB} {MiB}")
    qemu_io(memory_server, "write -P 0x33 0 64k")
    with NbdClient.from_url(memory_server) as c:
        assert c.read(0, 65536) == b"\x33" * 65536
        assert c.read(MiB - 7, 100) == pattern[:100]


def test_against_our_vhd_server(work_dir: Path, run_dir: str) -> None:
    leaf = str(work_dir / "d.vhd")
    sm.vhd.create(leaf, 8 * MiB)
    vdi = str(uuid.uuid4())
    info = server.start(vdi, leaf, writable=True, run_dir=run_dir)
    data = os.urandom(3 * MiB)
    try:
        with NbdClient.from_url(info.params_nbd) as c:
            assert c.size == 8 * MiB
            c.write(2 * MiB + 512, data)
            c.flush()
            assert c.read(2 * MiB + 512, len(data)) == data
    finally:
        server.stop(info)
    with sm.vhd.open_chain(leaf) as disk:
        assert disk.read(2 * MiB + 512, len(data)) == data
    assert sm.vhd.check(leaf) == []


def test_unknown_export_is_refused(work_dir: Path, run_dir: str) -> None:
    leaf = str(work_dir / "e.vhd")
    sm.vhd.create(leaf, 4 * MiB)
    info = server.start(str(uuid.uuid4()), leaf, writable=False, run_dir=run_dir)
    try:
        with pytest.raises(NbdError, match="refused"):
            NbdClient(info.socket, "no-such-export")
    finally:
        server.stop(info)


def test_read_only_server_refuses_writes(work_dir: Path, run_dir: str) -> None:
    leaf = str(work_dir / "r.vhd")
    sm.vhd.create(leaf, 4 * MiB)
    info = server.start(str(uuid.uuid4()), leaf, writable=False, run_dir=run_dir)
    try:
        with NbdClient.from_url(info.params_nbd) as c:
            assert c.read_only
            with pytest.raises(NbdError, match="write failed"):
                c.write(0, b"x" * 512)
            assert c.read(0, 512) == bytes(512)
    finally:
        server.stop(info)
