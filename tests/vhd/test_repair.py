"""`repair`: a crash at any write of a block allocation, a footer update or a coalesce leaves a
file that `repair` brings back to a clean `check`; damage it cannot fix safely is refused with
nothing written. Crashes are simulated by a Backing that stops (optionally after half of the
write: a torn sector range) at its Nth pwrite."""

from __future__ import annotations

import shutil
import struct
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sm import vhd
from sm.vhd.image import Image
from sm.vhd.layout import next_block_start
from tests.vhd.oracle import flip, layout, poke

MiB = 1024 * 1024


class Crash(Exception):
    pass


class CrashingBacking:
    def __init__(self, inner: vhd.Backing, budget: list[int], torn: bool) -> None:
        self.inner, self.budget, self.torn = inner, budget, torn
        self.path = inner.path

    def pwrite(self, data: bytes | bytearray | memoryview, off: int) -> None:
        if self.budget[0] == 0:
            if self.torn and len(data) > 512:
                self.inner.pwrite(memoryview(data)[: len(data) // 2], off)
            raise Crash
        self.budget[0] -= 1
        self.inner.pwrite(data, off)

    def pread(self, n: int, off: int) -> bytes:
        return self.inner.pread(n, off)

    def capacity(self) -> int | None:
        return self.inner.capacity()

    def size(self) -> int:
        return self.inner.size()

    def truncate(self, n: int) -> None:
        self.inner.truncate(n)

    def fsync(self) -> None:
        self.inner.fsync()

    def close(self) -> None:
        self.inner.close()

    def raw_range(self, off: int, n: int) -> tuple[int, int] | None:
        return None  # every byte goes through pwrite, so every write can be the crash point


class CrashingStorage(vhd.FileStorage):
    """Writes through all backings it opens share one budget of pwrites."""

    def __init__(self, writes: int, torn: bool) -> None:
        self.budget, self.torn = [writes], torn

    def open(self, path: str, writable: bool) -> vhd.Backing:
        return CrashingBacking(super().open(path, writable), self.budget, self.torn)


Op = Callable[[str, vhd.Storage], None]


def _write(offset: int, data: bytes) -> Op:
    def op(path: str, storage: vhd.Storage) -> None:
        with vhd.open_chain(path, writable=True, storage=storage) as disk:
            disk.write(offset, data)
    return op


def _set_uuid(path: str, storage: vhd.Storage) -> None:
    vhd.set_uuid(path, uuid.UUID(int=7), storage=storage)


def _all_crash_points(src: str, target: str, op: Op, torn: bool) -> Iterator[int]:
    """Run ``op`` on a fresh copy of ``src`` crashing at write 0, 1, ...; yield each N."""
    for n in range(100):
        shutil.copyfile(src, target)
        try:
            op(target, CrashingStorage(n, torn))
        except Crash:
            yield n
            continue
        return
    raise AssertionError("op never completed")


def _image(tmp_path: Path, size: int, name: str = "a.vhd") -> str:
    p = str(tmp_path / name)
    vhd.create(p, size)
    with vhd.open_chain(p, writable=True) as disk:
        disk.write(0, b"o" * 4096)  # an existing block, so the image has data to keep
    return p


@pytest.mark.parametrize("torn", [False, True], ids=["whole", "torn"])
@pytest.mark.parametrize("case", ["full-block", "partial-block", "block-at-eod", "set-uuid"])
def test_crash_at_any_write_then_repair_is_clean(tmp_path: Path, case: str, torn: bool) -> None:
    size = 400 * MiB if case == "block-at-eod" else 8 * MiB
    src = str(tmp_path / "src.vhd")
    vhd.create(src, size)
    if case == "block-at-eod":  # the new block's bitmap lands on the trailing footer
        img = Image.open(src)
        assert next_block_start(img.eod, img.block_size) == img.eod
        img.close()
    else:
        with vhd.open_chain(src, writable=True) as disk:
            disk.write(0, b"o" * 4096)
    ops: dict[str, tuple[Op, int, bytes]] = {
        "full-block": (_write(2 * MiB, b"F" * (2 * MiB)), 2 * MiB, b"F" * (2 * MiB)),
        "partial-block": (_write(4 * MiB + 4096, b"P" * 8192), 4 * MiB + 4096, b"P" * 8192),
        "block-at-eod": (_write(0, b"E" * (2 * MiB)), 0, b"E" * (2 * MiB)),
        "set-uuid": (_set_uuid, 0, b""),
    }
    op, off, new = ops[case]
    with vhd.open_chain(src) as disk:
        old = disk.read(off, len(new))
    target = str(tmp_path / "t.vhd")
    points = list(_all_crash_points(src, target, op, torn))
    assert points, "the operation writes something"
    for n in points:
        shutil.copyfile(src, target)
        with pytest.raises(Crash):
            op(target, CrashingStorage(n, torn))
        vhd.repair(target)
        assert vhd.check(target, bitmaps=True) == [], f"crash at write {n}"
        with vhd.open_chain(target, writable=True) as disk:
            assert disk.read(0, 4096) in (b"o" * 4096, b"E" * 4096, bytes(4096))
            if new and not torn:
                assert disk.read(off, len(new)) in (old, new), f"crash at write {n}"
            disk.write(6 * MiB, b"after" * 100)  # and the repaired file takes new blocks
        assert vhd.check(target, bitmaps=True) == []


@pytest.mark.parametrize("torn", [False, True], ids=["whole", "torn"])
def test_crash_during_coalesce_then_repair_is_clean(tmp_path: Path, torn: bool) -> None:
    base, leaf = str(tmp_path / "base.vhd"), str(tmp_path / "leaf.vhd")
    vhd.create(base, 8 * MiB)
    with vhd.open_chain(base, writable=True) as disk:
        disk.write(0, b"b" * 4096)
    vhd.snapshot(base, leaf)
    with vhd.open_chain(leaf, writable=True) as disk:
        disk.write(2 * MiB, b"L" * (2 * MiB))  # a full block: one allocation + batmap
        disk.write(4 * MiB + 512, b"l" * 1024)
    saved = str(tmp_path / "base.orig")
    shutil.copyfile(base, saved)

    def op(path: str, storage: vhd.Storage) -> None:
        vhd.coalesce(leaf, storage=storage)

    n = 0
    while True:
        shutil.copyfile(saved, base)
        try:
            op(base, CrashingStorage(n, torn))
        except Crash:
            vhd.repair(base)
            assert vhd.check(base, bitmaps=True, parents=False) == [], f"crash at write {n}"
            n += 1
            continue
        break
    assert n > 3
    assert vhd.check(base, bitmaps=True) == []


def test_repair_bad_copy_and_batmap(tmp_path: Path) -> None:
    p = _image(tmp_path, 8 * MiB)
    with vhd.open_chain(p, writable=True) as disk:
        disk.write(2 * MiB, b"f" * (2 * MiB))
    lay = layout(p)
    flip(p, 70)  # footer copy checksum
    assert lay.batmap is not None
    flip(p, lay.batmap + 512, 0x40)  # block 1's batmap bit: map checksum now wrong
    with pytest.raises(vhd.VhdFormatError) as exc:
        vhd.open_chain(p, writable=True)
    assert exc.value.field == "footer copy" and exc.value.offset == 0
    done = vhd.repair(p)
    assert done == ["rewrote the footer copy at 0 from the trailing footer",
                    "recomputed the batmap from the block bitmaps"]
    assert vhd.check(p, bitmaps=True) == []
    raw = Path(p).read_bytes()
    assert raw[:512] == raw[-512:]


def test_repair_refuses_bad_bat_and_writes_nothing(tmp_path: Path) -> None:
    p = _image(tmp_path, 8 * MiB)
    lay = layout(p)
    flip(p, lay.trailer + 70)  # fixable on its own ...
    poke(p, lay.bat + 4, struct.pack(">I", lay.entries[0] + 1))  # ... but block 1 overlaps 0
    before = Path(p).read_bytes()
    with pytest.raises(vhd.VhdFormatError) as exc:
        vhd.repair(p)
    assert exc.value.field == "bat[1]"
    assert Path(p).read_bytes() == before
    assert any("bat[1]" in m and "overlaps block 0" in m for m in vhd.check(p))


def test_repair_refuses_bad_header(tmp_path: Path) -> None:
    p = _image(tmp_path, 4 * MiB)
    flip(p, 512 + 700)
    before = Path(p).read_bytes()
    with pytest.raises(vhd.VhdFormatError, match="header"):
        vhd.repair(p)
    assert Path(p).read_bytes() == before


def test_bat_entry_into_metadata_refused_on_every_open(tmp_path: Path) -> None:
    p = _image(tmp_path, 4 * MiB)
    lay = layout(p)
    poke(p, lay.bat, struct.pack(">I", lay.bat // 512))  # block 0 on top of the BAT
    for writable in (False, True):
        with pytest.raises(vhd.VhdFormatError) as exc:
            vhd.open_chain(p, writable=writable)
        assert exc.value.field == "bat[0]" and exc.value.offset == lay.bat
        assert "BAT" in str(exc.value)
    assert any("bat[0]" in m and "overlaps BAT" in m for m in vhd.check(p))
