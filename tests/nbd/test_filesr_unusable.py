"""A served VDI whose interrupted operation cannot be replayed (issue 15 §1): its NBD server,
left paused by the killed driver, is not resumed while the VDI is unusable (its chain is in an
unknown state), and `sm_sr_repair` retry resumes it; the client never reads wrong data."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from sm import faults
from sm.nbd import server
from tests.contract.harness import SRHarness
from tests.smapi import dumps

from .test_filesr_datapath import MiB, _attach, sr  # noqa: F401

pytestmark = pytest.mark.nbd


def test_unusable_vdi_is_not_served_until_repaired(sr: SRHarness,  # noqa: F811
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.nbd.conftest import qemu_io

    v = sr.vdi_create(8 * MiB)
    res = _attach(sr, v)
    sr.call("vdi_activate", ["true"], vdi=v)
    url = res["params_nbd"]
    qemu_io(url, "write -P 0x61 0 64k", "flush")
    info = server.find(v, os.path.dirname(url.split(":")[2]))
    assert info is not None
    proc = sr.with_transport(process=True).transport
    out = proc.send(dumps(sr.struct("vdi_snapshot", vdi=v)),  # type: ignore[attr-defined]
                    env=faults.crash_env("vdi_snapshot:renamed"))
    assert out.signal == 9
    assert server.status(info)["state"] == "paused"  # as `_live` left it
    monkeypatch.setattr(faults, "_ARMED", True)
    monkeypatch.setattr(faults, "_hits", {})
    monkeypatch.setenv(faults.FAIL_VAR, "vdi_snapshot:hidden:1+")
    sr.vdi_create(MiB)  # replays, fails: set aside; the create goes on
    monkeypatch.delenv(faults.FAIL_VAR)
    assert server.status(info)["state"] == "paused"  # not served: its chain is unknown
    reader = subprocess.Popen(["qemu-io", "-f", "raw", "-c", "read -P 0x61 0 64k", url],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    assert reader.poll() is None
    sr.vdi_create(MiB)  # another chain command: still kept paused
    assert server.status(info)["state"] == "paused"
    (entry,) = json.loads(sr.call("sm_sr_repair"))["entries"]
    report = json.loads(sr.call("sm_sr_repair", ["retry", entry["id"]]))
    assert "replayed to the end" in report["done"][0]
    out_text, _ = reader.communicate(timeout=30)
    assert reader.returncode == 0 and "read 65536/65536" in out_text, out_text
    assert server.status(info)["state"] == "running"
    sr.call("vdi_detach", vdi=v)
