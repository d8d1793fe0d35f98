"""What the VM methods return: frozen dataclasses with `to_dict()` (see docs/vm-snapshots.md)."""

from __future__ import annotations

from dataclasses import dataclass

from .models import _plain

__all__ = ["VM", "VMDisk", "VMRevertResult", "VMSnapshot", "VMSnapshotDisk", "VMSnapshotNode",
           "VMSnapshotTree"]


@dataclass(frozen=True)
class VMDisk:
    position: int
    sr: str
    """SR uuid."""
    sr_name: str
    vdi: str
    """Public VDI uuid."""
    name_label: str
    kind: str
    """`disk`, or `cdrom` (skipped by snapshots)."""
    virtual_size: int
    missing: bool = False
    """The VDI no longer exists (deleted behind the VM's back)."""

    def to_dict(self) -> dict[str, object]:
        return _plain(self)


@dataclass(frozen=True)
class VM:
    uuid: str
    name: str
    description: str
    created: float
    disks: tuple[VMDisk, ...]
    current: str | None
    """The current VM snapshot (the last taken or reverted to)."""
    snapshots: int

    def to_dict(self) -> dict[str, object]:
        return _plain(self)


@dataclass(frozen=True)
class VMSnapshotDisk:
    sr: str
    vdi: str
    snapshot_sr: str
    snapshot: str
    """Uuid of the snapshot VDI taken of disk `vdi`."""
    export_path: str
    """For an export snapshot: where a backup tool reads it (the `params_nbd` URL of its
    read-only attachment, else its `params` path); empty otherwise."""

    def to_dict(self) -> dict[str, object]:
        return _plain(self)


@dataclass(frozen=True)
class VMSnapshot:
    uuid: str
    vm: str
    name: str
    description: str
    created: float
    parent: str | None
    for_backup: bool
    for_export: bool
    current: bool
    disks: tuple[VMSnapshotDisk, ...]
    missing: tuple[str, ...] = ()
    """Disks of the VM that no longer exist, skipped by the snapshot just taken."""

    def to_dict(self) -> dict[str, object]:
        return _plain(self)


@dataclass(frozen=True)
class VMSnapshotNode:
    snapshot: VMSnapshot
    children: tuple[VMSnapshotNode, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return _plain(self)


@dataclass(frozen=True)
class VMSnapshotTree:
    vm: VM
    current: str | None
    roots: tuple[VMSnapshotNode, ...]

    def to_dict(self) -> dict[str, object]:
        return {"vm": self.vm.to_dict(), "current": self.current,
                "roots": [r.to_dict() for r in self.roots]}

    def walk(self) -> list[VMSnapshot]:
        out: list[VMSnapshot] = []
        stack = list(reversed(self.roots))
        while stack:
            node = stack.pop()
            out.append(node.snapshot)
            stack.extend(reversed(node.children))
        return out


@dataclass(frozen=True)
class VMRevertResult:
    vm: str
    snapshot: str
    disks: tuple[dict[str, str], ...]
    """Per disk: `vdi`, `snapshot`, `path` (`in-place` or `clone-fallback`)."""
    missing: tuple[str, ...] = ()
    """Disks recorded in the snapshot that no longer exist (skipped)."""

    def to_dict(self) -> dict[str, object]:
        return _plain(self)
