"""What a copy of a VDI reads (`sm.api.copy`): the content states to reproduce at the
destination in order and, for each, the extents to rewrite. The first state rewrites every
extent its chain has allocated; each later one only the extents of the images its chain does
not share with the previous state's (`sm_vdi_allocation`); an SR type that cannot say is read
whole."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sm.errors import Unimplemented

from . import trees
from .models import VDI
from .state import Key, SnapshotNode

if TYPE_CHECKING:
    from .client import SRClient
    from .manager import StorageManager

__all__ = ["Extent", "Step", "plan"]

log = logging.getLogger(__name__)
Extent = tuple[int, int]


@dataclass
class Step:
    """One content state to reproduce at the destination, in order."""

    vdi: VDI
    node: SnapshotNode | None        # its tree entry; None for the VDI itself
    parent: Key | None               # the source tree parent that is copied too
    extents: list[Extent]
    fresh: bool                      # the destination reads zeros over `extents`


def _merge(extents: Iterable[Extent], size: int) -> list[Extent]:
    out: list[list[int]] = []
    for off, length in sorted(extents):
        end = min(off + length, size)
        if end <= off:
            continue
        if out and out[-1][1] >= off:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([off, end])
    return [(a, b - a) for a, b in out]


def _allocation(client: SRClient, vdi: VDI) -> dict[tuple[str, str], list[Extent]] | None:
    """Image (uuid, path) -> extents of `vdi`'s chain; None if the SR type cannot say."""
    try:
        doc = json.loads(client.call("sm_vdi_allocation", vdi=vdi.ref))
    except Unimplemented:
        return None
    images: dict[tuple[str, str], list[Extent]] = {}
    for img in doc["images"]:
        # uuid and path: an image copied by a snapshot may keep its footer uuid
        images[(str(img["uuid"]), str(img.get("path", "")))] = [
            (int(a), int(b)) for a, b in img["extents"]]
    return images


def plan(mgr: StorageManager, src: SRClient, vdis: list[VDI], vdi: VDI,
         with_snapshots: bool) -> list[Step]:
    """The states to reproduce, in order (with_snapshots: the snapshots in tree order, a
    parent before its children; the VDI itself last), each with the extents to rewrite."""
    order: list[tuple[VDI, SnapshotNode | None, Key | None]] = []
    if with_snapshots:
        nodes, _ = mgr.state.tree((vdi.sr, vdi.uuid))
        by_uuid = {v.uuid: v for v in vdis}
        kids = trees.children_map(nodes)
        keys = {n.key for n in nodes}
        by_key = {n.key: n for n in nodes}

        def walk(key: Key, parent: Key | None) -> None:
            node = by_key[key]
            snap = by_uuid.get(node.uuid) if node.sr == vdi.sr else None
            if snap is None:
                log.warning("snapshot %s of %s has no volume: not copied", node.uuid, vdi.uuid)
            else:
                order.append((snap, node, parent))
                parent = key
            for child in kids.get(key, []):
                walk(child, parent)

        for n in nodes:
            if n.parent is None or n.parent not in keys:
                walk(n.key, None)
    order.append((vdi, None, None))
    sizes = [v.virtual_size for v, _, _ in order]
    if any(b < a for a, b in itertools.pairwise(sizes)):
        raise Unimplemented(f"the snapshots of {vdi.uuid} do not grow in tree order; copy "
                            "without --snapshots")
    steps: list[Step] = []
    prev: dict[tuple[str, str], list[Extent]] | None = None
    for i, (v, node, parent) in enumerate(order):
        amap = _allocation(src, v)
        size = v.virtual_size
        if amap is None or (i > 0 and prev is None):
            extents = [(0, size)]
        elif i == 0:
            extents = [e for ext in amap.values() for e in ext]
        else:
            assert prev is not None
            changed = set(amap) ^ set(prev)
            extents = [e for k in changed for e in (amap.get(k) or prev.get(k) or [])]
        steps.append(Step(v, node, parent, _merge(extents, size), i == 0))
        prev = amap
    return steps
