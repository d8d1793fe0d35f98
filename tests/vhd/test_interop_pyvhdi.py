"""Chains checked against libvhdi (an independent reader of differencing disks) and a raw model.

libvhdi misreads partial patterns inside one bitmap byte, so it is the oracle only for
4 KiB-aligned writes; unaligned writes are checked against the raw model alone."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from sm import vhd
from tests.conftest import require_tool
from tests.vhd.oracle import RawModel, pyvhdi_read, random_writes

pyvhdi = pytest.importorskip("pyvhdi", reason="libvhdi-python is not installed")

KiB = 1024
MiB = 1024 * KiB


def build_chain(
    tmp_path: Path,
    depth: int,
    size: int,
    rng: random.Random,
    *,
    align: int,
    writes_per_level: int,
    block_size: int = vhd.DEFAULT_BLOCK_SIZE,
) -> tuple[list[str], RawModel]:
    """base + (depth - 1) snapshots, each written at random; returns paths leaf first."""
    model = RawModel(size)
    paths: list[str] = []
    for level in range(depth):
        path = str(tmp_path / f"img{level:02d}.vhd")
        if level == 0:
            vhd.create(path, size, block_size=block_size)
        else:
            vhd.snapshot(paths[0], path)
        paths.insert(0, path)
        writes = random_writes(rng, size, writes_per_level, align=align, max_len=block_size + align)
        with vhd.open_chain(path, writable=True) as disk:
            assert disk.depth == level + 1
            for offset, data in writes:
                disk.write(offset, data)
                model.write(offset, data)
            disk.flush()
    return paths, model


def read_ours(path: str) -> bytes:
    with vhd.open_chain(path) as disk:
        return disk.read(0, disk.size)


@pytest.mark.parametrize("depth", [1, 2, 3, 8, 30])
def test_aligned_chain_matches_libvhdi_and_model(tmp_path: Path, depth: int) -> None:
    rng = random.Random(depth)
    size = 6 * MiB + 64 * KiB  # a partial last block
    paths, model = build_chain(tmp_path, depth, size, rng, align=4 * KiB, writes_per_level=4)
    expected = bytes(model.data)
    assert read_ours(paths[0]) == expected
    assert pyvhdi_read(paths) == expected
    assert [Path(i.path).resolve() for i in vhd.chain(paths[0])] == [
        Path(p).resolve() for p in paths
    ]
    for path in paths:
        assert vhd.check(path, bitmaps=True) == []


def test_small_blocks_match_libvhdi(tmp_path: Path) -> None:
    rng = random.Random(64)
    paths, model = build_chain(
        tmp_path, 4, 2 * MiB, rng, align=4 * KiB, writes_per_level=10, block_size=64 * KiB
    )
    assert pyvhdi_read(paths) == bytes(model.data)
    assert read_ours(paths[0]) == bytes(model.data)


@pytest.mark.parametrize("depth", [1, 4, 30])
def test_unaligned_chain_matches_model(tmp_path: Path, depth: int) -> None:
    rng = random.Random(1000 + depth)
    size = 5 * MiB
    paths, model = build_chain(tmp_path, depth, size, rng, align=512, writes_per_level=5)
    # Single sectors, odd sectors inside one bitmap byte, and writes across block boundaries.
    extra = [(512, b"\x01" * 512), (3 * 512, b"\x02" * 512), (2 * MiB - 512, b"\x03" * 1024),
             (4 * MiB - 1536, b"\x04" * (MiB + 512)), (size - 512, b"\x05" * 512)]
    with vhd.open_chain(paths[0], writable=True) as disk:
        for offset, data in extra:
            data = data[: size - offset]
            disk.write(offset, data)
            model.write(offset, data)
        disk.flush()
    assert read_ours(paths[0]) == bytes(model.data)
    for path in paths:
        assert vhd.check(path, bitmaps=True) == []


def test_reads_at_odd_offsets(tmp_path: Path) -> None:
    rng = random.Random(5)
    paths, model = build_chain(tmp_path, 3, 4 * MiB, rng, align=512, writes_per_level=6)
    with vhd.open_chain(paths[0]) as disk:
        for _ in range(50):
            offset = rng.randrange(0, disk.size)
            length = rng.randrange(0, min(3 * MiB, disk.size - offset) + 1)
            assert disk.read(offset, length) == bytes(model.data[offset : offset + length])


def test_vhdiinfo_accepts_our_files(tmp_path: Path) -> None:
    require_tool("vhdiinfo")
    base = str(tmp_path / "base.vhd")
    leaf = str(tmp_path / "leaf.vhd")
    fixed = str(tmp_path / "fixed.vhd")
    vhd.create(base, 10 * MiB)
    vhd.snapshot(base, leaf)
    vhd.create(fixed, 3 * MiB, disk_type=vhd.DiskType.FIXED)
    leaf_info = vhd.info(leaf)
    for path, kind in [(base, "Dynamic"), (leaf, "Differential"), (fixed, "Fixed")]:
        proc = subprocess.run(["vhdiinfo", path], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        assert kind in proc.stdout, proc.stdout
        assert str(10 * MiB if path != fixed else 3 * MiB) in proc.stdout.replace(",", "")
    proc = subprocess.run(["vhdiinfo", leaf], capture_output=True, text=True, check=True)
    assert str(vhd.info(base).uuid) in proc.stdout.lower()
    assert str(leaf_info.uuid) in proc.stdout.lower()
    assert "base.vhd" in proc.stdout
