"""vdi_create / delete / resize / update / introduce / attach / generate_config / extensions."""

from __future__ import annotations

import os
import xmlrpc.client

from sm import vhd

from .conftest import FileSRClient, MiB

SOME_UUID = "01234567-89ab-cdef-0123-456789abcdef"


def test_create_vhd_record_and_file(sr: FileSRClient) -> None:
    ref = sr.call("vdi_create", [str(10 * MiB + 1), "label", "desc", "", "false", "", "",
                                 "false"], vdi_type="system")
    uuid = ref["uuid"]
    assert ref["location"] == uuid
    info = vhd.info(str(sr.location / f"{uuid}.vhd"))
    assert info.virtual_size == 10 * MiB + 512  # rounded up to a sector only
    record = sr.record(uuid)
    assert record["virtual_size"] == str(10 * MiB + 512)
    assert (record["name_label"], record["name_description"], record["type"]) == (
        "label", "desc", "system")
    assert record["vdi_type"] == "vhd" and not record["hidden"] and record["managed"]


def test_create_untyped_xml(sr: FileSRClient) -> None:
    xml = xmlrpc.client.dumps((sr.struct("vdi_create", [str(MiB), "x"]),),
                              methodname="vdi_create")
    xml = xml.replace("<string>", "").replace("</string>", "")
    from sm import dispatch
    from srtypes.file import FileSR

    (ref,), _ = xmlrpc.client.loads(dispatch.run(FileSR, xml, environ=sr.environ))
    assert sr.record(ref["uuid"])["virtual_size"] == str(MiB)


def test_create_too_large_is_79(sr: FileSRClient) -> None:
    assert sr.fault("vdi_create", [str(vhd.MAX_VIRTUAL_SIZE + 512)]) == 79
    assert sr.call("sm_vdi_list") == []


def test_create_raw(sr: FileSRClient) -> None:
    uuid = sr.create_vdi(16 * MiB, vdi_sm_config={"type": "raw"})
    path = sr.location / f"{uuid}.raw"
    assert path.stat().st_size == 16 * MiB
    assert path.stat().st_blocks * 512 < MiB  # sparse
    assert sr.record(uuid)["vdi_type"] == "raw"
    assert sr.call("vdi_attach", ["true"], vdi=uuid)["params"] == str(path)


def test_create_with_chosen_uuid_twice_is_43(sr: FileSRClient) -> None:
    sr.create_vdi(vdi_uuid=SOME_UUID)
    assert sr.fault("vdi_create", [str(MiB)], vdi_uuid=SOME_UUID) == 43


def test_delete_leaf(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    sr.call("vdi_delete", vdi=x)
    assert not (sr.location / f"{x}.vhd").exists()
    assert sr.call("sm_vdi_list") == []
    assert sr.fault("vdi_delete", vdi=x) == 144


def test_delete_attached_is_24(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    sr.call("vdi_attach", ["false"], vdi=x)
    assert sr.fault("vdi_delete", vdi=x) == 24
    sr.call("vdi_detach", vdi=x)
    sr.call("vdi_delete", vdi=x)


def test_delete_snapshot_then_base_is_garbage_after_leaf_delete(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    s = sr.snapshot(x)
    base = sr.record(x)["parent"]
    sr.call("vdi_delete", vdi=s)
    assert "gc" not in sr.record(base)["sm_config"]  # x still needs it
    sr.call("vdi_delete", vdi=x)
    assert sr.record(base)["sm_config"]["gc"] == "garbage"
    assert (sr.location / f"{base}.vhd").exists()  # collecting is another issue


def test_delete_of_a_base_hides_it(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    sr.write(x, 0, b"data")
    s = sr.snapshot(x, driver_params={"type": "single"})  # s is x's parent
    sr.call("vdi_delete", vdi=s)
    record = sr.record(s)
    assert record["hidden"] and not record["managed"]
    assert vhd.info(str(sr.location / f"{s}.vhd")).hidden
    assert sr.read(x, 0, 4) == b"data"
    sr.call("vdi_delete", vdi=x)
    assert sr.record(s)["sm_config"]["gc"] == "garbage"


def test_resize_grow_and_refuse_shrink(sr: FileSRClient) -> None:
    x = sr.create_vdi(4 * MiB)
    sr.write(x, 0, b"keep")
    ref = sr.call("vdi_resize", [str(20 * MiB)], vdi=x)
    assert ref == {"uuid": x, "location": x}
    assert sr.record(x)["virtual_size"] == str(20 * MiB)
    assert vhd.info(str(sr.location / f"{x}.vhd")).virtual_size == 20 * MiB
    assert sr.read(x, 0, 4) == b"keep"
    assert sr.fault("vdi_resize", [str(MiB)], vdi=x) == 79
    assert sr.fault("vdi_resize", [str(vhd.MAX_VIRTUAL_SIZE * 2)], vdi=x) == 79


def test_resize_raw(sr: FileSRClient) -> None:
    x = sr.create_vdi(MiB, vdi_sm_config={"type": "raw"})
    sr.call("vdi_resize", [str(3 * MiB)], vdi=x)
    assert (sr.location / f"{x}.raw").stat().st_size == 3 * MiB


def test_resize_of_a_base_is_110(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    s = sr.snapshot(x, driver_params={"type": "single"})
    assert sr.fault("vdi_resize", [str(64 * MiB)], vdi=s) == 110


def test_update_refreshes_sizes(sr: FileSRClient) -> None:
    x = sr.create_vdi(8 * MiB)
    sr.write(x, 0, os.urandom(MiB))
    assert int(sr.record(x)["physical_utilisation"]) < MiB
    sr.call("vdi_update", vdi=x)
    assert int(sr.record(x)["physical_utilisation"]) > MiB


def test_introduce(sr: FileSRClient) -> None:
    vhd.create(str(sr.location / f"{SOME_UUID}.vhd"), 2 * MiB)
    params = sr.struct("vdi_introduce", new_uuid=SOME_UUID, vdi_location=SOME_UUID,
                       vdi_sm_config={"origin": "admin"})
    (ref,), _ = xmlrpc.client.loads(sr.raw("vdi_introduce", params))
    assert ref == {"uuid": SOME_UUID, "location": SOME_UUID}
    record = sr.record(SOME_UUID)
    assert record["virtual_size"] == str(2 * MiB) and record["sm_config"]["origin"] == "admin"
    assert "<int>43</int>" in sr.raw("vdi_introduce", params)
    missing = "11111111-2222-3333-4444-555555555555"
    params = sr.struct("vdi_introduce", new_uuid=missing, vdi_location=missing)
    assert "<int>144</int>" in sr.raw("vdi_introduce", params)


def test_hostile_location_is_refused(sr: FileSRClient) -> None:
    params = sr.struct("vdi_introduce", new_uuid=SOME_UUID, vdi_location="../../etc")
    assert "<int>1</int>" in sr.raw("vdi_introduce", params)


def test_attach_rules(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    result = sr.call("vdi_attach", ["true"], vdi=x)
    assert result["params"] == str(sr.location / f"{x}.vhd")
    assert "xenstore_data" in result
    assert sr.fault("vdi_attach", ["true"], vdi=x) == 24
    sr.call("vdi_attach", ["false"], vdi=x)  # read-only alongside is fine
    sr.call("vdi_activate", ["true"], vdi=x)
    sr.call("vdi_deactivate", vdi=x)
    sr.call("vdi_detach", vdi=x)
    sr.call("vdi_detach", vdi=x)  # idempotent
    sr.call("vdi_deactivate", vdi=x)
    base = sr.record(x)["parent"] or None
    assert base is None
    s = sr.snapshot(x)
    base = sr.record(x)["parent"]
    assert sr.fault("vdi_attach", ["true"], vdi=base) == 46
    sr.call("vdi_attach", ["false"], vdi=base)
    sr.call("vdi_attach", ["false"], vdi=s)
    sr.call("vdi_detach", vdi=base)
    sr.call("vdi_detach", vdi=s)
    assert not list((sr.run_dir / "file" / sr.sr_uuid).glob("*.json"))


def test_generate_config(sr: FileSRClient) -> None:
    x = sr.create_vdi()
    config = sr.call("vdi_generate_config", vdi=x)
    (call,), method = xmlrpc.client.loads(config)
    assert method == "vdi_attach_from_config"
    assert call["vdi_uuid"] == x and call["sr_uuid"] == sr.sr_uuid
    assert call["device_config"]["location"] == str(sr.location)
    assert call["command"] == "vdi_attach_from_config"


def test_extension_commands(sr: FileSRClient) -> None:
    x = sr.create_vdi(8 * MiB, "one")
    listing = sr.call("sm_vdi_list")
    assert [r["uuid"] for r in listing] == [x]
    record = listing[0]
    assert set(record) == {
        "uuid", "location", "name_label", "name_description", "type", "vdi_type",
        "read_only", "hidden", "managed", "is_a_snapshot", "snapshot_of", "snapshot_time",
        "virtual_size", "physical_utilisation", "parent", "sm_config", "other_config"}
    assert record["virtual_size"] == str(8 * MiB)  # a string: XML-RPC ints are 32-bit
    assert sr.record(x) == record
    assert sr.fault("sm_vdi_get", vdi=SOME_UUID) == 144


def test_records_survive_another_host(sr: FileSRClient, tmp_path) -> None:
    x = sr.create_vdi(name="shared")
    s = sr.snapshot(x)
    other = FileSRClient(sr.location, tmp_path / "other-host-run", sr.sr_uuid)
    other.call("sr_attach")
    assert other.records() == sr.records()
    assert other.record(s)["snapshot_of"] == x


def test_attach_from_generated_config(sr: FileSRClient) -> None:
    from sm import dispatch
    from srtypes.file import FileSR

    x = sr.create_vdi()
    sr.write(x, 0, b"statefile")
    config = sr.call("vdi_generate_config", vdi=x)
    (result,), _ = xmlrpc.client.loads(dispatch.run(FileSR, config, environ=sr.environ))
    assert result["params"] == str(sr.location / f"{x}.vhd")
    with vhd.open_chain(result["params"]) as disk:
        assert disk.read(0, 9) == b"statefile"
    dispatch.run(FileSR, config, environ=sr.environ)  # idempotent
    sr.call("vdi_detach", vdi=x)


def test_requests_for_unknown_vdis_leave_no_lock_files(sr: FileSRClient) -> None:
    """docs/notes/filesr-bugs.md #2: made-up uuids must not grow `.sm/locks`."""
    locks = sr.location / ".sm" / "locks"
    before = sorted(os.listdir(locks))
    for command, args, code in [
        ("vdi_attach", ["true"], 144), ("vdi_attach_from_config", [], 144),
        ("vdi_activate", ["true"], 46), ("vdi_delete", [], 144), ("vdi_snapshot", [], 144),
        ("vdi_clone", [], 144), ("vdi_update", [], 144), ("vdi_resize", [str(MiB)], 144),
        ("sm_vdi_get", [], 144),
    ]:
        assert sr.fault(command, args, vdi=SOME_UUID) == code, command
    sr.call("vdi_detach", vdi=SOME_UUID)  # nothing attached: nothing to do
    sr.call("vdi_deactivate", vdi=SOME_UUID)
    assert sorted(os.listdir(locks)) == before
    # a VDI that exists still gets its lock, and works
    vdi = sr.create_vdi()
    sr.call("vdi_attach", ["true"], vdi=vdi)
    sr.call("vdi_activate", ["true"], vdi=vdi)
    sr.call("vdi_deactivate", vdi=vdi)
    sr.call("vdi_detach", vdi=vdi)
    assert f"vdi-{vdi}.lock" in os.listdir(locks)


def test_delete_hides_an_adopted_parent_keeping_its_image_uuid(sr: FileSRClient) -> None:
    """A VDI other VDIs depend on is hidden by vdi_delete: only its hidden flag changes. An
    adopted image's own uuid (here not its VDI's) stays, or its child would no longer find
    its parent."""
    import uuid as uuidlib

    parent, child = "11111111-2222-4333-8444-555555555555", "66666666-7777-4888-8999-aaaaaaaaaaaa"
    own = uuidlib.UUID("bbbbbbbb-cccc-4ddd-8eee-ffffffffffff")
    vhd.create(str(sr.location / f"{parent}.vhd"), MiB, uuid=own)
    vhd.snapshot(str(sr.location / f"{parent}.vhd"), str(sr.location / f"{child}.vhd"),
                 uuid=uuidlib.UUID(child))
    sr.call("sr_scan")
    assert sr.record(child)["parent"] == parent
    sr.call("vdi_delete", vdi=parent)
    info = vhd.info(str(sr.location / f"{parent}.vhd"))
    assert info.hidden and info.uuid == own
    assert sr.record(parent)["hidden"]
    assert vhd.check(str(sr.location / f"{child}.vhd")) == []
    assert sr.read(child, 0, 4) == bytes(4)  # the chain opens
