"""What the API returns: plain frozen dataclasses with `to_dict()` for JSON output."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["SR", "VDI", "RevertResult", "SnapshotTree", "TreeNode"]

RevertPath = Literal["in-place", "clone-fallback"]


def _plain(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = _plain(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        elif isinstance(value, tuple | list):
            value = [_plain(v) if dataclasses.is_dataclass(v) else v for v in value]
        out[f.name] = value
    return out


@dataclass(frozen=True)
class SR:
    name: str
    type: str
    uuid: str
    device_config: Mapping[str, str]
    embedded: bool = False
    """The embedded default SR (declared by no registry file)."""

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True)
class VDI:
    """A VDI as this layer presents it. `uuid`, `location`, `name_label` and
    `name_description` are the public identity; `backing`/`backing_location` name the SR
    volume that holds the data (different after a revert by clone)."""

    sr: str
    uuid: str
    location: str
    name_label: str
    name_description: str
    virtual_size: int
    physical_utilisation: int
    type: str = "user"
    read_only: bool = False
    hidden: bool = False
    is_a_snapshot: bool = False
    snapshot_of: str = ""
    snapshot_time: str = ""
    parent: str = ""
    backing: str = ""
    backing_location: str = ""
    sm_config: Mapping[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> tuple[str, str]:
        """(uuid, location) of the backing, as requests to the driver name it."""
        return (self.backing or self.uuid, self.backing_location or self.location)

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True)
class TreeNode:
    uuid: str
    sr: str
    name: str
    description: str
    created: float
    current: bool
    children: tuple[TreeNode, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True)
class SnapshotTree:
    vdi: VDI
    current: str | None
    roots: tuple[TreeNode, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"vdi": self.vdi.to_dict(), "current": self.current,
                "roots": [r.to_dict() for r in self.roots]}

    def walk(self) -> list[TreeNode]:
        out: list[TreeNode] = []
        stack = list(reversed(self.roots))
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(reversed(node.children))
        return out


@dataclass(frozen=True)
class RevertResult:
    vdi: VDI
    snapshot: str
    path: RevertPath
    safety_snapshot: str | None = None
    """Uuid of the safety snapshot taken before the revert (removed on success)."""

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)
