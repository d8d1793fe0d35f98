"""SIGKILL the collector at every one of its steps (`sm.chain.gcsteps.CRASH_POINTS`), then
let the next user operation (a scan) replay the journal, check that every VDI reads what it
read before, and run the collector again to the end: nothing lost, nothing left."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sm.chain.gcsteps import CRASH_POINTS
from sm.faults import crash_env
from tests.gc.support import MiB, check_sr, copy_sr, gc_process, gc_run, make_sr
from tests.srtypes.file.conftest import FileSRClient

CASES = [f"{op}:{step}" for op, steps in CRASH_POINTS.items() for step in steps]
FINAL = 3 * MiB  # leaves above it are snapshotted in place first (gc_leafsnap)


def _build(tmp: Path) -> tuple[FileSRClient, dict[str, bytes]]:
    """Every kind of collector work: garbage, an up merge with a grandchild, a down merge, a
    big leaf (snapshotted in place, merged, then leaf-merged)."""
    sr = make_sr(tmp)
    rng = random.Random(7)
    g = sr.create_vdi(8 * MiB)  # garbage: a base without children
    sr.write(g, 0, rng.randbytes(MiB))
    sr.call("vdi_delete", vdi=sr.snapshot(g))
    sr.call("vdi_delete", vdi=g)
    a = sr.create_vdi(16 * MiB)  # B1 <- B2 <- a after both snapshots go
    sr.write(a, 0, rng.randbytes(8 * MiB))
    s1 = sr.snapshot(a)
    sr.write(a, MiB, rng.randbytes(MiB))
    s2 = sr.snapshot(a)
    sr.write(a, 9 * MiB, rng.randbytes(5 * MiB))
    sr.call("vdi_delete", vdi=s1)
    sr.call("vdi_delete", vdi=s2)
    c = sr.create_vdi(16 * MiB)  # down: small base with a parent, bigger hidden child
    sr.write(c, 0, rng.randbytes(8 * MiB))
    t1 = sr.snapshot(c)
    sr.write(c, 0, rng.randbytes(100))
    t2 = sr.snapshot(c)
    sr.write(c, 4 * MiB, rng.randbytes(4 * MiB))
    t3 = sr.snapshot(c)
    sr.call("vdi_delete", vdi=t2)
    model = {x: sr.read(x) for x in (a, c, t1, t3)}
    sr.call("sr_detach")
    return sr, model


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[FileSRClient, dict[str, bytes]]:
    return _build(tmp_path_factory.mktemp("gc-crash-template"))


def _scenario(tmp: Path, template: tuple[FileSRClient, dict[str, bytes]]
              ) -> tuple[FileSRClient, dict[str, bytes]]:
    return copy_sr(template[0], tmp), template[1]


@pytest.mark.parametrize("point", CASES)
def test_sigkill_at_every_step(tmp_path: Path, point: str, template: tuple[FileSRClient, dict[str, bytes]]) -> None:
    sr, model = _scenario(tmp_path, template)
    env = {**crash_env(point), "SM_GC_FINAL_BYTES": str(FINAL)}
    proc = gc_process(sr, env)
    assert proc.returncode == -9, f"{point} not reached: {proc.stderr[-2000:]}"
    sr.call("sr_scan")  # any user operation replays the journal first
    check_sr(sr, model, collected=False)
    pending = list((sr.location / ".sm" / "journal").glob("*.json"))
    assert pending == []
    again = gc_process(sr, {"SM_GC_FINAL_BYTES": str(FINAL)})
    assert again.returncode == 0, again.stderr[-2000:]
    assert "result': 'done'" in again.stderr
    assert gc_run(sr)["actions"] == []
    check_sr(sr, model)


def test_sigkill_then_the_collector_itself_recovers(
        tmp_path: Path, template: tuple[FileSRClient, dict[str, bytes]]) -> None:
    sr, model = _scenario(tmp_path, template)
    env = {**crash_env("gc_merge:reparented"), "SM_GC_FINAL_BYTES": str(FINAL)}
    assert gc_process(sr, env).returncode == -9
    assert list((sr.location / ".sm" / "journal").glob("*.json"))
    assert gc_process(sr, {"SM_GC_FINAL_BYTES": str(FINAL)}).returncode == 0
    check_sr(sr, model)
