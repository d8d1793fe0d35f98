"""Snapshot trees, the libvirt model: each snapshot knows its parent snapshot (the VDI's
current snapshot when it was taken), the VDI knows its current snapshot.

Deleting is always a sequence of single-node removals in post-order (children before their
parent), each of which gives the node's children its parent and, if the node was current,
makes its parent current. So:

- `one`: the node; its children move up; current moves up if it was the node;
- `with-children`: the subtree; current, if inside, ends on the node's parent;
- `children-only`: the subtree below the node; current, if inside, ends on the node.

`metadata_only` edits the tree and leaves the snapshot volumes in the SR.

A deletion is journaled (`tree-delete` in the state journal, crash points
`api.tree.delete.{volume,disk}`): the nodes in order, each with the volume to delete, and for a
disk deleted with its snapshots the disk itself. The driver's `vdi_delete` and the node's
removal commit separately, so a process killed in between is finished by the next command
(`recover`: every step again; a volume already gone is skipped). A driver error part-way ends
the deletion there, as before.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sm.errors import InvalidArg, VDIMissing
from sm.faults import crash_point

from .models import VDI, SnapshotTree, TreeNode
from .state import Key, SnapshotNode, State

if TYPE_CHECKING:
    from .client import SRClient
    from .manager import StorageManager
    from .state import JournalEntry

__all__ = ["OP", "add", "build", "check_lineage", "delete", "delete_all", "postorder",
           "recover", "resolve_snapshot"]

OP = "tree-delete"


def children_map(nodes: Iterable[SnapshotNode]) -> dict[Key | None, list[Key]]:
    out: dict[Key | None, list[Key]] = {}
    for node in nodes:
        out.setdefault(node.parent, []).append(node.key)
    return out


K = TypeVar("K", bound=Hashable)


def postorder(edges: Iterable[tuple[K, K | None]], root: K) -> list[K]:
    """`root` and its descendants, every child before its parent, from (node, parent) pairs
    (snapshot trees of a VDI here, VM snapshot trees in `sm.api.vms`)."""
    kids: dict[K | None, list[K]] = {}
    for key, parent in edges:
        kids.setdefault(parent, []).append(key)
    out: list[K] = []
    stack: list[tuple[K, bool]] = [(root, False)]
    while stack:
        key, expanded = stack.pop()
        if expanded:
            out.append(key)
            continue
        stack.append((key, True))
        stack.extend((child, False) for child in reversed(kids.get(key, [])))
    return out


def _edges(nodes: Iterable[SnapshotNode]) -> list[tuple[Key, Key | None]]:
    return [(n.key, n.parent) for n in nodes]


def add(state: State, vdi: VDI, snap: Key, name: str, description: str) -> None:
    vdi_key = (vdi.sr, vdi.uuid)
    clash = [n.uuid for n in state.tree(vdi_key)[0] if n.name == name]
    if clash:
        from .names import DuplicateName

        warnings.warn(DuplicateName(
            f"{vdi.uuid} already has a snapshot called {name!r} ({', '.join(clash)}); "
            f"revert to them by uuid, or rename one (sm vdi rename)"), stacklevel=3)
    state.add_snapshot(SnapshotNode(snap[0], snap[1], vdi.sr, vdi.uuid, state.current(vdi_key),
                                    name, description, time.time()))


def build(state: State, vdi: VDI) -> SnapshotTree:
    nodes, current = state.tree((vdi.sr, vdi.uuid))
    kids = children_map(nodes)
    by_key = {n.key: n for n in nodes}

    def make(key: Key) -> TreeNode:
        n = by_key[key]
        return TreeNode(n.uuid, n.sr, n.name, n.description, n.created, key == current,
                        tuple(make(k) for k in kids.get(key, [])))

    roots = [n.key for n in nodes if n.parent is None or n.parent not in by_key]
    return SnapshotTree(vdi, current[1] if current else None, tuple(make(k) for k in roots))


def resolve_snapshot(state: State, vdis: list[VDI], target: VDI, ref: str) -> VDI:
    """A snapshot of `target` by uuid or by its name in the tree; a snapshot of another VDI
    is refused (see `check_lineage`)."""
    nodes, _ = state.tree((target.sr, target.uuid))
    named = [n.uuid for n in nodes if n.name == ref]
    if len(named) > 1:
        raise InvalidArg(f"{len(named)} snapshots of {target.uuid} are called {ref!r} "
                         f"({', '.join(named)}); use a uuid")
    wanted = named[0] if named else ref.lower()
    for vdi in vdis:
        if vdi.uuid == wanted or vdi.backing == wanted:
            if not vdi.is_a_snapshot and vdi.uuid not in {n.uuid for n in nodes}:
                raise InvalidArg(f"{ref} is not a snapshot")
            check_lineage(state, target, vdi, vdis)
            return vdi
    raise VDIMissing(f"no snapshot {ref!r} of {target.uuid}")


def check_lineage(state: State, target: VDI, snap: VDI,
                  vdis: Sequence[VDI] = ()) -> None:
    """Revert takes only snapshots of its target: a snapshot whose `snapshot_of` (as
    presented: a retired backing reads as its public VDI) is the target, or one in the
    target's own snapshot tree (snapshots taken through this layer, kept across reverts by
    clone). Anything else would overwrite the target with another disk's data: InvalidArg."""
    if snap.sr == target.sr and snap.snapshot_of == target.uuid:
        return
    node = state.snapshot((snap.sr, snap.uuid))
    if node is not None and (node.vdi_sr, node.vdi) == (target.sr, target.uuid):
        return
    owner = snap.snapshot_of or (node.vdi if node is not None else "")
    named = next((v.name_label for v in vdis if v.uuid == owner and v.name_label), "")
    of = (f"a snapshot of VDI {owner}{f' ({named})' if named else ''}" if owner
          else "not a snapshot of any VDI")
    raise InvalidArg(f"{snap.uuid} is {of}, not of VDI {target.uuid}"
                     f"{f' ({target.name_label})' if target.name_label else ''}: "
                     "a VDI can only be reverted to one of its own snapshots")


def _removal(state: State, client: SRClient, vdis: list[VDI], order: list[Key],
             metadata_only: bool, disk: VDI | None = None) -> None:
    """Remove the nodes of `order` (and their volumes unless `metadata_only`), then `disk`'s
    volume and state; journaled (see the module docstring)."""
    by_uuid = {v.uuid: v for v in vdis}
    data = {"steps": [[list(k), None if metadata_only or k[1] not in by_uuid
                       else list(by_uuid[k[1]].ref)] for k in order],
            "disk": [disk.sr, disk.uuid, *disk.ref] if disk is not None else None}
    entry = state.journal_begin(OP, client.sr.uuid, **data)
    try:
        _run(state, client, entry, data)
    except BaseException:
        state.journal_done(entry)  # a driver error ends the deletion there (not a crash)
        raise


def _run(state: State, client: SRClient, entry: int, data: dict[str, Any]) -> None:
    for key, ref in data["steps"]:
        if ref is not None:
            with contextlib.suppress(VDIMissing):
                client.vdi_delete((ref[0], ref[1]))
            crash_point("api.tree.delete.volume")
        state.remove_snapshot((key[0], key[1]))
    disk = data.get("disk")
    if disk:
        with contextlib.suppress(VDIMissing):
            client.vdi_delete((disk[2], disk[3]))
        crash_point("api.tree.delete.disk")
    with state.transaction():
        if disk:
            state.forget_vdi(disk[0], disk[1])
        state.journal_done(entry)


def recover(mgr: StorageManager, entry: JournalEntry) -> None:
    """Finish a deletion a crash interrupted (called with the API lock held)."""
    cfg = next((c for c in mgr._configs() if c.uuid == entry.sr), None)
    if cfg is None:
        mgr.state.journal_done(entry.id)
        return
    _run(mgr.state, mgr._client(cfg), entry.id, entry.data)


def delete(state: State, client: SRClient, vdis: list[VDI], key: Key, scope: str,
           metadata_only: bool) -> list[str]:
    node = state.snapshot(key)
    if node is None:
        raise VDIMissing(f"{key[1]} is not in a snapshot tree")
    nodes, _ = state.tree((node.vdi_sr, node.vdi))
    order = [key] if scope == "one" else postorder(_edges(nodes), key)
    if scope == "children-only":
        order = order[:-1]
    _removal(state, client, vdis, order, metadata_only)
    return [k[1] for k in order]


def delete_all(state: State, client: SRClient, vdis: list[VDI], vdi: VDI, *,
               and_vdi: bool = False, snapshots: bool = True) -> list[str]:
    """Every snapshot in the tree of `vdi` (leaves first; none unless `snapshots`); with
    `and_vdi`, `vdi` itself last (its volume and its state), in the same journaled deletion."""
    nodes, _ = state.tree((vdi.sr, vdi.uuid))
    order: list[Key] = []
    for root in [n.key for n in nodes if n.parent is None and snapshots]:
        order += postorder(_edges(nodes), root)
    _removal(state, client, vdis, order, False, vdi if and_vdi else None)
    return [k[1] for k in order]
