"""`check` sees the damage an image shows: a BAT entry moved by a sector or cleared, a current
size of 0, bitmap bits that disagree with a parent-less image's data or with the batmap. (The
damage it cannot see is listed in docs/vhd.md, "What check verifies".) Offsets come from the
independent parser in `oracle.py`."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sm import vhd
from tests.vhd.oracle import fix_checksum, flip, layout, poke

KiB = 1024
BS = 64 * KiB


@pytest.fixture
def image(tmp_path: Path) -> str:
    """1 MiB dynamic, 64 KiB blocks: block 0 full, block 3 sectors 2..9, block 9 one sector
    (allocated in that order, so block 9 is last in the file)."""
    path = str(tmp_path / "a.vhd")
    vhd.create(path, 1024 * KiB, block_size=BS)
    with vhd.open_chain(path, writable=True) as disk:
        disk.write(0, b"A" * BS)
        disk.write(3 * BS + 1024, b"3" * 4096)
        disk.write(9 * BS, b"9" * 512)
    assert vhd.check(path, bitmaps=True) == []
    return path


def _said(problems: list[str], *words: str) -> None:
    assert problems, "damage not seen"
    text = " | ".join(problems)
    assert all(w in text for w in words), (words, problems)


@pytest.mark.parametrize("delta", [1, -1])
def test_bat_entry_moved_by_a_sector(image: str, delta: int) -> None:
    lay = layout(image)
    poke(image, lay.bat + 4 * 3, struct.pack(">I", lay.entries[3] + delta))
    _said(vhd.check(image), "bat[3]")
    _said(vhd.check(image, bitmaps=True), "bat[3]")


def test_last_bat_entry_moved(image: str) -> None:
    lay = layout(image)
    poke(image, lay.bat + 4 * 9, struct.pack(">I", lay.entries[9] + 1))
    _said(vhd.check(image), "footer")
    with pytest.raises(vhd.VhdFormatError):
        vhd.precheck(image)


def test_bat_entry_cleared(image: str) -> None:
    lay = layout(image)
    poke(image, lay.bat + 4 * 3, struct.pack(">I", 0xFFFFFFFF))
    _said(vhd.check(image, bitmaps=True), f"[{lay.block_offset(3)},", "no BAT entry points")


def test_current_size_zero(image: str) -> None:
    lay = layout(image)
    for start in (0, lay.trailer):
        poke(image, start + 48, bytes(8))
        fix_checksum(image, start, 512, 64)
    _said(vhd.check(image), "current size 0", "beyond the virtual size")
    with pytest.raises(vhd.VhdFormatError) as exc:
        vhd.precheck(image)
    assert exc.value.field in ("footer.current_size", "bat[0]")


def test_bitmap_bit_cleared_over_data(image: str) -> None:
    lay = layout(image)
    flip(image, lay.block_offset(3), 0x20)  # sector 2 of block 3: written, now "absent"
    assert vhd.check(image) == []  # the bitmaps are read only with bitmaps=True
    _said(vhd.check(image, bitmaps=True), "block 3 sector 2", "bitmap bit is clear")


def test_full_block_bitmap_bit_disagrees_with_batmap(image: str) -> None:
    lay = layout(image)
    flip(image, lay.block_offset(0) + 10, 0x01)
    _said(vhd.check(image), "batmap marks block 0 full")


def test_allocated_block_with_empty_bitmap(image: str) -> None:
    lay = layout(image)
    poke(image, lay.block_offset(9), bytes(lay.bitmap_bytes))
    _said(vhd.check(image, bitmaps=True), "bat[9]", "no sector is present")


def test_bitmap_bit_set_over_zeros_cannot_tell(image: str) -> None:
    """Documented "cannot tell": a set bit over zeros reads as a written zero sector."""
    lay = layout(image)
    flip(image, lay.block_offset(3) + 2, 0x80)  # sector 16: zeros, now "present"
    assert vhd.check(image, bitmaps=True) == []


@pytest.mark.parametrize("value", [0xFFFFFFFF, 0], ids=["huge", "zero"])
def test_batmap_size_damaged_is_seen_and_repaired(image: str, value: int) -> None:
    lay = layout(image)
    assert lay.batmap is not None
    with vhd.open_chain(image) as disk:
        before = disk.read(0, 1024 * KiB)
    poke(image, lay.batmap + 16, struct.pack(">I", value))
    _said(vhd.check(image), "batmap.batmap_size")
    with pytest.raises(vhd.VhdFormatError) as exc:
        vhd.precheck(image)
    assert exc.value.field == "batmap.batmap_size"
    assert vhd.repair(image) == ["recomputed the batmap from the block bitmaps"]
    assert vhd.check(image, bitmaps=True) == []
    with vhd.open_chain(image) as disk:
        assert disk.read(0, 1024 * KiB) == before
