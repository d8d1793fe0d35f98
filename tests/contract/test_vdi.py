"""Contract: VDI create, data, resize, delete, records."""

from __future__ import annotations

import random

import pytest

from tests.contract.harness import SRHarness

MiB = 1 << 20


def rand(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.mark.parametrize(
    "size",
    [MiB, 8 * MiB, 5 * MiB + 123, 3 * MiB + 512, 1],
    ids=["1M", "8M", "5M+123", "3M+512", "1B"],
)
def test_create_sizes(sr: SRHarness, size: int) -> None:
    vdi = sr.vdi_create(size, "sized")
    rec = sr.record(vdi)
    vsize = int(rec["virtual_size"])
    assert size <= vsize and vsize % 512 == 0, (size, vsize)
    assert rec["location"] == sr.locations[vdi]
    # the last byte the caller asked for is addressable and round-trips
    sr.write(vdi, [(size - 1, b"\xff"), (0, b"first")])
    sr.assert_content(vdi)


def test_create_record_fields(sr: SRHarness) -> None:
    name, desc = 'disk & <más> "quoted"', "a description\nwith a newline"
    vdi = sr.vdi_create(2 * MiB, name, desc)
    rec = sr.record(vdi)
    assert rec["uuid"] == vdi and rec["location"] == sr.locations[vdi]
    assert rec["name_label"] == name and rec["name_description"] == desc
    assert rec["type"] == "user"
    assert rec["read_only"] in (False, "false") and rec["hidden"] in (False, "false")
    assert rec["is_a_snapshot"] in (False, "false")
    for key in ("managed", "snapshot_of", "snapshot_time", "physical_utilisation", "parent",
                "sm_config", "other_config"):  # fmt: skip
        assert key in rec, key
    assert isinstance(rec["virtual_size"], str) and isinstance(rec["physical_utilisation"], str)
    assert int(rec["physical_utilisation"]) >= 0
    assert sr.records()[vdi] == rec
    assert sr.read(vdi) == bytes(int(rec["virtual_size"]))  # a new VDI reads zeros


def test_create_with_vdi_type(sr: SRHarness) -> None:
    vdi = sr.vdi_create(MiB, "sys", vdi_type="system")
    assert sr.record(vdi)["type"] == "system"


def test_write_read_unaligned(sr: SRHarness) -> None:
    vdi = sr.vdi_create(6 * MiB + 4096)
    rng = random.Random(7)
    writes = [
        (rng.randrange(0, 6 * MiB), rng.randbytes(rng.randrange(1, 300_000))) for _ in range(12)
    ]
    writes = [(o, d[: 6 * MiB + 4096 - o]) for o, d in writes]
    sr.write(vdi, writes)
    sr.assert_content(vdi)


def test_many_vdis_distinct(sr: SRHarness) -> None:
    vdis = [sr.vdi_create(MiB, f"v{i}") for i in range(5)]
    assert len(set(vdis)) == 5 and len({sr.locations[v] for v in vdis}) == 5
    for i, vdi in enumerate(vdis):
        sr.write(vdi, [(i * 1000, rand(i, 5000))])
    sr.assert_all_content()
    assert set(sr.visible()) == set(vdis)


def test_raw_vdi(sr: SRHarness) -> None:
    vdi = sr.vdi_create(3 * MiB, "raw", sm_config={"type": "raw"})
    sr.write(vdi, [(12345, b"raw data")])
    sr.assert_content(vdi)
    if sr.config.snapshots_raw:  # every VDI of the type is raw: they snapshot like any other
        snap, clone = sr.snapshot(vdi), sr.clone(vdi)
        sr.write(vdi, [(0, b"after")])
        sr.assert_all_content()
        assert {snap, clone} <= set(sr.visible())
        return
    before = sr.tree()
    for command in ("vdi_snapshot", "vdi_clone"):
        err = sr.fault(command, vdi=vdi)
        assert err.code not in (38, 1200), err  # a clear refusal, not "unknown" nor a crash
        assert sr.tree() == before
    sr.assert_content(vdi)


def test_resize_grow(sr: SRHarness) -> None:
    if not sr.require("VDI_RESIZE", "vdi_resize", [str(8 * MiB)], vdi=sr.vdi_create(MiB)):
        return
    vdi = sr.vdi_create(4 * MiB, "grow")
    sr.write(vdi, [(4 * MiB - 10, b"tail bytes"), (0, rand(1, 70_000))])
    snap = sr.snapshot(vdi)
    sr.resize(vdi, 12 * MiB + 1000)
    assert int(sr.record(vdi)["virtual_size"]) >= 12 * MiB + 1000
    sr.write(vdi, [(12 * MiB, b"beyond the old end")])
    sr.assert_content(vdi)
    sr.assert_content(snap)  # the snapshot keeps its size and content
    assert int(sr.record(snap)["virtual_size"]) == len(sr.model[snap])


def test_resize_shrink_refused(sr: SRHarness) -> None:
    if not sr.require("VDI_RESIZE", "vdi_resize", [str(8 * MiB)], vdi=sr.vdi_create(MiB)):
        return
    vdi = sr.vdi_create(8 * MiB)
    sr.write(vdi, [(8 * MiB - 5, b"12345")])
    before = sr.tree()
    err = sr.fault("vdi_resize", [str(4 * MiB)], vdi=vdi)
    assert err.code == 79, err
    assert sr.tree() == before
    sr.assert_content(vdi)
    # resizing to the current size is not a shrink
    size = len(sr.model[vdi])
    sr.resize(vdi, size)
    assert len(sr.model[vdi]) == size


def test_delete(sr: SRHarness) -> None:
    keep = sr.vdi_create(MiB, "keep")
    gone = sr.vdi_create(MiB, "gone")
    sr.write(keep, [(0, b"keep")])
    sr.delete(gone)
    assert gone not in sr.records()
    assert sr.fault("sm_vdi_get", vdi=gone).code == 144
    assert sr.fault("vdi_attach", ["false"], vdi=gone).code == 144
    sr.assert_content(keep)


def test_snapshots_survive_their_vdi(sr: SRHarness) -> None:
    vdi = sr.vdi_create(4 * MiB, "parent")
    sr.write(vdi, [(0, rand(1, 100_000))])
    s1 = sr.snapshot(vdi)
    sr.write(vdi, [(50_000, rand(2, 100_000))])
    s2 = sr.snapshot(vdi)
    c1 = sr.clone(s1)
    sr.write(vdi, [(1000, b"only in the vdi")])
    sr.delete(vdi)
    sr.assert_all_content()
    sr.assert_consistent()
    sr.call("sr_scan")
    assert set(sr.visible()) == {s1, s2, c1}
    sr.assert_all_content()
    # and they are still usable: delete the rest one by one
    for v in (s1, c1, s2):
        sr.delete(v)
        sr.assert_all_content()
        sr.assert_consistent()
    assert sr.visible() == {}


def test_records_survive_reattach(sr: SRHarness) -> None:
    """The SR is self-describing: detach, re-attach (as another host would) -> same records."""
    vdi = sr.vdi_create(2 * MiB, "named", "described")
    snap = sr.snapshot(vdi)
    before = sr.records()
    sr.call("sr_detach")
    other = sr.with_transport(process=False)
    other.transport.env = {
        "SM_STATE_DIR": str(sr.workdir / "state-other"),
        "SM_RUN_DIR": str(sr.workdir / "run-other"),
    }
    other.call("sr_attach")
    after = other.records()
    assert after == before
    assert after[snap]["snapshot_of"] == vdi
    sr.call("sr_attach")


def test_generated_config_attaches(sr: SRHarness) -> None:
    """vdi_generate_config returns a request document that the toolstack later hands back to
    the driver as is (`vdi_attach_from_config`, used for HA statefiles and redo logs): it must
    attach the VDI."""
    if not sr.require("VDI_GENERATE_CONFIG", "vdi_generate_config", vdi=sr.vdi_create(MiB)):
        return
    vdi = sr.vdi_create(2 * MiB)
    sr.write(vdi, [(0, b"statefile")])
    config = sr.call("vdi_generate_config", vdi=vdi)
    assert isinstance(config, str) and "<methodCall>" in config
    attached = sr.transport.send(config).value("vdi_attach_from_config")
    assert isinstance(attached, dict) and (attached.get("params") or attached.get("params_nbd"))
    handle = sr.config.open_data(attached, False)
    try:
        assert handle.read(0, 9) == b"statefile"
    finally:
        handle.close()


def test_introduce(sr: SRHarness) -> None:
    """vdi_introduce makes an image already on the SR (put there by an administrator) a VDI."""
    if sr.config.adopt is None:
        pytest.skip(f"{sr.config.name}: no way for a test to drop an image into the SR")
    data = rand(9, 70_000)
    uuid = sr.config.adopt(sr.device_config, 2 * MiB, [(4096, data)])
    if not sr.require("VDI_INTRODUCE", "vdi_introduce", new_uuid=uuid, vdi_location=uuid,
                      vdi_sm_config={}):  # fmt: skip
        sr.config.remove(sr.device_config, uuid) if sr.config.remove else None
        return
    result = sr.call("vdi_introduce", new_uuid=uuid, vdi_location=uuid, vdi_sm_config={})
    assert result["uuid"] == uuid
    sr.locations[uuid] = result["location"]
    sr.model[uuid] = bytearray(2 * MiB)
    sr.model[uuid][4096 : 4096 + len(data)] = data
    sr.assert_content(uuid)
    assert sr.record(uuid)["hidden"] in (False, "false")
    # introducing it again: it exists
    before = sr.tree()
    err = sr.fault("vdi_introduce", new_uuid=uuid, vdi_location=uuid, vdi_sm_config={})
    assert err.code == 43, err
    assert sr.tree() == before
