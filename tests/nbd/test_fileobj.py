"""`sm.nbd.fileobj`: a VDI chain as a file-like object, checked with the engine and qemu-img."""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import sm.vhd
from sm.nbd.fileobj import VdiFile, open_vdi
from tests.vhd.oracle import pyvhdi_read


@pytest.fixture
def chain(tmp_path: Path) -> tuple[str, str]:
    base, leaf = str(tmp_path / "base.vhd"), str(tmp_path / "leaf.vhd")
    sm.vhd.create(base, 4 << 20)
    with sm.vhd.open_chain(base, writable=True) as d:
        d.write(0, b"\x01" * (1 << 20))
    sm.vhd.snapshot(base, leaf)
    return base, leaf


def test_write_seek_read_through_chain(chain: tuple[str, str], tmp_path: Path) -> None:
    base, leaf = chain
    with open_vdi(leaf, "r+b") as f:
        assert isinstance(f, io.RawIOBase) and f.size == 4 << 20 and f.writable()
        assert f.seek(1000) == 1000
        assert f.write(b"hello") == 5
        assert f.tell() == 1005
        f.seek(-4, io.SEEK_END)
        assert f.write(b"endXmore") == 4  # stops at the end
        with pytest.raises(OSError) as err:
            f.write(b"x")
        assert err.value.errno == errno.ENOSPC
        f.seek(990)
        assert f.read(20) == b"\x01" * 10 + b"hello" + b"\x01" * 5
        buf = bytearray(8)
        f.seek(-8, io.SEEK_END)
        assert f.readinto(buf) == 8 and bytes(buf) == bytes(4) + b"endX"
        assert f.read(10) == b""
        f.flush()
    with sm.vhd.open_chain(leaf) as d:
        assert d.read(995, 15) == b"\x01" * 5 + b"hello" + b"\x01" * 5
    with sm.vhd.open_chain(base) as d:
        assert d.read(1000, 5) == b"\x01" * 5  # the base is untouched
    assert sm.vhd.check(leaf) == []
    with open_vdi(leaf) as f, sm.vhd.open_chain(leaf) as d:
        assert f.readall() == d.read(0, d.size)
    # pyvhdi as an independent reader, for 4 KiB-aligned writes (libvhdi does not merge a
    # partially present sector range of a block with the parent)
    with open_vdi(leaf, "r+b") as f:
        f.seek(8192)
        f.write(b"\x09" * 4096)
    with open_vdi(leaf) as f:
        assert pyvhdi_read([leaf, base])[8192:12288] == f.read(12288)[8192:]
    if shutil.which("qemu-img"):
        out = tmp_path / "out.raw"
        subprocess.run(["qemu-img", "convert", "-f", "vpc", "-O", "raw", base, str(out)],
                       check=True)
        with open_vdi(base) as f:
            assert f.readall() == out.read_bytes()


def test_read_only_and_modes(chain: tuple[str, str]) -> None:
    _, leaf = chain
    with open_vdi(leaf) as f:
        assert not f.writable()
        with pytest.raises(io.UnsupportedOperation):
            f.write(b"x")
        with pytest.raises(io.UnsupportedOperation):
            f.truncate(0)
        with io.BufferedReader(f) as buffered:
            assert buffered.read(3) == b"\x01" * 3
    assert f.closed
    with pytest.raises(ValueError):
        f.read(1)
    with pytest.raises(ValueError):
        open_vdi(leaf, "w")


def test_stand_in_opener(tmp_path: Path) -> None:
    from tests.nbd.rawdisk import RawDisk

    raw = tmp_path / "x.raw"
    raw.write_bytes(bytes(8192))
    with VdiFile(raw, writable=True, opener=RawDisk) as f:
        f.seek(4096)
        f.write(b"abc")
    assert raw.read_bytes()[4096:4099] == b"abc"
    assert os.path.getsize(raw) == 8192
