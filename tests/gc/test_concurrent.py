"""The collector (its own process, run after run) and user operations (this process) on one
SR at the same time: every read matches the model, and once the user stops, one more run
leaves the chains collected."""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

from sm import vhd
from tests.gc.support import MiB, check_sr, gc_argv, gc_env, gc_run, make_sr
from tests.srtypes.file.conftest import FileSRClient, SMFault

SIZE = 8 * MiB
RETRY = {24, 37}  # VDIInUse (a base being coalesced), LockErr: nothing was changed


def _read(sr: FileSRClient, u: str) -> bytes:
    """As a user reads: attached (read-only) for the duration."""
    path = sr.call("vdi_attach", ["false"], vdi=u)["params"]
    try:
        with vhd.open_chain(path) as disk:
            return disk.read(0, disk.size)
    finally:
        sr.call("vdi_detach", vdi=u)


def test_collector_and_user_operations_concurrently(tmp_path: Path) -> None:
    sr = make_sr(tmp_path)
    rng = random.Random(11)
    model: dict[str, bytes] = {}
    snapshots: set[str] = set()
    stop = tmp_path / "stop"
    runs = tmp_path / "runs"  # a line per finished collector run

    def finished_runs() -> int:
        return len(runs.read_text().splitlines()) if runs.exists() else 0

    loop = subprocess.Popen(
        ["bash", "-c", f"while [ ! -e {stop} ]; do {' '.join(gc_argv(sr))} || exit 1; "
                       f"echo run >> {runs}; done"],
        env=gc_env({"SM_GC_FINAL_BYTES": str(2 * MiB)}), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    ops = 0
    try:
        # at least 70 user operations, and on until two collector runs have finished beside
        # them (a cold first start of the collector can take seconds)
        deadline = time.monotonic() + 60
        while (ops < 70 or finished_runs() < 2) and time.monotonic() < deadline:
            assert loop.poll() is None, loop.stderr.read() if loop.stderr else ""
            ops += 1
            names = sorted(model)
            kind = rng.choice(["create", "write", "write", "snapshot", "snapshot", "clone",
                               "revert", "delete", "read"]) if names else "create"
            u = rng.choice(names) if names else ""
            try:
                if kind == "create":
                    v = sr.create_vdi(SIZE)
                    model[v] = bytes(SIZE)
                elif kind == "write":
                    writable = [n for n in names if n not in snapshots]
                    if not writable:
                        continue
                    u = rng.choice(writable)  # snapshots never change
                    off, n = rng.randrange(SIZE - 1), rng.randrange(1, 3 * MiB)
                    n = min(n, SIZE - off)
                    data = rng.randbytes(n)
                    sr.write(u, off, data)
                    model[u] = model[u][:off] + data + model[u][off + n:]
                elif kind in ("snapshot", "clone"):
                    v = sr.snapshot(u) if kind == "snapshot" else sr.clone(u)
                    model[v] = model[u]
                    if kind == "snapshot":
                        snapshots.add(v)
                elif kind == "revert":
                    target = rng.choice(names)
                    if target != u and target not in snapshots:
                        sr.revert(u, target)
                        model[target] = model[u]
                elif kind == "delete":
                    sr.call("vdi_delete", vdi=u)
                    del model[u]
                    snapshots.discard(u)
                else:
                    assert _read(sr, u) == model[u], f"VDI {u} reads different data"
            except SMFault as fault:
                assert fault.code in RETRY, fault
    finally:
        stop.touch()
        _out, err = loop.communicate(timeout=120)
    assert loop.returncode == 0, err[-3000:]
    assert err.count("gc run:") >= 2, "the collector did not run alongside"
    steps = err.count("INFO sm.gc.collector: gc: ")
    assert steps >= 5, f"only {steps} collector steps ran alongside the user"
    print(f"{ops} user operations, {steps} collector steps alongside")
    for u, content in model.items():
        assert _read(sr, u) == content
    assert gc_run(sr)["result"] == "done"
    check_sr(sr, model)
