"""sr_scan: adoption of copied-in images, forgetting vanished ones, garbage marking."""

from __future__ import annotations

import os
import shutil

from sm import vhd

from .conftest import FileSRClient, MiB

P = "aaaaaaaa-0000-4000-8000-000000000001"
C = "aaaaaaaa-0000-4000-8000-000000000002"


def test_scan_adopts_a_copied_chain(sr: FileSRClient, tmp_path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    vhd.create(str(elsewhere / f"{P}.vhd"), 4 * MiB)
    with vhd.open_chain(str(elsewhere / f"{P}.vhd"), writable=True) as disk:
        disk.write(0, b"parent data")
    vhd.snapshot(str(elsewhere / f"{P}.vhd"), str(elsewhere / f"{C}.vhd"))
    vhd.set_hidden(str(elsewhere / f"{P}.vhd"))
    for name in os.listdir(elsewhere):
        shutil.copy(elsewhere / name, sr.location / name)
    (sr.location / "notes.txt").write_text("not a VDI")
    sr.call("sr_scan")
    records = sr.records()
    assert set(records) == {P, C}
    assert records[C]["parent"] == P and records[C]["sm_config"]["vhd-parent"] == P
    assert records[P]["hidden"] and not records[P]["managed"]
    assert "gc" not in records[P]["sm_config"]
    assert records[C]["virtual_size"] == str(4 * MiB)
    assert sr.read(C, 0, 11) == b"parent data"


def test_scan_forgets_vanished_and_marks_garbage(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    s = sr.snapshot(x)
    base = sr.record(x)["parent"]
    os.unlink(sr.location / f"{x}.vhd")
    os.unlink(sr.location / f"{s}.vhd")
    sr.call("sr_scan")
    records = sr.records()
    assert set(records) == {base}
    assert records[base]["sm_config"]["gc"] == "garbage"


def test_scan_adopts_raw_and_hidden_leaf_is_garbage(sr: FileSRClient) -> None:
    with open(sr.location / f"{P}.raw", "wb") as f:
        f.truncate(3 * MiB)
    vhd.create(str(sr.location / f"{C}.vhd"), MiB, hidden=True)
    sr.call("sr_scan")
    records = sr.records()
    assert records[P]["vdi_type"] == "raw" and records[P]["virtual_size"] == str(3 * MiB)
    assert records[C]["sm_config"]["gc"] == "garbage"


def test_scan_skips_unreadable_image(sr: FileSRClient) -> None:
    (sr.location / f"{P}.vhd").write_bytes(b"not a vhd" * 100)
    x = sr.create_vdi()
    sr.call("sr_scan")
    assert set(sr.records()) == {x}


def test_scan_refreshes_utilisation_without_opening(sr: FileSRClient) -> None:
    x = sr.create_vdi(8 * MiB)
    sr.write(x, 0, os.urandom(MiB))
    sr.call("sr_scan")
    assert int(sr.record(x)["physical_utilisation"]) == (sr.location / f"{x}.vhd").stat().st_size


def test_scan_of_unknown_sr_is_47(client: FileSRClient) -> None:
    assert client.fault("sr_scan") == 47
