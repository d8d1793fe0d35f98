"""vdi_revert: identity kept, content of the snapshot, idempotent, any snapshot."""

from __future__ import annotations

from sm import vhd

from .conftest import FileSRClient, MiB


def test_revert_restores_content_and_keeps_identity(sr: FileSRClient) -> None:
    x = sr.create_vdi(8 * MiB, "precious")
    sr.write(x, 0, b"good" * 1024)
    s = sr.snapshot(x)
    sr.write(x, 0, b"bad!" * 1024)
    sr.write(x, 6 * MiB, b"more damage")
    before = sr.record(x)
    sr.revert(s, x)
    after = sr.record(x)
    assert sr.read(x) == sr.read(s)
    assert sr.read(x, 0, 8) == b"goodgood"
    for key in ("uuid", "location", "name_label", "name_description", "other_config"):
        assert after[key] == before[key]
    assert sr.path(x).endswith(f"{x}.vhd")
    assert vhd.check(sr.path(x)) == []


def test_revert_to_older_snapshot(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    versions = {}
    for n in range(3):
        sr.write(x, 0, f"version {n}".encode())
        versions[sr.snapshot(x)] = f"version {n}".encode()
    sr.write(x, 0, b"current  ")
    for snap, content in [*versions.items()][::-1]:
        sr.revert(snap, x)
        assert sr.read(x, 0, len(content)) == content
    for snap, content in versions.items():  # the snapshots are unchanged
        assert sr.read(snap, 0, len(content)) == content


def test_revert_is_idempotent(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    sr.write(x, 0, b"keep")
    s = sr.snapshot(x)
    sr.write(x, 0, b"lose")
    sr.revert(s, x)
    first = (sr.read(x), sr.record(x)["parent"])
    sr.revert(s, x)
    assert (sr.read(x), sr.record(x)["parent"]) == first
    assert sr.read(s, 0, 4) == b"keep"


def test_revert_when_snapshot_has_own_data(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    sr.write(x, 0, b"base")
    s = sr.clone(x)  # the source has blocks of its own (a snapshot can no longer be written)
    sr.write(s, 0, b"snap")
    snap_before = sr.read(s)
    sr.revert(s, x)
    assert sr.read(x, 0, 4) == b"snap"
    assert sr.read(s) == snap_before
    records = sr.records()
    b2 = records[s]["parent"]
    assert records[x]["parent"] == b2
    assert records[b2]["hidden"] and not records[b2]["managed"]
    assert vhd.info(str(sr.location / f"{s}.vhd")).allocated_blocks == 0
    # writes to the reverted VDI do not reach the snapshot
    sr.write(x, 0, b"next")
    assert sr.read(s, 0, 4) == b"snap"


def test_revert_target_from_snapshot_of(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    sr.write(x, 0, b"orig")
    s = sr.snapshot(x)
    sr.write(x, 0, b"chgd")
    sr.revert(s, None)  # empty args[0]: the snapshot's snapshot_of
    assert sr.read(x, 0, 4) == b"orig"
    sr.write(x, 0, b"chgd")
    sr.revert(s, "01234567-89ab-cdef-0123-456789abcdef")  # unresolvable: snapshot_of too
    assert sr.read(x, 0, 4) == b"orig"


def test_revert_without_target_is_144(sr: FileSRClient) -> None:
    a = sr.create_vdi()
    b = sr.create_vdi()
    assert sr.fault("vdi_revert", [""], vdi=a) == 144  # a is no snapshot: no target
    sr.revert(a, b)  # an explicit target works for any VHD VDI


def test_revert_of_raw_is_66(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    raw = sr.create_vdi(vdi_sm_config={"type": "raw"})
    assert sr.fault("vdi_revert", [x], vdi=raw) == 66
    assert sr.fault("vdi_revert", [raw], vdi=x) == 66


def test_revert_marks_abandoned_base_garbage(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    sr.write(x, 0, b"one")
    s1 = sr.snapshot(x)
    sr.write(x, 0, b"two")
    s2 = sr.snapshot(x)
    base2 = sr.record(x)["parent"]
    sr.call("vdi_delete", vdi=s2)  # base2 now only has x
    sr.revert(s1, x)  # x leaves base2: nobody needs it any more
    record = sr.record(base2)
    assert record["hidden"] and record["sm_config"].get("gc") == "garbage"
    assert sr.read(x, 0, 3) == b"one"
    sr.call("sr_scan")  # garbage is tolerated
    assert sr.record(base2)["sm_config"].get("gc") == "garbage"


def test_revert_to_single_snapshot(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    sr.write(x, 0, b"gold")
    s = sr.snapshot(x, driver_params={"type": "single"})
    sr.write(x, 0, b"junk")
    sr.revert(s, x)
    assert sr.read(x, 0, 4) == b"gold"
    assert sr.record(x)["parent"] == s
