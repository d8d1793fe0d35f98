"""The collector loop's own branches, with a stand-in backend (the real File SR backend is
exercised everywhere else in tests/gc)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sm.gc import Action, Collector, Graph, Node, StepContext, state
from sm.gc.collector import Skip


class Backend:
    final_bytes = 1 << 20

    def __init__(self, gc_dir: Path, graphs: list[Graph], *, skip: bool = False,
                 kick_at: int | None = None) -> None:
        self.gc_dir = gc_dir
        self.graphs, self.skip, self.kick_at = graphs, skip, kick_at
        self.calls = 0
        self.executed: list[Action] = []

    def graph(self) -> Graph:
        self.calls += 1
        if self.calls == self.kick_at:  # a kick arrives while the run finds nothing to do
            state.request_rerun(self.gc_dir)
        return self.graphs[min(self.calls - 1, len(self.graphs) - 1)]

    def recover(self) -> None:
        pass

    def free_bytes(self) -> int:
        return 1 << 40

    def execute(self, action: Action, ctx: StepContext) -> dict[str, Any]:
        if self.skip:
            raise Skip("changed meanwhile")
        self.executed.append(action)
        return {"fact": 1}


EMPTY = Graph.of([Node("x")])
GARBAGE = Graph.of([Node("g", hidden=True), Node("x")])


def test_a_rerun_requested_at_the_end_runs_again(tmp_path: Path) -> None:
    b = Backend(tmp_path, [EMPTY, GARBAGE, EMPTY], kick_at=1)
    summary = Collector(b).run()
    assert summary["result"] == "done" and [a.kind for a in b.executed] == ["remove"]
    assert summary["actions"][0]["fact"] == 1
    assert not state.take_rerun(tmp_path)


def test_without_a_rerun_one_pass(tmp_path: Path) -> None:
    b = Backend(tmp_path, [EMPTY, GARBAGE])
    assert Collector(b).run()["actions"] == [] and b.calls == 1


def test_skip_excludes_the_images_for_the_run(tmp_path: Path) -> None:
    b = Backend(tmp_path, [GARBAGE], skip=True)
    summary = Collector(b).run()
    assert summary["result"] == "done" and b.calls == 2
    assert "changed meanwhile" in summary["skipped"][0]["reason"]
    last = state.read_status(tmp_path)["last_run"]
    assert last["skipped"] == summary["skipped"] and last["result"] == "done"


def test_abort_file_stops_the_run(tmp_path: Path) -> None:
    state.abort_path(tmp_path).write_text("test\n")
    b = Backend(tmp_path, [GARBAGE])
    assert Collector(b).run()["result"] == "aborted" and b.executed == []
