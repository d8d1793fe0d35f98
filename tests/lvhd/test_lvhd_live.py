"""Revert and resize of a VDI while nbdkit serves it: the server is paused around the change and
resumes on the new leaf (revert); after a resize it keeps its size until the next attach."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from sm.nbd.client import NbdClient
from tests.nbd.conftest import nbd_tools

from .conftest import LvmSandbox, MiB
from .test_lvhd_sr import Sr, _transport

pytestmark = [pytest.mark.root, pytest.mark.nbd]


@pytest.fixture
def sr(lvm_sandbox: LvmSandbox, tmp_path: Path) -> Iterator[Sr]:
    nbd_tools()
    dev, _ = lvm_sandbox.loop_device(128 * MiB)
    sr = Sr(dev, str(uuidlib.uuid4()), _transport(tmp_path / "a"), tmp_path)
    sr.call("sr_create", ["0"])
    sr.call("sr_attach")
    yield sr
    lvm = sr.lvm()
    if lvm.vg_exists(sr.vg):
        lvm.vgremove(sr.vg)
        lvm.pvremove([dev])
    lvm_sandbox.detach(dev)


def test_live_revert_and_resize(sr: Sr) -> None:
    v = sr.create_vdi(8 * MiB)
    url = sr.call("vdi_attach", [True], vdi_uuid=v)["params_nbd"]
    sr.call("vdi_activate", [True], vdi_uuid=v)
    with NbdClient.from_url(url) as c:
        c.write(MiB, b"A" * 65536)
        c.flush()
    snap = sr.call("vdi_snapshot", vdi_uuid=v)["uuid"]
    with NbdClient.from_url(url) as c:
        c.write(MiB, b"B" * 65536)
        c.flush()
    sr.call("vdi_revert", [v], vdi_uuid=snap)
    with NbdClient.from_url(url) as c:
        assert c.read(MiB, 65536) == b"A" * 65536  # the served leaf is the reverted one
        c.write(0, b"after revert")
        c.flush()
    # resize while served: the server is paused and resumed around it (it keeps announcing
    # the size it started with); the next attach serves the new size from an inflated LV
    sr.call("vdi_resize", [str(20 * MiB)], vdi_uuid=v)
    with NbdClient.from_url(url) as c:
        assert c.read(0, 12) == b"after revert"
    sr.call("vdi_deactivate", vdi_uuid=v)
    sr.call("vdi_detach", vdi_uuid=v)
    assert sr.records()[v]["virtual_size"] == str(20 * MiB)
    url = sr.call("vdi_attach", [True], vdi_uuid=v)["params_nbd"]
    sr.call("vdi_activate", [True], vdi_uuid=v)
    with NbdClient.from_url(url) as c:
        assert c.size == 20 * MiB
        c.write(19 * MiB, b"Z" * 4096)
        c.flush()
        assert c.read(0, 12) == b"after revert" and c.read(19 * MiB, 4096) == b"Z" * 4096
        assert c.read(MiB, 65536) == b"A" * 65536
    sr.call("vdi_deactivate", vdi_uuid=v)
    sr.call("vdi_detach", vdi_uuid=v)
