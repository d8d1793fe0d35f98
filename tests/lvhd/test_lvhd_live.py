"""Revert and resize of a VDI while nbdkit serves it: the server is paused around the change and
resumes on the new leaf (revert); after a resize it keeps its size until the next attach."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sm.nbd.client import NbdClient
from tests.nbd.conftest import nbd_tools

from .conftest import MiB
from .test_lvhd_sr import Sr, _make, device  # noqa: F401

pytestmark = [pytest.mark.root, pytest.mark.nbd]


@pytest.fixture
def sr(device: str, tmp_path: Path) -> Iterator[Sr]:  # noqa: F811
    nbd_tools()
    yield from _make(device, tmp_path, "thin")


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
