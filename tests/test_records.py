"""sm.records: record validation, the sharded store, and all-or-nothing transactions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest

from sm.errors import MetadataError, VDIMissing
from sm.faults import crash_env
from sm.records import RecordError, RecordStore, SrRecord, VdiRecord, shard_of


def new_uuid() -> str:
    return str(uuidlib.uuid4())


def vdi(u: str | None = None, **kw: Any) -> VdiRecord:
    u = u or new_uuid()
    return VdiRecord(uuid=u, location=kw.pop("location", u), **kw)


# -- records ---------------------------------------------------------------------------------


def test_vdi_record_round_trip() -> None:
    parent = new_uuid()
    r = vdi(name_label="disk", name_description="d", type="system", vdi_type="raw",
            read_only=True, hidden=True, managed=False, is_a_snapshot=True, snapshot_of=parent,
            snapshot_time="20240101T10:00:00Z", virtual_size=1 << 30,
            physical_utilisation=4096, parent=parent, sm_config={"vhd-parent": parent},
            other_config={"k": "v"})
    d = r.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert VdiRecord.from_dict(d) == r
    with pytest.raises(TypeError):
        r.sm_config["x"] = "y"  # type: ignore[index]


def test_vdi_record_defaults() -> None:
    r = VdiRecord.from_dict({"uuid": (u := new_uuid()), "location": u})
    assert r.type == "user" and r.vdi_type == "vhd" and r.managed and r.sm_config == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [("uuid", "not-a-uuid"), ("uuid", "3F1C6A0E-8A3B-4C55-9D7E-0A2B4C6D8E0F"),
     ("location", ""), ("type", "bogus"), ("vdi_type", "qcow9"), ("read_only", "false"),
     ("virtual_size", -1), ("virtual_size", True), ("virtual_size", 1.5),
     ("parent", "x"), ("snapshot_time", "yesterday"), ("sm_config", {"a": 1}),
     ("other_config", []), ("name_label", None)],
)
def test_vdi_record_validation_names_field(field: str, value: Any) -> None:
    d = vdi().to_dict()
    d[field] = value
    with pytest.raises(RecordError) as info:
        VdiRecord.from_dict(d, path="/x.json")
    assert info.value.field == field and info.value.code == 181
    assert "/x.json" in info.value.message


def test_vdi_record_rejects_unknown_and_missing() -> None:
    d = vdi().to_dict()
    with pytest.raises(RecordError) as info:
        VdiRecord.from_dict({**d, "colour": "blue"})
    assert info.value.field == "colour"
    del d["location"]
    with pytest.raises(RecordError):
        VdiRecord.from_dict(d)
    with pytest.raises(RecordError):
        VdiRecord.from_dict([])  # type: ignore[arg-type]


def test_self_parent_refused() -> None:
    u = new_uuid()
    with pytest.raises(RecordError) as info:
        vdi(u, parent=u)
    assert info.value.field == "parent"


def test_sr_record_round_trip() -> None:
    sr = SrRecord(uuid=new_uuid(), name_label="sr", type="file", sm_config={"a": "b"},
                  created="2024-05-01T12:00:00+00:00")
    assert SrRecord.from_dict(sr.to_dict()) == sr
    with pytest.raises(RecordError):
        SrRecord(uuid=new_uuid(), type="")


# -- store -----------------------------------------------------------------------------------


def test_store_crud(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / ".sm", create=True)
    assert store.all() == [] and store.find_sr() is None
    with pytest.raises(MetadataError):
        store.sr()
    sr = SrRecord(uuid=new_uuid(), name_label="sr", type="file")
    store.put_sr(sr)
    assert store.sr() == sr
    a, b = vdi(name_label="a"), vdi(name_label="b", location="elsewhere")
    store.put(a)
    store.put(b)
    assert store.get(a.uuid) == a
    assert store.all() == sorted([a, b], key=lambda r: r.uuid)
    assert store.find_by_location(a.uuid) == a
    assert store.find_by_location("elsewhere") == b
    assert store.find_by_location("nowhere") is None
    new = store.update(a.uuid, hidden=True, sm_config={"vhd-parent": b.uuid})
    assert new.hidden and store.get(a.uuid) == new
    with pytest.raises(RecordError):
        store.update(a.uuid, virtual_size=-5)
    with pytest.raises(RecordError):
        store.update(a.uuid, uuid=b.uuid)
    assert store.get(a.uuid) == new
    store.delete(a.uuid)
    with pytest.raises(VDIMissing) as info:
        store.get(a.uuid)
    assert info.value.code == 144
    with pytest.raises(VDIMissing):
        store.delete(a.uuid)
    store.delete(a.uuid, missing_ok=True)
    with pytest.raises(VDIMissing):
        store.update(a.uuid, hidden=False)
    # Another store object (another process, another host) sees the same records.
    assert RecordStore(tmp_path / ".sm").all() == [b]


def test_one_record_update_rewrites_one_shard(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    with store.transaction() as txn:
        for _ in range(600):
            txn.put(vdi())
    shard_dir = tmp_path / "vdi"
    before = {p.name: p.stat().st_ino for p in shard_dir.iterdir()}
    target = store.all()[300]
    store.update(target.uuid, name_label="renamed")
    after = {p.name: p.stat().st_ino for p in shard_dir.iterdir()}
    changed = [n for n in after if after[n] != before.get(n)]
    assert changed == [f"{shard_of(target.uuid)}.json"]


def test_transaction_all_or_nothing_on_exception(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    keep = [vdi() for _ in range(10)]
    for r in keep:
        store.put(r)
    with pytest.raises(RuntimeError):
        with store.transaction() as txn:
            txn.delete(keep[0].uuid)
            txn.put(vdi())
            txn.update(keep[1].uuid, hidden=True)
            assert len(txn.all()) == 10
            assert txn.find(keep[0].uuid) is None
            raise RuntimeError("abort")
    assert store.all() == sorted(keep, key=lambda r: r.uuid)
    assert os.listdir(tmp_path / "txn") == []


def test_corrupt_shard_raises_with_path(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    r = vdi()
    store.put(r)
    shard = tmp_path / "vdi" / f"{shard_of(r.uuid)}.json"
    shard.write_bytes(b"{truncated")
    with pytest.raises(MetadataError) as info:
        store.all()
    assert str(shard) in info.value.message
    raw = {"version": 1, "records": {r.uuid: {**r.to_dict(), "hidden": "yes"}}}
    shard.write_text(json.dumps(raw))
    with pytest.raises(RecordError) as rec_info:
        store.get(r.uuid)
    assert rec_info.value.field == "hidden" and str(shard) in rec_info.value.message


def test_ten_thousand_records(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    with store.transaction() as txn:
        for i in range(10_000):
            txn.put(vdi(name_label=f"disk {i}", virtual_size=i * 512))
    start = time.perf_counter()
    records = RecordStore(tmp_path).all()
    elapsed = time.perf_counter() - start
    assert len(records) == 10_000
    print(f"listed 10,000 records in {elapsed * 1000:.0f} ms")
    start = time.perf_counter()
    store.update(records[1234].uuid, hidden=True)
    print(f"updated one of 10,000 records in {(time.perf_counter() - start) * 1000:.1f} ms")
    assert store.get(records[1234].uuid).hidden


# -- crash consistency -----------------------------------------------------------------------

CHILD = """
import json, sys
from sm.records import RecordStore, SrRecord, VdiRecord
store = RecordStore(sys.argv[1])
plan = json.loads(sys.argv[2])
with store.transaction() as txn:
    for u in plan["delete"]:
        txn.delete(u)
    for d in plan["put"]:
        txn.put(VdiRecord.from_dict(d))
    for u in plan["hide"]:
        txn.update(u, hidden=True)
    txn.put_sr(SrRecord.from_dict(plan["sr"]))
print("committed", flush=True)
"""


def snapshot_state(store: RecordStore) -> tuple[Any, list[dict[str, Any]]]:
    sr = store.find_sr()
    return (sr.to_dict() if sr else None, [r.to_dict() for r in store.all()])


def make_plan(tmp_path: Path) -> tuple[Path, dict[str, Any], Any, Any]:
    directory = tmp_path / ".sm"
    directory.mkdir(parents=True)
    store = RecordStore(directory)
    sr = SrRecord(uuid=new_uuid(), name_label="before", type="file")
    existing = [vdi(name_label=f"v{i}") for i in range(40)]
    with store.transaction() as txn:
        txn.put_sr(sr)
        for r in existing:
            txn.put(r)
    before = snapshot_state(store)
    plan = {
        "delete": [r.uuid for r in existing[:5]],
        "put": [vdi(name_label=f"new{i}").to_dict() for i in range(5)],
        "hide": [r.uuid for r in existing[5:10]],
        "sr": {**sr.to_dict(), "name_label": "after"},
    }
    # The state the transaction should produce, computed independently.
    after_records = {r.uuid: r.to_dict() for r in existing[5:]}
    for u in plan["hide"]:
        after_records[u]["hidden"] = True
    for d in plan["put"]:
        after_records[d["uuid"]] = d
    after = (plan["sr"], [after_records[u] for u in sorted(after_records)])
    return directory, plan, before, after


def run_child(directory: Path, plan: dict[str, Any], point: str | None, nth: int | None = None
              ) -> int:
    env = dict(os.environ)
    if point:
        env.update(crash_env(point, nth))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(directory), json.dumps(plan)],
                          env=env, capture_output=True, text=True, check=False)
    return proc.returncode


CRASHES = [
    ("records.txn.staged", None, "before"),
    ("records.txn.committed", None, "after"),
    ("records.txn.moved", 1, "after"),
    ("records.txn.moved", 3, "after"),
    ("records.txn.moved", 9, "after"),
    ("records.txn.uncommitted", None, "after"),
]


@pytest.mark.parametrize(("point", "nth", "expect"), CRASHES)
def test_killed_transaction_is_all_or_nothing(tmp_path: Path, point: str, nth: int | None,
                                              expect: str) -> None:
    directory, plan, before, after = make_plan(tmp_path)
    early_reader = RecordStore(directory)  # opened before the crash: must roll forward itself
    assert run_child(directory, plan, point, nth) == -9
    assert os.listdir(directory / "txn"), "the crash should leave a transaction behind"
    wanted = before if expect == "before" else after
    if expect == "after":
        assert snapshot_state(early_reader) == wanted
    reopened = RecordStore(directory)
    assert snapshot_state(reopened) == wanted
    assert os.listdir(directory / "txn") == []
    # The store stays usable: the same transaction can be run to completion.
    if expect == "before":
        assert run_child(directory, plan, None) == 0
        assert snapshot_state(RecordStore(directory)) == after


def test_transaction_without_crash(tmp_path: Path) -> None:
    directory, plan, _, after = make_plan(tmp_path)
    assert run_child(directory, plan, None) == 0
    assert snapshot_state(RecordStore(directory)) == after
    assert os.listdir(directory / "txn") == []


def test_every_crash_point_is_hit(tmp_path: Path) -> None:
    """Guard against renamed crash points silently turning the tests above into no-ops."""
    directory, plan, _, _ = make_plan(tmp_path)
    moves = len({shard_of(u) for u in plan["delete"] + plan["hide"]}
                | {shard_of(d["uuid"]) for d in plan["put"]}) + 1
    assert moves >= 9
    for point, nth, _ in CRASHES:
        directory, plan, _, _ = make_plan(tmp_path / f"{point}-{nth}")
        assert run_child(directory, plan, point, nth) == -9


def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    directory = tmp_path / ".sm"
    store = RecordStore(directory, create=True)
    r = vdi(virtual_size=0)
    store.put(r)
    code = (
        "import sys\nfrom sm.records import RecordStore\n"
        "s = RecordStore(sys.argv[1])\n"
        "for _ in range(25):\n"
        "    with s.transaction() as t:\n"
        "        cur = t.get(sys.argv[2])\n"
        "        t.update(cur.uuid, virtual_size=cur.virtual_size + 1)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(directory), r.uuid])
             for _ in range(4)]
    assert [p.wait(120) for p in procs] == [0, 0, 0, 0]
    assert store.get(r.uuid).virtual_size == 100


def test_store_never_creates_its_directory(tmp_path: Path) -> None:
    """Opening records where there are none is SRUnavailable and writes nothing; only
    `create=True` (sr_create) makes the store's directory, and never its parents."""
    from sm.errors import SRUnavailable

    with pytest.raises(SRUnavailable):
        RecordStore(tmp_path / "etc" / ".sm")
    with pytest.raises(FileNotFoundError):
        RecordStore(tmp_path / "etc" / ".sm", create=True)
    assert list(tmp_path.iterdir()) == []
