"""The storage manager API: one entry class over SR drivers spoken to in SMAPIv1.

    from sm.api import StorageManager

    with StorageManager() as sm:
        disk = sm.vdi_create(64 << 20, "disk1")
        snap = sm.vdi_snapshot(disk.uuid, "clean")
        sm.vdi_write(disk.uuid, 0, b"changed")
        result = sm.vdi_revert(disk.uuid, "clean")   # result.path: in-place | clone-fallback

See docs/api.md. Errors are `sm.errors.SMError` subclasses (driver Faults come back typed).
"""

from __future__ import annotations

from .manager import StorageManager
from .models import SR, VDI, RevertResult, SnapshotTree, TreeNode

__all__ = ["SR", "VDI", "RevertResult", "SnapshotTree", "StorageManager", "TreeNode"]
