"""sm.records: the parent index (children_of reads one shard) and its migration."""

from __future__ import annotations

import json
import uuid as uuidlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sm.errors import MetadataError
from sm.records import RecordStore, VdiRecord, shard_of
from sm.records.store import INDEX_MARKER

UUIDS = [str(uuidlib.UUID(int=i * 7919 + 1, version=4)) for i in range(8)]


def truth(store: RecordStore) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in store.all():
        if r.parent:
            out.setdefault(r.parent, []).append(r.uuid)
    return out


ops = st.lists(st.tuples(st.sampled_from(["put", "delete", "txn"]), st.sampled_from(UUIDS),
                         st.sampled_from(["", *UUIDS]), st.sampled_from(UUIDS)),
               max_size=25)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_index_always_matches_the_records(tmp_path_factory: pytest.TempPathFactory,
                                          sequence: list[tuple[str, str, str, str]]) -> None:
    store = RecordStore(tmp_path_factory.mktemp("s"))
    store.build_index()
    for op, u, parent, other in sequence:
        parent = "" if parent == u else parent
        if op == "put":
            store.put(VdiRecord(uuid=u, location=u, parent=parent))
        elif op == "delete":
            store.delete(u, missing_ok=True)
        else:  # two changes in one transaction, read back inside it
            with store.transaction() as txn:
                txn.put(VdiRecord(uuid=u, location=u, parent=parent))
                if other != u:
                    txn.delete(other, missing_ok=True)
                assert txn.children_of(parent or u) == sorted(
                    r.uuid for r in txn.all() if r.parent == (parent or u))
    want = truth(store)
    for u in UUIDS:
        assert store.children_of(u) == sorted(want.get(u, [])), u


def test_store_from_before_the_index_scans_then_builds_it(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    base, a, b = UUIDS[:3]
    for u, p in ((base, ""), (a, base), (b, base)):
        store.put(VdiRecord(uuid=u, location=u, parent=p))
    # the earlier form: shards without "children", no marker
    for f in (tmp_path / "vdi").glob("*.json"):
        raw = json.loads(f.read_bytes())
        raw.pop("children", None)
        f.write_text(json.dumps(raw))
    assert not store.indexed()
    assert store.children_of(base) == sorted([a, b])  # by scanning
    assert store.build_index() is True
    assert store.indexed() and store.build_index() is False
    raw = json.loads((tmp_path / "vdi" / f"{shard_of(base)}.json").read_bytes())
    assert raw["children"] == {base: sorted([a, b])}
    assert (tmp_path / "vdi" / INDEX_MARKER).exists()
    assert store.children_of(base) == sorted([a, b]) and store.children_of(a) == []


def test_a_bad_index_is_corrupt_metadata(tmp_path: Path) -> None:
    store = RecordStore(tmp_path)
    store.build_index()
    store.put(VdiRecord(uuid=UUIDS[1], location=UUIDS[1], parent=UUIDS[0]))
    path = tmp_path / "vdi" / f"{shard_of(UUIDS[0])}.json"
    raw = json.loads(path.read_bytes())
    raw["children"] = {UUIDS[0]: "not a list"}
    path.write_text(json.dumps(raw))
    with pytest.raises(MetadataError, match="parent index"):
        store.children_of(UUIDS[0])
