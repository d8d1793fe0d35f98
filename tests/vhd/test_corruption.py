"""Damaged files give a typed error or a `check` problem naming what is wrong, and nothing is
written to a file that failed its checks (bytes unchanged after a refused write, resize or
coalesce). Offsets are found with the independent parser in `oracle.py`."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sm import vhd
from tests.vhd.oracle import Layout, fix_checksum, flip, layout, poke

MiB = 1024 * 1024


@dataclass
class Pair:
    base: str
    leaf: str


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    """base (8 MiB, blocks 0 and 2 written, block 0 full) <- leaf (blocks 1 and 2 written)."""
    base, leaf = str(tmp_path / "base.vhd"), str(tmp_path / "leaf.vhd")
    vhd.create(base, 8 * MiB)
    with vhd.open_chain(base, writable=True) as disk:
        disk.write(0, b"B" * (2 * MiB))
        disk.write(4 * MiB + 4096, b"b" * 8192)
    vhd.snapshot(base, leaf)
    with vhd.open_chain(leaf, writable=True) as disk:
        disk.write(2 * MiB + 512, b"L" * 4096)
        disk.write(4 * MiB, b"l" * 512)
    return Pair(base, leaf)


Corruptor = Callable[[str, Layout], None]


def _bat_past_eof(path: str, lay: Layout) -> None:
    index = next(i for i, e in enumerate(lay.entries) if e != 0xFFFFFFFF)
    poke(path, lay.bat + 4 * index, struct.pack(">I", (lay.size + 10 * MiB) // 512))


def _bat_overlap(path: str, lay: Layout) -> None:
    used = [i for i, e in enumerate(lay.entries) if e != 0xFFFFFFFF]
    free = next(i for i, e in enumerate(lay.entries) if e == 0xFFFFFFFF)
    poke(path, lay.bat + 4 * free, struct.pack(">I", lay.entries[used[0]] + 1))


def _bat_into_metadata(path: str, lay: Layout) -> None:
    index = next(i for i, e in enumerate(lay.entries) if e != 0xFFFFFFFF)
    poke(path, lay.bat + 4 * index, struct.pack(">I", lay.header // 512))


def _locator_past_eof(path: str, lay: Layout) -> None:
    assert lay.locators, "a differencing disk has parent locators"
    # Locator 0's data offset (header + 576 + 16), then a valid header checksum over the lie.
    poke(path, lay.header + 576 + 16, struct.pack(">Q", lay.size + MiB))
    fix_checksum(path, lay.header, 1024, 36)


def _locator_flipped(path: str, lay: Layout) -> None:
    flip(path, lay.locators[0][3] + 3)  # the locator's text: checksummed by nothing
    flip(path, lay.header + 576 + 1)  # and its platform code, behind the header checksum


def _batmap_bits(path: str, lay: Layout) -> None:
    assert lay.batmap is not None, "our files carry a batmap"
    flip(path, lay.batmap + 512, 0x80)


def _batmap_header(path: str, lay: Layout) -> None:
    assert lay.batmap is not None
    flip(path, lay.batmap + 2)


def _truncate(n: int) -> Corruptor:
    def cut(path: str, lay: Layout) -> None:
        os.truncate(path, lay.size - n)

    return cut


# name -> (corruptor, words of which one must appear in the error / a problem)
CASES: dict[str, tuple[Corruptor, tuple[str, ...]]] = {
    "footer-copy-checksum": (lambda p, lay: flip(p, 70), ("footer",)),
    "footer-copy-cookie": (lambda p, lay: flip(p, 1), ("footer", "cookie")),
    "trailing-footer-checksum": (lambda p, lay: flip(p, lay.trailer + 70), ("footer",)),
    "trailing-footer-size": (lambda p, lay: flip(p, lay.trailer + 53, 0x10), ("footer",)),
    "header-checksum": (lambda p, lay: flip(p, lay.header + 600), ("header",)),
    "header-cookie": (lambda p, lay: flip(p, lay.header), ("header", "cookie")),
    "bat-past-eof": (_bat_past_eof, ("bat", "block")),
    "bat-overlap": (_bat_overlap, ("bat", "overlap", "block")),
    "bat-into-metadata": (_bat_into_metadata, ("bat", "overlap", "block")),
    "batmap-bits": (_batmap_bits, ("batmap",)),
    "batmap-header": (_batmap_header, ("batmap",)),
    "truncated-footer": (_truncate(512), ("footer", "truncat", "short", "eof", "end")),
    "truncated-block": (_truncate(512 + 4096), ("footer", "truncat", "short", "eof", "end")),
}
LEAF_ONLY = {
    "locator-past-eof": (_locator_past_eof, ("locator",)),
    "locator-flipped": (_locator_flipped, ("locator", "header", "parent")),
}


def problems_of(path: str) -> list[str]:
    try:
        return vhd.check(path, bitmaps=True, parents=False)
    except vhd.VhdError as err:
        return [str(err)]


def assert_named(problems: list[str], words: tuple[str, ...]) -> None:
    assert problems, "corruption not detected"
    text = " | ".join(problems).lower()
    assert any(w in text for w in words), f"none of {words} in: {problems}"


def snapshot_bytes(*paths: str) -> dict[str, bytes]:
    return {p: Path(p).read_bytes() for p in paths}


def refuse_write(path: str) -> None:
    with vhd.open_chain(path, writable=True) as disk:
        disk.write(6 * MiB, b"W" * 4096)
        disk.flush()


@pytest.mark.parametrize("target", ["base", "leaf"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_corruption_is_named_and_refused(pair: Pair, target: str, case: str) -> None:
    corrupt, words = CASES[case]
    _check_case(pair, target, corrupt, words)


@pytest.mark.parametrize("case", sorted(LEAF_ONLY))
def test_locator_corruption(pair: Pair, case: str) -> None:
    corrupt, words = LEAF_ONLY[case]
    _check_case(pair, "leaf", corrupt, words)


def _check_case(pair: Pair, target: str, corrupt: Corruptor, words: tuple[str, ...]) -> None:
    path = getattr(pair, target)
    assert vhd.check(path, bitmaps=True) == []
    corrupt(path, layout(path))
    assert_named(problems_of(path), words)

    before = snapshot_bytes(pair.base, pair.leaf)
    with pytest.raises(vhd.VhdError):
        refuse_write(path)
    assert snapshot_bytes(pair.base, pair.leaf) == before, "write touched a damaged file"
    with pytest.raises(vhd.VhdError):
        vhd.resize(path, 16 * MiB)
    assert snapshot_bytes(pair.base, pair.leaf) == before, "resize touched a damaged file"
    with pytest.raises(vhd.VhdError):
        vhd.coalesce(pair.leaf)
    assert snapshot_bytes(pair.base, pair.leaf) == before, "coalesce touched a damaged file"


@pytest.mark.parametrize(
    "content", [b"", b"conectix", os.urandom(4096), b"\0" * 1536], ids=["empty", "cookie", "noise", "zeros"]
)
def test_not_a_vhd(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.vhd"
    path.write_bytes(content)
    with pytest.raises(vhd.VhdFormatError) as exc:
        vhd.info(str(path))
    assert str(path) in str(exc.value)
    assert problems_of(str(path))


def test_format_error_names_field_and_offset(pair: Pair) -> None:
    lay = layout(pair.base)
    flip(pair.base, lay.header + 600)
    flip(pair.base, 70)
    flip(pair.base, lay.trailer + 70)
    with pytest.raises(vhd.VhdFormatError) as exc:
        vhd.info(pair.base)
    err = exc.value
    assert err.field and "footer" in err.field
    assert err.offset in (0, 64, lay.trailer, lay.trailer + 64)
    assert err.path == pair.base


def test_parent_uuid_mismatch(pair: Pair) -> None:
    import uuid

    vhd.set_uuid(pair.base, uuid.uuid4())
    assert_named(vhd.check(pair.leaf), ("uuid", "parent"))
    before = snapshot_bytes(pair.base, pair.leaf)
    with pytest.raises(vhd.VhdChainError):
        vhd.open_chain(pair.leaf).close()
    with pytest.raises(vhd.VhdError):
        vhd.coalesce(pair.leaf)
    assert snapshot_bytes(pair.base, pair.leaf) == before


def test_missing_parent(pair: Pair) -> None:
    os.unlink(pair.base)
    assert_named(vhd.check(pair.leaf), ("parent", "missing", "not found"))
    with pytest.raises(vhd.VhdChainError):
        vhd.open_chain(pair.leaf).close()


def test_bitmap_mismatch_with_batmap_found_only_with_bitmaps(pair: Pair) -> None:
    # Block 0 of the base is full (batmap bit set); clearing a bitmap bit contradicts that.
    lay = layout(pair.base)
    flip(pair.base, lay.block_offset(0) + 10, 0x01)
    assert_named(vhd.check(pair.base, bitmaps=True), ("bitmap", "batmap", "block 0"))


def test_write_into_block_mapped_onto_header_is_refused(tmp_path: Path) -> None:
    """Minimal: a BAT entry pointing at the dynamic header must not let a write clobber it."""
    path = str(tmp_path / "a.vhd")
    vhd.create(path, 4 * MiB)
    with vhd.open_chain(path, writable=True) as disk:
        disk.write(0, b"a" * 4096)  # allocates block 0
    lay = layout(path)
    poke(path, lay.bat + 4 * 0, struct.pack(">I", lay.header // 512 - 1))  # bitmap at 0, data at 512
    header_before = Path(path).read_bytes()[lay.header : lay.header + 1024]
    with pytest.raises(vhd.VhdError):
        with vhd.open_chain(path, writable=True) as disk:
            disk.write(0, b"X" * 4096)
    assert Path(path).read_bytes()[lay.header : lay.header + 1024] == header_before
