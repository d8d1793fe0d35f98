"""Real NBD clients (qemu-io, qemu-img, nbdinfo, nbdcopy) against the nbdkit plugin, checked
against what the engine, qemu-img and pyvhdi read from the files."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

import sm.vhd
from sm.nbd import server
from tests.nbd.conftest import SIZE, Served, nbd_tools, nbd_uri, qemu_io
from tests.vhd.oracle import pyvhdi_read


@pytest.fixture(autouse=True)
def _tools() -> None:
    nbd_tools()


def test_nbdinfo_reports_export(served: Served) -> None:
    out = subprocess.run(["nbdinfo", "--json", served.uri], capture_output=True, text=True,
                         check=True).stdout
    exp = json.loads(out)["exports"][0]
    assert exp["export-name"] == served.info.export_name
    assert exp["export-size"] == SIZE
    assert exp["can_flush"] and exp["can_fua"] and exp["can_multi_conn"]
    assert exp["is_read_only"] is False and exp["can_trim"] is False


def test_qemu_io_patterns(served: Served, slot: int) -> None:
    qemu_io(served.url,
            f"write -P 0xab {slot} 1M",
            f"write -P 0x5c {slot + 1000} 3000",  # unaligned, inside the first write
            f"write -z {slot + (2 << 20)} 64k",
            f"write -f -P 0x11 {slot + (3 << 20)} 512",  # FUA
            "flush")
    qemu_io(served.url,
            f"read -P 0xab {slot} 1000",
            f"read -P 0x5c {slot + 1000} 3000",
            f"read -P 0xab {slot + 4000} {(1 << 20) - 4000}",
            f"read -P 0 {slot + (2 << 20)} 64k",
            f"read -P 0x11 {slot + (3 << 20)} 512")
    with sm.vhd.open_chain(served.leaf) as disk:  # flushed, so a second reader sees it
        data = disk.read(slot, 4 << 20)
    assert data[:1000] == b"\xab" * 1000 and data[1000:4000] == b"\x5c" * 3000
    assert data[(3 << 20):(3 << 20) + 512] == b"\x11" * 512


def test_wrong_export_name_refused(served: Served) -> None:
    bad = nbd_uri(served.info.socket, "not-this-one")
    proc = subprocess.run(["nbdinfo", bad], capture_output=True, text=True)
    assert proc.returncode != 0


def _serve(path: str, run_dir: str, *, writable: bool = True) -> server.ServerInfo:
    return server.start(str(uuid.uuid4()), path, writable=writable, run_dir=run_dir)


def test_convert_compare_against_engine_qemu_pyvhdi(run_dir: str, work_dir: Path) -> None:
    """Copy random data in with qemu-img and nbdcopy over a differencing chain; every reader of
    the files agrees with the source."""
    size = 8 << 20
    base, leaf = str(work_dir / "base.vhd"), str(work_dir / "leaf.vhd")
    sm.vhd.create(base, size)
    with sm.vhd.open_chain(base, writable=True) as d:
        d.write(0, b"\x42" * size)
    sm.vhd.snapshot(base, leaf)
    src = work_dir / "src.raw"
    data = bytearray(os.urandom(size))
    data[(2 << 20):(3 << 20)] = bytes(1 << 20)  # a zero run: qemu-img writes zeroes there
    src.write_bytes(data)
    info = _serve(leaf, run_dir)
    try:
        subprocess.run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(src),
                        info.params_nbd], check=True, capture_output=True)
        subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(src),
                        info.params_nbd], check=True, capture_output=True)
        out = work_dir / "out.raw"
        subprocess.run(["nbdcopy", nbd_uri(info.socket, info.export_name), str(out)], check=True)
        assert out.read_bytes() == data
        server.pause(info)  # flushed and closed: the files are complete
        with sm.vhd.open_chain(leaf) as d:
            assert d.read(0, size) == data
        assert pyvhdi_read([leaf, base]) == data
        subprocess.run(["qemu-img", "compare", "-f", "vpc", "-F", "raw", leaf, str(src)],
                       check=True, capture_output=True)
        server.resume(info)
        # nbdcopy in the other direction, 4 connections
        src2 = work_dir / "src2.raw"
        data2 = os.urandom(size)
        src2.write_bytes(data2)
        subprocess.run(["nbdcopy", "-C", "4", str(src2), nbd_uri(info.socket, info.export_name)],
                       check=True)
    finally:
        server.stop(info)
    with sm.vhd.open_chain(leaf) as d:
        assert d.read(0, size) == data2
    assert sm.vhd.check(leaf) == [] and sm.vhd.check(base) == []
    with sm.vhd.open_chain(base) as d:
        assert d.read(0, 4096) == b"\x42" * 4096  # no write landed in the base


def test_read_only_server(run_dir: str, work_dir: Path) -> None:
    path = str(work_dir / "ro.vhd")
    sm.vhd.create(path, 4 << 20)
    with sm.vhd.open_chain(path, writable=True) as d:
        d.write(0, b"\x33" * 65536)
    info = _serve(path, run_dir, writable=False)
    try:
        qemu_io(info.params_nbd, "read -P 0x33 0 64k", "read -P 0 64k 64k", readonly=True)
        proc = qemu_io(info.params_nbd, "write -P 1 0 4k", check=False)
        assert proc.returncode != 0 and "wrote" not in proc.stdout
    finally:
        server.stop(info)
    assert sm.vhd.check(path) == []
