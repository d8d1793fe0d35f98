"""The LVHD SR's data path: attached VDIs served by nbdkit straight from the LVs (through the
PV at the segments' offsets), with real clients (qemu-io, our NBD client, the API layer)."""

from __future__ import annotations

import os
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from sm import vhd
from sm.api import StorageManager
from sm.nbd import server
from sm.nbd.client import NbdClient
from tests.nbd.conftest import nbd_tools, qemu_io
from tests.smapi import SMFault

from .conftest import MiB
from .test_lvhd_sr import Sr, _make, _transport, device  # noqa: F401

pytestmark = [pytest.mark.root, pytest.mark.nbd]


@pytest.fixture(autouse=True)
def _tools() -> None:
    nbd_tools()


@pytest.fixture
def sr(device: str, tmp_path: Path) -> Iterator[Sr]:  # noqa: F811
    yield from _make(device, tmp_path, "thin")


def _read_lv_chain(sr: Sr, vdi: str, offset: int, length: int) -> bytes:
    storage = sr.storage()
    with vhd.open_chain(storage.path(f"VHD-{vdi}"), storage=storage) as disk:
        return disk.read(offset, length)


def test_attach_serves_the_lv_and_live_snapshot(sr: Sr) -> None:
    v = sr.create_vdi(16 * MiB)
    res = sr.call("vdi_attach", [True], vdi_uuid=v)
    url = res["params_nbd"]
    assert url.startswith("nbd:unix:") and res["params"].endswith(f"VHD-{v}")
    sr.call("vdi_activate", [True], vdi_uuid=v)
    qemu_io(url, "write -P 0x41 1M 2M", "flush")
    with pytest.raises(SMFault) as err:
        sr.call("vdi_attach", [True], vdi_uuid=v)
    assert err.value.code == 24
    snap = sr.call("vdi_snapshot", vdi_uuid=v)
    snap_uuid = snap["uuid"] if isinstance(snap, dict) else str(snap)
    # The server was paused around the chain change and resumed on the new leaf.
    qemu_io(url, "write -P 0x42 2M 64k", "read -P 0x41 1M 1M", "read -P 0x42 2M 64k", "flush")
    sr.call("vdi_deactivate", vdi_uuid=v)
    sr.call("vdi_detach", vdi_uuid=v)
    assert _read_lv_chain(sr, v, 2 * MiB, 65536) == b"\x42" * 65536
    assert _read_lv_chain(sr, snap_uuid, 2 * MiB, 65536) == b"\x41" * 65536  # base untouched
    storage = sr.storage()
    for lv in (f"VHD-{v}", f"VHD-{snap_uuid}"):
        assert vhd.check(storage.path(lv), storage=storage) == []


def test_read_only_attach_of_a_snapshot_and_our_client(sr: Sr) -> None:
    v = sr.create_vdi(8 * MiB)
    res = sr.call("vdi_attach", [True], vdi_uuid=v)
    data = os.urandom(3 * MiB + 512)
    with NbdClient.from_url(res["params_nbd"]) as c:
        c.write(MiB - 512, data)
        c.flush()
    snap = sr.call("vdi_snapshot", vdi_uuid=v)
    snap_uuid = snap["uuid"] if isinstance(snap, dict) else str(snap)
    ro = sr.call("vdi_attach", [False], vdi_uuid=snap_uuid)
    with NbdClient.from_url(ro["params_nbd"]) as c:
        assert c.read_only and c.read(MiB - 512, len(data)) == data
    qemu_io(ro["params_nbd"], "read -P 0 5M 1M", readonly=True)
    for u in (snap_uuid, v):
        sr.call("vdi_detach", vdi_uuid=u)
    sock = ro["params_nbd"].split(":")[2]
    assert server.find(snap_uuid, os.path.dirname(sock)) is None


def test_api_reads_and_writes_an_lvhd_vdi(device: str, tmp_path: Path) -> None:  # noqa: F811
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.update({"SM_HOME": str(tmp_path / "home"), "SM_RUN_DIR": str(tmp_path / "run")})
    with StorageManager(environ=env) as sm:
        sm.sr_create("lv", "lvhd", {"device": device})
        vdi = sm.vdi_create(8 * MiB, "disk", "on lvm", sr="lv")
        data = os.urandom(2 * MiB)
        sm.vdi_write(vdi.uuid, 3 * MiB, data, sr="lv")
        assert sm.vdi_read(vdi.uuid, sr="lv")[3 * MiB:5 * MiB] == data
        sm.vdi_delete(vdi.uuid, sr="lv")
        sm.sr_delete("lv")


def test_driver_killed_inside_a_live_snapshot(device: str, tmp_path: Path) -> None:  # noqa: F811
    """SIGKILL of bin/LVHDSR while the server is paused for a snapshot: the next command on
    the SR finishes the snapshot and resumes the server; the client's data is all there."""
    from sm.faults import crash_env
    from tests.smapi import dumps, request

    sr = Sr(device, str(uuidlib.uuid4()), _transport(tmp_path / "a", process=True), tmp_path)
    sr.call("sr_create", ["0"])
    sr.call("sr_attach")
    v = sr.create_vdi(8 * MiB)
    url = sr.call("vdi_attach", [True], vdi_uuid=v)["params_nbd"]
    qemu_io(url, "write -P 0x51 0 1M", "flush")
    doc = request("vdi_snapshot", [], device_config=sr.dconf(), sr_uuid=sr.uuid, vdi_uuid=v)
    out = sr.transport.send(dumps(doc), env=crash_env("vdi_snapshot:renamed"))
    assert out.returncode == -9, out.stderr
    info = server.find(v, os.path.dirname(url.split(":")[2]))
    assert info is not None and server.status(info)["state"] == "paused"
    sr.call("vdi_create", [str(MiB), "other"])  # any chain command: replay, then resume
    assert server.status(info)["state"] == "running"
    qemu_io(url, "read -P 0x51 0 1M", "write -P 0x52 1M 64k", "flush")
    assert len([r for r in sr.records().values() if r["is_a_snapshot"]]) == 1
    sr.call("vdi_detach", vdi_uuid=v)
    assert _read_lv_chain(sr, v, MiB, 65536) == b"\x52" * 65536
    sr.lvm().vgremove(sr.vg)
    sr.lvm().pvremove([device])


@pytest.mark.parametrize("active", [False, True])
def test_resize_of_a_served_vdi_serves_the_new_size(sr: Sr, active: bool) -> None:
    """A VDI attached through the driver and grown: the next connection sees the new size."""
    v = sr.create_vdi(4 * MiB)
    url = sr.call("vdi_attach", [True], vdi_uuid=v)["params_nbd"]
    if active:
        sr.call("vdi_activate", [True], vdi_uuid=v)
    qemu_io(url, "write -P 0x41 0 64k", "flush")
    sr.call("vdi_resize", [str(6 * MiB)], vdi_uuid=v)
    with NbdClient.from_url(url) as c:
        assert c.size == 6 * MiB
        c.write(6 * MiB - 1024, b"\x42" * 1024)
        c.flush()
        assert c.read(6 * MiB - 1024, 1024) == b"\x42" * 1024
        assert c.read(0, 65536) == b"\x41" * 65536
    if active:
        sr.call("vdi_deactivate", vdi_uuid=v)
    sr.call("vdi_detach", vdi_uuid=v)
    assert _read_lv_chain(sr, v, 6 * MiB - 1024, 1024) == b"\x42" * 1024
