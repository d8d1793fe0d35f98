"""The RBD SR's data path: nbdkit serving the image through librbd on a Unix socket, checked
with qemu-io (client) and `rbd export` (independent reader); live snapshot and revert."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.contract.harness import SRHarness
from tests.nbd.conftest import nbd_tools, qemu_io
from tests.rbd.support import contract_config, export

pytestmark = pytest.mark.nbd
MiB = 1 << 20


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    d = tempfile.mkdtemp(prefix="smrbd-", dir="/tmp")  # socket paths must stay short
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def test_attach_serves_nbd_live_snapshot_and_revert(rbd_namespace: str,
                                                    short_tmp: Path) -> None:
    nbd_tools()
    sr = SRHarness.make(contract_config(), short_tmp).create()
    vdi = sr.vdi_create(8 * MiB, "served")
    attached = sr.call("vdi_attach", ["true"], vdi=vdi)
    sr.call("vdi_activate", ["true"], vdi=vdi)
    url = attached["params_nbd"]
    assert url.startswith("nbd:unix:") and os.path.exists(url.split(":")[2]), attached
    qemu_io(url, "write -P 0xaa 0 1M", "write -P 0xab 7M 1M", "flush")
    want = b"\xaa" * MiB + bytes(6 * MiB) + b"\xab" * MiB
    assert export(sr.device_config, vdi) == want
    # live snapshot: the server pauses (drains, flushes, closes), Ceph snapshots, it resumes
    snap = sr.call("vdi_snapshot", vdi=vdi, driver_params={})["uuid"]
    qemu_io(url, "write -P 0xbb 0 512k", "flush")
    assert export(sr.device_config, f"{vdi}@{snap}") == want
    after = b"\xbb" * (512 * 1024) + want[512 * 1024:]
    assert export(sr.device_config, vdi) == after
    # live revert: rollback in the OSDs while the server is paused; it serves the old data
    sr.call("vdi_revert", [vdi], vdi=snap)
    qemu_io(url, "read -P 0xaa 0 1M", "read -P 0xab 7M 1M")
    assert export(sr.device_config, vdi) == want
    # the snapshot served read-only next to it
    ro = sr.call("vdi_attach", ["false"], vdi=snap)
    qemu_io(ro["params_nbd"], "read -P 0xaa 0 1M", readonly=True)
    sr.call("vdi_detach", vdi=snap)
    # deactivate pauses: a revert now finds the image closed, and it stays paused
    sr.call("vdi_deactivate", vdi=vdi)
    sr.call("vdi_detach", vdi=vdi)
    assert not os.path.exists(url.split(":")[2])
    assert sr.fault("vdi_attach", ["true"], vdi=snap).code == 46  # snapshots are read-only


def test_qemu_img_reads_params(rbd_namespace: str, short_tmp: Path) -> None:
    """`params` is an rbd: spec that qemu's own librbd driver opens (independent reader)."""
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed")
    sr = SRHarness.make(contract_config(), short_tmp).create()
    vdi = sr.vdi_create(4 * MiB)
    sr.write(vdi, [(MiB, b"\x5a" * 4096)])
    spec = sr.attach_result(vdi)["params"]
    out = short_tmp / "copy.raw"
    proc = subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", spec, str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == bytes(sr.model[vdi])


def test_revert_refused_while_open_on_another_host(rbd_namespace: str, short_tmp: Path) -> None:
    nbd_tools()
    a = SRHarness.make(contract_config(), short_tmp / "a").create()
    vdi = a.vdi_create(2 * MiB)
    snap = a.snapshot(vdi)
    a.call("vdi_attach", ["true"], vdi=vdi)
    a.call("vdi_activate", ["true"], vdi=vdi)
    b = a.with_transport(process=False)
    b.transport.env = {"SM_STATE_DIR": str(short_tmp / "b-state"),
                       "SM_RUN_DIR": str(short_tmp / "b-run")}
    assert b.fault("vdi_revert", [vdi], vdi=snap).code == 24
    assert b.fault("vdi_delete", vdi=vdi).code == 24
    assert b.fault("vdi_attach", ["true"], vdi=vdi).code == 24  # one writer at a time
    b.call("vdi_attach", ["false"], vdi=vdi)  # readers are fine
    b.call("vdi_detach", vdi=vdi)
    b.snapshot(vdi)  # a snapshot from another host is fine: librbd asks the lock owner
    a.call("vdi_deactivate", vdi=vdi)
    a.call("vdi_detach", vdi=vdi)
    b.revert(snap, vdi)
