"""Contract over the real wire: the driver executable, untyped values as OCaml sends them."""

from __future__ import annotations

import random
from pathlib import Path

from tests.contract.harness import SRHarness, SRTypeConfig

MiB = 1 << 20


def test_lifecycle_through_executable_untyped(srtype: SRTypeConfig, tmp_path: Path) -> None:
    sr = SRHarness.make(srtype, tmp_path, process=True, typed=False)
    sr.create()
    caps = sr.capabilities
    vdi = sr.vdi_create(4 * MiB + 1, "over the wire")
    sr.write(vdi, [(0, random.Random(1).randbytes(100_000))])
    made = [vdi]
    if "VDI_SNAPSHOT" in caps:
        snap = sr.snapshot(vdi)
        sr.write(vdi, [(0, b"later")])
        made.append(snap)
        if "VDI_REVERT" in caps:
            sr.revert(snap, vdi)
    if "VDI_CLONE" in caps:
        made.append(sr.clone(vdi))
    if "VDI_RESIZE" in caps:
        sr.resize(vdi, 6 * MiB)
    sr.call("sr_scan")
    sr.assert_all_content()
    sr.assert_consistent()
    # the in-process dispatcher sees the same SR
    inproc = sr.with_transport(process=False)
    assert inproc.records() == sr.records()
    for v in made:
        sr.delete(v)
    sr.assert_consistent()
    sr.call("sr_detach")


def test_typed_and_untyped_agree(srtype: SRTypeConfig, tmp_path: Path) -> None:
    sr = SRHarness.make(srtype, tmp_path, typed=False).create()
    vdi = sr.vdi_create(2 * MiB, "untyped", "desc")
    typed = sr.with_transport(process=False, typed=True)
    assert typed.record(vdi) == sr.record(vdi)
    assert typed.records() == sr.records()
