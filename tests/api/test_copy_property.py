"""Copy with snapshots against a model: random histories of writes, snapshots, reverts and
snapshot deletions on a File SR, then `vdi_copy(snapshots=True)`; every snapshot and the VDI
read the same bytes at the destination as at the source, and the tree has the same shape.
The delta between consecutive states is computed from the chains' images (sm.api.copyplan), so
branches, reverts and deleted middle snapshots are what can break it."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sm.api import StorageManager

from .conftest import new_sr

MiB = 1 << 20
SIZE = 8 * MiB
BLOCK = 2 * MiB

op = st.one_of(
    st.tuples(st.just("write"), st.integers(0, SIZE // 4096 - 1), st.integers(1, 255)),
    st.tuples(st.just("snapshot"), st.just(0), st.just(0)),
    st.tuples(st.just("revert"), st.integers(0, 99), st.just(0)),
    st.tuples(st.just("delete"), st.integers(0, 99), st.just(0)),
)


def _tree_shape(sm: StorageManager, ref: str, sr: str) -> list[tuple[str, str | None, bool]]:
    tree = sm.vdi_tree(ref, sr=sr)
    out: list[tuple[str, str | None, bool]] = []

    def walk(nodes: tuple, parent: str | None) -> None:  # type: ignore[type-arg]
        for n in nodes:
            out.append((n.name, parent, n.current))
            walk(n.children, n.name)

    walk(tree.roots, None)
    return sorted(out, key=lambda t: t[0])


@settings(max_examples=int(os.environ.get("SM_COPY_EXAMPLES", "6")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(op, min_size=3, max_size=14))
def test_copy_with_snapshots_matches_the_source(env: dict[str, str], tmp_path_factory: object,
                                                ops: list[tuple[str, int, int]]) -> None:
    base = Path(tmp_path_factory.mktemp("copyprop"))  # type: ignore[attr-defined]
    with StorageManager(environ={**env, "SM_HOME": str(base / "home")}) as sm:
        a, b = new_sr(sm, "file", base, "a"), new_sr(sm, "file", base, "b")
        disk = sm.vdi_create(SIZE, "d", sr=a).uuid
        n = 0
        for kind, x, y in ops:
            snaps = [node.name for node in sm.vdi_tree(disk, sr=a).walk()]
            if kind == "write":
                sm.vdi_write(disk, x * 4096, bytes([y]) * 4096, sr=a)
            elif kind == "snapshot":
                n += 1
                sm.vdi_snapshot(disk, f"s{n}", sr=a)
            elif snaps and kind == "revert":
                sm.vdi_revert(disk, snaps[x % len(snaps)], sr=a)
            elif snaps and kind == "delete":
                sm.vdi_delete(snaps[x % len(snaps)], sr=a)
        result = sm.vdi_copy(disk, b, sr=a, snapshots=True)
        new = result.vdi.uuid
        assert _tree_shape(sm, disk, a) == _tree_shape(sm, new, b)
        old_nodes = {node.name: node.uuid for node in sm.vdi_tree(disk, sr=a).walk()}
        new_nodes = {node.name: node.uuid for node in sm.vdi_tree(new, sr=b).walk()}
        pairs = [(disk, new)] + [(old_nodes[k], new_nodes[k]) for k in old_nodes]
        for old, copy in pairs:
            for off in range(0, SIZE, BLOCK):
                assert sm.vdi_read(old, off, BLOCK, sr=a) == sm.vdi_read(copy, off, BLOCK, sr=b)
