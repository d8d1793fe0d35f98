"""Interoperability with qemu (an independent VHD implementation), both ways, for dynamic and
fixed disks. qemu does not understand differencing disks, so chains are checked elsewhere."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

from sm import vhd
from tests.conftest import require_tool
from tests.vhd.oracle import RawModel, random_writes

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _qemu() -> None:
    require_tool("qemu-img", "qemu-io")


def run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return proc.stdout


def write_ours(path: Path, writes: list[tuple[int, bytes]]) -> None:
    with vhd.open_chain(str(path), writable=True) as disk:
        for offset, data in writes:
            disk.write(offset, data)
        disk.flush()


def read_ours(path: Path) -> bytes:
    with vhd.open_chain(str(path)) as disk:
        return disk.read(0, disk.size)


def qemu_raw(path: Path, tmp_path: Path) -> bytes:
    out = tmp_path / "qemu.raw"
    run("qemu-img", "convert", "-f", "vpc", "-O", "raw", str(path), str(out))
    return out.read_bytes()


# Sizes off the CHS grid and off the block grid: the virtual size must survive exactly.
@pytest.mark.parametrize("size", [8 * MiB, 7 * MiB + 3 * 512, 21 * MiB])
@pytest.mark.parametrize("disk_type", [vhd.DiskType.DYNAMIC, vhd.DiskType.FIXED])
def test_ours_read_by_qemu(tmp_path: Path, size: int, disk_type: vhd.DiskType) -> None:
    rng = random.Random(size + disk_type)
    path = tmp_path / "ours.vhd"
    vhd.create(str(path), size, disk_type=disk_type)
    model = RawModel(size)
    writes = random_writes(rng, size, 12, align=512, max_len=3 * MiB)
    writes.append((size - 512, b"\xee" * 512))  # the very last sector
    write_ours(path, writes)
    for offset, data in writes:
        model.write(offset, data)
    raw = tmp_path / "model.raw"
    raw.write_bytes(model.data)

    info = json.loads(run("qemu-img", "info", "-f", "vpc", "--output=json", str(path)))
    assert info["virtual-size"] == size
    run("qemu-img", "compare", "-f", "vpc", "-F", "raw", str(path), str(raw))
    assert qemu_raw(path, tmp_path) == bytes(model.data)
    assert vhd.check(str(path), bitmaps=True) == []


def test_ours_allocation_matches_qemu_map(tmp_path: Path) -> None:
    path = tmp_path / "ours.vhd"
    vhd.create(str(path), 16 * MiB)
    write_ours(path, [(2 * MiB + 4096, b"x" * 4096), (9 * MiB, b"y" * (3 * MiB))])
    extents = json.loads(run("qemu-img", "map", "-f", "vpc", "--output=json", str(path)))
    data_ranges: list[tuple[int, int]] = []
    for e in extents:  # qemu splits extents at block boundaries: merge adjacent ones
        if not e["data"]:
            continue
        if data_ranges and data_ranges[-1][1] == e["start"]:
            data_ranges[-1] = (data_ranges[-1][0], e["start"] + e["length"])
        else:
            data_ranges.append((e["start"], e["start"] + e["length"]))
    # qemu reports allocation per sector from the bitmaps: every written byte is inside data.
    for lo, hi in [(2 * MiB + 4096, 2 * MiB + 8192), (9 * MiB, 12 * MiB)]:
        assert any(a <= lo and hi <= b for a, b in data_ranges), (lo, hi, data_ranges)
    assert not any(b <= 2 * MiB for _a, b in data_ranges)  # the first block was never written


@pytest.mark.parametrize("subformat", ["dynamic", "fixed"])
def test_qemu_written_read_by_us(tmp_path: Path, subformat: str) -> None:
    size = 13 * MiB + 512
    path = tmp_path / "qemu.vhd"
    run(
        "qemu-img", "create", "-q", "-f", "vpc",
        "-o", f"subformat={subformat},force_size=on", str(path), str(size),
    )
    model = RawModel(size)
    patterns = [(0, 512, 0x11), (4096, 65536, 0xAB), (2 * MiB - 512, 1024, 0x5C),
                (5 * MiB + 1536, 3 * MiB, 0x77), (size - 512, 512, 0xF0)]
    cmds = []
    for offset, length, pattern in patterns:
        cmds += ["-c", f"write -P {pattern:#x} {offset} {length}"]
        model.write(offset, bytes([pattern]) * length)
    run("qemu-io", "-f", "vpc", *cmds, str(path))

    assert vhd.info(str(path)).virtual_size == size
    assert read_ours(path) == bytes(model.data)
    assert vhd.check(str(path), bitmaps=True) == []

    # And back: our writes into qemu's file, read by qemu.
    rng = random.Random(7)
    writes = random_writes(rng, size, 8, align=512, max_len=MiB)
    write_ours(path, writes)
    for offset, data in writes:
        model.write(offset, data)
    assert qemu_raw(path, tmp_path) == bytes(model.data)
    assert read_ours(path) == bytes(model.data)
