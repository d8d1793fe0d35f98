"""Chain algebra over VDI records: children, depth, garbage, the depth limit (pure functions,
no I/O). Every SR type with image chains uses these; the limit is defined here only."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sm.records import VdiRecord

__all__ = [
    "GC_GARBAGE",
    "GC_KEY",
    "MAX_DEPTH",
    "PARENT_KEY",
    "base_copy",
    "check_depth",
    "children_map",
    "depth",
    "is_garbage",
    "orphans",
    "with_gc_mark",
    "with_parent",
]

MAX_DEPTH = 30
"""The longest chain (images from a leaf to its root) an operation may make, as the original
drivers allow: snapshot, clone and revert refuse beyond it (SnapshotChainTooLong 109), the
collector reports chains near it."""
PARENT_KEY = "vhd-parent"
"""sm_config key naming a VHD VDI's parent (as the original drivers write it)."""
GC_KEY = "gc"
GC_GARBAGE = "garbage"
"""sm_config `gc=garbage`: a hidden base no VDI depends on any more; a later collector may
delete it. Every operation and scan tolerates such bases."""


def children_map(records: Iterable[VdiRecord]) -> dict[str, list[str]]:
    """parent uuid -> uuids of its children (sorted)."""
    out: dict[str, list[str]] = {}
    for r in records:
        if r.parent:
            out.setdefault(r.parent, []).append(r.uuid)
    for kids in out.values():
        kids.sort()
    return out


def base_copy(record: VdiRecord, uuid: str, **changes: Any) -> VdiRecord:
    """The record of a hidden base `uuid` made from `record`'s image (a snapshot's or revert's
    base, a leaf snapshotted in place): read-only, not managed, named "base copy", no snapshot
    relation and no other_config; `changes` on top (sizes, sm_config)."""
    return record.replace(
        uuid=uuid, location=uuid, name_label="base copy", name_description="", hidden=True,
        managed=False, read_only=True, is_a_snapshot=False, snapshot_of="", snapshot_time="",
        other_config={}, **changes)


def depth(by_uuid: Mapping[str, VdiRecord], uuid: str) -> int:
    """Number of images in the chain of `uuid` (1 for a VDI without parent). A parent without
    a record ends the walk; a loop is cut (and counted once)."""
    seen: set[str] = set()
    current: str | None = uuid
    while current and current not in seen:
        seen.add(current)
        record = by_uuid.get(current)
        current = record.parent if record is not None else None
    return len(seen)


def check_depth(find: Callable[[str], VdiRecord | None], uuid: str, what: str) -> None:
    """SnapshotChainTooLong (109) if one more image on the chain of `uuid` would pass
    MAX_DEPTH (`find` looks a record up; the walk stops past the limit); `what` names the
    operation for the message."""
    seen: list[str] = []
    current: str | None = uuid
    while current and current not in seen and len(seen) <= MAX_DEPTH:
        seen.append(current)
        record = find(current)
        current = record.parent if record is not None else None
    if len(seen) + 1 > MAX_DEPTH:
        from sm.errors import SnapshotChainTooLong

        raise SnapshotChainTooLong(f"{what} would make a chain of {len(seen) + 1} images "
                                   f"(limit {MAX_DEPTH})")


def is_garbage(record: VdiRecord, children: Mapping[str, list[str]]) -> bool:
    """A hidden VHD base that no VDI depends on."""
    return record.hidden and record.vdi_type == "vhd" and not children.get(record.uuid)


def with_gc_mark(record: VdiRecord, garbage: bool) -> VdiRecord:
    """The record with `gc=garbage` set or cleared (the same object if nothing changes)."""
    if (record.sm_config.get(GC_KEY) == GC_GARBAGE) == garbage:
        return record
    sm_config = dict(record.sm_config)
    if garbage:
        sm_config[GC_KEY] = GC_GARBAGE
    else:
        sm_config.pop(GC_KEY, None)
    return record.replace(sm_config=sm_config)


def with_parent(record: VdiRecord, parent: str) -> VdiRecord:
    """The record with `parent` and sm_config `vhd-parent` set (or cleared for "")."""
    sm_config = dict(record.sm_config)
    if parent:
        sm_config[PARENT_KEY] = parent
    else:
        sm_config.pop(PARENT_KEY, None)
    return record.replace(parent=parent, sm_config=sm_config)


def orphans(by_uuid: Mapping[str, VdiRecord], start: str) -> list[VdiRecord]:
    """The hidden bases from `start` upwards that no VDI depends on any more, nearest first
    (each one's parent counts without it): what an SR that prunes at once removes."""
    remaining = dict(by_uuid)
    out: list[VdiRecord] = []
    current = remaining.get(start)
    while current is not None and current.hidden and not any(
            r.parent == current.uuid for r in remaining.values()):
        out.append(current)
        del remaining[current.uuid]
        current = remaining.get(current.parent)
    return out
