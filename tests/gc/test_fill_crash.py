"""The down merge (`fill_from_parent`) killed after any number of writes to the child leaves a
valid child whose chain reads the same; running it again completes it, and the child then reads
the same over its grandparent."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import sm.vhd as vhd
from sm.gc.vhdops import fill_from_parent
from tests.vhd.test_coalesce_crash import Crash, CrashStorage

BLOCK = 64 * 1024


def _chain(tmp: Path) -> tuple[str, str, str, bytes]:
    grand, base, child = (str(tmp / f"{n}.vhd") for n in ("grand", "base", "child"))
    vhd.create(grand, 12 * BLOCK, block_size=BLOCK)
    with vhd.open_chain(grand, writable=True) as d:
        d.write(2 * BLOCK, b"g" * BLOCK)
    vhd.snapshot(grand, base)
    with vhd.open_chain(base, writable=True) as d:
        d.write(0, b"b" * BLOCK)                    # full, new in the child
        d.write(3 * BLOCK + 512, b"x" * 4096)       # partial, the child has this block
        d.write(5 * BLOCK, b"y" * 1024)             # partial, new in the child
        d.write(9 * BLOCK, b"z" * BLOCK)
    vhd.snapshot(base, child)
    with vhd.open_chain(child, writable=True) as d:
        d.write(3 * BLOCK, b"c" * 1024)
        d.write(7 * BLOCK, b"d" * BLOCK)
        expect = d.read(0, d.size)
    return grand, base, child, expect


def _read(path: str) -> bytes:
    with vhd.open_chain(path) as d:
        return d.read(0, d.size)


def test_fill_crash_at_every_write(tmp_path: Path) -> None:
    grand, base, child, expect = _chain(tmp_path)
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    shutil.copy(child, pristine)
    counter = CrashStorage(None)
    fill_from_parent(child, storage=counter)
    total = counter.writes
    assert total > 4
    for limit in range(total):
        shutil.copy(pristine / "child.vhd", child)
        with pytest.raises(Crash):
            fill_from_parent(child, storage=CrashStorage(limit))
        problems = vhd.check(child)
        if problems:  # between the batmap byte and its header's checksum (set_bits)
            assert all("batmap checksum" in p for p in problems), (limit, problems)
            assert vhd.repair(child) and vhd.check(child) == []
        assert _read(child) == expect, f"chain content changed (crash at {limit})"
    fill_from_parent(child)
    assert vhd.check(child, bitmaps=True) == []
    os.unlink(base)
    vhd.reparent(child, grand)
    assert _read(child) == expect
