"""This layer's data access never ends a toolstack's attachment (found by
tests/api/test_stateful.py): `vdi_read` of a VDI a toolstack attached through its driver
attached it read-only beside the toolstack's attachment and detached after, which dropped the
driver's record of the toolstack's; a `vdi_delete` then deleted the disk in use."""

from __future__ import annotations

from pathlib import Path

import pytest

from sm.api import StorageManager
from sm.errors import VDIInUse

from .conftest import new_sr


def test_api_data_access_leaves_a_toolstack_attachment_alone(manager: StorageManager,
                                                               tmp_path: Path) -> None:
    sr = new_sr(manager, "file", tmp_path)
    disk = manager.vdi_create(1 << 20, "disk", sr=sr)
    manager.vdi_write(disk.uuid, 0, b"data", sr=sr)
    client = manager._client(manager._config(sr))
    client.vdi_attach(disk.ref, True)  # as a toolstack does: vdi_attach + vdi_activate
    for access in (lambda: manager.vdi_read(disk.uuid, 0, 4, sr=sr),
                   lambda: manager.vdi_write(disk.uuid, 0, b"DATA", sr=sr),
                   lambda: manager.vdi_attach(disk.uuid, sr=sr)):
        with pytest.raises(VDIInUse, match="toolstack"):
            access()
        assert client.record(*disk.ref).get("attached") == "rw"
    with pytest.raises(VDIInUse):
        manager.vdi_delete(disk.uuid, sr=sr)
    client.vdi_detach(disk.ref)
    assert manager.vdi_read(disk.uuid, 0, 4, sr=sr) == b"data"
