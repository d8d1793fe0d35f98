"""Names and numbers given to the API (issue 15, section 4): SR, VDI and VM names are checked
before anything is created (InvalidArg, 1), and a damaged srs.yaml entry is reported and
skipped instead of failing every command. The CLI (`sm`, a child process) and the API."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sm.api import StorageManager, checks
from sm.errors import InvalidArg

from .conftest import run_sm

MiB = 1024 * 1024
BAD_NAMES = ["", "a/b", "/", "x\x00y", "tab\there", "new\nline", "bell\x07", "del\x7f",
             "c1\x85", " lead", "trail ", "x" * 256, "\ud800", "sep\u2028"]


def test_bad_sr_names_are_refused_before_anything_is_written(env: dict[str, str],
                                                              tmp_path: Path) -> None:
    config = Path(env["SM_HOME"]) / "srs.yaml"
    location = tmp_path / "sr"
    for bad in [*BAD_NAMES, "5d1c0b3e-8a4f-4b8e-9c1d-2e3f4a5b6c7d"]:
        with StorageManager(environ=env) as sm, pytest.raises(InvalidArg) as err:
            sm.sr_create(bad, "file", {"location": str(location)})
        assert err.value.code == 1 and "SR name" in err.value.message
        assert not config.exists() and not location.exists()
    # From the command line, too; and every command goes on working.
    created = run_sm(env, "sr", "create", "", "-d", f"location={location}")
    assert created.returncode == 1
    assert created.stderr.decode().strip() == "Error: InvalidArg (1): SR name must not be empty"
    listed = run_sm(env, "sr", "list")
    assert listed.returncode == 0 and b"default" in listed.stdout


def test_a_damaged_registry_entry_is_reported_and_skipped(env: dict[str, str],
                                                          tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    with StorageManager(environ=env) as sm:
        sm.sr_create("good", "file", {"location": str(good)})
    config = Path(env["SM_HOME"]) / "srs.yaml"
    data = yaml.safe_load(config.read_text())
    sr_uuid = data["srs"][0]["uuid"]
    data["srs"] += [
        {"name": "", "type": "file", "uuid": sr_uuid},  # what sr.create("") used to write
        {"name": "no-uuid", "type": "file", "uuid": "nope"},
        {"name": "a/b", "type": "file", "uuid": sr_uuid},
        "not a mapping",
        {"name": "good", "type": "file", "uuid": "5d1c0b3e-8a4f-4b8e-9c1d-2e3f4a5b6c7d"},
    ]
    data["settings"] = ["not", "a", "mapping"]
    config.write_text(yaml.safe_dump(data))
    listed = run_sm(env, "sr", "list")
    assert listed.returncode == 0, listed.stderr
    assert b"good" in listed.stdout and b"no-uuid" not in listed.stdout
    warnings = listed.stderr.decode()
    for entry in (2, 3, 4, 5, 6):
        assert f"SR entry {entry}" in warnings, warnings
    assert "'settings' must be a mapping" in warnings
    vdi = run_sm(env, "vdi", "create", "--size", "1M", "--sr", "good", "disk")
    assert vdi.returncode == 0, vdi.stderr
    with StorageManager(environ=env) as sm:
        assert len(sm.registry.problems) == 6
        assert [s.name for s in sm.srs()] == ["good", "default"]
        # A new SR is still added; the damaged entries stay in the file for a person to fix.
        (tmp_path / "new").mkdir()
        sm.sr_create("new", "file", {"location": str(tmp_path / "new")})
    assert len(yaml.safe_load(config.read_text())["srs"]) == 7


def test_a_file_that_is_not_yaml_is_reported_and_never_rewritten(env: dict[str, str],
                                                                 tmp_path: Path) -> None:
    config = Path(env["SM_HOME"]) / "srs.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("srs: [unclosed\n")
    listed = run_sm(env, "sr", "list")
    assert listed.returncode == 0 and b"not valid YAML" in listed.stderr
    (tmp_path / "x").mkdir()
    refused = run_sm(env, "sr", "create", "x", "-d", f"location={tmp_path / 'x'}")
    assert refused.returncode == 1 and b"not valid YAML" in refused.stderr
    assert config.read_text() == "srs: [unclosed\n"


def test_vdi_and_vm_names(manager: StorageManager) -> None:
    for bad in BAD_NAMES[1:]:
        with pytest.raises(InvalidArg, match="VDI name"):
            manager.vdi_create(MiB, bad)
        with pytest.raises(InvalidArg, match="VM name"):
            manager.vm_create(bad)
    with pytest.raises(InvalidArg, match="VDI description"):
        manager.vdi_create(MiB, "ok", "x" * 5000)
    with pytest.raises(InvalidArg, match="VM description"):
        manager.vm_create("ok", "nul\x00")
    assert manager.vdis() == [] and manager.vms() == []
    assert manager.vdi_create(MiB).name_label == ""  # no name is allowed for a VDI
    assert manager.vdi_create(MiB, "ünïcödé € 😀", "two\nlines\tand a tab").name_label
    assert manager.vm_create("web 1").name == "web 1"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_name_rule(text: str) -> None:
    """The rule as a property: accepted names hold nothing the docs exclude."""
    try:
        checks.name("VM", text)
    except InvalidArg as err:
        assert err.code == 1 and err.message.startswith("VM name")
    else:
        assert 0 < len(text) <= checks.MAX_NAME and "/" not in text
        assert text == text.strip()
        assert not any(ord(c) < 32 or 0x7f <= ord(c) <= 0x9f for c in text)
        text.encode("utf-8")  # storable


def test_snapshot_names(manager: StorageManager) -> None:
    manager.vdi_create(MiB, "d")
    manager.vm_create("vm")
    manager.vm_add_disk("vm", "d")
    for bad in BAD_NAMES[1:]:
        with pytest.raises(InvalidArg, match="VM snapshot name"):
            manager.vm_snapshot("vm", bad)
    assert manager.vm_snapshots("vm").roots == ()
    assert [v for v in manager.vdis() if v.is_a_snapshot] == []
    assert manager.vm_snapshot("vm", "").name  # empty: named after the time


def test_renames_follow_the_same_rule(manager: StorageManager) -> None:
    manager.vdi_create(MiB, "d")
    for bad in BAD_NAMES[1:]:
        with pytest.raises(InvalidArg, match="VDI name"):
            manager.vdi_rename("d", bad)
    with pytest.raises(InvalidArg, match="VDI description"):
        manager.vdi_set("d", description="bell\x07")
    assert manager.vdi("d").name_label == "d"


def test_vdi_snapshot_names_uuids_and_ranges(manager: StorageManager, tmp_path: Path) -> None:
    manager.vdi_create(MiB, "d")
    for bad in BAD_NAMES[1:]:
        with pytest.raises(InvalidArg, match="snapshot name"):
            manager.vdi_snapshot("d", bad)
    assert [v for v in manager.vdis() if v.is_a_snapshot] == []
    for bad_uuid in ("bad", "5d1c", 5):
        with pytest.raises(InvalidArg, match="uuid"):
            manager.sr_create("x", "file", {"location": str(tmp_path / "x")},
                              uuid=bad_uuid)  # type: ignore[arg-type]
    with pytest.raises(InvalidArg, match="SR type"):
        manager.sr_create("x", 5, {"location": str(tmp_path / "x")})  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()
    for offset, length in ((0, -5), (-1, 5), (2**63, 1)):
        with pytest.raises(InvalidArg, match=r"offset|length"):
            manager.vdi_read("d", offset, length)
    with pytest.raises(InvalidArg, match="offset"):
        manager.vdi_write("d", -1, b"x")
