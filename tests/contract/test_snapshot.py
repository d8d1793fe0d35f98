"""Contract: snapshot and clone (identity, content through the chain, independent reader)."""

from __future__ import annotations

import random

import pytest

from tests.contract.harness import SRHarness

MiB = 1 << 20
KiB4 = 4096


def rand(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def aligned_writes(seed: int, size: int, count: int) -> list[tuple[int, bytes]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        length = rng.randrange(1, 64) * KiB4
        offset = rng.randrange(0, (size - length) // KiB4) * KiB4
        out.append((offset, rng.randbytes(length)))
    return out


def _needs_snapshot(sr: SRHarness, command: str = "vdi_snapshot") -> bool:
    cap = "VDI_SNAPSHOT" if command == "vdi_snapshot" else "VDI_CLONE"
    return sr.require(cap, command, vdi=sr.vdi_create(MiB))


def test_snapshot_identity_and_content(sr: SRHarness) -> None:
    if not _needs_snapshot(sr):
        return
    vdi = sr.vdi_create(8 * MiB, "original", "its description")
    sr.write(vdi, [(0, rand(1, 3 * MiB)), (5 * MiB + 7, rand(2, 12345))])
    before = sr.record(vdi)
    attach_before = sr.attach_result(vdi)
    snap = sr.snapshot(vdi)
    assert snap != vdi and sr.locations[snap] != sr.locations[vdi]
    after = sr.record(vdi)
    for key in ("uuid", "location", "name_label", "name_description", "virtual_size", "type"):
        assert after[key] == before[key], key
    assert after["is_a_snapshot"] in (False, "false")
    assert sr.attach_result(vdi).get("params") == attach_before.get("params")
    srec = sr.record(snap)
    assert srec["is_a_snapshot"] in (True, "true")
    assert srec["snapshot_of"] == vdi
    assert srec["snapshot_time"]
    assert srec["virtual_size"] == before["virtual_size"]
    sr.assert_all_content()
    # the two diverge from here
    sr.write(vdi, [(0, b"new" * 1000), (8 * MiB - 3, b"end")])
    sr.assert_content(snap)
    sr.assert_content(vdi)
    assert set(sr.visible()) == {vdi, snap, *sr.model}


def test_snapshot_chain_checked_by_pyvhdi(sr: SRHarness) -> None:
    """Independent reader: libvhdi reads every chain the same as the model (4 KiB-aligned);
    types that are not VHD chains bring their own reader (`independent_read`, e.g. rbd export)."""
    if sr.config.chain_paths is None and sr.config.independent_read is None:
        pytest.skip(f"{sr.config.name} images are not VHD chains")
    if sr.config.chain_paths is not None:
        pyvhdi_read = pytest.importorskip("tests.vhd.oracle").pyvhdi_read
        pytest.importorskip("pyvhdi", reason="libvhdi-python is not installed")
    if not _needs_snapshot(sr):
        return
    size = 8 * MiB
    vdi = sr.vdi_create(size)
    sr.write(vdi, aligned_writes(1, size, 20))
    s1 = sr.snapshot(vdi)
    sr.write(vdi, aligned_writes(2, size, 20))
    s2 = sr.snapshot(vdi)
    sr.write(vdi, aligned_writes(3, size, 10))
    c1 = sr.clone(s1)
    sr.write(c1, aligned_writes(4, size, 10))
    for v in (vdi, s1, s2, c1):
        if sr.config.independent_read is not None:
            got = sr.config.independent_read(sr.device_config, sr.attach_result(v))
            assert got == bytes(sr.model[v]), v
            continue
        assert sr.config.chain_paths is not None
        paths = sr.config.chain_paths(sr.attach_result(v))
        assert len(paths) >= 2, (v, paths)
        assert pyvhdi_read(paths) == bytes(sr.model[v]), v
        sr.assert_content(v)


def test_snapshot_single(sr: SRHarness) -> None:
    """driver_params type=single: one new image only, the snapshot is the base itself."""
    if not _needs_snapshot(sr):
        return
    vdi = sr.vdi_create(4 * MiB)
    sr.write(vdi, [(0, rand(5, 1 * MiB))])
    n = len(sr.config.images(sr.device_config))
    snap = sr.snapshot(vdi, type="single")
    images = sr.config.images(sr.device_config)
    assert len(images) == n + 1, sorted(images)
    if sr.config.snapshot_is_base:
        assert images[vdi].parent == snap
    else:
        assert images[snap].parent == vdi
    sr.write(vdi, [(0, b"changed")])
    sr.assert_all_content()
    assert sr.record(snap)["snapshot_of"] == vdi


def test_clone(sr: SRHarness) -> None:
    if not _needs_snapshot(sr, "vdi_clone"):
        return
    vdi = sr.vdi_create(4 * MiB, "golden image")
    sr.write(vdi, [(0, rand(1, 2 * MiB))])
    clone = sr.clone(vdi)
    rec = sr.record(clone)
    assert rec["is_a_snapshot"] in (False, "false")
    assert rec["read_only"] in (False, "false")
    sr.write(clone, [(100, b"clone only")])
    sr.write(vdi, [(200, b"original only")])
    sr.assert_all_content()
    # clone of a clone, clone of a snapshot (how a VM is made from a snapshot)
    c2 = sr.clone(clone)
    snap = sr.snapshot(vdi)
    c3 = sr.clone(snap)
    sr.write(c3, [(0, b"c3")])
    for v in (c2, c3, snap):
        sr.assert_content(v)


def test_snapshot_of_snapshot(sr: SRHarness) -> None:
    if not _needs_snapshot(sr):
        return
    vdi = sr.vdi_create(2 * MiB)
    sr.write(vdi, [(0, b"A" * 5000)])
    s1 = sr.snapshot(vdi)
    s2 = sr.snapshot(s1)
    sr.write(vdi, [(0, b"B" * 5000)])
    sr.assert_all_content()
    assert sr.model[s2] == sr.model[s1]


def test_chain_too_long_refused(sr: SRHarness) -> None:
    """Chains deeper than 30 are refused with 109; the VDI stays intact and usable."""
    if not _needs_snapshot(sr):
        return
    vdi = sr.vdi_create(MiB)
    refused = None
    for i in range(40):
        sr.write(vdi, [(i * 512, bytes([i + 1]) * 512)])
        try:
            if sr.config.depth_grows_by == "clone":
                vdi = sr.clone(vdi)
                continue
            sr.snapshot(vdi, type="single")
        except Exception as err:
            refused = err
            break
    assert refused is not None, "40 nested snapshots were accepted"
    assert getattr(refused, "code", None) == 109, refused
    assert sr.config.chain_paths is None or len(sr.config.chain_paths(sr.attach_result(vdi))) <= 30
    sr.write(vdi, [(100_000, b"still writable")])
    sr.assert_content(vdi)
