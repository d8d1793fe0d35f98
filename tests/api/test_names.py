"""Names of VDIs and snapshots (issue 16, workflows): rename / set, clone --name, duplicate
names warned about, ambiguous names refused with the uuids, snapshot names unique per tree;
on the File SR, through the clone-fallback identity, on LVHD; the CLI's one-line warning."""

from __future__ import annotations

import json
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest

from sm.api import StorageManager
from sm.api.names import DuplicateName
from sm.errors import InvalidArg, SRUnknownType

from .conftest import new_sr, run_sm

MiB = 1 << 20


def _record(sm: StorageManager, sr: str, uuid: str) -> dict[str, Any]:
    """The SR's own record, as the driver keeps it (not this layer's view)."""
    vdi = sm.vdi(uuid, sr)
    return sm._client(sm._config(sr)).record(*vdi.ref)


def test_rename_and_describe_vdi_and_snapshot(manager: StorageManager, tmp_path: Path) -> None:
    sm = manager
    sr = new_sr(sm, "file", tmp_path, "fs")
    disk = sm.vdi_create(4 * MiB, "disk1", "first", sr=sr)
    snap = sm.vdi_snapshot(disk.uuid, "clean", "before", sr=sr)

    renamed = sm.vdi_rename("disk1", "system", sr=sr)
    assert (renamed.uuid, renamed.name_label, renamed.name_description) == \
        (disk.uuid, "system", "first")
    assert _record(sm, sr, disk.uuid)["name_label"] == "system"   # in the SR itself
    assert sm.vdi("system", sr).uuid == disk.uuid
    sm.vdi_set(disk.uuid, description="the system disk", sr=sr)
    assert sm.vdi(disk.uuid, sr).name_description == "the system disk"

    # a snapshot: its tree name and description, and its record
    sm.vdi_set("clean", name="golden", description="known good", sr=sr)
    node = sm.vdi_tree(disk.uuid, sr=sr).roots[0]
    assert (node.uuid, node.name, node.description) == (snap.uuid, "golden", "known good")
    assert _record(sm, sr, snap.uuid)["name_label"] == "golden"
    assert sm.vdi("golden", sr).uuid == snap.uuid
    sm.vdi_write(disk.uuid, 0, b"changed", sr=sr)
    assert sm.vdi_revert(disk.uuid, "golden", sr=sr).snapshot == snap.uuid

    with pytest.raises(InvalidArg, match="nothing to change"):
        sm.vdi_set(disk.uuid, sr=sr)


def test_snapshot_names_stay_unique_in_a_tree(manager: StorageManager, tmp_path: Path) -> None:
    sm = manager
    sr = new_sr(sm, "file", tmp_path, "fs")
    disk = sm.vdi_create(4 * MiB, "disk1", sr=sr)
    a = sm.vdi_snapshot(disk.uuid, "a", sr=sr)
    sm.vdi_snapshot(disk.uuid, "b", sr=sr)
    with pytest.raises(InvalidArg, match=f"{a.uuid}.*already called 'a'"):
        sm.vdi_set("b", name="a", sr=sr)
    assert sorted(n.name for n in sm.vdi_tree(disk.uuid, sr=sr).walk()) == ["a", "b"]


def test_duplicate_names_warn_and_ambiguous_names_list_uuids(manager: StorageManager,
                                                             tmp_path: Path) -> None:
    sm = manager
    sr = new_sr(sm, "file", tmp_path, "fs")
    one = sm.vdi_create(MiB, "data", sr=sr)
    with pytest.warns(DuplicateName, match="2 VDIs of SR fs are now called 'data'"):
        two = sm.vdi_create(MiB, "data", sr=sr)
    with pytest.raises(InvalidArg) as err:
        sm.vdi("data", sr)
    assert one.uuid in str(err.value) and two.uuid in str(err.value)

    other = sm.vdi_create(MiB, "other", sr=sr)
    with pytest.warns(DuplicateName):
        sm.vdi_rename(other.uuid, "data", sr=sr)
    third = sm.vdi_create(MiB, "third", sr=sr)
    with pytest.warns(DuplicateName, match="called 'third'"):
        sm.vdi_clone(one.uuid, sr=sr, name="third")
    with pytest.warns(DuplicateName, match="4 VDIs .* called 'data'"):
        sm.vdi_clone(one.uuid, sr=sr)  # a clone keeps the source's name: said so
    with pytest.raises(InvalidArg, match=third.uuid):
        sm.vdi_rename("third", "fourth", sr=sr)

    clone = sm.vdi_clone(two.uuid, sr=sr, name="copy-of-two", description="a clone")
    assert (clone.name_label, clone.name_description) == ("copy-of-two", "a clone")
    assert clone.uuid not in (one.uuid, two.uuid)


def test_rename_after_a_revert_by_clone_keeps_the_new_name(env: dict[str, str],
                                                           tmp_path: Path) -> None:
    with StorageManager(environ={**env, "SM_REVERT": "clone"}) as sm:
        sr = new_sr(sm, "file", tmp_path, "fs")
        disk = sm.vdi_create(4 * MiB, "disk1", sr=sr)
        sm.vdi_snapshot(disk.uuid, "clean", sr=sr)
        assert sm.vdi_revert(disk.uuid, "clean", sr=sr).path == "clone-fallback"
        assert sm.vdi(disk.uuid, sr).backing != disk.uuid
        sm.vdi_rename(disk.uuid, "renamed", sr=sr)
        sm.vdi_set(disk.uuid, description="after revert", sr=sr)
        vdi = sm.vdi("renamed", sr)
        assert (vdi.uuid, vdi.name_description) == (disk.uuid, "after revert")


def test_cli_rename_set_clone_and_warning(env: dict[str, str], tmp_path: Path) -> None:
    assert run_sm(env, "vdi", "create", "d1", "--size", "1M").returncode == 0
    made = run_sm(env, "vdi", "create", "d1", "--size", "1M", "--json")
    assert made.returncode == 0
    warning = made.stderr.decode().strip()
    assert warning.startswith("Warning: 2 VDIs of SR default are now called 'd1'")
    assert len(warning.splitlines()) == 1
    new = json.loads(made.stdout)["uuid"]
    ambiguous = run_sm(env, "vdi", "show", "d1")
    assert ambiguous.returncode == 1 and new in ambiguous.stderr.decode()
    assert run_sm(env, "vdi", "rename", new, "d2").returncode == 0
    out = run_sm(env, "vdi", "set", "d2", "--description", "second", "--json")
    assert json.loads(out.stdout)["name_description"] == "second"
    clone = run_sm(env, "vdi", "clone", "d2", "--name", "d3", "--json")
    assert clone.returncode == 0, clone.stderr
    assert json.loads(clone.stdout)["name_label"] == "d3" and not clone.stderr


def test_unknown_sr_type_lists_the_installed_ones(manager: StorageManager,
                                                  tmp_path: Path) -> None:
    with pytest.raises(SRUnknownType, match=r"installed: .*file.*lvhd.*nfs"):
        manager.sr_create("x", "bogus", {"location": str(tmp_path)})


def test_sr_stats_and_probe_of_a_file_sr(manager: StorageManager, tmp_path: Path) -> None:
    sm = manager
    sr = new_sr(sm, "file", tmp_path, "fs")
    stats = sm.sr_info(sr)["stats"]
    assert stats["physical_size"] > 0 and 0 < stats["free_space"] <= stats["physical_size"]
    found = sm.sr_probe("file", {"location": str(tmp_path / "sr-fs")})
    assert [(s["uuid"], s["name"]) for s in found["srs"]] == [(sm.sr(sr).uuid, "fs")]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert sm.sr_probe("file", {"location": str(empty)})["srs"] == []


@pytest.mark.root
def test_lvhd_names_stats_and_probe(env: dict[str, str], tmp_path: Path,
                                    lvm_sandbox: Any) -> None:
    dev, _ = lvm_sandbox.loop_device(64 * MiB)
    sr_uuid = str(uuidlib.uuid4())
    try:
        with StorageManager(environ={**env, "SM_RUN_DIR": str(tmp_path / "r")}) as sm:
            assert sm.sr_probe("lvhd", {"device": dev})["srs"] == []
            sm.sr_create("lv", "lvhd", {"device": dev}, uuid=sr_uuid)
            disk = sm.vdi_create(8 * MiB, "disk1", sr="lv")
            snap = sm.vdi_snapshot(disk.uuid, "clean", sr="lv")
            sm.vdi_set(disk.uuid, name="data", description="on lvm", sr="lv")
            sm.vdi_rename(snap.uuid, "golden", sr="lv")
            assert _record(sm, "lv", disk.uuid)["name_description"] == "on lvm"
            assert _record(sm, "lv", snap.uuid)["name_label"] == "golden"
            assert sm.vdi("data", "lv").uuid == disk.uuid
            stats = sm.sr_stats("lv")
            assert 0 < stats["free_space"] < stats["physical_size"] <= 64 * MiB
            probed = sm.sr_probe("lvhd", {"device": dev})["srs"]
            assert [(s["uuid"], s["name"]) for s in probed] == [(sr_uuid, "lv")]
            sm.vdi_delete(disk.uuid, sr="lv", scope="with-children")
            sm.sr_delete("lv")
    finally:
        lvm_sandbox.detach(dev)


def test_server_methods_rename_copy_probe(manager: StorageManager, tmp_path: Path) -> None:
    from sm.server import methods

    sm = manager
    sr = new_sr(sm, "file", tmp_path, "fs")
    disk = sm.vdi_create(4 * MiB, "disk1", sr=sr).uuid

    def call(method: str, *params: Any) -> Any:
        return methods.call(lambda: sm, method, list(params))

    assert call("vdi.rename", disk, "renamed", {"sr": sr})["name_label"] == "renamed"
    assert call("vdi.set", disk, {"description": "over xml-rpc", "sr": sr})[
        "name_description"] == "over xml-rpc"
    copied = call("vdi.copy", disk, sr, {"sr": sr, "name": "copy", "snapshots": False})
    assert copied["vdi"]["name_label"] == "copy" and copied["dest_sr"] == sr
    with pytest.raises(InvalidArg, match="snapshots"):
        call("vdi.copy", disk, sr, {"sr": sr, "snapshots": "false"})  # not a boolean
    with pytest.raises(InvalidArg, match="progress"):
        call("vdi.move", disk, "default", {"sr": sr, "progress": "x"})
    probed = call("sr.probe", "file", {"location": str(tmp_path / "sr-fs")})
    assert [s["name"] for s in probed["srs"]] == [sr]
    assert call("sr.stats", sr)["free_space"] > 0
    assert call("vdi.attachments") == []


def test_ambiguous_snapshot_names_list_the_uuids(manager: StorageManager,
                                                 tmp_path: Path) -> None:
    sm = manager
    sr = new_sr(sm, "file", tmp_path, "fs")
    disk = sm.vdi_create(4 * MiB, "disk1", sr=sr).uuid
    one = sm.vdi_snapshot(disk, "nightly", sr=sr).uuid
    with pytest.warns(DuplicateName, match=f"already has a snapshot called 'nightly' .{one}"):
        two = sm.vdi_snapshot(disk, "nightly", sr=sr).uuid
    with pytest.raises(InvalidArg) as err:
        sm.vdi_revert(disk, "nightly", sr=sr)
    assert one in str(err.value) and two in str(err.value)
    with pytest.raises(InvalidArg) as err:
        sm.vdi("nightly", sr)
    assert one in str(err.value) and two in str(err.value)
    sm.vm_create("web")
    sm.vm_add_disk("web", disk, sr=sr)
    first = sm.vm_snapshot("web", "n1").uuid
    with pytest.raises(InvalidArg, match="already has a snapshot called"):
        sm.vm_snapshot("web", "n1")
    assert sm.vm_revert("web", first) is not None


def test_set_names_request_needs_both_names(manager: StorageManager, tmp_path: Path) -> None:
    from sm.errors import BadRequest

    sm = manager
    sr = new_sr(sm, "file", tmp_path, "fs")
    disk = sm.vdi_create(MiB, "d", "desc", sr=sr)
    client = sm._client(sm._config(sr))
    with pytest.raises(BadRequest, match="name_description"):
        client.call("sm_vdi_set_names", ["only a label"], vdi=disk.ref)
    assert (sm.vdi(disk.uuid, sr).name_label, sm.vdi(disk.uuid, sr).name_description) == \
        ("d", "desc")
    client.call("sm_vdi_set_names", ["", ""], vdi=disk.ref)  # empty names are names
    assert sm.vdi(disk.uuid, sr).name_label == ""


def test_bad_names_are_refused_before_anything_changes(manager: StorageManager,
                                                       tmp_path: Path) -> None:
    sm = manager
    sr = new_sr(sm, "file", tmp_path, "fs")
    disk = sm.vdi_create(MiB, "d", sr=sr)
    sm.vdi_snapshot(disk.uuid, "s", sr=sr)
    for bad in ("a/b", " padded", "x" * 300, "nul\0"):
        with pytest.raises(InvalidArg, match="VDI name"):
            sm.vdi_rename(disk.uuid, bad, sr=sr)
        with pytest.raises(InvalidArg, match="snapshot name"):
            sm.vdi_rename("s", bad, sr=sr)
        with pytest.raises(InvalidArg, match="VDI name"):
            sm.vdi_copy(disk.uuid, sr, sr=sr, name=bad)
    with pytest.raises(InvalidArg, match="description"):
        sm.vdi_set(disk.uuid, description="\x07", sr=sr)
    with pytest.raises(InvalidArg, match="snapshot name must not be empty"):
        sm.vdi_rename("s", "", sr=sr)
    assert sm.vdi_rename(disk.uuid, "", sr=sr).name_label == ""  # a VDI may have no name
    assert [v.uuid for v in sm.vdis(sr) if not v.is_a_snapshot] == [disk.uuid]
