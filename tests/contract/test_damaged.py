"""Contract (VHD SR types: File, NFS, LVHD): a damaged image blocks nothing but itself.

A chain operation (snapshot, clone, resize, revert) on a VDI whose image is damaged but still
partly readable is refused with VDIUnavailable (46) naming the image and the problem, and
nothing on the storage changes; every healthy VDI keeps working (snapshot, create, delete,
scan, attach); a scan with an unreadable image nobody recorded succeeds and skips it.
Damage is written through the engine's Backing of each type (a file, or an LV).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

import pytest

from sm import vhd
from sm.vhd.backing import Backing, FileStorage
from sm.vhd.image import Image
from tests.contract.conftest import FILE, LVHD, NFS, use_srtype
from tests.contract.harness import SRHarness, SRTypeConfig
from tests.smapi import SMFault

MiB = 1 << 20


@pytest.fixture(params=[FILE, NFS, LVHD], ids=["file", "nfs", "lvhd"])
def srtype(request: pytest.FixtureRequest) -> SRTypeConfig:
    return use_srtype(request)


def _storage(sr: SRHarness, path: str) -> vhd.Storage:
    if sr.config.name == "lvhd":
        from tests.lvhd.contract_support import _storage_for

        storage: vhd.Storage = _storage_for(path)
        return storage
    return FileStorage()


def _path(sr: SRHarness, uuid: str) -> str:
    if sr.config.name == "lvhd":
        return f"/dev/VG_XenStorage-{sr.sr_uuid}/VHD-{uuid}"
    return str(sr.config.storage_root(sr.device_config) / f"{uuid}.vhd")


def _image(sr: SRHarness, uuid: str) -> Iterator[tuple[Image, Backing]]:
    path = _path(sr, uuid)
    storage = _storage(sr, path)
    img = Image.open(path, storage=storage)
    backing = storage.open(path, True)
    try:
        yield img, backing
    finally:
        backing.close()
        img.close()


def truncated_footer(sr: SRHarness, uuid: str) -> None:
    """The last sector cut short (a file) or torn (an LV: its capacity is fixed)."""
    for img, b in _image(sr, uuid):
        if b.capacity() is None:
            b.truncate(img.eod + 300)
        else:
            b.pwrite(bytes(100), img.eod)  # the footer's fields (the rest is zeros anyway)


def stale_footer_copy(sr: SRHarness, uuid: str) -> None:
    """A valid footer copy at 0 that disagrees with the trailing footer."""
    for img, b in _image(sr, uuid):
        b.pwrite(img.footer.replace(timestamp=img.footer.timestamp ^ 1).pack(), 0)


def batmap_size(sr: SRHarness, uuid: str) -> None:
    """The batmap header's size field 0xffffffff sectors (2 TiB)."""
    for img, b in _image(sr, uuid):
        assert img.batmap_hdr is not None
        b.pwrite(struct.pack(">I", 0xFFFFFFFF), img.batmap_hdr_off + 16)


DAMAGE: dict[str, Callable[[SRHarness, str], None]] = {
    "truncated-footer": truncated_footer,
    "stale-footer-copy": stale_footer_copy,
    "batmap-size": batmap_size,
}


def _refused(sr: SRHarness, command: str, args: list[str], vdi: str, image: str,
             **extra: object) -> None:
    err = sr.fault(command, args, vdi=vdi, **extra)
    assert err.code == 46, err
    assert image in str(err) and "damaged" in str(err), err


def test_damaged_image_is_refused_and_the_sr_keeps_working(sr: SRHarness) -> None:
    healthy = sr.vdi_create(4 * MiB, "healthy")
    sr.write(healthy, [(0, b"healthy"), (3 * MiB, b"tail")])
    kinds = sorted(DAMAGE)
    victims = [sr.vdi_create(4 * MiB, kind) for kind in kinds]
    sr.write(victims[0], [(0, b"v" * 8192)])
    snap = sr.snapshot(victims[0])  # a revert of victims[0] to a damaged snapshot
    for kind, victim in zip(kinds, victims, strict=True):
        sr.write(victim, [(2 * MiB, b"w" * 512)])
        DAMAGE[kind](sr, victim)
    DAMAGE[kinds[1]](sr, snap)

    before = sr.tree()
    for victim in victims:
        _refused(sr, "vdi_snapshot", [], victim, victim, driver_params={})
        _refused(sr, "vdi_clone", [], victim, victim, driver_params={})
        _refused(sr, "vdi_resize", [str(8 * MiB)], victim, victim)
    _refused(sr, "vdi_revert", [victims[0]], snap, snap)
    assert sr.tree() == before, "a refused operation on a damaged image changed the storage"
    for victim in victims:  # never written; attached read-only (and detached) as it is
        _refused(sr, "vdi_attach", ["true"], victim, victim)
        sr.call("vdi_attach", ["false"], vdi=victim)
        sr.call("vdi_detach", vdi=victim)
        try:  # sizes refreshed from a readable image, else a named error
            sr.call("vdi_update", vdi=victim)
        except SMFault as err:
            assert err.code in (46, 65) and victim in str(err), err

    # every healthy VDI keeps working, and so does the SR
    copy = sr.snapshot(healthy)
    sr.write(healthy, [(MiB, b"after")])
    other = sr.vdi_create(2 * MiB, "other")
    sr.delete(other)
    sr.call("sr_scan")
    sr.call("sr_detach")
    sr.call("sr_attach")
    sr.assert_content(healthy)
    sr.assert_content(copy)
    # repaired (footers, batmap), a damaged VDI is a VDI like any other again
    fixed = victims[kinds.index("stale-footer-copy")]
    path = _path(sr, fixed)
    assert vhd.repair(path, storage=_storage(sr, path))
    sr.assert_content(fixed)
    sr.delete(sr.snapshot(fixed))
    # the damaged VDIs can still be deleted
    sr.delete(snap)
    for victim in victims:
        sr.delete(victim)
    sr.call("sr_scan")
    sr.assert_all_content()


def test_scan_skips_an_unreadable_image(sr: SRHarness) -> None:
    """An image nobody recorded (an administrator's copy) whose header.table_offset is 2**63
    with a valid checksum: sr_scan succeeds and leaves it alone; the SR keeps working."""
    assert sr.config.adopt is not None and sr.config.remove is not None
    healthy = sr.vdi_create(2 * MiB, "healthy")
    sr.write(healthy, [(0, b"healthy")])
    stray = sr.config.adopt(sr.device_config, 2 * MiB, [(0, b"stray")])
    for img, b in _image(sr, stray):
        base = img.footer.data_offset
        raw = bytearray(b.pread(1024, base))
        raw[16:24] = struct.pack(">Q", 2**63)
        raw[36:40] = bytes(4)
        raw[36:40] = struct.pack(">I", ~sum(raw) & 0xFFFFFFFF)
        b.pwrite(bytes(raw), base)
    sr.call("sr_scan")
    assert stray not in sr.records(), "an unreadable image was adopted"
    sr.call("sr_detach")
    sr.call("sr_attach")
    sr.snapshot(healthy)
    sr.assert_all_content()
    sr.config.remove(sr.device_config, stray)
