"""SR-level commands of the File SR."""

from __future__ import annotations

import os
import xmlrpc.client

from sm import dispatch
from srtypes.file import FileSR

from .conftest import FileSRClient


def test_driver_info_capabilities() -> None:
    xml = xmlrpc.client.dumps(
        ({"command": "sr_get_driver_info", "args": []},), methodname="sr_get_driver_info"
    )
    (info,), _ = xmlrpc.client.loads(dispatch.run(FileSR, xml))
    caps = set(info["capabilities"])
    assert {"VDI_REVERT", "VDI_SNAPSHOT", "VDI_CLONE", "SR_PROBE", "THIN_PROVISIONING"} <= caps
    assert not caps & {"VDI_MIRROR", "VDI_CONFIG_CBT", "VDI_RESIZE_ONLINE", "ATOMIC_PAUSE"}
    assert info["configuration"] == [
        {"key": "location", "description": "local directory path (required)"}
    ]


def test_entry_point_registered() -> None:
    from sm import registry

    assert registry.get("file") is FileSR


def test_create_makes_directory_and_record(client: FileSRClient) -> None:
    assert client.call("sr_create", ["0"]) is None
    assert (client.location / ".sm" / "sr.json").is_file()
    assert client.call("sr_attach") is None
    assert client.call("sm_vdi_list") == []


def test_create_accepts_empty_directory(client: FileSRClient) -> None:
    client.location.mkdir()
    client.call("sr_create", ["0"])
    assert client.call("sr_content_type") == "vhd"


def test_create_twice_is_sr_exists(client: FileSRClient) -> None:
    client.call("sr_create", ["0"])
    assert client.fault("sr_create", ["0"]) == 42


def test_create_in_non_empty_directory_fails(client: FileSRClient) -> None:
    client.location.mkdir()
    (client.location / "somefile").write_text("x")
    assert client.fault("sr_create", ["0"]) == 61


def test_create_without_parent_directory_fails(client: FileSRClient) -> None:
    client.location = client.location / "a" / "b"
    assert client.fault("sr_create", ["0"]) == 61


def test_location_missing_is_94(client: FileSRClient) -> None:
    params = client.struct("sr_create", ["0"])
    params["device_config"] = {"SRmaster": "true"}
    response = client.raw("sr_create", params)
    assert "<int>94</int>" in response


def test_relative_location_is_invalid(client: FileSRClient) -> None:
    params = client.struct("sr_attach")
    params["device_config"] = {"location": "relative/dir"}
    assert "<int>1</int>" in client.raw("sr_attach", params)


def test_attach_unknown_directory_is_47(client: FileSRClient) -> None:
    assert client.fault("sr_attach") == 47
    client.location.mkdir()
    assert client.fault("sr_attach") == 47


def test_attach_wrong_sr_uuid_is_47(client: FileSRClient, tmp_path) -> None:
    client.call("sr_create", ["0"])
    other = FileSRClient(client.location, client.run_dir)
    assert other.fault("sr_attach") == 47


def test_detach_idempotent_and_refused_while_attached(sr: FileSRClient) -> None:
    vdi = sr.create_vdi()
    sr.call("vdi_attach", ["true"], vdi=vdi)
    assert sr.fault("sr_detach") == 16
    sr.call("vdi_detach", vdi=vdi)
    sr.call("sr_detach")
    sr.call("sr_detach")


def test_delete_refuses_while_vdis_exist(sr: FileSRClient) -> None:
    vdi = sr.create_vdi()
    assert sr.fault("sr_delete") == 39
    sr.call("vdi_delete", vdi=vdi)
    sr.call("sr_delete")
    assert not sr.location.exists()


def test_delete_removes_hidden_bases(sr: FileSRClient) -> None:
    vdi = sr.create_vdi()
    snap = sr.snapshot(vdi)
    sr.call("vdi_delete", vdi=snap)
    sr.call("vdi_delete", vdi=vdi)
    # the hidden base is garbage now; sr_delete may remove it
    sr.call("sr_delete")
    assert not sr.location.exists()


def test_delete_keeps_foreign_files_and_directory(sr: FileSRClient) -> None:
    (sr.location / "README").write_text("mine")
    sr.call("sr_delete")
    assert sorted(os.listdir(sr.location)) == ["README"]


def test_delete_refuses_unrecorded_images(sr: FileSRClient) -> None:
    from sm import vhd

    vhd.create(str(sr.location / "11111111-2222-3333-4444-555555555555.vhd"), 1 << 20)
    assert sr.fault("sr_delete") == 39


def test_delete_of_missing_directory_is_noop(client: FileSRClient) -> None:
    client.call("sr_delete")


def test_probe(client: FileSRClient) -> None:
    params = client.struct("sr_probe")
    del params["sr_uuid"]
    params["sr_sm_config"] = {}

    def probe() -> str:
        (value,), _ = xmlrpc.client.loads(client.raw("sr_probe", params))
        return str(value)

    assert "<SRlist/>" in probe()
    client.call("sr_create", ["0"])
    assert f"<UUID>{client.sr_uuid}</UUID>" in probe()


def test_update_records_sizes(sr: FileSRClient) -> None:
    sr.create_vdi(4 << 20)
    sr.call("sr_update")
    from sm.records import RecordStore

    sm_config = RecordStore(sr.location / ".sm").sr().sm_config
    assert int(sm_config["physical_size"]) > 0
    assert int(sm_config["virtual_allocation"]) == 4 << 20
    assert int(sm_config["images_utilisation"]) > 0


def test_unadvertised_command_is_38(sr: FileSRClient) -> None:
    vdi = sr.create_vdi()
    assert sr.fault("vdi_resize_online", [str(16 << 20)], vdi=vdi) == 38
    assert sr.fault("no_such_command") == 38
