"""A detach or SR delete stops a running collector within seconds; what it was doing is
undone (or finished by the next run) and no VDI reads different data."""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

import pytest

from tests.gc.support import MiB, check_sr, gc_argv, gc_env, gc_run, gc_status, make_sr
from tests.srtypes.file.conftest import FileSRClient

RATE = 8 * MiB  # 24 MiB to copy: about three seconds


def _long_merge(tmp: Path) -> tuple[FileSRClient, dict[str, bytes], str]:
    sr = make_sr(tmp)
    rng = random.Random(3)
    a = sr.create_vdi(32 * MiB)
    sr.write(a, 0, rng.randbytes(4 * MiB))
    s1 = sr.snapshot(a)
    sr.write(a, 8 * MiB, rng.randbytes(24 * MiB))
    s2 = sr.snapshot(a)
    sr.call("vdi_delete", vdi=s1)  # the hidden base with a, s2 merges into the root
    return sr, {a: sr.read(a), s2: sr.read(s2)}, a


def _start(sr: FileSRClient) -> subprocess.Popen[str]:
    proc = subprocess.Popen(gc_argv(sr), env=gc_env({"SM_GC_RATE": str(RATE)}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while True:
        cur = gc_status(sr)["collector"]["current"] or {}
        if cur.get("step") == "copy" and cur.get("done"):
            return proc
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["sr_detach", "vdi_detach"])
def test_detach_aborts_the_collector(tmp_path: Path, how: str) -> None:
    sr, model, a = _long_merge(tmp_path)
    proc = _start(sr)
    t0 = time.monotonic()
    if how == "sr_detach":
        sr.call("sr_detach")
    else:  # a detach of a VDI the current step does not touch leaves it running
        sr.call("vdi_attach", ["false"], vdi=a)
        sr.call("vdi_detach", vdi=a)
        assert proc.poll() is None
        sr.call("sr_detach")
    took = time.monotonic() - t0
    _out, err = proc.communicate(timeout=30)
    assert took < 3.0, f"{how} waited {took:.1f} s for the collector"
    assert "'result': 'aborted'" in err, err[-2000:]
    sr.call("sr_attach")
    check_sr(sr, model, collected=False)
    st = gc_status(sr)
    assert st["collector"]["last_run"]["result"] == "aborted" and st["pending"]
    assert gc_run(sr)["result"] == "done"
    check_sr(sr, model)


def test_sr_delete_waits_for_an_aborted_collector(tmp_path: Path) -> None:
    sr, model, _a = _long_merge(tmp_path)
    proc = _start(sr)
    for u in model:  # the collector keeps merging while the VDIs go
        sr.call("vdi_delete", vdi=u)
    t0 = time.monotonic()
    sr.call("sr_delete")
    assert time.monotonic() - t0 < 3.0
    proc.communicate(timeout=30)
    assert proc.returncode in (0, 1)
    assert not sr.location.exists()
