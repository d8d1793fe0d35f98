"""A client writing over NBD (qemu-io) while the collector coalesces its VDI: the bulk moves
while the VDI runs, the final step pauses the server only briefly, and no write is lost
(File SR; LVHD SR on a loop device)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sm import vhd
from tests.gc.support import MiB, depth, gc_argv, gc_env
from tests.lvhd.conftest import lvm_sandbox  # noqa: F401  (fixture: loop devices)
from tests.nbd.conftest import nbd_tools, qemu_io, short_dir
from tests.srtypes.file.conftest import FileSRClient

pytestmark = pytest.mark.nbd

CHUNK = 16 * 1024
WRITES = 2500
PAUSE_BOUND = 2.0  # seconds a single write may wait, the final step included


@pytest.fixture
def sr(tmp_path: Path) -> Iterator[FileSRClient]:
    nbd_tools()
    run = short_dir("smgc-")
    client = FileSRClient(tmp_path / "sr", Path(run))
    client.call("sr_create", ["0"])
    client.call("sr_attach")
    yield client
    shutil.rmtree(run, ignore_errors=True)


def _pattern(i: int) -> int:
    return i % 251 + 1


def test_leaf_coalesce_under_a_writing_client(sr: FileSRClient) -> None:
    size = 64 * MiB
    a = sr.create_vdi(size)
    url = sr.call("vdi_attach", ["true"], vdi=a)["params_nbd"]
    sr.call("vdi_activate", ["true"], vdi=a)
    qemu_io(url, f"write -P 17 0 {24 * MiB}")
    s = sr.snapshot(a)  # live: the server moves to the new leaf
    qemu_io(url, f"write -P 34 {24 * MiB} {16 * MiB}")
    sr.call("vdi_delete", vdi=s)
    assert depth(sr, a) == 2
    expect = bytearray(size)
    expect[:24 * MiB] = bytes([17]) * (24 * MiB)
    expect[24 * MiB:40 * MiB] = bytes([34]) * (16 * MiB)

    argv = ["qemu-io", "-f", "raw"]
    for i in range(WRITES):
        off = (i * 7919 % (size // CHUNK)) * CHUNK
        argv += ["-c", f"write -P {_pattern(i)} {off} {CHUNK}"]
        expect[off:off + CHUNK] = bytes([_pattern(i)]) * CHUNK
    writer = subprocess.Popen([*argv, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    time.sleep(0.2)
    # 16 MiB of leaf data > the 8 MiB final bound: snapshot in place, merge the bulk while
    # the client writes, then the short paused final step (a run gives up after three
    # rounds if the writer dirties the leaf faster than the merge: then the next run goes on)
    kinds: list[str] = []
    final = None
    for _ in range(4):
        gc = subprocess.run(gc_argv(sr), env=gc_env({"SM_GC_FINAL_BYTES": str(8 * MiB),
                                                     "SM_GC_RATE": str(128 * MiB)}),
                            capture_output=True, text=True, timeout=300)
        assert gc.returncode == 0, gc.stderr[-3000:]
        last = json.loads((sr.location / ".sm/gc/status.json").read_text())["last_run"]
        kinds += [x["kind"] for x in last["actions"]]
        final = next((x for x in last["actions"] if x["kind"] == "leaf-merge"), None)
        if final is not None:
            break
    assert kinds[0] == "leaf-snapshot" and final is not None, kinds
    assert writer.poll() is None, "the writer finished before the final step"
    out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0 and out.count("wrote") == WRITES, (out + err)[-2000:]
    assert "error" not in (out + err).lower()
    latencies = [1 / float(x) for x in re.findall(r"and ([0-9.]+) ops/sec", out)]
    assert len(latencies) == WRITES and max(latencies) < PAUSE_BOUND, max(latencies)

    assert final["attached"] is True and final["pause_seconds"] < PAUSE_BOUND
    print(f"max write latency {max(latencies):.3f} s, final pause {final['pause_seconds']} s,"
          f" steps {kinds}")
    assert depth(sr, a) == 1
    qemu_io(url, "flush")
    sr.call("vdi_deactivate", vdi=a)
    sr.call("vdi_detach", vdi=a)
    path = str(sr.location / f"{a}.vhd")
    assert vhd.check(path, bitmaps=True) == []
    with vhd.open_chain(path) as disk:
        got = disk.read(0, size)
    assert got == bytes(expect), "a write was lost or landed in the wrong image"
    assert set(sr.records()) == {a}


# -- LVHD: the same over LVs (tests/lvhd fixtures: real lvm2 on a loop device) ---------------


@pytest.fixture
def lvhd_sr(lvm_sandbox: Any, tmp_path: Path) -> Iterator[Any]:  # noqa: F811
    from tests.lvhd.test_lvhd_sr import _make

    nbd_tools()
    dev, _ = lvm_sandbox.loop_device(256 * MiB)
    yield from _make(dev, tmp_path, "thin")
    lvm_sandbox.detach(dev)


@pytest.mark.root
def test_lvhd_leaf_coalesce_under_a_writing_client(lvhd_sr: Any) -> None:
    import os
    import sys
    import threading

    from tests.conftest import ROOT

    sr = lvhd_sr
    size = 32 * MiB
    a = sr.create_vdi(size)
    url = sr.call("vdi_attach", [True], vdi_uuid=a)["params_nbd"]
    sr.call("vdi_activate", [True], vdi_uuid=a)
    qemu_io(url, f"write -P 17 0 {12 * MiB}")
    s = sr.call("vdi_snapshot", vdi_uuid=a)["uuid"]  # live: the server moves to the new leaf
    qemu_io(url, f"write -P 34 {12 * MiB} {10 * MiB}")
    sr.call("vdi_delete", vdi_uuid=s)
    assert len(sr.records()) == 2
    expect = bytearray(size)
    expect[:12 * MiB] = bytes([17]) * (12 * MiB)
    expect[12 * MiB:22 * MiB] = bytes([34]) * (10 * MiB)

    # batches of writes, one after the other (so the expected content is known), until the
    # collector is done; every write's latency from qemu-io's own report
    stop = threading.Event()
    latencies: list[float] = []
    problems: list[str] = []
    batches = [0]

    def writer() -> None:
        i = 0
        while not stop.is_set():
            argv = ["qemu-io", "-f", "raw"]
            for _ in range(100):
                off = (i * 7919 % (size // CHUNK)) * CHUNK
                argv += ["-c", f"write -P {_pattern(i)} {off} {CHUNK}"]
                expect[off:off + CHUNK] = bytes([_pattern(i)]) * CHUNK
                i += 1
            p = subprocess.run([*argv, url], capture_output=True, text=True, timeout=120)
            if p.returncode != 0 or "error" in (p.stdout + p.stderr).lower() \
                    or p.stdout.count("wrote") != 100:
                problems.append((p.stdout + p.stderr)[-2000:])
                return
            latencies.extend(1 / float(x) for x in re.findall(r"and ([0-9.]+) ops/sec",
                                                               p.stdout))
            batches[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    kinds: list[str] = []
    final = None
    try:
        time.sleep(0.3)
        started = batches[0]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "SM_GC_FINAL_BYTES": str(8 * MiB)}
        for _ in range(4):
            gc = subprocess.run([sys.executable, "-m", "srtypes.lvhd.gc", sr.uuid, sr.device,
                                 sr.transport.env["SM_RUN_DIR"]], env=env,
                                capture_output=True, text=True, timeout=300)
            assert gc.returncode == 0, gc.stderr[-3000:]
            last = json.loads(sr.call("sm_gc_status"))["collector"]["last_run"]
            kinds += [x["kind"] for x in last["actions"]]
            final = next((x for x in last["actions"] if x["kind"] == "leaf-merge"), None)
            if final is not None:
                break
        during = batches[0] - started
    finally:
        stop.set()
        thread.join(timeout=300)
    assert not problems, problems[0]
    assert kinds[0] == "leaf-snapshot" and final is not None, kinds
    assert during >= 1, "no write ran while the collector did"
    snap = next(x for x in last["actions"] if x["kind"] == "leaf-snapshot") \
        if "leaf-snapshot" in [x["kind"] for x in last["actions"]] else None
    assert final["attached"] is True and final["pause_seconds"] < PAUSE_BOUND, final
    assert max(latencies) < PAUSE_BOUND, max(latencies)
    print(f"max write latency {max(latencies):.3f} s, final pause {final['pause_seconds']} s,"
          f" snapshot pause {snap and snap['pause_seconds']} s, steps {kinds},"
          f" {len(latencies)} writes")
    assert list(sr.records()) == [a]
    qemu_io(url, "flush")
    sr.call("vdi_deactivate", vdi_uuid=a)
    sr.call("vdi_detach", vdi_uuid=a)
    path = f"/dev/{sr.vg}/VHD-{a}"
    assert vhd.check(path, bitmaps=True, storage=sr.storage()) == []
    with vhd.open_chain(path, storage=sr.storage()) as disk:
        got = disk.read(0, size)
    assert got == bytes(expect), "a write was lost or landed in the wrong image"


@pytest.mark.root
@pytest.mark.parametrize("point", ["gc_leafsnap:hidden", "gc_leafsnap:leaf",
                                   "gc_merge:copied", "gc_merge:switched"])
def test_lvhd_collector_killed_while_the_server_is_paused(lvhd_sr: Any, point: str) -> None:
    """SIGKILL inside a leaf step (the served VDI's server paused): the next chain command
    replays the entry and resumes the server; the client reads what it wrote and goes on."""
    import os
    import sys

    from sm.faults import crash_env
    from sm.nbd.client import NbdClient
    from tests.conftest import ROOT

    sr = lvhd_sr
    size = 16 * MiB
    a = sr.create_vdi(size)
    url = sr.call("vdi_attach", [True], vdi_uuid=a)["params_nbd"]
    sr.call("vdi_activate", [True], vdi_uuid=a)
    qemu_io(url, f"write -P 5 0 {4 * MiB}")
    s = sr.call("vdi_snapshot", vdi_uuid=a)["uuid"]
    qemu_io(url, f"write -P 6 {MiB} {3 * MiB}")
    sr.call("vdi_delete", vdi_uuid=s)
    expect = bytes([5]) * MiB + bytes([6]) * (3 * MiB) + bytes(size - 4 * MiB)
    final = str(MiB) if point.startswith("gc_leafsnap") else str(8 * MiB)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SM_GC_FINAL_BYTES": final,
           **crash_env(point)}
    argv = [sys.executable, "-m", "srtypes.lvhd.gc", sr.uuid, sr.device,
            sr.transport.env["SM_RUN_DIR"]]
    gc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert gc.returncode == -9, f"{point} not reached: {gc.stderr[-2000:]}"
    sr.call("sr_scan")  # a chain command: replays the entry, resumes the paused server
    with NbdClient.from_url(url) as c:
        assert c.read(0, size) == expect
        c.write(8 * MiB, b"after" * 1000)
        c.flush()
    env.pop("SM_CRASH_AT")
    gc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert gc.returncode == 0, gc.stderr[-3000:]
    assert list(sr.records()) == [a]
    with NbdClient.from_url(url) as c:
        assert c.read(8 * MiB, 5000) == b"after" * 1000
    sr.call("vdi_deactivate", vdi_uuid=a)
    sr.call("vdi_detach", vdi_uuid=a)
    path = f"/dev/{sr.vg}/VHD-{a}"
    assert vhd.check(path, bitmaps=True, storage=sr.storage()) == []
    with vhd.open_chain(path, storage=sr.storage()) as disk:
        assert disk.read(0, 8 * MiB) == expect[:8 * MiB]
        assert disk.read(8 * MiB, 5000) == b"after" * 1000
