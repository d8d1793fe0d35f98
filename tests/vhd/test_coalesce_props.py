"""Property: after `coalesce(child)` the parent alone reads exactly what the chain read before,
the child still reads the same, and `check` is clean on both."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sm import vhd
from tests.vhd.oracle import RawModel

KiB = 1024
SECTOR = 512
BLOCK = 64 * KiB

# (in_child, offset in sectors, length in sectors, fill byte); offsets are clipped to the disk.
write_st = st.tuples(
    st.booleans(),
    st.integers(min_value=0, max_value=(3 * BLOCK * 8) // SECTOR),
    st.integers(min_value=1, max_value=(2 * BLOCK) // SECTOR + 3),
    st.integers(min_value=1, max_value=255),
)


def apply(path: str, writes: list[tuple[int, bytes]], model: RawModel) -> None:
    with vhd.open_chain(path, writable=True) as disk:
        for offset, data in writes:
            disk.write(offset, data)
            model.write(offset, data)
        disk.flush()


def clip(size: int, offset_sectors: int, length_sectors: int, align: int) -> tuple[int, int]:
    step = align // SECTOR
    offset = (offset_sectors // step) * step * SECTOR % size
    length = max(1, -(-length_sectors // step)) * align
    return offset, min(length, size - offset)


def read_all(path: str, size: int) -> bytes:
    with vhd.open_chain(path) as disk:
        assert disk.size >= size
        return disk.read(0, size)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    parent_blocks=st.integers(min_value=1, max_value=12),
    parent_tail=st.sampled_from([0, SECTOR, 4 * KiB, BLOCK - SECTOR]),
    grow_by=st.sampled_from([0, 0, SECTOR, BLOCK, 5 * BLOCK + 4 * KiB]),
    align=st.sampled_from([SECTOR, 4 * KiB]),
    writes=st.lists(write_st, max_size=14),
)
def test_coalesce_preserves_chain_content(
    parent_blocks: int,
    parent_tail: int,
    grow_by: int,
    align: int,
    writes: list[tuple[bool, int, int, int]],
) -> None:
    parent_size = parent_blocks * BLOCK + parent_tail
    child_size = parent_size + grow_by
    with tempfile.TemporaryDirectory(prefix="coalesce-") as tmp:
        parent = str(Path(tmp) / "parent.vhd")
        child = str(Path(tmp) / "child.vhd")
        vhd.create(parent, parent_size, block_size=BLOCK)
        model = RawModel(child_size)

        def batch(in_child: bool, size: int) -> list[tuple[int, bytes]]:
            out = []
            for n, (target, off, length, fill) in enumerate(writes):
                if target == in_child:
                    offset, count = clip(size, off, length, align)
                    out.append((offset, bytes([fill, (fill + n) & 0xFF]) * (count // 2)))
            return out

        apply(parent, batch(False, parent_size), model)
        vhd.snapshot(parent, child)
        if grow_by:
            vhd.resize(child, child_size)
        apply(child, batch(True, child_size), model)

        before = read_all(child, child_size)
        assert before == bytes(model.data)
        child_bytes = Path(child).read_bytes()

        vhd.coalesce(child)

        assert vhd.info(parent).virtual_size >= child_size
        assert read_all(parent, child_size) == before
        assert Path(child).read_bytes() == child_bytes, "coalesce changed the child"
        assert read_all(child, child_size) == before
        assert vhd.check(parent, bitmaps=True) == []
        assert vhd.check(child, bitmaps=True) == []


@settings(max_examples=10, deadline=None)
@given(writes=st.lists(write_st, min_size=1, max_size=8), align=st.sampled_from([SECTOR, 4 * KiB]))
def test_coalesce_into_middle_of_chain_keeps_leaf(
    writes: list[tuple[bool, int, int, int]], align: int
) -> None:
    """base <- mid <- leaf: coalescing mid into base leaves the leaf's view unchanged."""
    size = 6 * BLOCK
    with tempfile.TemporaryDirectory(prefix="coalesce-") as tmp:
        base, mid, leaf = (str(Path(tmp) / f"{n}.vhd") for n in ("base", "mid", "leaf"))
        vhd.create(base, size, block_size=BLOCK)
        model = RawModel(size)
        for _t, off, length, fill in writes:
            offset, count = clip(size, off, length, align)
            apply(base, [(offset, bytes([fill]) * count)], model)
        vhd.snapshot(base, mid)
        for _t, off, length, fill in writes:
            offset, count = clip(size, off + 7, length, align)
            apply(mid, [(offset, bytes([fill ^ 0x5A]) * count)], model)
        vhd.snapshot(mid, leaf)
        apply(leaf, [(0, b"L" * SECTOR)], model)
        before = read_all(leaf, size)
        vhd.coalesce(mid)
        # Relink the leaf past mid, as the garbage collector would, then drop mid.
        vhd.reparent(leaf, base)
        Path(mid).unlink()
        assert read_all(leaf, size) == before == bytes(model.data)
        assert vhd.check(leaf, bitmaps=True) == []
