"""A transaction of the record store (`sm.records.store`): changes staged in memory, read back
in their staged state, with the parent index kept in step; the store commits its `files()` all
together or not at all (standard library only)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from sm.errors import VDIMissing

from .model import VERSION, RecordError, SrRecord, VdiRecord
from .shards import INDEX_MARKER, SHARD_FILE, dumps, shard_of

if TYPE_CHECKING:
    from .store import RecordStore

__all__ = ["Transaction"]


class Transaction:
    """Staged changes to a :class:`RecordStore`; reads see the staged state."""

    def __init__(self, store: RecordStore) -> None:
        self._store = store
        self._shards: dict[str, dict[str, VdiRecord]] = {}
        self._kids: dict[str, dict[str, set[str]]] = {}  # shard -> parent -> children
        self._dirty: set[str] = set()
        self._index_built = False
        self._sr: SrRecord | None = None
        self._sr_dirty = False

    def _shard(self, shard: str) -> dict[str, VdiRecord]:
        if shard not in self._shards:
            self._shards[shard], self._kids[shard] = self._store._load_shard_file(shard)
        return self._shards[shard]

    def _link(self, parent: str, child: str, add: bool) -> None:
        shard = shard_of(parent)
        self._shard(shard)
        kids = self._kids[shard].setdefault(parent, set())
        if add:
            kids.add(child)
        else:
            kids.discard(child)
        self._dirty.add(shard)

    def children_of(self, uuid: str) -> list[str]:
        """As `RecordStore.children_of`, in the staged state."""
        if self._index_built or self._store.indexed():
            self._shard(shard_of(uuid))
            return sorted(self._kids[shard_of(uuid)].get(uuid, ()))
        return [r.uuid for r in self.all() if r.parent == uuid]

    def build_index(self) -> None:
        """Stage every shard's parent index and the index marker."""
        for name in sorted(os.listdir(self._store._vdi_dir)):
            if SHARD_FILE.match(name):
                self._shard(name[:2])  # every shard in the transaction: the staged state
        want: dict[str, dict[str, set[str]]] = {shard: {} for shard in self._shards}
        for records in list(self._shards.values()):
            for r in records.values():
                if r.parent:
                    want.setdefault(shard_of(r.parent), {}).setdefault(r.parent, set()).add(r.uuid)
        for shard, kids in want.items():
            self._shard(shard)
            if self._kids[shard] != kids:
                self._kids[shard] = kids
                self._dirty.add(shard)
        self._index_built = True

    def sr(self) -> SrRecord | None:
        return self._sr if self._sr_dirty else self._store._load_sr()

    def put_sr(self, sr: SrRecord) -> None:
        self._sr, self._sr_dirty = sr, True

    def find(self, uuid: str) -> VdiRecord | None:
        return self._shard(shard_of(uuid)).get(uuid)

    def get(self, uuid: str) -> VdiRecord:
        found = self.find(uuid)
        if found is None:
            raise VDIMissing(f"no record of VDI {uuid} in {self._store.directory}")
        return found

    def all(self) -> list[VdiRecord]:
        records = {r.uuid: r for r in self._store._load_all()}
        for shard in self._dirty:
            for uuid in [u for u in records if shard_of(u) == shard]:
                del records[uuid]
            records.update(self._shards[shard])
        return sorted(records.values(), key=lambda r: r.uuid)

    def put(self, record: VdiRecord) -> None:
        shard = shard_of(record.uuid)
        old = self._shard(shard).get(record.uuid)
        self._shards[shard][record.uuid] = record
        self._dirty.add(shard)
        if old is None or old.parent != record.parent:
            if old is not None and old.parent:
                self._link(old.parent, record.uuid, add=False)
            if record.parent:
                self._link(record.parent, record.uuid, add=True)

    def update(self, uuid: str, /, **changes: Any) -> VdiRecord:
        if "uuid" in changes and changes["uuid"] != uuid:
            raise RecordError("update cannot change a uuid", field="uuid")
        record = self.get(uuid).replace(**changes)
        self.put(record)
        return record

    def delete(self, uuid: str, *, missing_ok: bool = False) -> None:
        shard = shard_of(uuid)
        old = self._shard(shard).pop(uuid, None)
        if old is None:
            if not missing_ok:
                raise VDIMissing(f"no record of VDI {uuid} in {self._store.directory}")
            return
        self._dirty.add(shard)
        if old.parent:
            self._link(old.parent, uuid, add=False)

    def files(self) -> dict[str, bytes]:
        """What the commit writes: file name (a shard, the index marker, sr.json) -> bytes."""
        files = {
            f"{shard}.json": dumps({
                "version": VERSION,
                "records": {u: r.to_dict() for u, r in sorted(self._shards[shard].items())},
                "children": {p: sorted(k) for p, k in sorted(self._kids[shard].items()) if k},
            })
            for shard in sorted(self._dirty)
        }
        if self._index_built:
            files[INDEX_MARKER] = b"1\n"
        if self._sr_dirty:
            assert self._sr is not None
            files["sr.json"] = dumps(self._sr.to_dict())
        return files
