"""Several `bin/FileSR` processes snapshotting, cloning, reverting and scanning VDIs of one SR at
once. Afterwards every call either succeeded or failed cleanly (LockErr 37 at most, never 1200),
every image checks clean, every VDI reads what it must, and the records match the files.

Content is predictable without knowing the order the calls ran in: nobody writes during the
concurrent phase, so VDI i reads either its current content C_i or, once any revert of it to
its snapshot succeeded, the snapshot's content S_i; a new snapshot/clone of VDI i reads C_i or
S_i (C_i if no revert of i succeeded).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.contract.conftest import FILE
from tests.contract.harness import SRHarness
from tests.smapi import Process, SMFault, dumps

MiB = 1 << 20
WORKERS = 6
OPS_PER_WORKER = 5
VDIS = 3
ALLOWED_FAULTS = {37}


@dataclass
class Call:
    worker: int
    op: str
    vdi: int
    result: object = None
    fault: SMFault | None = None
    error: str | None = None


def _worker(sr: SRHarness, exe: Process, seed: int, vdis: list[str], snaps: list[str],
            out: list[Call]) -> None:  # fmt: skip
    rng = random.Random(seed)
    for _ in range(OPS_PER_WORKER):
        op = rng.choice(["vdi_snapshot", "vdi_clone", "vdi_revert", "vdi_snapshot", "sr_scan"])
        i = rng.randrange(VDIS)
        if op == "vdi_revert":
            struct = sr.struct(op, [vdis[i]], vdi=snaps[i])
        elif op == "sr_scan":
            struct = sr.struct(op)
        else:
            struct = sr.struct(op, vdi=vdis[i])
        call = Call(seed, op, i)
        outcome = exe.send(dumps(struct, typed=False))
        try:
            call.result = outcome.value(op)
        except SMFault as fault:
            call.fault = fault
        except AssertionError as err:  # not exactly one response, or a non-zero exit
            call.error = str(err)
        out.append(call)


@pytest.mark.parametrize("seed", [0, 100, 200])
def test_concurrent_snapshot_clone_revert(tmp_path: Path, seed: int) -> None:
    reason = FILE.unavailable()
    if reason:
        pytest.skip(reason)
    sr = SRHarness.make(FILE, tmp_path).create()
    rng = random.Random(1)
    vdis, snaps = [], []
    for i in range(VDIS):
        v = sr.vdi_create(8 * MiB, f"vdi-{i}")
        sr.write(v, [(i * MiB, rng.randbytes(MiB)), (7 * MiB, rng.randbytes(4096))])
        snaps.append(sr.snapshot(v))
        sr.write(v, [(0, rng.randbytes(300_000)), (6 * MiB + 1, bytes([i + 1]) * 999)])
        vdis.append(v)
    current = [bytes(sr.model[v]) for v in vdis]
    snapped = [bytes(sr.model[s]) for s in snaps]

    exe = sr.with_transport(process=True, typed=False).transport
    assert isinstance(exe, Process)
    calls: list[Call] = []
    threads = [
        threading.Thread(target=_worker, args=(sr, exe, seed + w, vdis, snaps, calls))
        for w in range(WORKERS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(calls) == WORKERS * OPS_PER_WORKER
    broken = [c for c in calls if c.error or (c.fault and c.fault.code not in ALLOWED_FAULTS)]
    assert not broken, "\n".join(
        f"worker {c.worker} {c.op} vdi {c.vdi}: {c.error or c.fault}" for c in broken
    )
    succeeded = [c for c in calls if c.fault is None]
    assert len(succeeded) >= len(calls) // 2, [str(c.fault) for c in calls if c.fault]
    reverted = {c.vdi for c in succeeded if c.op == "vdi_revert"}

    # Every original VDI and snapshot, and every VDI a successful call made, reads what it must.
    visible = sr.visible()
    for i, v in enumerate(vdis):
        want = snapped[i] if i in reverted else current[i]
        sr.assert_content(v, want)
        sr.assert_content(snaps[i], snapped[i])
    made = [c for c in succeeded if c.op in ("vdi_snapshot", "vdi_clone")]
    for c in made:
        assert isinstance(c.result, dict)
        new = str(c.result["uuid"])
        assert new in visible, f"{c.op} returned {new}, which has no record"
        sr.locations[new] = str(c.result["location"])
        got = sr.read(new)
        allowed = {current[c.vdi], snapped[c.vdi]} if c.vdi in reverted else {current[c.vdi]}
        assert got in allowed, f"{c.op} of vdi {c.vdi} -> {new}: wrong content"
        sr.model[new] = bytearray(got)
        if c.op == "vdi_snapshot":
            assert visible[new]["snapshot_of"] == vdis[c.vdi]
    for i, v in enumerate(vdis):
        sr.model[v] = bytearray(snapped[i] if i in reverted else current[i])
    unexpected = set(visible) - set(sr.model)
    assert not unexpected, f"VDIs nobody made: {unexpected}"
    sr.assert_consistent()
    # and an attach (journal replay) changes nothing
    before = sr.records()
    sr.call("sr_attach")
    assert sr.records() == before
    sr.assert_all_content()
