"""The extension commands `sm_vdi_pause` / `sm_vdi_resume` (`sm.vdipause`), the same contract on
the File, LVHD and RBD SRs: a real nbdkit serves the VDI, a real NBD client writes to it.

While the data path is paused, a client's write waits (it is neither failed nor done); resume
lets it complete. A pause belongs to its owner: another command of the SR (journal replay,
`resume_orphans`) and a resume by another live process leave it paused; an orphaned pause (its
owner died) is resumed by anyone; a deactivated VDI stays paused until `vdi_activate`. A VDI
not attached on this host answers "none", an unknown VDI VDIMissing (144), a bad owner
InvalidArg (1)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sm.nbd.client import NbdClient
from sm.owner import start_time, this_process
from tests.contract.conftest import (  # noqa: F401  (the fixtures of the LVHD and RBD entries)
    FILE,
    LVHD,
    ceph_cluster,
    lvhd_device,
    rbd_namespace,
    use_srtype,
)
from tests.contract.harness import SRHarness, SRTypeConfig
from tests.nbd.conftest import nbd_tools
from tests.rbd.support import contract_config as rbd_config

pytestmark = pytest.mark.nbd
MiB = 1 << 20


@pytest.fixture(params=[FILE, LVHD, rbd_config()], ids=["file", "lvhd", "rbd"])
def srtype(request: pytest.FixtureRequest) -> SRTypeConfig:
    nbd_tools()
    return use_srtype(request)


@pytest.fixture
def sr(srtype: SRTypeConfig, tmp_path: Path) -> Iterator[SRHarness]:
    harness = SRHarness.make(srtype, tmp_path).create()
    yield harness


def _served(sr: SRHarness, size: int = 4 * MiB) -> tuple[str, str]:
    v = sr.vdi_create(size)
    url = sr.call("vdi_attach", ["true"], vdi=v)["params_nbd"]
    sr.call("vdi_activate", ["true"], vdi=v)
    return v, str(url)


def _detach(sr: SRHarness, v: str) -> None:
    sr.call("vdi_deactivate", vdi=v)
    sr.call("vdi_detach", vdi=v)


def _dead_owner() -> str:
    out = subprocess.run([sys.executable, "-c", "from sm.owner import this_process; "
                          "print(this_process())"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_a_paused_data_path_holds_writes_until_its_owner_resumes(sr: SRHarness) -> None:
    v, url = _served(sr)
    me, other = this_process(), f"1:{start_time(1)}"  # `other`: a live process, not us
    with NbdClient.from_url(url) as client:
        client.write(0, b"a" * 4096)
        assert sr.call("sm_vdi_pause", [me], vdi=v) == "paused"
        assert sr.call("sm_vdi_pause", [me], vdi=v) == "held"  # paused already: not ours twice
        done = threading.Event()

        def write() -> None:
            client.write(MiB, b"b" * 4096, fua=True)
            done.set()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        try:
            assert not done.wait(0.5), "a write completed on a paused data path"
            sr.vdi_create(MiB)  # another command: SR lock, replay, resume_orphans
            assert sr.call("sm_vdi_resume", [other], vdi=v) == "held"
            assert not done.is_set()
            assert sr.call("sm_vdi_resume", [me], vdi=v) == "resumed"
            assert done.wait(60), "the held write did not complete after resume"
        finally:
            if not done.is_set():
                sr.call("sm_vdi_resume", [me], vdi=v)
            writer.join(60)
        assert client.read(0, 4096) + client.read(MiB, 4096) == b"a" * 4096 + b"b" * 4096
    assert sr.call("sm_vdi_resume", [me], vdi=v) == "running"
    _detach(sr, v)


def test_orphaned_deactivated_unattached_and_bad_requests(sr: SRHarness) -> None:
    me = this_process()
    v = sr.vdi_create(4 * MiB)
    assert sr.call("sm_vdi_pause", [me], vdi=v) == "none"  # not attached on this host
    assert sr.call("sm_vdi_resume", [me], vdi=v) == "none"
    assert sr.fault("sm_vdi_pause", [me], vdi="0bad0000-0000-4000-8000-000000000000").code == 144
    assert sr.fault("sm_vdi_pause", ["me"], vdi=v).code == 1
    assert sr.fault("sm_vdi_resume", [], vdi=v).code == 143  # owner missing
    v, url = _served(sr)
    # a pause whose owner is gone: anyone's resume lifts it ("running": the SR's recovery,
    # which LVHD runs under its chain lock before every command, lifted it first)
    assert sr.call("sm_vdi_pause", [_dead_owner()], vdi=v) == "paused"
    assert sr.call("sm_vdi_resume", [me], vdi=v) in ("resumed", "running")
    with NbdClient.from_url(url) as client:
        client.write(0, b"c" * 4096, fua=True)
    # deactivated: paused by the driver, not ours to resume, until vdi_activate
    sr.call("vdi_deactivate", vdi=v)
    assert sr.call("sm_vdi_pause", [me], vdi=v) == "held"
    assert sr.call("sm_vdi_resume", [me], vdi=v) == "held"
    sr.call("vdi_activate", ["true"], vdi=v)
    assert sr.call("sm_vdi_resume", [me], vdi=v) == "running"
    with NbdClient.from_url(url) as client:
        assert client.read(0, 4096) == b"c" * 4096
    _detach(sr, v)
