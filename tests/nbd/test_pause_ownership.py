"""A pause has an owner: recovery resumes only a pause whose owner is gone (issue 15).

`resume_orphans` runs after every journal replay, under the SR lock; a server paused on purpose
by a live process (the API writing in-process after `sm_vdi_pause`, `Servers.live`) must
stay paused, one paused by a process that died must be resumed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sm.nbd import server
from sm.nbd.serving import Servers
from tests.contract.conftest import FILE
from tests.contract.harness import SRHarness
from tests.nbd.conftest import nbd_tools, short_dir

pytestmark = pytest.mark.nbd
MiB = 1 << 20


@pytest.fixture
def sr() -> Iterator[SRHarness]:
    nbd_tools()
    d = Path(short_dir("smpo-"))
    harness = SRHarness.make(FILE, d).create()
    try:
        yield harness
    finally:
        nbd = d / "run" / "nbd"
        for name in os.listdir(nbd) if nbd.is_dir() else []:
            if name.endswith(".json"):
                server.stop(name[:-5], run_dir=str(nbd))
        shutil.rmtree(d, ignore_errors=True)


def _live_server(sr: SRHarness) -> tuple[str, str]:
    v = sr.vdi_create(4 * MiB)
    res = sr.call("vdi_attach", ["true"], vdi=v)
    assert isinstance(res, dict)
    sr.call("vdi_activate", ["true"], vdi=v)
    sock = res["params_nbd"].split(":")[2]
    return v, os.path.dirname(sock)


def test_a_pause_held_by_a_live_process_survives_recovery(sr: SRHarness) -> None:
    v, nbd = _live_server(sr)
    with Servers.in_dir(nbd).live(v):  # a live process holds the pause (sm.api: sm_vdi_pause)
        info = server.find(v, nbd)
        assert info is not None and server.status(info)["state"] == "paused"
        sr.vdi_create(MiB)  # another command: SR lock, journal replay, resume_orphans
        assert server.status(info)["state"] == "paused"
    assert server.status(info)["state"] == "running"


def test_a_pause_whose_pauser_died_is_resumed(sr: SRHarness) -> None:
    v, nbd = _live_server(sr)
    info = server.find(v, nbd)
    assert info is not None
    # the pauser is another process that exits with the server still paused
    subprocess.run([sys.executable, "-c", "import sys; from sm.nbd import server; "
                    "server.pause(server.find(sys.argv[1], sys.argv[2]))", v, nbd], check=True)
    st = server.status(info)
    assert st["state"] == "paused" and server.pause_orphaned(st)
    sr.vdi_create(MiB)
    assert server.status(info)["state"] == "running"


def test_a_live_snapshot_keeps_a_pause_held_by_a_live_process(sr: SRHarness) -> None:
    v, nbd = _live_server(sr)
    with Servers.in_dir(nbd).live(v):
        info = server.find(v, nbd)
        assert info is not None
        sr.call("vdi_snapshot", vdi=v)  # `_live`: pause, chain change, resume only its own pause
        assert server.status(info)["state"] == "paused"
    assert server.status(info)["state"] == "running"
