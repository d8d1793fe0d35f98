"""`metadata_only` edits snapshot trees only: on a disk, or a snapshot in no tree, it is refused
and nothing is deleted (found by tests/api/test_stateful.py: `vdi_delete(disk,
scope="with-children", metadata_only=True)` deleted the disk and its snapshots' volumes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sm.api import StorageManager
from sm.errors import InvalidArg

from .conftest import new_sr


@pytest.mark.parametrize("scope", ["one", "with-children", "children-only"])
def test_metadata_only_delete_of_a_disk_is_refused(manager: StorageManager, tmp_path: Path,
                                                   scope: str) -> None:
    sr = new_sr(manager, "file", tmp_path)
    disk = manager.vdi_create(1 << 20, "disk", sr=sr)
    manager.vdi_write(disk.uuid, 0, b"keep me", sr=sr)
    snap = manager.vdi_snapshot(disk.uuid, "s1", sr=sr)
    before = manager.vdis(sr, hidden=True)
    with pytest.raises(InvalidArg):
        manager.vdi_delete(disk.uuid, sr=sr, scope=scope, metadata_only=True)  # type: ignore[arg-type]
    assert manager.vdis(sr, hidden=True) == before
    assert manager.vdi_read(disk.uuid, 0, 7, sr=sr) == b"keep me"
    assert [n.uuid for n in manager.vdi_tree(disk.uuid, sr=sr).walk()] == [snap.uuid]
