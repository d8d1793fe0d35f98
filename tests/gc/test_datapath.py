"""A client writing over NBD (qemu-io) while the collector coalesces its VDI: the bulk moves
while the VDI runs, the final step pauses the server only briefly, and no write is lost."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sm import vhd
from tests.gc.support import MiB, depth, gc_argv, gc_env
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
