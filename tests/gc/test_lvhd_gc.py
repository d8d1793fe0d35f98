"""The collector on the LVHD SR (srtypes/lvhd/gc.py, sm/chain/gcsteps.py), on real lvm2 with loop devices:
a hidden base merged into its parent and a leaf merged into its base (the LV keeps the VDI's
name), a base merged down into its child when that copies less, SIGKILL at every step of a
merge (up and down), then `sr_attach` replays it; nothing lost."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sm import vhd
from sm.chain.gcsteps import CRASH_POINTS
from sm.executor import SubprocessExecutor
from sm.faults import crash_env
from srtypes.lvhd.repo import LvhdRepo
from tests.conftest import ROOT
from tests.lvhd.conftest import lvm_sandbox  # noqa: F401  (fixture: loop devices)
from tests.lvhd.test_lvhd_sr import Sr, _make, _read, _write, device  # noqa: F401

pytestmark = pytest.mark.root
MiB = 1 << 20


@pytest.fixture
def sr(device: str, tmp_path: Path) -> Iterator[Sr]:  # noqa: F811
    yield from _make(device, tmp_path, "thin")


def _write_vdi(sr: Sr, vdi: str, off: int, data: bytes) -> None:
    sr.call("vdi_attach", [True], vdi_uuid=vdi)
    try:
        _write(sr, vdi, off, data)
    finally:
        sr.call("vdi_detach", vdi_uuid=vdi)


def _scenario(sr: Sr) -> tuple[dict[str, bytes], str]:
    rng = random.Random(5)
    a = sr.create_vdi(16 * MiB)
    _write_vdi(sr, a, 0, rng.randbytes(6 * MiB))
    s1 = sr.call("vdi_snapshot", vdi_uuid=a)["uuid"]
    _write_vdi(sr, a, 8 * MiB, rng.randbytes(2 * MiB))
    s2 = sr.call("vdi_snapshot", vdi_uuid=a)["uuid"]
    _write_vdi(sr, a, MiB, rng.randbytes(100_000))
    sr.call("vdi_delete", vdi_uuid=s1)  # root base <- hidden base (a, s2)
    sr.call("vdi_delete", vdi_uuid=s2)  # ... <- a: both merge
    return {a: _read(sr, a, 0, 16 * MiB)}, a


def _gc(sr: Sr, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    run_dir = sr.transport.env["SM_RUN_DIR"]
    return subprocess.run([sys.executable, "-m", "srtypes.lvhd.gc", sr.uuid, sr.device, run_dir],
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                          capture_output=True, text=True, timeout=300)


def _check(sr: Sr, model: dict[str, bytes], *, collected: bool) -> None:
    records = sr.records()
    lvs = sr.lv_sizes()
    assert {f"VHD-{u}" for u in records} == {n for n in lvs if n.startswith("VHD-")}
    for u, r in records.items():
        path = f"/dev/{sr.vg}/VHD-{u}"
        info = vhd.info(path, storage=sr.storage())
        assert str(info.uuid) == u and info.hidden == r["hidden"], u
        assert vhd.check(path, storage=sr.storage()) == [], u
        if collected:
            assert not r["hidden"] or sum(x["parent"] == u for x in records.values()) >= 2
    for u, content in model.items():
        assert _read(sr, u, 0, len(content)) == content, f"VDI {u} reads different data"
    repo = LvhdRepo(sr.uuid, sr.dconf(), SubprocessExecutor(),
                    Path(sr.transport.env["SM_RUN_DIR"]))
    assert repo.read().journal == {}  # replayed (sr_attach) or never left


def test_merges_keep_the_vdi(sr: Sr) -> None:
    model, a = _scenario(sr)
    assert len(sr.records()) == 3
    out = _gc(sr)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "gc: merge" in out.stderr and "gc: leaf-merge" in out.stderr
    assert list(sr.records()) == [a] and sr.records()[a]["parent"] == ""
    _check(sr, model, collected=True)


def _killed_then_collected(sr: Sr, model: dict[str, bytes], point: str) -> None:
    """The collector SIGKILLed at `point`; attach replays its entry (data intact, not yet
    collected); a second run finishes."""
    out = _gc(sr, crash_env(point))
    assert out.returncode == -9, f"{point} not reached: {out.stderr[-2000:]}"
    sr.call("sr_attach")  # replays the collector's entry
    _check(sr, model, collected=False)
    out = _gc(sr)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.parametrize("step", CRASH_POINTS["gc_merge"])
def test_sigkill_at_every_merge_step(sr: Sr, step: str) -> None:
    model, _a = _scenario(sr)
    _killed_then_collected(sr, model, f"gc_merge:{step}")
    _check(sr, model, collected=True)


def test_gc_commands_of_the_driver(sr: Sr) -> None:
    """`sm_gc_status` / `sm_gc_run` (what `sm gc status|run` and the API call) on LVHD."""
    import json

    model, a = _scenario(sr)
    before = json.loads(sr.call("sm_gc_status"))
    mine = next(v for v in before["vdis"] if v["uuid"] == a)
    assert mine["pending_merges"] >= 1 and mine["depth_after_gc"] < mine["depth"]
    assert before["pending"] and before["collector"]["running"] is False
    summary = json.loads(sr.call("sm_gc_run"))
    assert summary["result"] == "done", summary
    _check(sr, model, collected=True)
    after = json.loads(sr.call("sm_gc_status"))
    assert after["pending"] == [] and after["garbage"] == []
    assert next(v for v in after["vdis"] if v["uuid"] == a)["depth"] == mine["depth_after_gc"]
    assert after["collector"]["last_run"] is not None


def test_delete_starts_the_collector_in_the_background(sr: Sr,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import time

    rng = random.Random(9)
    a = sr.create_vdi(8 * MiB)
    _write_vdi(sr, a, 0, rng.randbytes(3 * MiB))
    s1 = sr.call("vdi_snapshot", vdi_uuid=a)["uuid"]
    _write_vdi(sr, a, 4 * MiB, rng.randbytes(MiB))
    model = {a: _read(sr, a, 0, 8 * MiB)}
    monkeypatch.setenv("SM_GC_AUTO", "1")
    sr.call("vdi_delete", vdi_uuid=s1)  # kicks a detached collector
    deadline = time.monotonic() + 120
    while True:
        st = json.loads(sr.call("sm_gc_status"))
        if not st["pending"] and not st["collector"]["running"] and st["collector"]["last_run"]:
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.2)
    _check(sr, model, collected=True)


DOWN_STEPS = ("journaled", "inflated", "copied", "merged", "reparented", "deleted",
              "deflated", "records")


def _pair(sr: Sr, direction: str) -> tuple[dict[str, bytes], str, str]:
    """Root R <- B2 <- B3 <- (t3, c), t1 on R: B2 (hidden, one child B3, a parent) holds one
    block and B3 two ("down" is cheaper), or the other way round ("up")."""
    rng = random.Random(11)
    c = sr.create_vdi(16 * MiB)
    _write_vdi(sr, c, 0, rng.randbytes(8 * MiB))
    t1 = sr.call("vdi_snapshot", vdi_uuid=c)["uuid"]
    small, big = (0, rng.randbytes(100)), (4 * MiB, rng.randbytes(4 * MiB))
    first, second = (small, big) if direction == "down" else (big, small)
    _write_vdi(sr, c, *first)
    t2 = sr.call("vdi_snapshot", vdi_uuid=c)["uuid"]
    _write_vdi(sr, c, *second)
    t3 = sr.call("vdi_snapshot", vdi_uuid=c)["uuid"]
    b2 = sr.records()[t2]["parent"]
    b3 = sr.records()[t3]["parent"]
    sr.call("vdi_delete", vdi_uuid=t2)
    return {x: _read(sr, x, 0, 16 * MiB) for x in (c, t1, t3)}, b2, b3


@pytest.mark.parametrize("direction", ["down", "up"])
def test_merge_goes_the_cheaper_way(sr: Sr, direction: str) -> None:
    import json

    model, b2, b3 = _pair(sr, direction)
    pending = json.loads(sr.call("sm_gc_status"))["pending"]
    assert [(p["kind"], p["direction"]) for p in pending] == [("merge", direction)]
    summary = json.loads(sr.call("sm_gc_run"))
    assert summary["result"] == "done", summary
    done = summary["actions"]
    assert [(a["kind"], a["direction"], a["base"], a["child"]) for a in done] == [
        ("merge", direction, b2, b3)]
    assert done[0]["copy_bytes"] == 2 * MiB  # one block either way: the cheaper side
    records = sr.records()
    survivor, gone = (b3, b2) if direction == "down" else (b2, b3)
    assert gone not in records and survivor in records
    assert sum(r["parent"] == survivor for r in records.values()) == 2
    _check(sr, model, collected=True)
    assert json.loads(sr.call("sm_gc_status"))["pending"] == []


@pytest.mark.parametrize("step", DOWN_STEPS)
def test_sigkill_at_every_down_merge_step(sr: Sr, step: str) -> None:
    model, b2, b3 = _pair(sr, "down")
    _killed_then_collected(sr, model, f"gc_merge:{step}")
    assert b2 not in sr.records() and b3 in sr.records()
    _check(sr, model, collected=True)


LEAFSNAP_FINAL = str(64 * 1024)  # the scenario's leaf holds ~100 kB: snapshotted in place


def test_big_leaf_is_snapshotted_in_place_then_merged(sr: Sr) -> None:
    model, a = _scenario(sr)
    out = _gc(sr, {"SM_GC_FINAL_BYTES": LEAFSNAP_FINAL})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "gc: snapshot leaf" in out.stderr and "gc: leaf-merge" in out.stderr
    assert list(sr.records()) == [a]
    _check(sr, model, collected=True)


@pytest.mark.parametrize("step", CRASH_POINTS["gc_leafsnap"])
def test_sigkill_at_every_leaf_snapshot_step(sr: Sr, step: str) -> None:
    model, a = _scenario(sr)
    env = {"SM_GC_FINAL_BYTES": LEAFSNAP_FINAL}
    out = _gc(sr, {**env, **crash_env(f"gc_leafsnap:{step}")})
    assert out.returncode == -9, f"{step} not reached: {out.stderr[-2000:]}"
    sr.call("sr_attach")
    _check(sr, model, collected=False)
    out = _gc(sr, env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert list(sr.records()) == [a]
    _check(sr, model, collected=True)


def _long_merge(sr: Sr) -> tuple[dict[str, bytes], str, subprocess.Popen[str]]:
    """B2 (8 blocks) <- B3 (8 blocks) under c and t3: 16 MiB to copy either way, merged by a
    collector throttled to 4 MiB/s (4 s), returned once its copy has started."""
    import json
    import time

    rng = random.Random(13)
    c = sr.create_vdi(40 * MiB)
    _write_vdi(sr, c, 0, rng.randbytes(MiB))
    sr.call("vdi_snapshot", vdi_uuid=c)
    _write_vdi(sr, c, 2 * MiB, rng.randbytes(16 * MiB))
    t2 = sr.call("vdi_snapshot", vdi_uuid=c)["uuid"]
    _write_vdi(sr, c, 20 * MiB, rng.randbytes(16 * MiB))
    t3 = sr.call("vdi_snapshot", vdi_uuid=c)["uuid"]
    sr.call("vdi_delete", vdi_uuid=t2)
    model = {x: _read(sr, x, 0, 40 * MiB) for x in (c, t3)}
    run_dir = sr.transport.env["SM_RUN_DIR"]
    gc = subprocess.Popen(
        [sys.executable, "-m", "srtypes.lvhd.gc", sr.uuid, sr.device, run_dir],
        env={**os.environ, "PYTHONPATH": str(ROOT), "SM_GC_RATE": str(4 * MiB)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status = Path(run_dir) / "lvhd" / sr.uuid / "gc" / "status.json"
    deadline = time.monotonic() + 60
    while True:
        cur = (json.loads(status.read_text()).get("current") or {}) if status.exists() else {}
        if cur.get("step") == "copy" and cur.get("done", 0) > 0:
            return model, c, gc
        assert gc.poll() is None and time.monotonic() < deadline, gc.communicate()
        time.sleep(0.05)


def test_user_snapshot_is_not_blocked_by_a_long_merge(sr: Sr) -> None:
    """A vdi_snapshot of a VDI in the merging chain gets through within a slice of the copy;
    the merge still finishes, with the new base re-parented."""
    import time

    model, c, gc = _long_merge(sr)
    t0 = time.monotonic()
    s = sr.call("vdi_snapshot", vdi_uuid=c)["uuid"]
    waited = time.monotonic() - t0
    assert gc.poll() is None, "the merge ended before the snapshot: nothing measured"
    _out, err = gc.communicate(timeout=120)
    assert gc.returncode == 0, err[-3000:]
    assert "result': 'done'" in err and "gc: merge" in err, err[-3000:]
    print(f"vdi_snapshot during the merge took {waited:.2f} s")
    assert waited < 2.0, waited  # a slice (0.5 s) plus the snapshot itself, not the merge
    model[s] = model[c]
    records = sr.records()
    assert len(records) == 7  # R, t1, the merged base, c's new base, the leaves t3, c, s
    _check(sr, model, collected=True)


def test_detach_aborts_a_long_merge(sr: Sr) -> None:
    import time

    model, c, gc = _long_merge(sr)
    sr.call("vdi_attach", [False], vdi_uuid=c)
    sr.call("vdi_detach", vdi_uuid=c)  # the merge below c is not c's step: it goes on
    assert gc.poll() is None
    t0 = time.monotonic()
    sr.call("sr_detach")
    took = time.monotonic() - t0
    _out, err = gc.communicate(timeout=60)
    assert "result': 'aborted'" in err, err[-3000:]
    assert took < 3.0, took
    sr.call("sr_attach")
    _check(sr, model, collected=False)
    assert len(sr.records()) == 6  # nothing merged: R, t1, B2, B3, t3, c
