"""Crash consistency: SIGKILL `bin/FileSR` at every crash point of every journaled command, then
attach and check that every VDI reads what it read before the command or what it would read
after it, that every image checks clean, that the records match the files, and that the SR
keeps working.

The cases come from `FileSR.CRASH_POINTS` (command -> steps; crash point `f"{command}:{step}"`),
so a new step is tested as soon as the driver declares it. Each case is a separate test.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sm.faults import crash_env
from tests.contract.conftest import FILE
from tests.contract.harness import SRHarness
from tests.smapi import dumps

MiB = 1 << 20


def _crash_points() -> list[tuple[str, str]]:
    try:
        from srtypes.file import FileSR
    except ImportError:
        return []
    return [(cmd, step) for cmd, steps in sorted(FileSR.CRASH_POINTS.items()) for step in steps]


CASES = _crash_points()
# a second delete scenario: the deleted VDI has children, so it is hidden, not removed
CASES += [("vdi_delete+base", step) for c, step in list(CASES) if c == "vdi_delete"]


@dataclass
class Scenario:
    """The SR before the interrupted command, and what each VDI may read afterwards."""

    sr: SRHarness
    a: str  # a VDI with data, snapshotted and cloned
    s1: str  # a snapshot of a (older content)
    c: str  # a clone of a
    before: dict[str, bytes] = field(default_factory=dict)
    after: dict[str, bytes | None] = field(default_factory=dict)  # None: gone afterwards
    new_from: str | None = None  # snapshot/clone: the new VDI reads this VDI's content
    new_is_snapshot: bool = False
    grown: tuple[str, int] | None = None  # resize: (vdi, new size)


def _scenario(tmp_path: Path) -> Scenario:
    sr = SRHarness.make(FILE, tmp_path).create()
    rng = random.Random(42)
    a = sr.vdi_create(8 * MiB, "A", "crash me")
    sr.write(a, [(0, rng.randbytes(MiB)), (5 * MiB + 3, rng.randbytes(70_000))])
    s1 = sr.snapshot(a)
    sr.write(a, [(MiB // 2, rng.randbytes(MiB)), (8 * MiB - 10, b"A-now-tail")])
    c = sr.clone(a)
    sr.write(c, [(3 * MiB, rng.randbytes(200_000))])
    sr.write(a, [(7 * MiB, b"a after the clone")])
    sc = Scenario(sr, a, s1, c)
    sc.before = {u: bytes(m) for u, m in sr.model.items()}
    sc.after = dict(sc.before)
    return sc


def _request(sc: Scenario, command: str) -> dict[str, Any]:
    sr = sc.sr
    if command in ("vdi_snapshot", "vdi_clone"):
        sc.new_from, sc.new_is_snapshot = sc.a, command == "vdi_snapshot"
        return sr.struct(command, vdi=sc.a)
    if command == "vdi_revert":
        sc.after[sc.a] = sc.before[sc.s1]
        return sr.struct(command, [sc.a], vdi=sc.s1)
    if command == "vdi_delete":
        sc.after[sc.a] = None
        return sr.struct(command, vdi=sc.a)
    if command == "vdi_delete+base":
        # a type=single snapshot other VDIs sit on: delete hides it instead of removing it
        single = sr.snapshot(sc.c, type="single")
        sc.before[single] = bytes(sr.model[single])
        sc.after = dict(sc.before)
        sc.after[single] = None
        return sr.struct("vdi_delete", vdi=single)
    if command == "vdi_resize":
        sc.grown = (sc.a, 12 * MiB)
        return sr.struct(command, [str(12 * MiB)], vdi=sc.a)
    pytest.fail(f"no crash scenario for {command}: add one to {__file__}")


def _acceptable(sc: Scenario, uuid: str, got: bytes) -> bool:
    if got == sc.before[uuid]:
        return True
    want = sc.after.get(uuid)
    if want is not None and got == want:
        return True
    if sc.grown and sc.grown[0] == uuid:
        old = sc.before[uuid]
        return len(got) >= sc.grown[1] and got[: len(old)] == old and not any(got[len(old) :])
    return False


RECOVERY: dict[str, Callable[[Scenario], object]] = {
    # the next attach replays the journal
    "attach": lambda sc: sc.sr.call("sr_attach"),
    # no attach: the next chain-changing operation (on another VDI) replays it first
    "next-op": lambda sc: sc.sr.snapshot(sc.c),
}


@pytest.mark.skipif(not CASES, reason="the File SR (FileSR.CRASH_POINTS) is not importable")
@pytest.mark.parametrize("recovery", sorted(RECOVERY))
@pytest.mark.parametrize("command,step", CASES, ids=[f"{c}:{s}" for c, s in CASES])
def test_crash_then_recover(tmp_path: Path, command: str, step: str, recovery: str) -> None:
    sc = _scenario(tmp_path)
    sr = sc.sr
    struct = _request(sc, command)
    exe = sr.with_transport(process=True).transport
    point = f"{command.partition('+')[0]}:{step}"
    outcome = exe.send(dumps(struct, typed=False), env=crash_env(point))
    assert outcome.signal == 9, (
        f"the driver did not die at {command}:{step} (exit {outcome.returncode});\n"
        f"stdout: {outcome.stdout}\nstderr: {outcome.stderr}"
    )
    assert outcome.stdout == "", "a killed driver printed a response"

    RECOVERY[recovery](sc)

    # Every VDI reads its content from before or from after the interrupted command.
    visible = sr.visible()
    observed: dict[str, bytes] = {}
    for uuid in sc.before:
        if uuid not in visible:
            assert sc.after.get(uuid, b"") is None, f"{uuid} vanished after {command}:{step}"
            continue
        sr.locations[uuid] = visible[uuid]["location"]
        got = sr.read(uuid)
        assert _acceptable(sc, uuid, got), f"{uuid} reads neither the old nor the new content"
        observed[uuid] = got
    new = set(visible) - set(sc.before) - set(sr.model)
    if sc.new_from is None:
        assert not new, f"{command} interrupted left new VDIs {new}"
    else:
        assert len(new) <= 1, new
        for uuid in new:
            rec = visible[uuid]
            sr.locations[uuid] = rec["location"]
            observed[uuid] = sr.read(uuid)
            assert observed[uuid] == sc.before[sc.new_from], "the new VDI has the wrong content"
            if sc.new_is_snapshot:
                assert rec["snapshot_of"] == sc.new_from and rec["is_a_snapshot"] in (True, "true")
    # The model follows what was observed (validated above); then records and images agree.
    for uuid in list(sr.model):
        if uuid in sc.before and uuid not in observed:
            sr.model.pop(uuid)
    for uuid, content in observed.items():
        sr.model[uuid] = bytearray(content)
    sr.assert_consistent()

    # The SR keeps working: snapshot, write, revert, clone on the survivors.
    target = sc.a if sc.a in sr.model else sc.c
    snap = sr.snapshot(target)
    sr.write(target, [(0, b"written after recovery")])
    sr.revert(snap, target)
    sr.clone(sc.s1)
    sr.assert_all_content()
    sr.assert_consistent()


@pytest.mark.skipif(not CASES, reason="the File SR (FileSR.CRASH_POINTS) is not importable")
def test_crash_points_cover_the_journaled_commands() -> None:
    commands = {c for c, _ in CASES}
    assert {"vdi_snapshot", "vdi_clone", "vdi_revert", "vdi_delete"} <= commands, commands
