"""Revert for real: in place, and the clone fallback with the identity handed over.

The fallback runs against SR types registered through the `sm.srtypes` entry points
(tests/plugins: the File SR without VDI_REVERT, and one whose vdi_revert answers 38) and the
built-in File SR forced through it (`revert=clone`), over both transports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from sm.api import StorageManager
from sm.api.transport import Exec, InProcess
from sm.errors import VDIMissing
from srtypes.nfs.mounter import BIND_EXPORTS_ENV as BIND

from .conftest import new_sr

MiB = 1024 * 1024
SIZE = 4 * MiB

CASES = [
    # (SR type, force clone, transport, expected path)
    ("file", False, "inproc", "in-place"),
    ("file", False, "exec", "in-place"),
    ("file", True, "inproc", "clone-fallback"),
    ("file", True, "exec", "clone-fallback"),
    ("norevert", False, "inproc", "clone-fallback"),
    ("norevert", False, "exec", "clone-fallback"),
    ("revert38", False, "inproc", "clone-fallback"),
    ("revert38", False, "exec", "clone-fallback"),
]


def _manager(env: dict[str, str], force: bool, transport: str) -> StorageManager:
    env = {**env, **({"SM_REVERT": "clone"} if force else {})}
    return StorageManager(environ=env, transport=Exec(env) if transport == "exec" else InProcess())


class Disk:
    """A VDI and the bytes it must read (the model)."""

    def __init__(self, sm: StorageManager, sr: str) -> None:
        self.sm, self.sr = sm, sr
        self.vdi = sm.vdi_create(SIZE, "disk", "the disk under test", sr=sr)
        self.content = bytearray(SIZE)

    def write(self, offset: int, data: bytes) -> None:
        self.sm.vdi_write(self.vdi.uuid, offset, data, sr=self.sr)
        self.content[offset:offset + len(data)] = data

    def check(self) -> None:
        assert self.sm.vdi_read(self.vdi.uuid, sr=self.sr) == bytes(self.content)


def _identity(sm: StorageManager, ref: str, sr: str) -> tuple[str, str, str, str]:
    v = sm.vdi(ref, sr)
    return (v.uuid, v.location, v.name_label, v.name_description)


@pytest.mark.parametrize(("srtype", "force", "transport", "path"), CASES)
def test_revert_keeps_identity_content_and_links(env: dict[str, str], tmp_path: Path,
                                                 srtype: str, force: bool, transport: str,
                                                 path: str) -> None:
    with _manager(env, force, transport) as sm:
        _revert_scenario(sm, new_sr(sm, srtype, tmp_path), path)


def _revert_scenario(sm: StorageManager, sr: str, path: str) -> None:
    """Two snapshots, revert to the older then the newer, with every promise checked."""
    disk = Disk(sm, sr)
    before = _identity(sm, disk.vdi.uuid, sr)
    disk.write(0, b"A" * 4096)
    disk.write(3 * MiB + 17, b"first")
    s1 = sm.vdi_snapshot(disk.vdi.uuid, "s1", sr=sr)
    at_s1 = bytes(disk.content)
    disk.write(4096, b"B" * 8192)
    s2 = sm.vdi_snapshot(disk.vdi.uuid, "s2", sr=sr)
    at_s2 = bytes(disk.content)
    disk.write(0, b"C" * 100)
    disk.write(2 * MiB, b"late")

    result = sm.vdi_revert(disk.vdi.uuid, "s1", sr=sr)
    assert result.path == path
    assert result.snapshot == s1.uuid
    disk.content[:] = at_s1
    disk.check()
    assert _identity(sm, disk.vdi.uuid, sr) == before
    assert _identity(sm, disk.vdi.location, sr) == before  # found by location too
    assert (result.vdi.uuid, result.vdi.location, result.vdi.name_label,
            result.vdi.name_description) == before
    for snap in (s1, s2):
        assert sm.vdi(snap.uuid, sr).snapshot_of == before[0]
    assert sm.vdi_tree(disk.vdi.uuid, sr=sr).current == s1.uuid
    # The snapshots still read what they read.
    assert sm.vdi_read(s2.uuid, sr=sr) == at_s2
    assert sm.vdi_read(s1.uuid, sr=sr) == at_s1

    # Write after the revert, revert again (a second hand-over when falling back).
    disk.write(MiB, b"after revert")
    assert sm.vdi_revert(before[0], s2.uuid, sr=sr).path == path
    disk.content[:] = at_s2
    disk.check()
    assert _identity(sm, before[0], sr) == before

    # A snapshot taken now points at the same public uuid as the old ones.
    s3 = sm.vdi_snapshot(before[0], "s3", sr=sr)
    assert sm.vdi(s3.uuid, sr).snapshot_of == before[0]
    tree = sm.vdi_tree(before[0], sr=sr)
    assert [(n.name, n.current) for n in tree.walk()] == [
        ("s1", False), ("s2", False), ("s3", True)]

    # Exactly one visible non-snapshot VDI: the disk (old backings are gone).
    visible = [v for v in sm.vdis(sr) if not v.is_a_snapshot]
    assert [v.uuid for v in visible] == [before[0]]
    assert sm.state.journal() == []

    # Deleting the VDI deletes the live backing; the public uuid is gone.
    sm.vdi_delete(before[0], sr=sr, scope="with-children")
    with pytest.raises(VDIMissing):
        sm.vdi(before[0], sr)
    assert sm.vdis(sr) == []


@pytest.mark.parametrize("srtype", ["file", "norevert"])
def test_safety_snapshot_is_removed_on_success(env: dict[str, str], tmp_path: Path,
                                               srtype: str) -> None:
    with _manager(env, False, "inproc") as sm:
        sr = new_sr(sm, srtype, tmp_path)
        disk = Disk(sm, sr)
        disk.write(0, b"one")
        sm.vdi_snapshot(disk.vdi.uuid, "s1", sr=sr)
        at_s1 = bytes(disk.content)
        disk.write(0, b"two")
        result = sm.vdi_revert(disk.vdi.uuid, "s1", sr=sr, safety=True)
        assert result.safety_snapshot is not None
        with pytest.raises(VDIMissing):
            sm.vdi(result.safety_snapshot, sr)
        disk.content[:] = at_s1
        disk.check()
        assert [n.name for n in sm.vdi_tree(disk.vdi.uuid, sr=sr).walk()] == ["s1"]


def test_fallback_result_names_backing(env: dict[str, str], tmp_path: Path) -> None:
    with _manager(env, False, "inproc") as sm:
        sr = new_sr(sm, "norevert", tmp_path)
        disk = Disk(sm, sr)
        sm.vdi_snapshot(disk.vdi.uuid, "s1", sr=sr)
        result = sm.vdi_revert(disk.vdi.uuid, "s1", sr=sr)
        assert result.vdi.uuid == disk.vdi.uuid
        assert result.vdi.backing != disk.vdi.uuid  # the data moved to the clone
        # The driver itself no longer knows the old volume.
        records = {r["uuid"] for r in sm._client(sm._config(sr)).records()}
        assert disk.vdi.uuid not in records
        assert result.vdi.backing in records


# -- the other built-in SR types forced through the fallback (revert=clone) -------------------


@pytest.mark.root
def test_nfs_sr_forced_through_the_fallback(env: dict[str, str], tmp_path: Path,
                                            ganesha: Any, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    from tests.nfs.sr_support import bind_env, nfs_device_config

    mounts = bind_env(ganesha, monkeypatch, tmp_path)
    next(mounts)
    env = {**env, "SM_RUN_DIR": str(tmp_path / "r"), BIND: os.environ[BIND]}
    try:
        with _manager(env, True, "inproc") as sm:
            sm.sr_create("nfs", "nfs", nfs_device_config(ganesha))
            _revert_scenario(sm, "nfs", "clone-fallback")
            sm.sr_delete("nfs")
    finally:
        next(mounts, None)


@pytest.mark.root
@pytest.mark.nbd  # an LVM volume is reached through its NBD server (no device-mapper here)
def test_lvhd_sr_forced_through_the_fallback(env: dict[str, str], tmp_path: Path,
                                             lvm_sandbox: Any) -> None:
    dev, _ = lvm_sandbox.loop_device(128 * MiB)
    try:
        with _manager({**env, "SM_RUN_DIR": str(tmp_path / "r")}, True, "inproc") as sm:
            sm.sr_create("lv", "lvhd", {"device": dev})
            _revert_scenario(sm, "lv", "clone-fallback")
            sm.sr_delete("lv")
    finally:
        lvm_sandbox.detach(dev)


@pytest.mark.root
@pytest.mark.nbd  # an RBD image is reached through its NBD server
def test_rbd_sr_forced_through_the_fallback(env: dict[str, str], tmp_path: Path,
                                            rbd_namespace: str) -> None:
    from tests.rbd.support import device_config

    with _manager({**env, "SM_RUN_DIR": str(tmp_path / "r")}, True, "inproc") as sm:
        sm.sr_create("rbd", "rbd", device_config())
        _revert_scenario(sm, "rbd", "clone-fallback")
        sm.sr_delete("rbd")
