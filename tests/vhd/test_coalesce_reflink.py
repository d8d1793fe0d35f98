"""Coalesce's block runs: full child blocks laid out one after another are reflinked into the
parent with one FICLONERANGE per run (xfs on a loop device), and footers go only after the last
new block of each BAT sector, so that a BAT write torn at any sector boundary still leaves a
valid parent. BAT_PER_SECTOR is made small here, so that a few 2 MiB blocks span several
"sectors" and every boundary case is met without writing hundreds of blocks."""

from __future__ import annotations

import importlib
import itertools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import sm.vhd as vhd
from sm.vhd.backing import Backing, FileStorage
from sm.vhd.image import Image
from sm.vhd.records import UNUSED
from tests.conftest import require_tool
from tests.gc.fsmount import loop_mount
from tests.vhd.test_coalesce_crash import Crash, CrashStorage, _Counting

coalesce_mod = importlib.import_module("sm.vhd.coalesce")
layout_mod = importlib.import_module("sm.vhd.layout")

MiB = 2**20
BS = 2 * MiB
GROUP = 8  # BAT entries per "sector" in these tests


@pytest.fixture
def small_sectors(monkeypatch: pytest.MonkeyPatch) -> None:
    # where footers go (sm.vhd.layout.footer_blocks); the BAT write itself keeps whole sectors
    monkeypatch.setattr(layout_mod, "BAT_PER_SECTOR", GROUP)


@pytest.fixture(params=["xfs", "plain"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """xfs with reflinks (the run path) or the test directory (block by block copies)."""
    if request.param == "plain":
        yield tmp_path
        return
    with loop_mount(tmp_path, "xfs", 512 * MiB) as mnt:
        yield mnt


def _pattern(blk: int) -> bytes:
    return bytes([blk + 1]) * 4096 + os.urandom(16) * (BS // 16 - 256)


def _pair(d: Path) -> tuple[str, str, bytes, bytes]:
    """Parent with blocks 12 and 20; child (in this physical order) with a partial block 6,
    full blocks 13-15 and 0-5, full 8-11, a full 12 over the parent's; a hole at 7."""
    base, child = str(d / "base.vhd"), str(d / "child.vhd")
    vhd.create(base, 24 * BS)
    with vhd.open_chain(base, writable=True) as disk:
        disk.write(12 * BS, b"p" * BS)
        disk.write(20 * BS + 4096, b"q" * 8192)
        before = disk.read(0, disk.size)
    vhd.snapshot(base, child)
    with vhd.open_chain(child, writable=True) as disk:
        disk.write(6 * BS + 512, b"c" * 1024)
        for blk in [13, 14, 15, *range(6), 8, 9, 10, 11, 12]:
            disk.write(blk * BS, _pattern(blk))
        disk.flush()
        after = disk.read(0, disk.size)
    return base, child, before, after


def _shared(path: str) -> int:
    out = subprocess.run(["filefrag", "-v", "-b1", path], capture_output=True, text=True,
                         check=True).stdout
    return sum(int(m.group(1)) for m in re.finditer(
        r"^\s*\d+:\s+\d+\.\.\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+):.*shared", out, re.M))


def _problems(path: str) -> list[str]:
    """check with bitmaps, less what a crash may leave and the image reads right with: batmap
    bits unset (`repair` sets them), blocks written but not yet published (leaked space)."""
    return [p for p in vhd.check(path, bitmaps=True, leaks=False)
            if not p.endswith("batmap bit is clear")]


def _read(path: str) -> bytes:
    with vhd.open_chain(path) as disk:
        return disk.read(0, disk.size)


def test_runs_cloned_in_one_call(tmp_path: Path, small_sectors: None,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    require_tool("filefrag", "qemu-img")
    with loop_mount(tmp_path, "xfs", 512 * MiB) as mnt:
        base, child, _before, after = _pair(mnt)
        calls: list[tuple[int, bool]] = []
        real = coalesce_mod.clone_backing_range

        def counted(src: Backing, so: int, dst: Backing, do: int, n: int) -> bool:
            ok = real(src, so, dst, do, n)
            calls.append((n, ok))
            return ok

        monkeypatch.setattr(coalesce_mod, "clone_backing_range", counted)
        vhd.coalesce(child)
        # [13, 14, 15, 0..5] (one span in the child's physical order; 5 is the last new block
        # of entries 0-7, so a footer follows it and the run stops there), then [8..11]
        assert [ok for _, ok in calls] == [True, True], calls
        assert calls[0][0] == 9 * BS + 8 * 4096 and calls[1][0] == 4 * BS + 3 * 4096
        assert vhd.check(base, bitmaps=True) == []
        assert _read(base) == after
        assert _shared(base) >= 13 * BS  # the child's full blocks: shared, not copied
        raw = mnt / "expect.raw"  # qemu reads no differencing disks: compare with raw bytes
        raw.write_bytes(after)
        img = subprocess.run(["qemu-img", "compare", "-f", "vpc", "-F", "raw", base, str(raw)],
                             capture_output=True, text=True)
        assert img.returncode == 0, img.stdout + img.stderr


class _TornBat(FileStorage):
    """Refuses the parent's BAT write (raising Crash), keeping what it would have written."""

    def __init__(self, base: str, table: tuple[int, int]) -> None:
        self.base, self.table = base, table
        self.bat_write: tuple[bytes, int] | None = None

    def open(self, path: str, writable: bool) -> Backing:
        inner = super().open(path, writable)
        if not writable or path != self.base:
            return inner
        outer = self

        class Guard:
            def __init__(self) -> None:
                self.path = inner.path

            def pwrite(self, data: bytes | bytearray | memoryview, off: int) -> None:
                lo, hi = outer.table
                if lo <= off < hi:
                    outer.bat_write = (bytes(data), off)
                    raise Crash
                inner.pwrite(data, off)

            def __getattr__(self, name: str) -> object:
                return getattr(inner, name)

        return Guard()  # type: ignore[return-value]


def _subsets(n: int) -> Iterator[tuple[int, ...]]:
    if n <= 6:
        for k in range(1, n + 1):
            yield from itertools.combinations(range(n), k)
    else:
        yield from ((i,) for i in range(n))
        yield from (tuple(range(i)) for i in range(2, n + 1))


def test_torn_bat_leaves_valid_parent(where: Path, small_sectors: None) -> None:
    base, child, before, after = _pair(where)
    img = Image.open(base)
    assert img.header is not None
    old_bat = list(img.bat)
    table = (img.header.table_offset, img.header.table_offset + 4 * len(img.bat))
    img.close()
    torn = _TornBat(base, table)
    with pytest.raises(Crash):
        vhd.coalesce(child, storage=torn)
    assert torn.bat_write is not None
    data, off = torn.bat_write
    assert vhd.check(base) == []
    got = _read(base)
    for blk in range(len(old_bat)):  # no new block published yet
        if old_bat[blk] == UNUSED:
            assert got[blk * BS:(blk + 1) * BS] == before[blk * BS:(blk + 1) * BS], blk
    pieces = [(data[i:i + 4 * GROUP], off + i) for i in range(0, len(data), 4 * GROUP)]
    pristine = where / "pristine.vhd"
    shutil.copy(base, pristine)
    for subset in _subsets(len(pieces)):
        shutil.copy(pristine, base)
        with open(base, "r+b") as f:
            for i in subset:
                f.seek(pieces[i][1])
                f.write(pieces[i][0])
        assert _problems(base) == [], subset
        img = Image.open(base)
        published = [i for i, e in enumerate(img.bat) if e != old_bat[i]]
        img.close()
        got = _read(base)
        for blk in range(len(old_bat)):
            # blocks the parent had are written in place (the child shadows them)
            want = after if blk in published or old_bat[blk] != UNUSED else before
            assert got[blk * BS:(blk + 1) * BS] == want[blk * BS:(blk + 1) * BS], (subset, blk)
    shutil.copy(pristine, base)
    vhd.coalesce(child)
    assert vhd.check(base, bitmaps=True) == [] and _read(base) == after


class _CloneCounting(_Counting):
    """A write counter that lets copies reach the fd (reflinks): each range handed out for a
    copy into the image counts as one write."""

    def raw_range(self, off: int, n: int) -> tuple[int, int] | None:
        self._st.tick()
        return self._inner.raw_range(off, n)


class _CloneCrashStorage(CrashStorage):
    def open(self, path: str, writable: bool) -> Backing:
        inner = FileStorage.open(self, path, writable)
        return _CloneCounting(inner, self) if writable else inner  # type: ignore[return-value]


def test_crash_at_every_write_with_runs(tmp_path: Path, small_sectors: None) -> None:
    with loop_mount(tmp_path, "xfs", 512 * MiB) as mnt:
        base, child, _before, after = _pair(mnt)
        pristine = mnt / "pristine.vhd"
        shutil.copy(base, pristine)
        counter = _CloneCrashStorage(None)
        vhd.coalesce(child, storage=counter)
        total = counter.writes
        assert _read(base) == after and total > 5
        for limit in range(total):
            shutil.copy(pristine, base)
            with pytest.raises(Crash):
                vhd.coalesce(child, storage=_CloneCrashStorage(limit))
            assert _problems(base) == [], limit
            assert _read(child) == after, limit  # the base alone is a mixture: shadowed
        vhd.coalesce(child)
        assert vhd.check(base, bitmaps=True) == [] and _read(base) == after
