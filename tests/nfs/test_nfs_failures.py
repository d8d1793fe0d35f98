"""Failure containment on an NFS SR (a File SR on nfs-ganesha; issue 15 §1): sizes the format
or the server's file system cannot hold answer VDISize (79) and leave no journal entry; every
later operation works."""

from __future__ import annotations

import os

import pytest

from tests.contract.harness import SRHarness
from tests.nfs.sr_support import sr_dir

from .test_nfs_sr import MiB, blank, env  # noqa: F401

TiB = 1024**4


@pytest.mark.parametrize("raw", [False, True])
def test_resize_past_what_the_server_holds_is_79(ganesha, blank: SRHarness,  # noqa: F811
                                                 raw: bool) -> None:
    sr = blank
    sr.call("sr_create", ["0"])
    sr.call("sr_attach")
    try:
        x = sr.vdi_create(MiB, sm_config={"type": "raw"} if raw else None)
        for size in (17 * TiB, 2**63 - 1):
            assert sr.fault("vdi_resize", [str(size)], vdi=x).code == 79, size
        journal = sr_dir(sr.device_config) / ".sm" / "journal"
        assert not [n for n in os.listdir(journal) if n.endswith(".json")]
        other = sr.vdi_create(MiB)
        sr.call("sr_scan")
        snap = sr.call("vdi_snapshot", vdi=other)["uuid"]
        sr.call("vdi_revert", [other], vdi=snap)
        sr.call("vdi_resize", [str(2 * MiB)], vdi=x)
        for v in (snap, other, x):
            sr.delete(v)
    finally:
        sr.call("sr_detach")
