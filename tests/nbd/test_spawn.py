"""nbdkit outlives the process that spawned it even when that process exits late (issue 16
defect 10: "nbdkit died at start without a word; retrying" under load).

`nbdkit -f` arms PR_SET_PDEATHSIG(SIGTERM) early in its start-up. The intermediate child of
`sm.nbd.server._spawn_detached` used to exit right after the fork, racing that: when it was
scheduled late (a busy machine), its exit killed the new server before the server installed its
signal handlers, silently. Here that child is made late on purpose (its `os._exit` waits),
with the real nbdkit."""

from __future__ import annotations

import logging
import os
import time
import types
import uuid
from pathlib import Path

import pytest

import sm.vhd
from sm.nbd import server
from tests.nbd.conftest import nbd_tools


def test_server_survives_a_late_exit_of_its_spawner(work_dir: Path, run_dir: str,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    nbd_tools()
    leaf = str(work_dir / "disk.vhd")
    sm.vhd.create(leaf, 4 << 20)

    def late_exit(code: int) -> None:  # runs in the forked children only
        time.sleep(1.5)
        os._exit(code)

    slow_os = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os)
                                       if not k.startswith("__")})
    slow_os._exit = late_exit
    monkeypatch.setattr(server, "os", slow_os)
    caplog.set_level(logging.DEBUG, logger="sm.nbd.server")
    vdi = str(uuid.uuid4())
    info = server.start(vdi, leaf, writable=True, run_dir=run_dir)
    try:
        monkeypatch.setattr(server, "os", os)
        time.sleep(0.5)
        assert server._running(info.pid)
        assert server.status(info)["state"] == "running"
        assert not any("died at start" in r.getMessage() for r in caplog.records)
    finally:
        monkeypatch.setattr(server, "os", os)
        server.stop(info)
