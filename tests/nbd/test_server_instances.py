"""Two servers of one VDI in turn (detach, attach): the old one, exiting late, must not take
the new one's control socket with it (issue 15). The plugin unlinks its control socket at exit
only while that path is still its own socket (same inode)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import sm.vhd
from sm.nbd import control, server
from tests.nbd.conftest import nbd_tools


def test_an_old_server_exiting_late_keeps_the_new_control_socket(work_dir: Path,
                                                                 run_dir: str) -> None:
    nbd_tools()
    vhd = str(work_dir / "disk.vhd")
    sm.vhd.create(vhd, 4 << 20)
    vdi = str(uuid.uuid4())
    old = server.start(vdi, vhd, writable=True, run_dir=run_dir)
    new = None
    try:
        # the old server is lost track of while still running (its files gone, as after a
        # detach whose server outlived the wait), and a new one is started for the VDI
        for ext in ("json", "ctl", "sock", "pid"):
            os.unlink(os.path.join(run_dir, f"{vdi}.{ext}"))
        new = server.start(vdi, vhd, writable=True, run_dir=run_dir)
        assert new.pid != old.pid and new.control == old.control
        os.kill(old.pid, signal.SIGTERM)  # the old one exits now: its plugin's cleanup runs
        deadline = time.monotonic() + 10
        while server._running(old.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not server._running(old.pid)
        assert control.call(new.control, "status")["pid"] == new.pid
    finally:
        with_pid = [i for i in (old, new) if i is not None and server._running(i.pid)]
        for info in with_pid:
            os.kill(info.pid, signal.SIGKILL)


def test_control_server_stop_unlinks_only_its_own_socket(run_dir: str) -> None:
    path = f"{run_dir}/c.ctl"
    first = control.ControlServer(path, {"status": lambda _r: {"who": "first"}})
    first.start()
    second = control.ControlServer(path, {"status": lambda _r: {"who": "second"}})
    second.start()  # replaces the path: a new server of the same VDI
    try:
        first.stop()
        assert control.call(path, "status") == {"who": "second"}
    finally:
        second.stop()
    assert not os.path.exists(path)
