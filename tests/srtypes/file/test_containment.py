"""Nothing escapes the SR (issue 15, section 3): no command but `sr_create` makes an SR's
directories, and a command on a location that holds no SR answers SRUnavailable (47) and
writes nothing (docs/file-sr.md, "Containment")."""

from __future__ import annotations

import os
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest

from .conftest import FileSRClient, SMFault

MiB = 1024 * 1024


def tree(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every name below `root` with its mode, size and (for files) content."""
    out: dict[str, tuple[int, int, bytes]] = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(d, name)
            st = os.lstat(path)
            data = b""
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    data = f.read()
            elif os.path.islink(path):
                data = os.readlink(path).encode()
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_size, data)
    return out


# Every command that names an SR, with arguments that would pass validation.
VDI = "0d7a3c1e-5b2f-4e61-9a0b-3c4d5e6f7a8b"
COMMANDS: list[tuple[str, list[Any], dict[str, Any]]] = [
    ("sr_attach", [], {}),
    ("sr_scan", [], {}),
    ("sr_update", [], {}),
    ("sm_vdi_list", [], {}),
    ("sm_gc_run", [], {}),
    ("sm_gc_status", [], {}),
    ("vdi_create", [str(MiB)], {}),
    ("vdi_delete", [], {"vdi": VDI}),
    ("vdi_update", [], {"vdi": VDI}),
    ("vdi_introduce", [], {"vdi": VDI, "new_uuid": VDI}),
    ("vdi_attach", ["true"], {"vdi": VDI}),
    ("vdi_attach", ["false"], {"vdi": VDI}),
    ("vdi_detach", [], {"vdi": VDI}),
    ("vdi_activate", ["true"], {"vdi": VDI}),
    ("vdi_deactivate", [], {"vdi": VDI}),
    ("vdi_snapshot", [], {"vdi": VDI}),
    ("vdi_clone", [], {"vdi": VDI}),
    ("vdi_resize", [str(2 * MiB)], {"vdi": VDI}),
    ("vdi_revert", [""], {"vdi": VDI}),
    ("vdi_generate_config", [], {"vdi": VDI}),
    ("vdi_attach_from_config", [], {"vdi": VDI}),
    ("sm_vdi_get", [], {"vdi": VDI}),
]
IDS = [f"{c}-{a[0] if a else ''}" for c, a, _ in COMMANDS]


@pytest.mark.parametrize("kind", ["missing", "etc", "dot-sm"])
@pytest.mark.parametrize(("command", "args", "extra"), COMMANDS, ids=IDS)
def test_no_sr_is_47_and_writes_nothing(tmp_path: Path, kind: str, command: str,
                                        args: list[Any], extra: dict[str, Any]) -> None:
    """A location that does not exist, a directory standing in for /etc (files, no SR), or
    one holding an empty `.sm` (no SR record): 47, and the whole tree is unchanged."""
    location = tmp_path / "etc"
    if kind != "missing":
        location.mkdir()
        (location / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
        if kind == "dot-sm":
            (location / ".sm").mkdir()
    client = FileSRClient(location, tmp_path / "run")
    before = tree(tmp_path)
    with pytest.raises(SMFault) as info:
        client.call(command, args, **extra)
    assert info.value.code == 47, info.value.message
    assert tree(tmp_path) == before


@pytest.mark.parametrize("command", ["sr_detach", "sr_probe", "sr_content_type", "sr_delete"])
def test_no_sr_idempotent_commands_write_nothing(tmp_path: Path, command: str) -> None:
    """The commands that answer without an SR (idempotent detach, probe, content type, delete
    of a missing directory) write nothing either."""
    client = FileSRClient(tmp_path / "etc", tmp_path / "run")
    before = tree(tmp_path)
    client.call(command)
    assert tree(tmp_path) == before


def test_late_commands_after_sr_delete_leave_it_deleted(sr: FileSRClient) -> None:
    """A `vdi_deactivate` (or detach, attach, ...) that arrives after `sr_delete` answers 47
    and does not bring the SR's directory back."""
    vdi = sr.create_vdi()
    sr.call("vdi_attach", ["true"], vdi=vdi)
    sr.call("vdi_activate", ["true"], vdi=vdi)
    sr.call("vdi_deactivate", vdi=vdi)
    sr.call("vdi_detach", vdi=vdi)
    sr.call("vdi_delete", vdi=vdi)
    sr.call("sr_detach")
    sr.call("sr_delete")
    assert not sr.location.exists()
    for command, args in (("vdi_deactivate", []), ("vdi_detach", []),
                          ("vdi_activate", ["true"]), ("vdi_attach", ["false"])):
        assert sr.fault(command, args, vdi=vdi) == 47
        assert not sr.location.exists()
    assert sr.fault("sr_attach") == 47
    assert not sr.location.exists()


def test_other_srs_uuid_is_47_and_writes_nothing(sr: FileSRClient, tmp_path: Path) -> None:
    """The location holds an SR, but not the one the request names."""
    other = FileSRClient(sr.location, tmp_path / "run", sr_uuid=str(uuidlib.uuid4()))
    before = tree(sr.location)
    for command, args in (("vdi_deactivate", []), ("vdi_detach", []), ("sr_scan", [])):
        assert other.fault(command, args, vdi=VDI) == 47
    assert tree(sr.location) == before


def test_create_makes_the_sr_directories(client: FileSRClient) -> None:
    client.call("sr_create", ["0"])
    meta = client.location / ".sm"
    assert {p.name for p in meta.iterdir()} >= {"sr.json", "locks", "journal", "vdi", "txn"}


def test_attach_upgrades_an_sr_without_journal_or_locks(client: FileSRClient) -> None:
    """An SR an earlier version made got `.sm/journal` only with its first journaled
    operation: `sr_attach` (the upgrade path) makes what is missing."""
    import shutil

    client.call("sr_create", ["0"])
    shutil.rmtree(client.location / ".sm" / "journal")
    shutil.rmtree(client.location / ".sm" / "locks")
    client.call("sr_attach")
    vdi = client.create_vdi()
    client.snapshot(vdi)
    assert (client.location / ".sm" / "journal").is_dir()
