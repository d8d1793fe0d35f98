"""vdi_snapshot / vdi_clone: the original's chain layout, records, limits."""

from __future__ import annotations

import os

from sm import vhd

from .conftest import FileSRClient, MiB


def _image(sr: FileSRClient, uuid: str) -> str:
    return str(sr.location / f"{uuid}.vhd")


def test_snapshot_layout_and_records(sr: FileSRClient) -> None:
    x = sr.create_vdi(8 * MiB, "vm disk")
    sr.write(x, 0, b"old" * 1000)
    s = sr.snapshot(x)
    records = sr.records()
    base = records[x]["parent"]
    assert base and base not in (x, s)
    assert records[s]["parent"] == base
    assert records[x]["sm_config"]["vhd-parent"] == base
    # the base: hidden, unmanaged, read-only; the files agree
    assert records[base]["hidden"] and not records[base]["managed"]
    assert records[base]["read_only"]
    assert vhd.info(_image(sr, base)).hidden
    assert not vhd.info(_image(sr, x)).hidden
    assert vhd.info(_image(sr, x)).parent_path == _image(sr, base)
    assert vhd.info(_image(sr, s)).parent_path == _image(sr, base)
    assert vhd.info(_image(sr, x)).allocated_blocks == 0
    # the snapshot's identity
    snap = records[s]
    assert snap["is_a_snapshot"] and snap["snapshot_of"] == x and snap["snapshot_time"]
    assert snap["name_label"] == "vm disk" and snap["virtual_size"] == str(8 * MiB)
    assert not records[x]["is_a_snapshot"]
    for uuid in (x, s, base):
        assert vhd.check(_image(sr, uuid)) == []


def test_snapshot_content_is_frozen(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    sr.write(x, 4096, b"before")
    s = sr.snapshot(x)
    sr.write(x, 4096, b"AFTER!")
    assert sr.read(s, 4096, 6) == b"before"
    assert sr.read(x, 4096, 6) == b"AFTER!"


def test_clone_is_writable_and_independent(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    sr.write(x, 0, b"shared")
    c = sr.clone(x)
    record = sr.record(c)
    assert not record["is_a_snapshot"] and record["snapshot_of"] == ""
    assert record["name_label"] == "disk"
    sr.write(c, 0, b"clone!")
    assert sr.read(x, 0, 6) == b"shared"
    assert sr.read(c, 0, 6) == b"clone!"


def test_single_snapshot_makes_one_leaf(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    sr.write(x, 0, b"single")
    before = set(os.listdir(sr.location))
    s = sr.snapshot(x, driver_params={"type": "single"})
    added = set(os.listdir(sr.location)) - before
    assert added == {f"{s}.vhd"}  # the renamed old content; X.vhd was recreated
    records = sr.records()
    assert records[x]["parent"] == s
    assert records[s]["read_only"] and not records[s]["hidden"]
    assert records[s]["is_a_snapshot"]
    assert not vhd.info(_image(sr, s)).hidden
    assert sr.read(s, 0, 6) == b"single"
    # a single snapshot is a base: attaching it writable is refused, read-only is fine
    assert sr.fault("vdi_attach", ["true"], vdi=s) == 46
    sr.call("vdi_attach", ["false"], vdi=s)
    sr.call("vdi_detach", vdi=s)


def test_clone_of_a_base_snapshot_is_a_direct_child(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    sr.write(x, 0, b"gold")
    s = sr.snapshot(x, driver_params={"type": "single"})
    c = sr.clone(s)
    assert sr.record(c)["parent"] == s
    assert sr.read(c, 0, 4) == b"gold"
    assert sr.record(s)["parent"] == ""  # s untouched


def test_snapshot_of_snapshot_and_clone_chains(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    sr.write(x, 0, b"v1")
    s1 = sr.snapshot(x)
    c = sr.clone(s1)
    sr.write(c, 0, b"c1")
    s2 = sr.snapshot(c)
    assert sr.read(s2, 0, 2) == b"c1"
    assert sr.read(s1, 0, 2) == b"v1"
    assert sr.read(x, 0, 2) == b"v1"


def test_chain_depth_limit_is_109(sr: FileSRClient) -> None:
    x = sr.create_vdi(1 * MiB)
    for _ in range(29):  # depth 1 -> 30
        sr.snapshot(x)
    before = sorted(os.listdir(sr.location))
    assert sr.fault("vdi_snapshot", vdi=x) == 109
    assert sr.fault("vdi_clone", vdi=x) == 109
    assert sorted(os.listdir(sr.location)) == before  # refused before changing anything


def test_raw_vdi_cannot_be_snapshotted(sr: FileSRClient) -> None:
    raw = sr.create_vdi(4 * MiB, vdi_sm_config={"type": "raw"})
    assert sr.fault("vdi_snapshot", vdi=raw) == 66
    assert sr.fault("vdi_clone", vdi=raw) == 66


def test_snapshot_of_unknown_vdi_is_144(sr: FileSRClient) -> None:
    assert sr.fault("vdi_snapshot", vdi="01234567-89ab-cdef-0123-456789abcdef") == 144


def test_snapshot_of_attached_vdi_works(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    sr.call("vdi_attach", ["true"], vdi=x)
    sr.call("vdi_activate", ["true"], vdi=x)
    s = sr.snapshot(x)
    assert sr.record(s)["snapshot_of"] == x
    sr.call("vdi_deactivate", vdi=x)
    sr.call("vdi_detach", vdi=x)


def test_chain_algebra() -> None:
    from sm.chain.records import children_map, depth, is_garbage, with_gc_mark, with_parent
    from sm.records import VdiRecord

    a = "aaaaaaaa-0000-4000-8000-000000000001"
    b = "aaaaaaaa-0000-4000-8000-000000000002"
    c = "aaaaaaaa-0000-4000-8000-000000000003"
    base = VdiRecord(uuid=a, location=a, hidden=True)
    leaf = with_parent(VdiRecord(uuid=b, location=b), a)
    other = VdiRecord(uuid=c, location=c, hidden=True)
    records = {r.uuid: r for r in (base, leaf, other)}
    kids = children_map(records.values())
    assert kids == {a: [b]}
    assert depth(records, b) == 2 and depth(records, a) == 1
    assert not is_garbage(base, kids) and is_garbage(other, kids)
    assert with_gc_mark(other, True).sm_config == {"gc": "garbage"}
    assert with_gc_mark(base, False) is base
    assert leaf.sm_config == {"vhd-parent": a}
