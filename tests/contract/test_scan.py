"""Contract: sr_scan adopts images an administrator put in the SR and forgets vanished ones."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from tests.contract.harness import SRHarness

MiB = 1 << 20


def test_scan_adopts_and_forgets(sr: SRHarness) -> None:
    if sr.config.adopt is None or sr.config.remove is None:
        pytest.skip(f"{sr.config.name}: no way for a test to drop an image into the SR")
    existing = sr.vdi_create(MiB, "existing")
    sr.write(existing, [(0, b"existing")])
    writes = [(0, random.Random(1).randbytes(300_000)), (3 * MiB + 17, b"adopted tail")]
    adopted = sr.config.adopt(sr.device_config, 4 * MiB, writes)
    sr.call("sr_scan")
    rec = sr.record(adopted)
    assert rec["hidden"] in (False, "false")
    assert int(rec["virtual_size"]) == 4 * MiB
    sr.locations[adopted] = rec["location"]
    expected = bytearray(4 * MiB)
    for offset, data in writes:
        expected[offset : offset + len(data)] = data
    sr.model[adopted] = expected
    sr.assert_all_content()
    sr.assert_consistent()
    # the adopted VDI is a full citizen: snapshot it, write, read
    if "VDI_SNAPSHOT" in sr.capabilities:
        snap = sr.snapshot(adopted)
        sr.write(adopted, [(0, b"after adoption")])
        sr.assert_content(snap)
        sr.assert_content(adopted)
        sr.delete(snap)
    # the administrator removes it behind the SR's back: the next scan forgets it
    sr.call("sr_scan")
    sr.config.remove(sr.device_config, adopted)
    sr.call("sr_scan")
    assert adopted not in sr.records()
    sr.model.pop(adopted)
    sr.locations.pop(adopted)
    sr.assert_all_content()


def test_scan_is_stable(sr: SRHarness) -> None:
    vdi = sr.vdi_create(2 * MiB, "a")
    if "VDI_SNAPSHOT" in sr.capabilities:
        sr.snapshot(vdi)
    sr.call("sr_scan")
    first = sr.records()
    sr.call("sr_scan")
    sr.call("sr_scan")
    assert sr.records() == first
    sr.assert_all_content()


def test_scan_of_empty_sr(sr: SRHarness) -> None:
    sr.call("sr_scan")
    assert sr.records() == {}


def test_records_match_after_each_operation(sr: SRHarness) -> None:
    """sm_vdi_list / sm_vdi_get agree with the images after every kind of operation."""
    caps = sr.capabilities
    vdi = sr.vdi_create(3 * MiB, "r")
    sr.assert_consistent()
    steps: list[Callable[[], object]] = []
    if "VDI_SNAPSHOT" in caps:
        steps.append(lambda: sr.snapshot(vdi))
    if "VDI_CLONE" in caps:
        steps.append(lambda: sr.clone(vdi))
    if "VDI_RESIZE" in caps:
        steps.append(lambda: sr.resize(vdi, 5 * MiB))
    if "VDI_REVERT" in caps and "VDI_SNAPSHOT" in caps:
        steps.append(lambda: sr.revert(sr.snapshot(vdi), vdi))
    steps.append(lambda: sr.call("sr_scan"))
    for step in steps:
        step()
        sr.assert_consistent()
        listed = sr.records()
        for uuid in sr.model:
            assert sr.record(uuid) == listed[uuid]
    sr.assert_all_content()
