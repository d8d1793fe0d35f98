"""Chain algebra of the collector: what to remove, what to merge, in which direction, and what
the SR's chains look like (pure functions over a snapshot of the chain graph, no I/O).

A `Graph` holds one `Node` per image. `plan` returns every action that can run now, best
first; the collector runs the first, takes a fresh graph and plans again, so anything a user
operation changed meanwhile is seen before the next step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from sm.chain.records import MAX_DEPTH

__all__ = [
    "DEPTH_LIMIT",
    "DEPTH_WARN",
    "Action",
    "Graph",
    "Node",
    "chain_report",
    "plan",
]

DEPTH_LIMIT = MAX_DEPTH
DEPTH_WARN = 25
"""A chain this deep is reported (`warnings`) before it reaches the limit."""

Direction = Literal["up", "down"]
Kind = Literal["remove", "merge", "leaf-snapshot", "leaf-merge"]


@dataclass(frozen=True)
class Node:
    """One image of the SR."""

    uuid: str
    parent: str = ""
    hidden: bool = False
    vhd: bool = True
    attached: bool = False
    """Attached on this host (any mode): the collector leaves its image alone, except that a
    visible leaf's final merge pauses its data path (the backend decides if it can)."""
    blocks: frozenset[int] = frozenset()
    """Allocated blocks (BAT entries) of this image."""
    block_size: int = 2 * 1024 * 1024
    physical: int = 0
    """Bytes the image occupies (file size / LV size)."""
    data_bytes: int | None = None
    """Bytes of data the image holds if known (a sparse file's allocated bytes): a block
    allocated for a 4 KiB write costs 4 KiB to merge, not a block."""


@dataclass(frozen=True)
class Action:
    """One step of work.

    - `remove`: delete garbage `base` (a hidden image without children).
    - `merge`: merge hidden base `base` with its only child `child`. `up` copies the child's
      blocks into the base, re-parents the grandchildren onto it and deletes the child (a
      visible child keeps its identity: the merged base takes its uuid and location); `down`
      copies the base's blocks the child lacks into the child, re-parents the child onto the
      base's parent and deletes the base.
    - `leaf-merge`: `merge` of a visible leaf that is small enough for the final step
      (`up`, with the leaf's data path paused for its duration).
    - `leaf-snapshot`: a visible leaf too big for that: it is snapshotted in place (its data
      moves into a new hidden base below it, merged by a later `merge` while it keeps running).
    """

    kind: Kind
    base: str
    child: str = ""
    direction: Direction = "up"
    copy_bytes: int = 0
    space_bytes: int = 0
    """Free space the step needs (new blocks it allocates)."""
    reclaim_bytes: int = 0

    @property
    def vdis(self) -> tuple[str, ...]:
        return (self.base, self.child) if self.child else (self.base,)

    def describe(self) -> str:
        if self.kind == "remove":
            return f"remove garbage {self.base}"
        if self.kind == "leaf-snapshot":
            return f"snapshot leaf {self.child} in place (its data moves below it)"
        arrow = f"{self.child} into {self.base}" if self.direction == "up" else (
            f"{self.base} into {self.child}")
        return f"{self.kind} {arrow} ({self.copy_bytes} bytes)"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "base": self.base, "child": self.child,
                "direction": self.direction, "copy_bytes": self.copy_bytes,
                "space_bytes": self.space_bytes, "reclaim_bytes": self.reclaim_bytes,
                "describe": self.describe()}


@dataclass
class Graph:
    nodes: dict[str, Node]
    children: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, nodes: Iterable[Node]) -> Graph:
        by = {n.uuid: n for n in nodes}
        kids: dict[str, list[str]] = {}
        for n in by.values():
            if n.parent:
                kids.setdefault(n.parent, []).append(n.uuid)
        for v in kids.values():
            v.sort()
        return cls(by, kids)

    def kids(self, uuid: str) -> list[str]:
        return self.children.get(uuid, [])

    def chain(self, uuid: str) -> list[str]:
        """`uuid` and its ancestors, leaf first (a missing parent ends it, a loop is cut)."""
        out: list[str] = []
        cur = uuid
        while cur and cur not in out:
            out.append(cur)
            node = self.nodes.get(cur)
            cur = node.parent if node is not None else ""
        return out

    def depth(self, uuid: str) -> int:
        return len(self.chain(uuid))

    def descendants(self, uuid: str) -> set[str]:
        out: set[str] = set()
        todo = [uuid]
        while todo:
            for k in self.kids(todo.pop()):
                if k not in out:
                    out.add(k)
                    todo.append(k)
        return out

    def is_garbage(self, uuid: str) -> bool:
        n = self.nodes[uuid]
        return n.hidden and n.vhd and not self.kids(uuid)


def _bitmap_bytes(bs: int) -> int:
    return max(512, -(-(bs // 512) // 8 // 512) * 512)


def _merge(g: Graph, base: Node, child: Node, final_bytes: int, allow_down: bool
           ) -> Action | None:
    bs = child.block_size
    per_block = bs + _bitmap_bytes(bs)
    # up: a block new to a dynamic (root) base is written whole, others as sector runs
    held = len(child.blocks) * bs
    data = held if child.data_bytes is None else min(held, child.data_bytes)
    up = min(held, data + (0 if base.parent else len(child.blocks - base.blocks) * bs))
    down = len(base.blocks - child.blocks) * bs
    overlap = len(base.blocks & child.blocks) * bs
    leaf = not child.hidden and not g.kids(child.uuid)
    if leaf:
        if up > final_bytes:
            return Action("leaf-snapshot", base.uuid, child.uuid, "up", 0, 4 * per_block, 0)
        return Action("leaf-merge", base.uuid, child.uuid, "up", up,
                      len(child.blocks - base.blocks) * per_block, overlap)
    if child.attached:
        return None
    # down needs a parent for the child to move onto (a root base has none)
    if allow_down and base.parent and down < up:
        return Action("merge", base.uuid, child.uuid, "down", down,
                      len(base.blocks - child.blocks) * per_block, overlap)
    return Action("merge", base.uuid, child.uuid, "up", up,
                  len(child.blocks - base.blocks) * per_block, overlap)


_ORDER = {"remove": 0, "merge": 1, "leaf-merge": 2, "leaf-snapshot": 2}


def plan(g: Graph, *, final_bytes: int, exclude: Iterable[str] = (),
         allow_down: bool = True) -> list[Action]:
    """Every action that can run now, best first: garbage, then merges nearest the root (so a
    leaf is merged only into a base that is itself final), then leaf steps.

    `final_bytes`: the most a leaf-merge may copy while its data path is paused. Actions
    touching an `exclude`d image (or a descendant of one) are left out. `allow_down`: the
    backend can merge a base into its child (else every merge goes up).
    """
    skip: set[str] = set()
    for u in exclude:
        if u in g.nodes:
            skip.add(u)
            skip |= g.descendants(u)
    out: list[tuple[tuple[int, int, str], Action]] = []
    for uuid, n in g.nodes.items():
        if uuid in skip or not n.vhd or not n.hidden or n.attached:
            continue
        kids = g.kids(uuid)
        if not kids:
            out.append(((0, 0, uuid), Action("remove", uuid, reclaim_bytes=n.physical)))
            continue
        if len(kids) != 1 or kids[0] in skip:
            continue
        child = g.nodes.get(kids[0])
        if child is None or not child.vhd:
            continue
        act = _merge(g, n, child, final_bytes, allow_down)
        if act is not None:
            out.append(((_ORDER[act.kind], g.depth(uuid), uuid), act))
    out.sort(key=lambda t: t[0])
    return [a for _, a in out]


def chain_report(g: Graph, actions: Iterable[Action], *,
                 limit: int = DEPTH_LIMIT, warn: int = DEPTH_WARN) -> dict[str, Any]:
    """Per visible VDI: chain depth, the depth once the pending merges are done, how many
    merges are pending in its chain; the garbage; reclaimable bytes; depth warnings."""
    acts = list(actions)
    merged_away = {a.child if a.direction == "up" else a.base
                   for a in acts if a.kind in ("merge", "leaf-merge")}
    by_image: dict[str, list[Action]] = {}
    for a in acts:
        for u in a.vdis:
            by_image.setdefault(u, []).append(a)
    vdis: list[dict[str, Any]] = []
    warnings: list[str] = []
    for uuid in sorted(g.nodes):
        n = g.nodes[uuid]
        if n.hidden:
            continue
        chain = g.chain(uuid)
        pending = {id(a): a for u in chain for a in by_image.get(u, ())}
        depth = len(chain)
        after = len([u for u in chain if u not in merged_away])
        vdis.append({"uuid": uuid, "depth": depth, "depth_after_gc": after,
                     "pending_merges": len(pending), "attached": n.attached,
                     "reclaimable_bytes": sum(a.reclaim_bytes for a in pending.values())})
        if depth >= warn:
            warnings.append(f"VDI {uuid}: chain depth {depth} of at most {limit}"
                            + (f" ({after} after the pending merges)" if after < depth else
                               "; no merge can shorten it (snapshots keep their bases)"))
    garbage = sorted(u for u in g.nodes if g.is_garbage(u))
    return {"vdis": vdis, "garbage": garbage,
            "pending": [a.to_dict() for a in acts],
            "reclaimable_bytes": sum(a.reclaim_bytes for a in acts),
            "warnings": warnings, "depth_limit": limit}
