"""sm.journal: intent entries, steps, crash survival and recovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sm.errors import MetadataError
from sm.faults import crash_env
from sm.journal import Entry, Journal

WRITER = (
    "import sys\n"
    "from sm.faults import crash_point\n"
    "from sm.journal import Journal\n"
    "j = Journal(sys.argv[1])\n"
    "e = j.begin('snapshot', vdi='v1', size=10)\n"
    "crash_point('op.begun')\n"
    "e.step('renamed', base='b1')\n"
    "crash_point('op.renamed')\n"
    "e.step('created', child='c1')\n"
    "crash_point('op.created')\n"
    "e.done()\n"
    "crash_point('op.done')\n"
)


def run_writer(directory: Path, point: str) -> int:
    env = {**os.environ, **crash_env(point)}
    return subprocess.run([sys.executable, "-c", WRITER, str(directory)], env=env,
                          check=False).returncode


def test_begin_step_done(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal")
    e = j.begin("clone", vdi="a", n=3)
    assert [p.id for p in j.pending()] == [e.id]
    e.step("one", x=1)
    e.step("two")
    (listed,) = j.pending()
    assert listed.op == "clone" and dict(listed.data) == {"vdi": "a", "n": 3}
    assert [s.name for s in listed.steps] == ["one", "two"]
    assert listed.step_data("one") == {"x": 1}
    assert listed.has_step("two") and not listed.has_step("three")
    assert listed.last_step is not None and listed.last_step.name == "two"
    assert listed.pid == os.getpid()
    e.done()
    assert j.pending() == []
    assert os.listdir(tmp_path / "journal") == []
    with pytest.raises(RuntimeError):
        e.step("late")


def test_pending_in_creation_order(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    ids = [j.begin(f"op{i}").id for i in range(5)]
    assert [e.id for e in j.pending()] == ids
    assert [e.op for e in j.pending()] == [f"op{i}" for i in range(5)]


def test_context_manager(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    with j.begin("ok") as e:
        e.step("s")
    assert j.pending() == []
    with pytest.raises(ZeroDivisionError):
        with j.begin("fails") as e:
            e.step("half")
            1 / 0  # noqa: B018
    (left,) = j.pending()
    assert left.op == "fails" and not j.is_live(left)  # released: recoverable at once


def test_data_must_be_json(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    with pytest.raises(TypeError):
        j.begin("op", bad=object())
    assert j.pending() == []
    e = j.begin("op")
    with pytest.raises(TypeError):
        e.step("s", bad={1, 2})
    assert j.pending()[0].steps == ()


@pytest.mark.parametrize(
    ("point", "steps"),
    [("op.begun", []), ("op.renamed", ["renamed"]), ("op.created", ["renamed", "created"])],
)
def test_entries_survive_killed_writer(tmp_path: Path, point: str, steps: list[str]) -> None:
    assert run_writer(tmp_path, point) == -9
    j = Journal(tmp_path)
    (e,) = j.pending()
    assert e.op == "snapshot" and dict(e.data) == {"vdi": "v1", "size": 10}
    assert [s.name for s in e.steps] == steps
    assert not j.is_live(e)
    seen: list[list[str]] = []
    assert [r.id for r in j.recover({"snapshot": lambda x: seen.append([s.name for s in x.steps])})] == [e.id]
    assert seen == [steps]
    assert j.pending() == []
    assert os.listdir(tmp_path) == []


def test_killed_after_done_leaves_nothing(tmp_path: Path) -> None:
    assert run_writer(tmp_path, "op.done") == -9
    assert Journal(tmp_path).pending() == []


def test_recover_skips_live_entries(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    live = j.begin("snapshot")  # owned by this process
    code = (
        "import sys\nfrom sm.journal import Journal\n"
        "done = Journal(sys.argv[1]).recover({'snapshot': lambda e: None})\n"
        "print(len(done))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "0"
    assert [e.id for e in j.pending()] == [live.id]
    assert j.is_live(j.pending()[0])
    live.release()
    assert [e.id for e in j.recover({"snapshot": lambda e: None})] == [live.id]


def test_recover_unknown_op_raises_before_running(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.begin("known").release()
    j.begin("mystery").release()
    ran: list[Entry] = []
    with pytest.raises(MetadataError) as info:
        j.recover({"known": ran.append})
    assert info.value.code == 181 and "mystery" in info.value.message
    assert ran == [] and len(j.pending()) == 2


def test_failing_handler_sets_entry_aside(tmp_path: Path) -> None:
    """A replay that cannot make progress is set aside (with its error and the VDIs it
    affects) and does not block the entries after it; retry and discard resolve it."""
    j = Journal(tmp_path)
    vdi = "11111111-2222-4333-8444-555555555555"
    j.begin("op", vdi=vdi).release()
    j.begin("other").release()

    def boom(entry: Entry) -> None:
        raise OSError("disk on fire")

    done = j.recover({"op": boom, "other": lambda e: None})
    assert [e.op for e in done] == ["other"]
    assert j.pending() == []
    (aside,) = j.set_aside_entries()
    assert (aside.op, aside.error, aside.affected) == ("op", "disk on fire", (vdi,))
    assert aside.time > 0
    assert j.unusable() == {vdi: aside}
    assert j.retry(aside.id, {"op": boom}) is False  # failed again: set aside again
    assert [a.id for a in j.set_aside_entries()] == [aside.id]
    assert j.retry(aside.id, {"op": lambda e: None}) is True
    assert j.set_aside_entries() == [] and j.pending() == [] and j.unusable() == {}
    j.begin("op", vdi=vdi).release()
    j.recover({"op": boom})
    assert j.discard(aside.id if False else j.set_aside_entries()[0].id).op == "op"
    assert j.unusable() == {}


def test_failure_in_process_runs_the_handler(tmp_path: Path) -> None:
    """An owned entry whose block raises runs the op's handler in-process with `failure`
    set, and is removed if the handler returns; left for replay if it fails too."""
    seen: list[object] = []
    j = Journal(tmp_path, {"op": lambda e: seen.append(e.failure)})
    with pytest.raises(ZeroDivisionError), j.begin("op"):
        1 / 0  # noqa: B018
    assert len(seen) == 1 and isinstance(seen[0], ZeroDivisionError)
    assert j.pending() == []

    def undo_fails(entry: Entry) -> None:
        raise OSError("undo failed")

    j2 = Journal(tmp_path / "2", {"op": undo_fails})
    with pytest.raises(ZeroDivisionError) as info, j2.begin("op"):
        1 / 0  # noqa: B018
    assert any("replayed" in n for n in info.value.__notes__)
    assert len(j2.pending()) == 1


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b'{"version": 99}', b"\xff\xfe",
     json.dumps({"version": 1, "id": "x", "op": "o", "created": 1, "pid": 1, "host": "h",
                 "data": {}, "steps": []}).encode()],
)
def test_corrupt_entry_raises_with_path(tmp_path: Path, content: bytes) -> None:
    j = Journal(tmp_path)
    bad = tmp_path / f"{time.time_ns():020d}-1-deadbeef.json"
    bad.write_bytes(content)
    with pytest.raises(MetadataError) as info:
        j.pending()
    assert str(bad) in info.value.message
    assert info.value.details["path"] == str(bad)
    with pytest.raises(MetadataError):
        j.recover({"o": lambda e: None})


def test_temp_files_and_stray_locks_ignored(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    (tmp_path / ".x.json.abc.tmp").write_bytes(b"garbage")
    (tmp_path / "00000000000000000001-1-00000000.lock").write_bytes(b"")
    assert j.pending() == []
    j.recover({})
    assert os.listdir(tmp_path) == [".x.json.abc.tmp"]


def test_steps_are_appended_lines(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    e = j.begin("op", a=1)
    first = e.path.read_bytes()
    e.step("one", x=1)
    e.step("two")
    content = e.path.read_bytes()
    assert content.startswith(first) and content.count(b"\n") == 3
    (loaded,) = j.pending()
    assert [s.name for s in loaded.steps] == ["one", "two"]
    assert loaded.step_data("one") == {"x": 1}


def test_torn_step_line_reads_as_not_reached_and_is_cut_off(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    e = j.begin("op")
    e.step("one")
    e.release()
    with open(e.path, "ab") as f:  # a crash in the middle of appending "two"
        f.write(b'{"data": {}, "name": "tw')
    (listed,) = j.pending()
    assert [s.name for s in listed.steps] == ["one"]
    claimed = j.claim(listed.id)
    assert claimed is not None
    claimed.step("three")
    assert [s.name for s in j._load(claimed.path).steps] == ["one", "three"]
    assert b"tw" not in claimed.path.read_bytes()
    claimed.done()


def test_entry_written_whole_with_its_steps_still_reads(tmp_path: Path) -> None:
    """The earlier on-disk form: one JSON document holding the steps, no newline."""
    raw = {"version": 1, "id": "00000000000000000001-1-abcd", "op": "op", "created": 1.0,
           "pid": 1, "host": "h", "data": {}, "steps": [{"name": "s", "time": 1.0, "data": {}}]}
    (tmp_path / f"{raw['id']}.json").write_text(json.dumps(raw))
    (entry,) = Journal(tmp_path).pending()
    assert [s.name for s in entry.steps] == ["s"]
    claimed = Journal(tmp_path).claim(entry.id)
    assert claimed is not None
    claimed.step("t")
    assert [s.name for s in Journal(tmp_path).pending()[0].steps] == ["s", "t"]
    claimed.done()


def test_malformed_complete_step_line_is_corrupt(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    e = j.begin("op")
    e.release()
    with open(e.path, "ab") as f:
        f.write(b"not json\n")
    with pytest.raises(MetadataError, match="corrupt journal entry"):
        j.pending()


def test_unreadable_set_aside_entry_blocks_nothing(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.failed_dir.mkdir()
    (j.failed_dir / "0001-1-dead.json").write_bytes(b"{torn")
    (aside,) = j.set_aside_entries()
    assert aside.op == "?" and "unreadable" in aside.error and aside.affected == ()
    assert j.unusable() == {}
    j.discard(aside.id)
    assert j.set_aside_entries() == []

