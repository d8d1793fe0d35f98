"""A coalesce killed after any number of writes to the parent leaves the parent valid (check
clean, readable, writable again) and the child unchanged; coalescing again completes it."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import sm.vhd as vhd
from sm.vhd.backing import Backing, FileStorage

MiB = 2**20
BLOCK = 64 * 1024


class Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even cleanup writes."""


class _Counting:
    def __init__(self, inner: Backing, storage: CrashStorage) -> None:
        self._inner, self._st, self.path = inner, storage, inner.path

    def pwrite(self, data: bytes | bytearray | memoryview, off: int) -> None:
        self._st.tick()
        self._inner.pwrite(data, off)

    def raw_range(self, off: int, n: int) -> tuple[int, int] | None:
        return None  # every data copy goes through pwrite, so it counts as a write

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


class CrashStorage(FileStorage):
    """Counts writes to writable opens; raises Crash at write number ``limit``."""

    def __init__(self, limit: int | None) -> None:
        self.limit, self.writes = limit, 0

    def tick(self) -> None:
        if self.limit is not None and self.writes >= self.limit:
            raise Crash
        self.writes += 1

    def open(self, path: str, writable: bool) -> Backing:
        inner = super().open(path, writable)
        return _Counting(inner, self) if writable else inner  # type: ignore[return-value]

    @contextlib.contextmanager
    def create(self, path: str, size: int) -> Iterator[Backing]:
        with super().create(path, size) as b:
            yield b


def _pair(tmp: Path, parent_type: vhd.DiskType) -> tuple[str, str, bytes]:
    base, child = str(tmp / "base.vhd"), str(tmp / "child.vhd")
    vhd.create(base, 10 * BLOCK, block_size=BLOCK, disk_type=parent_type)
    with vhd.open_chain(base, writable=True) as d:
        d.write(BLOCK, b"p" * BLOCK)              # parent-only block
        d.write(3 * BLOCK, b"q" * 4096)           # shared, partial in the parent
    vhd.snapshot(base, child)
    vhd.resize(child, 12 * BLOCK)                 # the parent must grow
    with vhd.open_chain(child, writable=True) as d:
        d.write(0, b"a" * BLOCK)                  # new full block
        d.write(3 * BLOCK + 8192, b"b" * 4096)    # into a block the parent has
        d.write(5 * BLOCK + 512, b"c" * 1024)     # new partial block
        d.write(11 * BLOCK, b"d" * BLOCK)         # past the parent's old size
        d.write(7 * BLOCK, b"e" * BLOCK)
        expect = d.read(0, d.size)
    return base, child, expect


@pytest.mark.parametrize("parent_type", [vhd.DiskType.DYNAMIC, vhd.DiskType.FIXED])
def test_crash_at_every_write(tmp_path: Path, parent_type: vhd.DiskType) -> None:
    base, child, expect = _pair(tmp_path, parent_type)
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    for p in (base, child):
        shutil.copy(p, pristine)
    counter = CrashStorage(None)
    vhd.coalesce(child, storage=counter)
    total = counter.writes
    assert total > 3
    with vhd.open_chain(base) as d:
        assert d.read(0, d.size) == expect
    child_bytes = Path(child).read_bytes()
    for limit in range(total):
        for p in (base, child):
            shutil.copy(pristine / os.path.basename(p), p)
        with pytest.raises(Crash):
            vhd.coalesce(child, storage=CrashStorage(limit))
        assert Path(child).read_bytes() == child_bytes, f"child changed (crash at {limit})"
        problems = vhd.check(base)
        if problems:
            # only between the two footer writes of growing the parent: the copies differ
            # until `repair` (or the next coalesce's grow) writes them again
            assert all("disagrees" in p for p in problems), (limit, problems)
            assert vhd.repair(base) and vhd.check(base) == []
        with vhd.open_chain(child) as d:
            assert d.read(0, d.size) == expect, f"chain content changed (crash at {limit})"
        vhd.coalesce(child)
        assert vhd.check(base) == []
        with vhd.open_chain(base) as d:
            assert d.read(0, len(expect)) == expect
