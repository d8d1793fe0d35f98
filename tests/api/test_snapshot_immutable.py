"""Defect 5 of issue 16: snapshots never change.

Resizing a snapshot, or writing (importing) into one, used to succeed. Every path now refuses
it with VDIUnavailable (46), as the drivers refuse a writable attach of a read-only VDI (and
the original drivers a resize of a hidden one), and nothing changes: sm.api (resize, write,
import), `sm serve` (`vdi.write`, `vdi.resize`), the CLI, and the drivers themselves
(`vdi_resize` and a writable `vdi_attach` of a snapshot, File and LVHD SRs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sm.api import StorageManager
from sm.errors import VDIUnavailable
from sm.server import methods

from .conftest import new_sr, run_sm

MiB = 1024 * 1024


def _refusals(sm: StorageManager, sr: str, tmp_path: Path) -> None:
    disk = sm.vdi_create(2 * MiB, "disk", sr=sr)
    sm.vdi_write(disk.uuid, 0, b"kept", sr=sr)
    snap = sm.vdi_snapshot(disk.uuid, "s1", sr=sr)
    before = sm.vdi(snap.uuid, sr)
    source = tmp_path / "image.raw"
    source.write_bytes(b"x" * MiB)

    with pytest.raises(VDIUnavailable, match="snapshot"):
        sm.vdi_resize(snap.uuid, 4 * MiB, sr=sr)
    with pytest.raises(VDIUnavailable, match="snapshot"):
        sm.vdi_write(snap.uuid, 0, b"changed", sr=sr)
    with pytest.raises(VDIUnavailable, match="snapshot"):
        sm.vdi_import(snap.uuid, str(source), sr=sr)
    with pytest.raises(VDIUnavailable):
        methods.call(lambda: sm, "vdi.write", [snap.uuid, "0", b"changed", {"sr": sr}])
    with pytest.raises(VDIUnavailable):
        methods.call(lambda: sm, "vdi.resize", [snap.uuid, str(4 * MiB), {"sr": sr}])

    # The drivers refuse too, for a toolstack that talks to them directly.
    client = sm._client(sm._config(sr))
    with pytest.raises(VDIUnavailable):
        client.vdi_resize(snap.ref, 4 * MiB)
    with pytest.raises(VDIUnavailable):
        client.vdi_attach(snap.ref, True)

    assert sm.vdi(snap.uuid, sr) == before
    assert sm.vdi_read(snap.uuid, 0, 4, sr=sr) == b"kept"
    # The disk itself still changes.
    assert sm.vdi_resize(disk.uuid, 4 * MiB, sr=sr).virtual_size == 4 * MiB
    sm.vdi_write(disk.uuid, 0, b"new!", sr=sr)
    assert sm.vdi_read(snap.uuid, 0, 4, sr=sr) == b"kept"


def test_file_sr_snapshot_is_immutable(env: dict[str, str], tmp_path: Path) -> None:
    with StorageManager(environ=env) as sm:
        sr = new_sr(sm, "file", tmp_path)
        _refusals(sm, sr, tmp_path)
        snap = next(v for v in sm.vdis(sr) if v.is_a_snapshot)
        proc = run_sm(env, "vdi", "resize", snap.uuid, "8M", "--sr", sr)
        lines = proc.stderr.decode().strip().splitlines()
        assert proc.returncode != 0 and len(lines) == 1, lines
        assert "VDIUnavailable (46)" in lines[0] and "snapshot" in lines[0]
        proc = run_sm(env, "vdi", "write", snap.uuid, "data", "--sr", sr)
        assert proc.returncode != 0 and b"VDIUnavailable (46)" in proc.stderr
        assert sm.vdi(snap.uuid, sr).virtual_size == 2 * MiB


@pytest.mark.root
@pytest.mark.nbd  # an LVM volume is reached through its NBD server (no device-mapper here)
def test_lvhd_sr_snapshot_is_immutable(env: dict[str, str], tmp_path: Path,
                                       lvm_sandbox: Any) -> None:
    dev, _ = lvm_sandbox.loop_device(64 * MiB)
    try:
        with StorageManager(environ={**env, "SM_RUN_DIR": str(tmp_path / "r")}) as sm:
            sm.sr_create("lv", "lvhd", {"device": dev})
            _refusals(sm, "lv", tmp_path)
            for vdi in sm.vdis("lv"):
                if not vdi.is_a_snapshot:
                    sm.vdi_delete(vdi.uuid, sr="lv", scope="with-children")
            sm.sr_delete("lv")
    finally:
        lvm_sandbox.detach(dev)


@pytest.mark.root
@pytest.mark.nbd  # an RBD image is reached through its NBD server
def test_rbd_sr_snapshot_is_immutable(env: dict[str, str], tmp_path: Path,
                                      rbd_namespace: str) -> None:
    from tests.rbd.support import device_config

    with StorageManager(environ={**env, "SM_RUN_DIR": str(tmp_path / "r")}) as sm:
        sm.sr_create("rbd", "rbd", device_config())
        _refusals(sm, "rbd", tmp_path)
        for vdi in sm.vdis("rbd"):
            if not vdi.is_a_snapshot:
                sm.vdi_delete(vdi.uuid, sr="rbd", scope="with-children")
        sm.sr_delete("rbd")
