"""Create/open/read/write, chains, snapshot, resize, hidden, reparent, coalesce, check, crash
recovery, with qemu-img and pyvhdi as independent readers."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

import sm.vhd as vhd
from sm.vhd.image import Image
from sm.vhd.records import SECTOR, Footer

MiB = 2**20


def fill(d: vhd.Disk, model: bytearray, off: int, data: bytes) -> None:
    d.write(off, data)
    model[off:off + len(data)] = data


def test_create_dynamic_layout(tmp_path: Path) -> None:
    p = str(tmp_path / "a.vhd")
    info = vhd.create(p, 10 * MiB)
    assert info.disk_type == vhd.DiskType.DYNAMIC and info.max_blocks == 5
    raw = Path(p).read_bytes()
    assert raw[:512] == raw[-512:]
    f = Footer.unpack(raw[:512])
    assert f.creator_app == b"tap\0" and f.creator_version == 0x00010003
    assert raw[1536 + 512:1536 + 520] == b"tdbatmap"
    assert vhd.check(p, bitmaps=True) == []
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".tmp")]
    with vhd.open_chain(p) as d:
        assert d.read(0, 10 * MiB) == bytes(10 * MiB)


def test_unaligned_writes_and_qemu_compare(tmp_path: Path) -> None:
    p = str(tmp_path / "a.vhd")
    size = 9 * MiB + 3 * SECTOR
    vhd.create(p, size)
    model = bytearray(size)
    rnd = random.Random(7)
    with vhd.open_chain(p, writable=True) as d:
        for _ in range(80):
            off = rnd.randrange(size)
            n = min(rnd.randrange(1, 70000), size - off)
            fill(d, model, off, rnd.randbytes(n))
        fill(d, model, 2 * MiB, rnd.randbytes(2 * MiB))  # one full block
        assert d.read(0, size) == model
        assert d.read(12345, 777) == model[12345:12345 + 777]
    with vhd.open_chain(p) as d:
        assert d.read(0, size) == model
    with _img(p) as img:
        assert img.batmap is not None and img.batmap[0] & 0x40  # block 1 full
        for blk, e in enumerate(img.bat):
            if e != 0xFFFFFFFF:
                assert (img.data_offset(blk) or 0) % 4096 == 0
    assert vhd.check(p, bitmaps=True) == []
    if shutil.which("qemu-img"):
        raw = tmp_path / "raw"
        raw.write_bytes(model)
        subprocess.run(["qemu-img", "compare", "-q", "-f", "vpc", "-F", "raw", p, str(raw)],
                       check=True)


class _img:
    def __init__(self, p: str) -> None:
        self.img = Image.open(p)

    def __enter__(self) -> Image:
        return self.img

    def __exit__(self, *a: object) -> None:
        self.img.close()


def test_fixed_disk(tmp_path: Path) -> None:
    p = str(tmp_path / "f.vhd")
    vhd.create(p, 3 * MiB, disk_type=vhd.DiskType.FIXED)
    assert os.path.getsize(p) == 3 * MiB + 512
    with vhd.open_chain(p, writable=True) as d:
        d.write(100, b"hello")
        assert d.read(98, 9) == b"\0\0hello\0\0"
    vhd.resize(p, 4 * MiB)
    assert vhd.info(p).virtual_size == 4 * MiB
    with vhd.open_chain(p) as d:
        assert d.read(100, 5) == b"hello" and d.read(3 * MiB, 512) == bytes(512)
    if shutil.which("qemu-img"):
        out = subprocess.run(["qemu-img", "info", "-f", "vpc", p], capture_output=True,
                             text=True, check=True).stdout
        assert "4 MiB" in out


def _chain(tmp_path: Path, size: int = 8 * MiB) -> tuple[list[str], bytearray]:
    rnd = random.Random(3)
    model = bytearray(size)
    paths = [str(tmp_path / f"v{i}.vhd") for i in range(3)]
    vhd.create(paths[0], size)
    for i, p in enumerate(paths):
        if i:
            vhd.snapshot(paths[i - 1], p)
        with vhd.open_chain(p, writable=True) as d:
            for _ in range(12):
                off = rnd.randrange(size // 4096) * 4096
                fill(d, model, off, rnd.randbytes(min(rnd.randrange(1, 300) * 4096,
                                                      size - off)))
    return paths, model


def test_chain_read_and_pyvhdi(tmp_path: Path) -> None:
    paths, model = _chain(tmp_path)
    infos = vhd.chain(paths[2])
    assert [i.path for i in infos] == paths[::-1]
    assert infos[0].parent_uuid == infos[1].uuid and infos[0].parent_name == "v1.vhd"
    with vhd.open_chain(paths[2]) as d:
        assert d.depth == 3 and d.read(0, d.size) == model
        with pytest.raises(vhd.VhdError):
            d.write(0, b"x")
    for p in paths:
        assert vhd.check(p, bitmaps=True) == []
    pyvhdi = pytest.importorskip("pyvhdi")
    files = []
    for p in paths:
        f = pyvhdi.file()
        f.open(p)
        files.append(f)
    files[1].set_parent(files[0])
    files[2].set_parent(files[1])
    assert files[2].read_buffer_at_offset(len(model), 0) == bytes(model)


def test_readinto_and_extents_match_read(tmp_path: Path) -> None:
    paths, model = _chain(tmp_path)
    with vhd.open_chain(paths[2]) as d:
        buf = bytearray(b"\xff" * (3 * MiB))  # stale bytes must be overwritten, zeros too
        for off in (0, 512, 2 * MiB - 4096, d.size - len(buf)):
            d.readinto(off, buf)
            assert buf == model[off:off + len(buf)]
        with pytest.raises(vhd.VhdError):
            d.readinto(100, bytearray(512))


def test_locators_as_vhd_util_writes_them(tmp_path: Path) -> None:
    base, child = str(tmp_path / "b.vhd"), str(tmp_path / "c.vhd")
    vhd.create(base, 4 * MiB)
    vhd.snapshot(base, child)
    with _img(child) as img:
        assert img.header is not None
        locs = img.header.locators[:3]
        assert [loc.code for loc in locs] == [0x4D616358, 0x57326B75, 0x57327275]
        datas = [img.backing.pread(loc.data_length, loc.data_offset) for loc in locs]
        assert all(loc.data_offset % 512 == 0 and loc.data_space == 512 for loc in locs)
    assert datas[0] == b"file://./b.vhd"
    assert datas[1] == datas[2] == ".\\b.vhd".encode("utf-16-le")
    # the chain survives a move of the whole directory
    moved = tmp_path / "moved"
    moved.mkdir()
    for n in ("b.vhd", "c.vhd"):
        os.rename(tmp_path / n, moved / n)
    assert len(vhd.chain(str(moved / "c.vhd"))) == 2


def test_parent_uuid_mismatch_and_missing(tmp_path: Path) -> None:
    base, child = str(tmp_path / "b.vhd"), str(tmp_path / "c.vhd")
    vhd.create(base, 4 * MiB)
    vhd.snapshot(base, child)
    vhd.set_uuid(base, uuid.uuid4())
    with pytest.raises(vhd.VhdChainError, match="uuid"):
        vhd.open_chain(child)
    assert vhd.check(child) != []
    os.unlink(base)
    with pytest.raises(vhd.VhdChainError, match="not found"):
        vhd.chain(child)


def test_snapshot_coalesce_reparent(tmp_path: Path) -> None:
    paths, model = _chain(tmp_path)
    leaf = str(tmp_path / "leaf.vhd")
    vhd.snapshot(paths[2], leaf)
    before = Path(paths[2]).read_bytes()
    done: list[tuple[int, int]] = []
    vhd.coalesce(paths[2], progress=lambda a, b: done.append((a, b)))
    assert Path(paths[2]).read_bytes() == before
    assert done and done[-1][0] == done[-1][1]
    with vhd.open_chain(paths[1]) as d:
        assert d.read(0, d.size) == model
    v1_uuid = vhd.info(paths[1]).uuid
    with pytest.raises(vhd.VhdChainError):
        vhd.reparent(leaf, paths[1], expect_uuid=uuid.uuid4())
    vhd.reparent(leaf, paths[1], expect_uuid=v1_uuid)
    assert vhd.info(leaf).parent_uuid == v1_uuid
    with vhd.open_chain(leaf) as d:
        assert d.depth == 3 and d.read(0, d.size) == model
    assert vhd.check(leaf) == []


def test_coalesce_grows_parent(tmp_path: Path) -> None:
    base, child = str(tmp_path / "b.vhd"), str(tmp_path / "c.vhd")
    vhd.create(base, 4 * MiB, max_size=16 * MiB)
    vhd.snapshot(base, child)
    vhd.resize(child, 12 * MiB)
    with vhd.open_chain(child, writable=True) as d:
        d.write(10 * MiB, b"z" * 4096)
        d.write(0, b"a" * 4096)
    vhd.coalesce(child)
    assert vhd.info(base).virtual_size == 12 * MiB
    with vhd.open_chain(base) as d:
        assert d.read(10 * MiB, 4096) == b"z" * 4096 and d.read(0, 4096) == b"a" * 4096


def test_resize_with_and_without_room(tmp_path: Path) -> None:
    p = str(tmp_path / "a.vhd")
    vhd.create(p, 4 * MiB, max_size=8 * MiB)
    with vhd.open_chain(p, writable=True) as d:
        d.write(MiB, b"q" * 5000)
    vhd.resize(p, 8 * MiB)
    assert vhd.info(p).max_blocks == 4
    vhd.resize(p, 64 * MiB)  # BAT relocated to the end of data
    info = vhd.info(p)
    assert info.virtual_size == 64 * MiB and info.max_blocks == 32
    assert vhd.check(p, bitmaps=True) == []
    with vhd.open_chain(p, writable=True) as d:
        assert d.read(MiB, 5000) == b"q" * 5000
        d.write(60 * MiB, b"r" * 512)
        assert d.read(60 * MiB, 512) == b"r" * 512
    with pytest.raises(vhd.VhdUnsupportedError):
        vhd.resize(p, MiB)
    with pytest.raises(vhd.VhdUnsupportedError):
        vhd.create(str(tmp_path / "big.vhd"), vhd.MAX_VIRTUAL_SIZE + MiB)
    if shutil.which("qemu-img"):
        raw = bytearray(64 * MiB)
        raw[MiB:MiB + 5000] = b"q" * 5000
        raw[60 * MiB:60 * MiB + 512] = b"r" * 512
        (tmp_path / "raw").write_bytes(raw)
        subprocess.run(["qemu-img", "compare", "-q", "-f", "vpc", "-F", "raw", p,
                        str(tmp_path / "raw")], check=True)


def test_hidden_and_uuid(tmp_path: Path) -> None:
    p = str(tmp_path / "a.vhd")
    vhd.create(p, MiB)
    vhd.set_hidden(p)
    raw = Path(p).read_bytes()
    assert raw[85] == 1 and raw[-512 + 85] == 1 and vhd.info(p).hidden
    vhd.set_hidden(p, False)
    assert not vhd.info(p).hidden
    u = uuid.uuid4()
    vhd.set_uuid(p, u)
    assert vhd.info(p).uuid == u and Footer.unpack(Path(p).read_bytes()[:512]).uuid == u
    assert vhd.check(p) == []


def test_bad_trailing_footer_uses_backup_and_repair_fixes_it(tmp_path: Path) -> None:
    p = str(tmp_path / "a.vhd")
    vhd.create(p, 4 * MiB)
    with vhd.open_chain(p, writable=True) as d:
        d.write(0, b"x" * 4096)
    size = os.path.getsize(p)
    with open(p, "r+b") as fh:  # simulate a crash: block + footer written, BAT not updated
        fh.seek(size - 512)
        fh.write(b"\xee" * 512)
    assert vhd.check(p) != []
    with vhd.open_chain(p) as d:  # read-only: backup used, nothing written
        assert d.read(0, 4) == b"xxxx"
    assert Path(p).read_bytes()[-512:] == b"\xee" * 512
    with pytest.raises(vhd.VhdFormatError) as exc:  # writable: refused, nothing written
        vhd.open_chain(p, writable=True)
    assert exc.value.field == "footer" and exc.value.offset == size - 512
    assert Path(p).read_bytes()[-512:] == b"\xee" * 512
    assert vhd.repair(p) == [f"rewrote the trailing footer at {size - 512} from the copy at 0"]
    assert vhd.check(p, bitmaps=True) == []
    assert vhd.repair(p) == []
    with vhd.open_chain(p, writable=True) as d:
        assert d.read(0, 4) == b"xxxx"


def test_corrupt_header_is_typed_and_untouched(tmp_path: Path) -> None:
    p = str(tmp_path / "a.vhd")
    vhd.create(p, 4 * MiB)
    with open(p, "r+b") as fh:
        fh.seek(512 + 700)
        fh.write(b"\x01")
    before = Path(p).read_bytes()
    with pytest.raises(vhd.VhdFormatError) as exc:
        vhd.open_chain(p, writable=True)
    assert exc.value.field == "header.checksum" and exc.value.offset == 548
    assert Path(p).read_bytes() == before
    assert any("checksum" in m for m in vhd.check(p))


def test_truncated_file(tmp_path: Path) -> None:
    p = str(tmp_path / "a.vhd")
    vhd.create(p, 4 * MiB)
    with vhd.open_chain(p, writable=True) as d:
        d.write(0, b"x" * 2 * MiB)
    os.truncate(p, os.path.getsize(p) - 4096)
    with pytest.raises(vhd.VhdFormatError, match="truncated"):
        vhd.info(p)


def test_allocation_map_and_sizes(tmp_path: Path) -> None:
    base, child = str(tmp_path / "b.vhd"), str(tmp_path / "c.vhd")
    vhd.create(base, 8 * MiB)
    with vhd.open_chain(base, writable=True) as d:
        d.write(0, b"a" * 2 * MiB)
    vhd.snapshot(base, child)
    with vhd.open_chain(child, writable=True) as d:
        d.write(4 * MiB + 1024, b"b" * 1024)
    amap = vhd.allocation_map(child).to_dict()
    assert amap["images"][0]["blocks"] == [2] and amap["images"][0]["runs"] == [[8194, 2]]
    assert amap["images"][1]["full_blocks"] == [0]
    assert vhd.physical_size(child) == os.path.getsize(child)


def test_threads_write_disjoint_ranges(tmp_path: Path) -> None:
    p = str(tmp_path / "a.vhd")
    vhd.create(p, 16 * MiB)
    with vhd.open_chain(p, writable=True) as d:
        def work(i: int) -> None:
            for j in range(16):
                d.write(i * 4 * MiB + j * 256 * 1024 + 100, bytes([i + 1]) * 1000)
        ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for i in range(4):
            assert d.read(i * 4 * MiB + 100, 1000) == bytes([i + 1]) * 1000
    assert vhd.check(p, bitmaps=True) == []
