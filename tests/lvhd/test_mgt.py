"""srtypes.lvhd.mgt: the two-slot metadata volume (round trip, torn write, corruption)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sm.records import SrRecord, VdiRecord
from srtypes.lvhd.lvio import LvBacking, open_lv
from srtypes.lvhd.mgt import HEADER, MgtError, MgtStore

from .conftest import MiB, VgHandle

pytestmark = pytest.mark.root


@pytest.fixture
def mgt(lvm_vg: VgHandle, lv_name: str) -> Iterator[LvBacking]:
    lvm_vg.lvm.lvcreate(lvm_vg.name, lv_name, 8 * MiB)
    backing = open_lv(lvm_vg.lvm, lvm_vg.name, lv_name, writable=True)
    try:
        yield backing
    finally:
        backing.close()
        lvm_vg.lvm.lvremove(lvm_vg.name, lv_name)


def test_round_trip_and_generations(mgt: LvBacking) -> None:
    store = MgtStore(mgt)
    store.init(SrRecord(uuid="5a1e0000-0000-4000-8000-000000000001", type="lvhd"))
    with store.transaction() as doc:
        doc.vdis["5a1e0000-0000-4000-8000-000000000002"] = VdiRecord(
            uuid="5a1e0000-0000-4000-8000-000000000002",
            location="5a1e0000-0000-4000-8000-000000000002", name_label="a", virtual_size=512)
        doc.journal["x"] = {"op": "vdi_snapshot"}
    doc = store.read()
    assert doc.generation == 2 and doc.journal == {"x": {"op": "vdi_snapshot"}}
    assert doc.vdis["5a1e0000-0000-4000-8000-000000000002"].name_label == "a"
    assert doc.sr.type == "lvhd"


def test_torn_write_keeps_previous_generation(mgt: LvBacking) -> None:
    store = MgtStore(mgt)
    store.init(SrRecord(uuid="5a1e0000-0000-4000-8000-000000000001", name_label="one", type="lvhd"))
    with store.transaction() as doc:
        doc.sr = SrRecord(uuid=doc.sr.uuid, name_label="two", type="lvhd")
    # generation 2 lives in slot 0: tear its body
    mgt.pwrite(b"\xff" * 16, HEADER.size + 4)
    doc = store.read()
    assert doc.generation == 1 and doc.sr.name_label == "one"
    mgt.pwrite(bytes(HEADER.size), store.slot_size)
    with pytest.raises(MgtError):
        store.read()
