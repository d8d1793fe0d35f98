"""Round trips, checksums and golden bytes of the on-disk records."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from sm.vhd import DiskType, VhdFormatError
from sm.vhd import bitmap as bm
from sm.vhd.geometry import chs
from sm.vhd.records import (
    PLAT_MACX,
    BatmapHeader,
    DynamicHeader,
    Footer,
    ParentLocator,
    bat_pack,
    bat_unpack,
    batmap_checksum,
    ones_complement_sum,
)

UID = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")

# Hand-checked against the spec table: cookie, features 2, version 1.0, data offset 512,
# timestamp 0x12345678, "tap\0", 1.3, os 0, sizes 10 MiB, CHS 301/4/17 (spec algorithm:
# 20480 sectors / 17 spt = 1204 -> 4 heads -> 301 cylinders), type 3, checksum = ~0xF3D.
GOLDEN_FOOTER = bytes.fromhex(
    "636f6e656374697800000002000100000000000000000200123456787461700000010003000000000000"
    "000000a000000000000000a00000012d041100000003fffff0c200112233445566778899aabbccddeeff"
).ljust(512, b"\0")
# Same bytes qemu-img writes for a 10 MiB dynamic disk: table at 0x600, 5 entries, 2 MiB.
GOLDEN_HEADER_HEAD = bytes.fromhex(
    "6378737061727365ffffffffffffffff0000000000000600000100000000000500200000fffff472"
)


def golden_footer() -> Footer:
    return Footer(DiskType.DYNAMIC, 10 * 2**20, UID, 0x12345678, data_offset=512,
                  original_size=10 * 2**20, geometry=chs(10 * 2**20))


def test_footer_golden_and_round_trip() -> None:
    f = golden_footer()
    assert f.pack() == GOLDEN_FOOTER
    assert Footer.unpack(GOLDEN_FOOTER) == f
    assert Footer.unpack(f.replace(hidden=1).pack()).hidden == 1
    assert f.replace(hidden=1).pack()[85] == 1


def test_checksum_is_ones_complement_of_byte_sum() -> None:
    raw = bytearray(GOLDEN_FOOTER)
    raw[64:68] = b"\0\0\0\0"
    total = 0
    for byte in raw:
        total += byte
    assert total == 0xF3D
    assert ones_complement_sum(bytes(raw)) == 0xFFFFF0C2


def test_footer_bad_checksum_names_field_and_offset() -> None:
    raw = bytearray(GOLDEN_FOOTER)
    raw[100] = 1
    with pytest.raises(VhdFormatError) as exc:
        Footer.unpack(bytes(raw), base=4096, path="x.vhd")
    assert exc.value.field == "footer.checksum" and exc.value.offset == 4096 + 64
    assert "x.vhd" in str(exc.value)
    with pytest.raises(VhdFormatError, match="cookie"):
        Footer.unpack(b"x" * 512)


def test_header_golden_and_round_trip() -> None:
    h = DynamicHeader(1536, 5)
    raw = h.pack()
    assert len(raw) == 1024 and raw[:40] == GOLDEN_HEADER_HEAD
    assert DynamicHeader.unpack(raw) == h
    locs = (ParentLocator(PLAT_MACX, 512, 20, 0, 4096),) + (ParentLocator(),) * 7
    d = DynamicHeader(1536, 7, 2**21, UID, 77, "parent.vhd", locs)
    assert DynamicHeader.unpack(d.pack()) == d
    assert d.pack()[64:84] == "parent.vhd".encode("utf-16-be")
    bad = bytearray(d.pack())
    bad[600] ^= 1
    with pytest.raises(VhdFormatError) as exc:
        DynamicHeader.unpack(bytes(bad), base=512)
    assert exc.value.field == "header.checksum" and exc.value.offset == 548


def test_locator_and_batmap_round_trip() -> None:
    loc = ParentLocator(PLAT_MACX, 512, 33, 0, 3584)
    assert ParentLocator.unpack(loc.pack()) == loc and len(loc.pack()) == 24
    assert ParentLocator(PLAT_MACX, 1).space_bytes == 512
    data = bytes([0x80, 0, 3]).ljust(512, b"\0")
    bh = BatmapHeader.for_map(2560, data)
    assert bh.checksum == batmap_checksum(data) == ~(0x80 + 3) & 0xFFFFFFFF
    raw = bh.pack()
    assert raw[:8] == b"tdbatmap" and len(raw) == 512
    assert BatmapHeader.unpack(raw) == bh
    bh.verify(data)
    with pytest.raises(VhdFormatError, match="batmap checksum"):
        bh.verify(bytes(512))


def test_bat_codec() -> None:
    raw = bytes.fromhex("ffffffff0000000c00000fff")
    bat = bat_unpack(raw, 3)
    assert list(bat) == [0xFFFFFFFF, 12, 0xFFF]
    assert bat_pack(bat) == raw


def test_bitmap_helpers() -> None:
    disk = bytes([0b10000001, 0xFF]) + bytes(510)
    bits = bm.from_disk(disk, 4096)
    assert list(bm.runs(bits)) == [(0, 1), (7, 9)]
    assert bm.to_disk(bits, 512) == disk
    assert list(bm.runs(bm.mask(0, 4096))) == [(0, 4096)]
    assert list(bm.runs(0)) == []


def test_geometry_spec_examples() -> None:
    assert chs(10 * 2**20) == (301, 4, 17)
    assert chs(127 * 2**30)[1:] == (16, 255)


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")
def test_qemu_footer_decodes_and_repacks(tmp_path: Path) -> None:
    p = tmp_path / "q.vhd"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vpc", "-o",
                    "subformat=dynamic,force_size=on", str(p), "10M"], check=True)
    raw = p.read_bytes()
    f = Footer.unpack(raw[:512])
    assert f.disk_type == DiskType.DYNAMIC and f.current_size == 10 * 2**20
    assert f.pack() == raw[:512] == raw[-512:]
    h = DynamicHeader.unpack(raw[512:1536])
    assert h.pack() == raw[512:1536] and h.max_table_entries == 5
