"""The collector's chain algebra (`sm.gc.plan`): pure functions over a graph of nodes."""

from __future__ import annotations

from sm.gc import Action, Graph, Node, chain_report, plan

MiB = 1 << 20
BS = 2 * MiB


def n(uuid: str, parent: str = "", *, hidden: bool = False, blocks: range | set[int] = (),
      attached: bool = False) -> Node:
    return Node(uuid, parent, hidden, blocks=frozenset(blocks), attached=attached,
                physical=len(blocks) * BS)


def kinds(actions: list[Action]) -> list[tuple[str, str, str, str]]:
    return [(a.kind, a.base, a.child, a.direction) for a in actions]


def test_garbage_first_then_merges_root_first_then_leaves() -> None:
    g = Graph.of([
        n("r", hidden=True, blocks=range(8)),
        n("h", "r", hidden=True, blocks={1}),
        n("x", "h", blocks={2}),
        n("y", "h", blocks={3}),
        n("junk", "r2", hidden=True),
        n("r2", hidden=True, blocks={0}),
        n("z", "r2"),
    ])
    # r2 has two children (junk, z): not mergeable; junk is a hidden leaf: garbage
    acts = plan(g, final_bytes=64 * MiB)
    assert kinds(acts) == [("remove", "junk", "", "up"), ("merge", "r", "h", "up")]
    assert acts[0].reclaim_bytes == 0 and acts[1].copy_bytes == BS


def test_direction_copies_less_and_down_needs_a_parent() -> None:
    # big base b over root r, small hidden child c: down would copy 7 blocks, up 1
    g = Graph.of([n("r", hidden=True, blocks={0}), n("s", "r"),
                  n("b", "r", hidden=True, blocks=range(8)),
                  n("c", "b", hidden=True, blocks={0}), n("l1", "c"), n("l2", "c")])
    assert kinds(plan(g, final_bytes=0)) == [("merge", "b", "c", "up")]
    # small base, big child: down (b has a parent to move c onto)
    g = Graph.of([n("r", hidden=True, blocks={0}), n("s", "r"),
                  n("b", "r", hidden=True, blocks={0}),
                  n("c", "b", hidden=True, blocks=range(1, 9)), n("l1", "c"), n("l2", "c")])
    [a] = plan(g, final_bytes=0)
    assert (a.direction, a.copy_bytes, a.reclaim_bytes) == ("down", BS, 0)
    # the same without a grandparent: up, whatever it costs
    g = Graph.of([n("b", hidden=True, blocks={0}),
                  n("c", "b", hidden=True, blocks=range(1, 9)), n("l1", "c"), n("l2", "c")])
    assert kinds(plan(g, final_bytes=0)) == [("merge", "b", "c", "up")]


def test_leaf_small_is_merged_big_is_snapshotted_first() -> None:
    g = Graph.of([n("b", hidden=True, blocks=range(4)), n("x", "b", blocks={0, 1})])
    [a] = plan(g, final_bytes=4 * MiB)
    assert (a.kind, a.copy_bytes, a.reclaim_bytes) == ("leaf-merge", 4 * MiB, 4 * MiB)
    [a] = plan(g, final_bytes=2 * MiB)
    assert a.kind == "leaf-snapshot" and a.child == "x"


def test_attached_images_are_left_alone_except_a_visible_leaf() -> None:
    g = Graph.of([n("b", hidden=True, blocks={0}), n("x", "b", attached=True),
                  n("g", hidden=True, attached=True)])
    assert kinds(plan(g, final_bytes=MiB)) == [("leaf-merge", "b", "x", "up")]
    g = Graph.of([n("b", hidden=True, attached=True), n("x", "b")])
    assert plan(g, final_bytes=MiB) == []
    g = Graph.of([n("b", hidden=True), n("c", "b", hidden=True, attached=True), n("x", "c"),
                  n("y", "c")])
    assert plan(g, final_bytes=MiB) == []


def test_exclude_covers_descendants() -> None:
    g = Graph.of([n("r", hidden=True), n("h", "r", hidden=True), n("x", "h"), n("y", "h"),
                  n("b2", hidden=True), n("z", "b2")])
    assert {a.base for a in plan(g, final_bytes=MiB)} == {"r", "b2"}
    assert {a.base for a in plan(g, final_bytes=MiB, exclude=["r"])} == {"b2"}
    assert plan(g, final_bytes=MiB, exclude=["r", "z"]) == []


def test_raw_and_visible_bases_are_not_garbage() -> None:
    g = Graph.of([Node("raw", hidden=True, vhd=False), n("v"), n("s"), n("x", "s")])
    assert plan(g, final_bytes=MiB) == []


def test_report_depths_pending_and_warnings() -> None:
    nodes = [n("h0", hidden=True, blocks={0})]
    for i in range(1, 27):  # a chain of hidden single-child bases under one leaf
        nodes.append(n(f"h{i}", f"h{i - 1}", hidden=True, blocks={i % 4}))
    nodes.append(n("leaf", "h26", blocks={1}))
    nodes.append(n("other", "h0"))
    g = Graph.of(nodes)
    rep = chain_report(g, plan(g, final_bytes=64 * MiB))
    by = {v["uuid"]: v for v in rep["vdis"]}
    assert by["leaf"]["depth"] == 28
    assert by["leaf"]["depth_after_gc"] == 2  # h0 stays: it has two children
    assert by["leaf"]["pending_merges"] == 26
    assert by["other"] == {"uuid": "other", "depth": 2, "depth_after_gc": 2,
                           "pending_merges": 0, "attached": False, "reclaimable_bytes": 0}
    [w] = rep["warnings"]
    assert "leaf" in w and "depth 28 of at most 30" in w and "2 after" in w
    assert rep["garbage"] == []
