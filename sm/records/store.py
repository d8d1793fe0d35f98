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

Reading and validating one shard file: `sm.records.shards`; a transaction's staged state:
`sm.records.txn`. This module keeps the locks and the commit protocol.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sm import atomic, locking
from sm.errors import LockErr, MetadataError, SRUnavailable, VDIMissing
from sm.faults import crash_point

from .model import SrRecord, StrPath, VdiRecord
from .shards import INDEX_MARKER, SHARD_FILE, dumps, load_json, load_shard, shard_of
from .txn import Transaction

__all__ = ["RecordStore", "Transaction", "shard_of"]


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
            txn.build_index()
        return True

    def find_by_location(self, location: str) -> VdiRecord | None:
        with self._reading():
            guess = self._load_shard(shard_of(location)).get(location)  # location == uuid?
            if guess is not None and guess.location == location:
                return guess
            # Compare the raw JSON first: building 10,000 records to find one is wasteful.
            for name in sorted(os.listdir(self._vdi_dir)):
                if not SHARD_FILE.match(name):
                    continue
                raw = load_json(self._vdi_dir / name)
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
            self._commit(txn.files())

    # -- files -------------------------------------------------------------------------------

    def _load_sr(self) -> SrRecord | None:
        path = self.directory / "sr.json"
        try:
            raw = load_json(path)
        except FileNotFoundError:
            return None
        return SrRecord.from_dict(raw, path=str(path))

    def _load_shard(self, shard: str) -> dict[str, VdiRecord]:
        return self._load_shard_file(shard)[0]

    def _load_shard_file(self, shard: str) -> tuple[dict[str, VdiRecord], dict[str, set[str]]]:
        """(records, parent index) of one shard; both empty if it has no file."""
        return load_shard(self._vdi_dir / f"{shard}.json", shard)

    def _load_all(self) -> list[VdiRecord]:
        records: list[VdiRecord] = []
        for name in sorted(os.listdir(self._vdi_dir)):
            if SHARD_FILE.match(name):
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

    def _commit(self, files: dict[str, bytes]) -> None:
        """Write a transaction's files: one atomic rename for one file, else staged, COMMIT,
        moved in (see the module docstring)."""
        if len(files) <= 1:  # one atomic rename is all-or-nothing already
            for name, data in files.items():
                atomic.write_atomic(self._target(name), data)
            return
        txn = self._txn_dir / f"{time.time_ns():020d}-{os.getpid()}-{os.urandom(4).hex()}"
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
        with locking.lock(self._commit_lock, timeout=self.lock_timeout,
                          purpose="records: commit"):
            atomic.write_atomic(txn / "COMMIT", dumps(sorted(files)))
            crash_point("records.txn.committed")
            self._move_in(txn, sorted(files))
            self._finish(txn)

    def _committed(self) -> list[Path]:
        return [self._txn_dir / name for name in sorted(os.listdir(self._txn_dir))
                if (self._txn_dir / name / "COMMIT").exists()]

    def _roll_forward(self) -> None:
        if not self._committed():
            return
        with locking.lock(self._commit_lock, timeout=self.lock_timeout,
                          purpose="records: roll forward"):
            for txn in self._committed():
                names = load_json(txn / "COMMIT")
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
