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
    ("sm_vdi_set_names", ["name", "description"], {"vdi": VDI}),
    ("sm_vdi_allocation", [], {"vdi": VDI}),
    ("sm_sr_stats", [], {}),
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


# -- symbolic links and images outside the SR ------------------------------------------------


def _digest(path: Path) -> bytes:
    import hashlib

    return hashlib.sha256(path.read_bytes()).digest() + str(path.stat().st_size).encode()


def _outside_vhd(tmp_path: Path, uuid: str) -> Path:
    """A VHD with data, outside the SR (standing in for a file elsewhere on the host)."""
    from sm import vhd

    outside = tmp_path / "elsewhere"
    outside.mkdir(exist_ok=True)
    path = outside / f"{uuid}.vhd"
    vhd.create(str(path), 8 * MiB, uuid=uuidlib.UUID(uuid))
    with vhd.open_chain(str(path), writable=True) as disk:
        disk.write(0, b"outside" * 1000)
        disk.flush()
    return path


def _outside_raw(tmp_path: Path, uuid: str) -> Path:
    outside = tmp_path / "elsewhere"
    outside.mkdir(exist_ok=True)
    path = outside / f"{uuid}.raw"
    path.write_bytes(b"raw outside" * 100_000)
    return path


@pytest.mark.parametrize("ext", ["vhd", "raw"])
def test_scan_and_introduce_refuse_a_symlinked_image(sr: FileSRClient, tmp_path: Path,
                                                     ext: str) -> None:
    uuid = str(uuidlib.uuid4())
    target = _outside_vhd(tmp_path, uuid) if ext == "vhd" else _outside_raw(tmp_path, uuid)
    before = _digest(target)
    (sr.location / f"{uuid}.{ext}").symlink_to(target)
    sr.call("sr_scan")
    assert uuid not in sr.records()
    assert sr.fault("vdi_introduce", vdi=uuid, new_uuid=uuid) == 46
    assert uuid not in sr.records()
    assert _digest(target) == before


@pytest.mark.parametrize("ext", ["vhd", "raw"])
def test_a_recorded_image_replaced_by_a_symlink_is_never_written_through(
        sr: FileSRClient, tmp_path: Path, ext: str) -> None:
    """A VDI whose image became a link to a file outside the SR (an older version adopted such
    links): resize, snapshot, clone, attach, delete and revert refuse with 46 before anything
    is journaled, the outside file stays byte-identical, and the next scan forgets the
    record."""
    extra = {"vdi_sm_config": {"type": "raw"}} if ext == "raw" else {}
    vdi = sr.create_vdi(4 * MiB, **extra)
    snap = sr.snapshot(vdi) if ext == "vhd" else None
    target = (_outside_vhd(tmp_path, vdi) if ext == "vhd" else _outside_raw(tmp_path, vdi))
    image = sr.location / f"{vdi}.{ext}"
    image.unlink()
    image.symlink_to(target)
    before = _digest(target)
    calls: list[tuple[str, list[Any], dict[str, Any]]] = [
        ("vdi_resize", [str(64 * MiB)], {"vdi": vdi}),
        ("vdi_attach", ["true"], {"vdi": vdi}),
        ("vdi_attach", ["false"], {"vdi": vdi}),
        ("vdi_delete", [], {"vdi": vdi}),
        ("vdi_update", [], {"vdi": vdi}),
    ]
    if ext == "vhd":
        calls += [("vdi_snapshot", [], {"vdi": vdi}), ("vdi_clone", [], {"vdi": vdi}),
                  ("vdi_revert", [vdi], {"vdi": snap})]
    for command, args, kw in calls:
        assert sr.fault(command, args, **kw) == 46, command
        assert _digest(target) == before, command
        assert image.is_symlink()
    assert not list((sr.location / ".sm" / "journal").glob("**/*.json"))
    sr.call("sr_scan")
    assert vdi not in sr.records()
    assert _digest(target) == before


def test_a_parent_locator_outside_the_sr_is_not_followed(sr: FileSRClient,
                                                         tmp_path: Path) -> None:
    """A VHD in the SR whose parent is a VHD outside: scan and introduce do not adopt it, and
    the data path's opener does not open the outside parent."""
    from sm import vhd
    from srtypes.file.confine import open_disk

    parent = _outside_vhd(tmp_path, str(uuidlib.uuid4()))
    before = _digest(parent)
    child = str(uuidlib.uuid4())
    path = sr.location / f"{child}.vhd"
    vhd.snapshot(str(parent), str(path), uuid=uuidlib.UUID(child))
    with vhd.open_chain(str(path)) as disk:  # the engine alone would follow it
        assert disk.read(0, 7) == b"outside"
    sr.call("sr_scan")
    assert child not in sr.records()
    assert sr.fault("vdi_introduce", vdi=child, new_uuid=child) in (40, 46, 65)
    with pytest.raises(vhd.VhdChainError):
        open_disk(str(path))
    assert _digest(parent) == before


def test_raw_data_path_never_opens_a_link(tmp_path: Path) -> None:
    from sm.nbd.rawdisk import open_raw

    target = _outside_raw(tmp_path, str(uuidlib.uuid4()))
    link = tmp_path / "link.raw"
    link.symlink_to(target)
    with pytest.raises(OSError):
        open_raw(str(link), writable=True)


# -- scratch files of killed commands --------------------------------------------------------


def _scratch(location: Path) -> list[str]:
    return sorted(p.name for p in location.iterdir() if p.name.startswith(".tmp-")
                  or p.name.endswith(".new.tmp"))


def _kill_inside_create(sr: FileSRClient, command: str, args: list[Any],
                        vdi: str | None) -> None:
    """Run `command` as `bin/FileSR` and SIGKILL it inside the VHD engine's create (the image
    written to its scratch name, not yet renamed into place)."""
    from sm.faults import crash_env
    from tests.smapi import ROOT, Process, dumps

    exe = Process(env=sr.environ, executable=ROOT / "bin" / "FileSR")
    outcome = exe.send(dumps(sr.struct(command, args, vdi=vdi)),
                       env=crash_env("vhd.create.staged"))
    assert outcome.signal == 9, outcome.stderr


@pytest.mark.parametrize("command", ["vdi_snapshot", "vdi_clone", "vdi_revert"])
@pytest.mark.parametrize("next_command", ["vdi_create", "sr_scan"])
def test_a_kill_inside_vhd_create_leaves_no_scratch_after_the_next_command(
        sr: FileSRClient, command: str, next_command: str) -> None:
    vdi = sr.create_vdi(4 * MiB)
    sr.write(vdi, 0, b"x" * 4096)
    if command == "vdi_revert":
        snap = sr.snapshot(vdi)
        sr.write(vdi, 0, b"y" * 4096)
        _kill_inside_create(sr, command, [vdi], snap)
    else:
        _kill_inside_create(sr, command, [], vdi)
    assert _scratch(sr.location), "the kill left no scratch file to clean up"
    if next_command == "vdi_create":
        sr.create_vdi(MiB)
    else:
        sr.call("sr_scan")
    assert _scratch(sr.location) == []
    # the content from before or after the command, never anything else
    assert sr.read(vdi, 0, 4096) in (b"x" * 4096, b"y" * 4096)
    sr.call("sr_scan")
    assert all(r["uuid"] for r in sr.records().values())


def test_a_kill_inside_vdi_create_is_swept_by_scan(sr: FileSRClient) -> None:
    """vdi_create journals nothing: the scratch of a killed create goes at the next scan."""
    _kill_inside_create(sr, "vdi_create", [str(4 * MiB)], None)
    assert _scratch(sr.location)
    sr.call("sr_scan")
    assert _scratch(sr.location) == []
    assert sr.records() == {}


def test_sweep_touches_only_sms_own_scratch_names(sr: FileSRClient, tmp_path: Path) -> None:
    """Other dot-files, look-alike names and link targets stay."""
    keep = [".tmp-notours.vhd", ".tmp-0123456789ab.vhd.bak", "tmp-0123456789ab.vhd",
            ".tmp-0123456789abc.vhd", "notes.txt"]
    for name in keep:
        (sr.location / name).write_text("keep")
    outside = tmp_path / "outside.vhd"
    outside.write_text("outside")
    (sr.location / ".tmp-abcdefabcdef.vhd").symlink_to(outside)
    (sr.location / ".tmp-0123456789ab.vhd").write_text("scratch")
    sr.call("sr_scan")
    names = {p.name for p in sr.location.iterdir()}
    assert set(keep) <= names
    assert ".tmp-0123456789ab.vhd" not in names and ".tmp-abcdefabcdef.vhd" not in names
    assert outside.read_text() == "outside"


def test_sr_delete_leaves_links_and_their_targets(sr: FileSRClient, tmp_path: Path) -> None:
    """A link under an image name is not the SR's: sr_delete neither counts it as an image
    without a record (scan never adopts it) nor removes it, and its target stays."""
    target = _outside_raw(tmp_path, str(uuidlib.uuid4()))
    before = _digest(target)
    link = sr.location / f"{uuidlib.uuid4()}.raw"
    link.symlink_to(target)
    sr.call("sr_detach")
    sr.call("sr_delete")
    assert link.is_symlink() and not (sr.location / ".sm").exists()
    assert _digest(target) == before


def test_sr_storage_confines_the_engine(tmp_path: Path) -> None:
    """The engine's Storage for an SR: no link opened, nothing outside seen or created."""
    from srtypes.file.confine import ImageOutsideSR, SRStorage

    root = tmp_path / "sr"
    root.mkdir()
    inside = _outside_vhd(tmp_path, str(uuidlib.uuid4()))
    own = root / inside.name
    own.write_bytes(inside.read_bytes())
    (root / "link.vhd").symlink_to(inside)
    storage = SRStorage(root)
    assert storage.exists(str(own))
    assert not storage.exists(str(inside)) and not storage.exists(str(root / "link.vhd"))
    assert not storage.exists(str(root / ".." / "elsewhere" / inside.name))
    storage.open(str(own), False).close()
    for path in (root / "link.vhd", inside):
        with pytest.raises(ImageOutsideSR):
            storage.open(str(path), True)
    with pytest.raises(ImageOutsideSR):
        with storage.create(str(tmp_path / "new.vhd"), 1024):
            pass
    assert not (tmp_path / "new.vhd").exists()


def test_scan_reports_what_it_refused(sr: FileSRClient, tmp_path: Path) -> None:
    from srtypes.file.layout import SRLayout
    from srtypes.file.repo import FileRepo
    from srtypes.file.scan import scan

    uuid = str(uuidlib.uuid4())
    (sr.location / f"{uuid}.vhd").symlink_to(_outside_vhd(tmp_path, uuid))
    result = scan(FileRepo(SRLayout(sr.location, sr.sr_uuid, sr.run_dir)))
    assert list(result["refused"]) == [f"{uuid}.vhd"]
    assert uuid not in result["adopted"]
