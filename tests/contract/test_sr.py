"""Contract: SR-level commands, driver info, refusals."""

from __future__ import annotations

import xml.dom.minidom
from pathlib import Path
from typing import Any

import pytest

from sm.capabilities import COMMAND_CAPABILITY, Capability
from tests.contract.harness import SRHarness, SRTypeConfig, tree_state
from tests.smapi import InProcess, Process, request

MiB = 1 << 20
UNKNOWN = "0badc0de-0000-4000-8000-000000000000"


def _driver_info(config: SRTypeConfig, transport: InProcess | Process) -> dict[str, Any]:
    info = transport.call(request("sr_get_driver_info", device_config={}))
    assert isinstance(info, dict)
    return info


@pytest.mark.parametrize("transport", ["inproc", "process"])
def test_driver_info_shape(srtype: SRTypeConfig, tmp_path: Path, transport: str) -> None:
    env = {"SM_STATE_DIR": str(tmp_path / "state"), "SM_RUN_DIR": str(tmp_path / "run")}
    t = (
        Process(env=env, executable=srtype.executable)
        if transport == "process"
        else InProcess(env=env, driver=srtype.driver_class())
    )
    info = _driver_info(srtype, t)
    for key in ("name", "description", "vendor", "copyright", "driver_version",
                "required_api_version"):  # fmt: skip
        assert isinstance(info[key], str), key
    assert info["required_api_version"] == "1.0"
    assert info["name"]
    caps = info["capabilities"]
    assert isinstance(caps, list) and caps == sorted(set(caps)), caps
    for cap in caps:
        Capability.from_wire(cap)  # every one is a real wire string
    assert isinstance(info["configuration"], list)
    for item in info["configuration"]:
        assert set(item) == {"key", "description"} and all(
            isinstance(v, str) for v in item.values()
        )
    # Answered from the class: nothing was created anywhere.
    assert not (tmp_path / "state").exists() and not (tmp_path / "run").exists()


def test_driver_info_touches_no_storage(blank_sr: SRHarness) -> None:
    info = blank_sr.transport.call(
        request("sr_get_driver_info", device_config=blank_sr.device_config)
    )
    assert info["capabilities"]
    assert not blank_sr.storage_exists()


def test_sr_lifecycle(blank_sr: SRHarness) -> None:
    sr = blank_sr
    sr.create()
    sr.call("sr_attach")  # idempotent
    assert sr.call("sr_scan") in (None, "")
    content = sr.call("sr_content_type")
    assert isinstance(content, str) and content
    if "SR_UPDATE" in sr.capabilities:
        assert sr.call("sr_update") in (None, "")
    assert sr.records() == {}
    sr.call("sr_detach")
    sr.call("sr_detach")  # idempotent
    sr.call("sr_attach")
    assert sr.records() == {}
    sr.assert_consistent()


def test_sr_create_twice_refused(sr: SRHarness) -> None:
    vdi = sr.vdi_create(MiB)
    before = sr.tree()
    err = sr.fault("sr_create", ["0"])
    assert err.code == 42, err  # SRExists
    assert sr.tree() == before
    sr.assert_content(vdi)


def test_sr_delete_refused_while_vdis_exist(blank_sr: SRHarness) -> None:
    sr = blank_sr.create()
    vdi = sr.vdi_create(2 * MiB, "busy")
    sr.write(vdi, [(0, b"x" * 4096)])
    snap = sr.snapshot(vdi)
    before = sr.tree()
    assert sr.fault("sr_delete").code == 39
    assert sr.tree() == before
    sr.delete(vdi)
    # The snapshot survives its VDI and still keeps the SR busy.
    before = sr.tree()
    assert sr.fault("sr_delete").code == 39
    assert sr.tree() == before
    sr.assert_content(snap)
    sr.delete(snap)
    sr.assert_consistent()
    assert sr.call("sr_delete") in (None, "")
    assert sr.config.images(sr.device_config) == {}


@pytest.mark.parametrize("command", ["sr_create", "sr_attach", "sr_scan", "vdi_create"])
def test_missing_location_refused(blank_sr: SRHarness, command: str) -> None:
    """Without the type's mandatory device_config key the SR answers its Config*Missing error
    (File: ConfigLocationMissing 94) and creates nothing."""
    sr = blank_sr
    full = dict(sr.device_config)
    mandatory = next(iter(sr.device_config))
    sr.device_config = {k: v for k, v in sr.device_config.items() if k != mandatory}
    args = [str(MiB)] if command == "vdi_create" else []
    err = sr.fault(command, args)
    assert err.code in (90, 94, 101, 102, 115), err
    assert not sr.storage_exists(full)


def _plausible_args(command: str) -> tuple[list[str], dict[str, Any]]:
    args: dict[str, list[str]] = {
        "vdi_create": [str(MiB), "n", "d", "", "false", "", "", "false"],
        "vdi_attach": ["true"], "vdi_activate": ["true"],
        "vdi_resize": [str(4 * MiB)], "vdi_resize_online": [str(4 * MiB)],
        "vdi_revert": [""], "sr_create": ["0"],
    }  # fmt: skip
    extra = {"new_uuid": UNKNOWN} if command == "vdi_introduce" else {}
    return args.get(command, []), extra


def test_unadvertised_commands_refused(sr: SRHarness) -> None:
    """Every SMAPIv1 command whose capability the type does not advertise: 38, storage
    untouched. Unknown commands likewise."""
    vdi = sr.vdi_create(MiB)
    sr.write(vdi, [(0, b"keep" * 1024)])
    caps = sr.capabilities
    refused = [
        c for c, cap in COMMAND_CAPABILITY.items() if cap is not None and cap.value not in caps
    ]
    before = sr.tree()
    for command in [*refused, "vdi_frobnicate", "sr_destroy_everything"]:
        args, extra = _plausible_args(command)
        target = None if command.startswith("sr_") or command == "vdi_create" else vdi
        err = sr.fault(command, args, vdi=target, **extra)
        assert err.code == 38, (command, err)
        assert sr.tree() == before, f"{command} was refused but changed the storage"
    sr.assert_content(vdi)


def test_advertised_commands_answer(sr: SRHarness) -> None:
    """Every advertised capability's command is actually implemented (never 38)."""
    vdi = sr.vdi_create(MiB)
    caps = sr.capabilities
    simple = {"sr_update", "vdi_update", "vdi_generate_config"}
    for command in sorted(simple):
        cap = COMMAND_CAPABILITY[command]
        if cap is None or cap.value not in caps:
            continue
        target = None if command.startswith("sr_") else vdi
        value = sr.call(command, vdi=target)
        if command == "vdi_generate_config":
            assert isinstance(value, str) and value
    if "SR_PROBE" in caps:
        probe = sr.transport.call(request("sr_probe", device_config=sr.device_config))
        assert isinstance(probe, str)
        xml.dom.minidom.parseString(probe)  # an XML document in a string


def test_unknown_vdi_is_missing(sr: SRHarness) -> None:
    before = sr.tree()
    for command, args in (("vdi_delete", []), ("vdi_snapshot", []), ("vdi_clone", []),
                          ("vdi_attach", ["false"]), ("vdi_resize", [str(8 * MiB)]),
                          ("sm_vdi_get", [])):  # fmt: skip
        cap = COMMAND_CAPABILITY.get(command)
        if cap is not None and cap.value not in sr.capabilities:
            continue
        err = sr.fault(command, args, vdi=UNKNOWN)
        assert err.code == 144, (command, err)
    assert sr.tree() == before


def test_tree_state_sees_changes(tmp_path: Path) -> None:
    """The "nothing changed" check itself notices a changed byte, a new file and a new dir."""
    (tmp_path / "a").write_bytes(b"1")
    first = tree_state(tmp_path)
    (tmp_path / "a").write_bytes(b"2")
    assert tree_state(tmp_path) != first
    (tmp_path / "a").write_bytes(b"1")
    assert tree_state(tmp_path) == first
    (tmp_path / "d").mkdir()
    assert tree_state(tmp_path) != first
