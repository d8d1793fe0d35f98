"""Attach, detach, activate and deactivate written once (`sm.chain.attach`): the same rules on
every chain SR type (File, NFS, LVHD), each run through its driver.

Before the chain core, the LVHD SR marked a VDI attached read-only once a reader attached it
beside its writer (and let a read-only attachment be activated writable)."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.contract.conftest import (  # noqa: F401  (the fixtures the SR types use)
    FILE,
    LVHD,
    NFS,
    ganesha,
    lvhd_device,
    nfs_server,
    use_srtype,
)
from tests.contract.harness import SRHarness, SRTypeConfig

MiB = 1 << 20


@pytest.fixture(params=[FILE, NFS, LVHD], ids=["file", "nfs", "lvhd"])
def sr(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SRHarness]:
    srtype: SRTypeConfig = use_srtype(request)
    yield SRHarness.make(srtype, tmp_path).create()


def _attached(sr: SRHarness, vdi: str) -> str:
    return str(sr.call("sm_vdi_get", vdi=vdi).get("attached", ""))


def test_attachment_rules(sr: SRHarness) -> None:
    v = sr.vdi_create(4 * MiB)
    sr.call("vdi_attach", ["true"], vdi=v)
    assert sr.fault("vdi_attach", ["true"], vdi=v).code == 24  # one writer per host
    sr.call("vdi_attach", ["false"], vdi=v)  # a reader beside it is fine ...
    assert _attached(sr, v) == "rw"  # ... and leaves it attached writable
    assert sr.fault("vdi_attach", ["true"], vdi=v).code == 24
    sr.call("vdi_activate", ["true"], vdi=v)
    sr.call("vdi_deactivate", vdi=v)
    sr.call("vdi_deactivate", vdi=v)  # not active: nothing to do
    sr.call("vdi_detach", vdi=v)
    sr.call("vdi_detach", vdi=v)  # not attached: nothing to do
    assert _attached(sr, v) == ""
    assert sr.fault("vdi_activate", ["true"], vdi=v).code == 46  # not attached here
    sr.call("vdi_attach", ["false"], vdi=v)
    assert _attached(sr, v) == "ro"
    assert sr.fault("vdi_activate", ["true"], vdi=v).code == 46  # attached read-only
    sr.call("vdi_activate", ["false"], vdi=v)
    sr.call("vdi_deactivate", vdi=v)
    sr.call("vdi_detach", vdi=v)


def test_bases_snapshots_and_unknown_vdis(sr: SRHarness) -> None:
    v = sr.vdi_create(4 * MiB)
    snap = sr.snapshot(v)
    base = sr.record(v)["parent"]
    assert base and sr.record(base)["hidden"] in (True, "true")
    for ro in (base, snap):  # writing there would change what the others read
        assert sr.fault("vdi_attach", ["true"], vdi=ro).code == 46
        sr.call("vdi_attach", ["false"], vdi=ro)
        assert _attached(sr, ro) == "ro"
        sr.call("vdi_detach", vdi=ro)
    unknown = str(uuidlib.uuid4())
    assert sr.fault("vdi_attach", ["true"], vdi=unknown).code == 144
    assert sr.fault("vdi_activate", ["true"], vdi=unknown).code == 46
    sr.call("vdi_detach", vdi=unknown)  # nothing to do
    sr.call("vdi_deactivate", vdi=unknown)
    sr.assert_consistent()
