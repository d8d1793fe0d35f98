"""The record store: the SR record and the VDI records on the SR (standard library only).

The SR is self-describing: everything a toolstack needs to list its VDIs lives in the SR, so an
SR attached elsewhere shows the same VDIs. Layout under the store directory (``<sr>/.sm``)::

    sr.json              the SR record
    vdi/<xx>.json        shard xx = crc32(uuid) & 0xff: {"version": 1, "records": {uuid: {..}},
                         "children": {parent uuid: [child uuids]}} (parents in shard xx)
    vdi/children.index   present once every shard's "children" is complete
    txn/<id>/            a transaction being committed: staged files and a COMMIT marker
    write.lock           held (flock, exclusive) by a writer for a whole transaction
    commit.lock          readers hold it shared; a committer exclusive while moving files in

Why 256 shards rather than one file per VDI or one file for all: listing 10,000 records reads
256 files instead of 10,000 (per-file open/read dominates, badly so over NFS), while updating
one record rewrites one shard of ~40 records instead of all 10,000. Every file is replaced
atomically (``sm.atomic``), so a one-shard change needs nothing more.

The parent index: ``children_of(P)`` reads one shard, P's, instead of every record (what a
snapshot, revert, delete or writable attach asks about a VDI). Each transaction keeps it: a
record put with another parent, or deleted, updates the old and the new parent's shard in the
same commit. ``children[P]`` lists the records whose ``parent`` field is P, whether or not P
itself has a record. SRs written before the index existed have no ``children.index``:
``children_of`` then scans all records until ``build_index`` (run at SR attach and scan)
writes every shard's part and the marker in one transaction.

A transaction touching several files is all-or-nothing: new versions are written into
``txn/<id>/``, then ``COMMIT`` (the commit point), then renamed into place, then the directory
is removed. Whoever finds a transaction directory with ``COMMIT`` rolls it forward (readers
too, before reading); one without ``COMMIT`` whose writer is gone is discarded. Readers hold
``commit.lock`` shared, so they never see a half-moved commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sm import atomic, locking
from sm.errors import LockErr, MetadataError, SRUnavailable, VDIMissing
from sm.faults import crash_point

from .model import VERSION, RecordError, SrRecord, StrPath, VdiRecord

_SHARD = re.compile(r"[0-9a-f]{2}\.json\Z")
INDEX_MARKER = "children.index"


def shard_of(uuid: str) -> str:
    return f"{zlib.crc32(uuid.encode()) & 0xFF:02x}"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class RecordStore:
    """The records of one SR, in ``directory`` (usually ``<sr>/.sm``).

    ``directory`` must exist (SRUnavailable 47 otherwise) unless ``create`` (``sr_create``),
    which makes it, never its parents: opening records never turns an arbitrary directory into
    something SR-like. The store's own ``vdi/`` and ``txn/`` are made inside it if missing.
    Opening finishes a committed transaction a crashed writer left behind and discards an
    uncommitted one. Reads never wait for a writer's transaction body, only for its commit.
    """

    def __init__(self, directory: StrPath, *, lock_timeout: float | None = locking.DEFAULT_TIMEOUT,
                 create: bool = False) -> None:
        self.directory = Path(directory)
        self.lock_timeout = lock_timeout
        self._vdi_dir = self.directory / "vdi"
        self._txn_dir = self.directory / "txn"
        self._write_lock = self.directory / "write.lock"
        self._commit_lock = self.directory / "commit.lock"
        if create:
            self.directory.mkdir(exist_ok=True)
        elif not self.directory.is_dir():
            raise SRUnavailable(f"no SR records in {self.directory}")
        for d in (self._vdi_dir, self._txn_dir):
            d.mkdir(exist_ok=True)
        self._roll_forward()
        with contextlib.suppress(LockErr):
            with locking.lock(self._write_lock, timeout=0, purpose="records: discard"):
                self._discard_uncommitted()

    # -- reading -----------------------------------------------------------------------------

    def find_sr(self) -> SrRecord | None:
        with self._reading():
            return self._load_sr()

    def sr(self) -> SrRecord:
        """The SR record; ``MetadataError`` if the SR has none (not created by sm)."""
        found = self.find_sr()
        if found is None:
            raise MetadataError(f"no SR record in {self.directory}",
                                details={"path": str(self.directory / "sr.json")})
        return found

    def find(self, uuid: str) -> VdiRecord | None:
        with self._reading():
            return self._load_shard(shard_of(uuid)).get(uuid)

    def get(self, uuid: str) -> VdiRecord:
        """The record of VDI ``uuid``; ``VDIMissing`` (144) if there is none."""
        found = self.find(uuid)
        if found is None:
            raise VDIMissing(f"no record of VDI {uuid} in {self.directory}")
        return found

    def all(self) -> list[VdiRecord]:
        """Every VDI record, sorted by uuid (one consistent state)."""
        with self._reading():
            return self._load_all()

    def indexed(self) -> bool:
        """Whether the parent index is complete (see the module docstring)."""
        return (self._vdi_dir / INDEX_MARKER).exists()

    def children_of(self, uuid: str) -> list[str]:
        """The uuids of the records whose parent is ``uuid``, sorted: one shard read once the
        index is built, a scan of all records before."""
        with self._reading():
            if self.indexed():
                return sorted(self._load_shard_file(shard_of(uuid))[1].get(uuid, ()))
            return [r.uuid for r in self._load_all() if r.parent == uuid]

    def build_index(self) -> bool:
        """Write the parent index if it is not complete yet; returns whether it wrote it."""
        if self.indexed():
            return False
        with self.transaction(purpose="build the parent index") as txn:
            txn._build_index()
        return True

    def find_by_location(self, location: str) -> VdiRecord | None:
        with self._reading():
            guess = self._load_shard(shard_of(location)).get(location)  # location == uuid?
            if guess is not None and guess.location == location:
                return guess
            # Compare the raw JSON first: building 10,000 records to find one is wasteful.
            for name in sorted(os.listdir(self._vdi_dir)):
                if not _SHARD.match(name):
                    continue
                raw = self._load_json(self._vdi_dir / name)
                records = raw.get("records") if isinstance(raw, dict) else None
                if isinstance(records, dict) and any(
                    isinstance(item, dict) and item.get("location") == location
                    for item in records.values()
                ):
                    shard = self._load_shard(name[:2]).values()
                    match = next((r for r in shard if r.location == location), None)
                    if match is not None:  # else the shard changed since: keep looking
                        return match
            return None

    # -- writing -----------------------------------------------------------------------------

    def put_sr(self, sr: SrRecord) -> None:
        with self.transaction() as txn:
            txn.put_sr(sr)

    def put(self, record: VdiRecord) -> None:
        """Insert or replace ``record``."""
        with self.transaction() as txn:
            txn.put(record)

    def update(self, uuid: str, /, **changes: Any) -> VdiRecord:
        """Change fields of VDI ``uuid`` (``VDIMissing`` if absent); return the new record."""
        with self.transaction() as txn:
            return txn.update(uuid, **changes)

    def delete(self, uuid: str, *, missing_ok: bool = False) -> None:
        with self.transaction() as txn:
            txn.delete(uuid, missing_ok=missing_ok)

    @contextlib.contextmanager
    def transaction(self, *, purpose: str = "") -> Iterator[Transaction]:
        """Changes made through the yielded transaction become visible together when the block
        ends, or not at all (the block raised, or the process died before the commit point).
        Writers are serialised: the block holds ``write.lock``; keep it short."""
        with locking.lock(self._write_lock, timeout=self.lock_timeout,
                          purpose=f"records: {purpose}"):
            self._roll_forward()
            self._discard_uncommitted()
            txn = Transaction(self)
            yield txn
            txn._commit()

    # -- files -------------------------------------------------------------------------------

    def _load_sr(self) -> SrRecord | None:
        path = self.directory / "sr.json"
        try:
            raw = self._load_json(path)
        except FileNotFoundError:
            return None
        return SrRecord.from_dict(raw, path=str(path))

    def _load_json(self, path: Path) -> Any:
        data = path.read_bytes()
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as err:
            raise MetadataError(f"corrupt record file {path}: {err}",
                                details={"path": str(path)}) from err

    def _load_shard(self, shard: str) -> dict[str, VdiRecord]:
        return self._load_shard_file(shard)[0]

    def _load_shard_file(self, shard: str) -> tuple[dict[str, VdiRecord], dict[str, set[str]]]:
        """(records, parent index) of one shard; both empty if it has no file."""
        path = self._vdi_dir / f"{shard}.json"
        try:
            raw = self._load_json(path)
        except FileNotFoundError:
            return {}, {}
        if not (isinstance(raw, dict) and raw.get("version") == VERSION
                and isinstance(raw.get("records"), dict)):
            raise MetadataError(f"corrupt record file {path}: bad header",
                                details={"path": str(path)})
        records = {}
        for uuid, item in raw["records"].items():
            record = VdiRecord.from_dict(item, path=str(path))
            if record.uuid != uuid or shard_of(uuid) != shard:
                raise RecordError(f"record {uuid} misfiled", field="uuid", path=str(path))
            records[uuid] = record
        kids = raw.get("children", {})
        if not (isinstance(kids, dict) and all(
                isinstance(v, list) and all(isinstance(k, str) for k in v)
                and shard_of(p) == shard for p, v in kids.items())):
            raise RecordError("bad parent index", field="children", path=str(path))
        return records, {p: set(v) for p, v in kids.items()}

    def _load_all(self) -> list[VdiRecord]:
        records: list[VdiRecord] = []
        for name in sorted(os.listdir(self._vdi_dir)):
            if _SHARD.match(name):
                records.extend(self._load_shard(name[:2]).values())
        records.sort(key=lambda r: r.uuid)
        return records

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        while True:
            handle = locking.FileLock(self._commit_lock)
            handle.acquire(shared=True, timeout=self.lock_timeout, purpose="records: read")
            if not self._committed():
                break
            handle.release()
            self._roll_forward()
        try:
            yield
        finally:
            handle.release()

    def _committed(self) -> list[Path]:
        return [self._txn_dir / name for name in sorted(os.listdir(self._txn_dir))
                if (self._txn_dir / name / "COMMIT").exists()]

    def _roll_forward(self) -> None:
        if not self._committed():
            return
        with locking.lock(self._commit_lock, timeout=self.lock_timeout,
                          purpose="records: roll forward"):
            for txn in self._committed():
                names = self._load_json(txn / "COMMIT")
                self._move_in(txn, names)
                self._finish(txn)

    def _target(self, name: str) -> Path:
        return self.directory / name if name == "sr.json" else self._vdi_dir / name

    def _move_in(self, txn: Path, names: list[str]) -> None:
        for name in names:
            staged = txn / name
            if staged.exists():  # absent: moved before a crash
                os.replace(staged, self._target(name))
                crash_point("records.txn.moved")
        atomic.fsync_dir(self._vdi_dir)
        if "sr.json" in names:
            atomic.fsync_dir(self.directory)

    def _finish(self, txn: Path) -> None:
        atomic.unlink(txn / "COMMIT")
        crash_point("records.txn.uncommitted")
        for name in os.listdir(txn):  # staging is flat: no shutil.rmtree (nor its import)
            os.unlink(txn / name)
        os.rmdir(txn)
        atomic.fsync_dir(self._txn_dir)

    def _discard_uncommitted(self) -> None:
        """Remove staging directories without COMMIT. Only with ``write.lock`` held."""
        for name in os.listdir(self._txn_dir):
            txn = self._txn_dir / name
            if not (txn / "COMMIT").exists():
                import shutil

                shutil.rmtree(txn, ignore_errors=True)
        atomic.remove_stale_temps(self._vdi_dir)
        atomic.remove_stale_temps(self.directory)


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

    def _build_index(self) -> None:
        for name in sorted(os.listdir(self._store._vdi_dir)):
            if _SHARD.match(name):
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

    def _files(self) -> dict[str, bytes]:
        files = {
            f"{shard}.json": _dumps({
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
            files["sr.json"] = _dumps(self._sr.to_dict())
        return files

    def _commit(self) -> None:
        store = self._store
        files = self._files()
        if len(files) <= 1:  # one atomic rename is all-or-nothing already
            for name, data in files.items():
                atomic.write_atomic(store._target(name), data)
            return
        txn = store._txn_dir / f"{time.time_ns():020d}-{os.getpid()}-{os.urandom(4).hex()}"
        txn.mkdir()
        # the staging directory is private until COMMIT names its files: no temporary names
        # and renames, and one directory fsync for all of them
        for name, data in files.items():
            fd = atomic.open_exclusive(txn / name)
            try:
                atomic.write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        atomic.fsync_dir(txn)
        crash_point("records.txn.staged")
        with locking.lock(store._commit_lock, timeout=store.lock_timeout,
                          purpose="records: commit"):
            atomic.write_atomic(txn / "COMMIT", _dumps(sorted(files)))
            crash_point("records.txn.committed")
            store._move_in(txn, sorted(files))
            store._finish(txn)
