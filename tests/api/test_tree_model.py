"""Snapshot-tree operations against a model of the tree (hypothesis state machine).

The machine drives a real File SR through `StorageManager`: snapshot, revert (in place and by
clone fallback), and the four kinds of snapshot deletion. The model is a parent map, the
current snapshot and what each snapshot reads; after every step the API's tree, the current
snapshot and the VDI's content must match it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sm.api import StorageManager

SIZE = 1024 * 1024


class TreeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="sm-tree-"))
        self.sm = StorageManager(environ={"SM_HOME": str(self.tmp), "SM_RUN_DIR":
                                          str(self.tmp / "run"), "PATH": "/usr/bin:/bin"})
        self.disk = self.sm.vdi_create(SIZE, "disk").uuid
        self.parent: dict[str, str | None] = {}
        self.content: dict[str, bytes] = {}
        self.current: str | None = None
        self.data = bytes(16)
        self.counter = 0

    def teardown(self) -> None:
        self.sm.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _delete(self, gone: list[str]) -> None:
        for uuid in gone:  # children before parents, as the model of "one" each
            parent = self.parent.pop(uuid)
            for child, p in self.parent.items():
                if p == uuid:
                    self.parent[child] = parent
            if self.current == uuid:
                self.current = parent
            self.content.pop(uuid, None)

    def _subtree(self, root: str) -> list[str]:
        out: list[str] = []
        for child in [c for c, p in self.parent.items() if p == root]:
            out += self._subtree(child)
        return [*out, root]

    @rule(byte=st.integers(1, 255))
    def write(self, byte: int) -> None:
        self.data = bytes([byte]) * 16
        self.sm.vdi_write(self.disk, 0, self.data)

    @rule()
    def snapshot(self) -> None:
        self.counter += 1
        snap = self.sm.vdi_snapshot(self.disk, f"s{self.counter}").uuid
        self.parent[snap] = self.current
        self.current = snap
        self.content[snap] = self.data

    @precondition(lambda self: self.parent)
    @rule(data=st.data(), clone=st.booleans())
    def revert(self, data: st.DataObject, clone: bool) -> None:
        snap = data.draw(st.sampled_from(sorted(self.parent)))
        self.sm.set_setting("revert", "clone" if clone else "auto")
        result = self.sm.vdi_revert(self.disk, snap)
        assert result.path == ("clone-fallback" if clone else "in-place")
        assert result.vdi.uuid == self.disk
        self.current = snap
        self.data = self.content[snap]

    @precondition(lambda self: self.parent)
    @rule(data=st.data(), scope=st.sampled_from(["one", "with-children", "children-only"]),
          metadata_only=st.booleans())
    def delete(self, data: st.DataObject, scope: str, metadata_only: bool) -> None:
        snap = data.draw(st.sampled_from(sorted(self.parent)))
        order = [snap] if scope == "one" else self._subtree(snap)
        if scope == "children-only":
            order = order[:-1]
        removed = self.sm.vdi_delete(snap, scope=scope,  # type: ignore[arg-type]
                                     metadata_only=metadata_only)
        assert removed == order
        self._delete(order)
        listed = {v.uuid for v in self.sm.vdis() if v.is_a_snapshot}
        for uuid in order:
            assert (uuid in listed) == metadata_only

    @invariant()
    def tree_matches(self) -> None:
        tree = self.sm.vdi_tree(self.disk)
        assert tree.current == self.current
        seen: dict[str, str | None] = {}

        def walk(nodes, parent):  # type: ignore[no-untyped-def]
            for n in nodes:
                seen[n.uuid] = parent
                assert n.current == (n.uuid == self.current)
                walk(n.children, n.uuid)

        walk(tree.roots, None)
        assert seen == self.parent

    @invariant()
    def content_matches(self) -> None:
        assert self.sm.vdi_read(self.disk, 0, 16) == self.data


TreeMachine.TestCase.settings = settings(
    max_examples=12, stateful_step_count=10, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_snapshot_tree = TreeMachine.TestCase
