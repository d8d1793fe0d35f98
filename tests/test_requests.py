from __future__ import annotations

from typing import Any

import pytest

from sm.errors import BadRequest, InvalidArg, VDISize
from sm.requests import (
    MAX_SIZE,
    DriverInfoRequest,
    SRCreateRequest,
    SRProbeRequest,
    SRRequest,
    VDIAttachRequest,
    VDICreateRequest,
    VdiId,
    VDIIntroduceRequest,
    VDIRequest,
    VDIResizeRequest,
    VDIRevertRequest,
    VDISnapshotRequest,
    parse_location,
    parse_size,
    parse_uuid,
)

SR = "5a1e0000-0000-4000-8000-000000000001"
VDI = "7d100000-0000-4000-8000-000000000002"
OTHER = "0ab00000-0000-4000-8000-000000000003"


def struct(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "args": [],
        "device_config": {"SRmaster": "true", "location": "/srv/sr"},
        "host_ref": "OpaqueRef:host",
        "session_ref": "OpaqueRef:session",
        "sr_uuid": SR,
        "sr_ref": "OpaqueRef:sr",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def vdi(**fields: Any) -> dict[str, Any]:
    return struct(**{"vdi_uuid": VDI, "vdi_location": VDI, "vdi_ref": "OpaqueRef:vdi", **fields})


def test_common_fields_and_params_list() -> None:
    req = SRRequest.from_params("sr_scan", [struct(command="sr_scan", other_key="kept")])
    assert req.command == "sr_scan"
    assert req.sr_uuid == SR and req.sr_ref == "OpaqueRef:sr"
    assert dict(req.device_config) == {"SRmaster": "true", "location": "/srv/sr"}
    assert req.host_ref == "OpaqueRef:host" and req.session_ref == "OpaqueRef:session"
    assert dict(req.extra) == {"other_key": "kept"}
    with pytest.raises(TypeError):
        req.device_config["x"] = "y"  # type: ignore[index]
    with pytest.raises(AttributeError):
        req.sr_uuid = OTHER  # type: ignore[misc]


def test_uuid_canonical_lowercase() -> None:
    req = SRRequest.from_params("sr_attach", struct(sr_uuid=SR.upper()))
    assert req.sr_uuid == SR


def test_driver_info_needs_nothing() -> None:
    req = DriverInfoRequest.from_params("sr_get_driver_info", {"command": "sr_get_driver_info"})
    assert dict(req.device_config) == {}


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ([], BadRequest),
        ([struct(), struct()], BadRequest),
        (["a string"], BadRequest),
        ([struct(command="sr_delete")], BadRequest),  # command disagrees with the method
        ([struct(sr_uuid=None)], BadRequest),  # missing
        ([struct(device_config=None)], BadRequest),
        ([struct(device_config="path=/x")], BadRequest),
        ([struct(device_config={"a": 1})], BadRequest),
        ([struct(sr_uuid=123)], BadRequest),
        ([struct(args="x")], BadRequest),
        ([struct(session_ref=["x"])], BadRequest),
        ([struct(sr_uuid="not-a-uuid")], InvalidArg),
    ],
)
def test_shape_vs_content_errors(params: list[Any], error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        SRRequest.from_params("sr_scan", params)
    assert type(info.value) is error


@pytest.mark.parametrize(
    "value",
    [
        "../../etc",
        "/etc/passwd",
        "5a1e0000-0000-4000-8000-00000000000",
        "5a1e0000-0000-4000-8000-0000000000011",
        "{5a1e0000-0000-4000-8000-000000000001}",
        "urn:uuid:5a1e0000-0000-4000-8000-000000000001",
        "5a1e00000000400080000000000000001",
        "5a1e0000-0000-4000-8000-00000000000\x00",
        "5a1e0000-0000-4000-8000-00000000000g",
        " 5a1e0000-0000-4000-8000-000000000001",
        "",
    ],
)
def test_hostile_uuids(value: str) -> None:
    with pytest.raises(InvalidArg):
        parse_uuid(value, "sr_uuid")
    with pytest.raises(InvalidArg):
        VDIRequest.from_params("vdi_delete", vdi(vdi_uuid=value))


@pytest.mark.parametrize(
    "value",
    [
        "../../etc",
        "..",
        ".",
        ".hidden",
        "/etc/passwd",
        "a/b",
        "a\\b",
        "a\x00b",
        "",
        "x" * 256,
        "name with space",
        "semi;colon",
        "-rf",
        "\u00e9t\u00e9",
        "a\nb",
    ],
)
def test_hostile_locations(value: str) -> None:
    with pytest.raises(InvalidArg):
        parse_location(value, "vdi_location")
    with pytest.raises(InvalidArg):
        VDIRequest.from_params("vdi_delete", vdi(vdi_location=value))


@pytest.mark.parametrize("value", [VDI, "VHD-" + VDI, "disk.vhd", "a" * 255, "x:y+z@w"])
def test_good_locations(value: str) -> None:
    assert parse_location(value, "vdi_location") == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0), ("1024", 1024), (" 42 ", 42), (4096, 4096), (str(MAX_SIZE), MAX_SIZE)],
)
def test_sizes(value: object, expected: int) -> None:
    assert parse_size(value, "size") == expected


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("-1", InvalidArg),
        (-1, InvalidArg),
        ("1e9", InvalidArg),
        ("0x10", InvalidArg),
        ("1.5", InvalidArg),
        ("", InvalidArg),
        (str(MAX_SIZE + 1), InvalidArg),
        ("9" * 30, InvalidArg),
        ("9" * 5000, InvalidArg),
        (2**64, InvalidArg),
        ("\u0661\u0662", InvalidArg),  # non-ASCII digits
        (True, BadRequest),
        (1.5, BadRequest),
        (None, BadRequest),
        ([], BadRequest),
    ],
)
def test_bad_sizes(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_size(value, "size")


def test_vdi_create_full_and_minimal() -> None:
    args = ["1073741824", "disk", "a disk", "OpaqueRef:pool", "true", "20240101T00:00:00Z",
            "OpaqueRef:orig", "false"]  # fmt: skip
    req = VDICreateRequest.from_params(
        "vdi_create", struct(args=args, vdi_type="system", vdi_sm_config={"type": "raw"})
    )
    assert req.size == 2**30
    assert (req.name_label, req.name_description) == ("disk", "a disk")
    assert req.metadata_of_pool == "OpaqueRef:pool"
    assert req.is_a_snapshot is True and req.read_only is False
    assert req.snapshot_time == "20240101T00:00:00Z" and req.snapshot_of == "OpaqueRef:orig"
    assert req.vdi_type == "system" and dict(req.sm_config) == {"type": "raw"}
    assert req.vdi_uuid is None

    minimal = VDICreateRequest.from_params("vdi_create", struct(args=[4096], vdi_uuid=VDI.upper()))
    assert minimal.size == 4096 and minimal.name_label == "" and minimal.vdi_type == "user"
    assert minimal.is_a_snapshot is False and minimal.read_only is False
    assert minimal.vdi_uuid == VDI

    extra_args = VDICreateRequest.from_params("vdi_create", struct(args=[*args, "future"]))
    assert extra_args.size == 2**30


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ([], BadRequest),
        (["-5"], VDISize),  # a size no disk can have (issue 15)
        (["huge" * 3], InvalidArg),
        (["10", 5], BadRequest),
        (["10", "l", "d", "", "maybe"], InvalidArg),
        (["10", "l", "d", "", "false", "", "", "yes"], InvalidArg),
    ],
)
def test_vdi_create_bad_args(args: list[Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        VDICreateRequest.from_params("vdi_create", struct(args=args))


@pytest.mark.parametrize(
    ("arg", "expected"), [("true", True), ("false", False), ("TRUE", True), (True, True)]
)
def test_attach_writable(arg: object, expected: bool) -> None:
    req = VDIAttachRequest.from_params("vdi_attach", vdi(args=[arg]))
    assert req.writable is expected
    assert req.vdi == VdiId(VDI, VDI, "OpaqueRef:vdi")


@pytest.mark.parametrize(
    ("args", "error"), [([], BadRequest), (["1"], InvalidArg), ([1], BadRequest)]
)
def test_attach_bad_writable(args: list[Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        VDIAttachRequest.from_params("vdi_attach", vdi(args=args))


def test_vdi_location_optional() -> None:
    req = VDIRequest.from_params("vdi_delete", vdi(vdi_location=None))
    assert req.vdi_location is None and req.vdi_uuid == VDI
    with pytest.raises(BadRequest):
        VDIRequest.from_params("vdi_delete", vdi(vdi_uuid=None))


def test_snapshot_driver_params() -> None:
    req = VDISnapshotRequest.from_params("vdi_snapshot", vdi(driver_params={"type": "single"}))
    assert dict(req.driver_params) == {"type": "single"}
    assert dict(VDISnapshotRequest.from_params("vdi_clone", vdi()).driver_params) == {}
    with pytest.raises(BadRequest):
        VDISnapshotRequest.from_params("vdi_clone", vdi(driver_params={"type": 1}))


def test_resize() -> None:
    assert VDIResizeRequest.from_params("vdi_resize", vdi(args=["8192"])).new_size == 8192
    with pytest.raises(BadRequest):
        VDIResizeRequest.from_params("vdi_resize", vdi())
    for bad in ("-8192", -8192, str(2**63), 2**63):
        with pytest.raises(VDISize):
            VDIResizeRequest.from_params("vdi_resize", vdi(args=[bad]))
    with pytest.raises(InvalidArg):
        VDIResizeRequest.from_params("vdi_resize", vdi(args=["-8 KiB"]))


def test_sr_create_and_probe() -> None:
    assert SRCreateRequest.from_params("sr_create", struct()).size == 0
    assert SRCreateRequest.from_params("sr_create", struct(args=["100"])).size == 100
    probe = SRProbeRequest.from_params(
        "sr_probe", struct(sr_uuid=None, sr_sm_config={"type": "nfs"})
    )
    assert dict(probe.sr_sm_config) == {"type": "nfs"}
    assert not hasattr(probe, "sr_uuid")


def test_introduce() -> None:
    req = VDIIntroduceRequest.from_params(
        "vdi_introduce", struct(new_uuid=OTHER.upper(), vdi_location="old-disk", vdi_sm_config={})
    )
    assert (req.vdi_uuid, req.vdi_location) == (OTHER, "old-disk")
    with pytest.raises(BadRequest):
        VDIIntroduceRequest.from_params("vdi_introduce", struct(new_uuid=OTHER))
    with pytest.raises(InvalidArg):
        VDIIntroduceRequest.from_params(
            "vdi_introduce", struct(new_uuid=OTHER, vdi_location="../x")
        )


@pytest.mark.parametrize(
    ("args", "target", "target_uuid"),
    [
        ([OTHER.upper()], OTHER, OTHER),
        (["VHD-thing"], "VHD-thing", None),
        ([""], None, None),
        (["  "], None, None),
        ([], None, None),
    ],
)
def test_revert(args: list[str], target: str | None, target_uuid: str | None) -> None:
    req = VDIRevertRequest.from_params("vdi_revert", vdi(args=args, driver_params={"a": "b"}))
    assert req.snapshot == VdiId(VDI, VDI, "OpaqueRef:vdi")
    assert req.target == target
    assert req.target_uuid == target_uuid
    assert dict(req.driver_params) == {"a": "b"}


@pytest.mark.parametrize("target", ["../../etc", "/etc/passwd", "a\x00b"])
def test_revert_hostile_target(target: str) -> None:
    with pytest.raises(InvalidArg):
        VDIRevertRequest.from_params("vdi_revert", vdi(args=[target]))
