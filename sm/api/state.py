"""State that belongs to no single SR, in SQLite (`<state_dir>/sm.db`).

Tables (every change runs in one `BEGIN IMMEDIATE` transaction; WAL journal):

- `settings(key, value)`: settings set with `sm settings set`.
- `identities(sr, uuid, location, name_label, name_description)`: the public identity of a VDI
  whose data now lives in another SR volume (after a revert by clone).
- `backings(sr, backing, location, public, live)`: every SR volume that is or was the data of
  a public VDI; `live=1` for the current one. Old snapshots say `snapshot_of=<old backing>`;
  this table maps that back to the public uuid.
- `snapshots(sr, uuid, vdi_sr, vdi, parent_sr, parent, name, description, created)`: the
  snapshot trees (the libvirt model): each snapshot knows the VDI it is of and its parent
  snapshot; `current(vdi_sr, vdi, sr, uuid)` names each VDI's current snapshot. A tree may span
  SRs, hence every reference is an (sr, uuid) pair.
- `journal(id, op, sr, data, step, created)`: multi-step operations of this layer in flight.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Backing", "Identity", "JournalEntry", "SnapshotNode", "State"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities (
    sr TEXT NOT NULL, uuid TEXT NOT NULL, location TEXT NOT NULL,
    name_label TEXT NOT NULL, name_description TEXT NOT NULL,
    PRIMARY KEY (sr, uuid));
CREATE TABLE IF NOT EXISTS backings (
    sr TEXT NOT NULL, backing TEXT NOT NULL, location TEXT NOT NULL, public TEXT NOT NULL,
    live INTEGER NOT NULL, PRIMARY KEY (sr, backing));
CREATE INDEX IF NOT EXISTS backings_public ON backings (sr, public);
CREATE TABLE IF NOT EXISTS snapshots (
    sr TEXT NOT NULL, uuid TEXT NOT NULL, vdi_sr TEXT NOT NULL, vdi TEXT NOT NULL,
    parent_sr TEXT, parent TEXT, name TEXT NOT NULL, description TEXT NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (sr, uuid));
CREATE INDEX IF NOT EXISTS snapshots_vdi ON snapshots (vdi_sr, vdi);
CREATE TABLE IF NOT EXISTS current (
    vdi_sr TEXT NOT NULL, vdi TEXT NOT NULL, sr TEXT NOT NULL, uuid TEXT NOT NULL,
    PRIMARY KEY (vdi_sr, vdi));
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, sr TEXT NOT NULL,
    data TEXT NOT NULL, step TEXT NOT NULL, created REAL NOT NULL);
"""

Key = tuple[str, str]
"""(sr uuid, vdi uuid)."""


@dataclass(frozen=True)
class Identity:
    sr: str
    uuid: str
    location: str
    name_label: str
    name_description: str


@dataclass(frozen=True)
class Backing:
    sr: str
    backing: str
    location: str
    public: str
    live: bool


@dataclass(frozen=True)
class SnapshotNode:
    sr: str
    uuid: str
    vdi_sr: str
    vdi: str
    parent: Key | None
    name: str
    description: str
    created: float

    @property
    def key(self) -> Key:
        return (self.sr, self.uuid)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sr": self.sr, "uuid": self.uuid, "vdi_sr": self.vdi_sr, "vdi": self.vdi,
            "parent": self.parent[1] if self.parent else None,
            "parent_sr": self.parent[0] if self.parent else None,
            "name": self.name, "description": self.description, "created": self.created,
        }  # fmt: skip


@dataclass(frozen=True)
class JournalEntry:
    id: int
    op: str
    sr: str
    data: dict[str, Any]
    step: str
    created: float


def _node(row: sqlite3.Row) -> SnapshotNode:
    parent = (row["parent_sr"], row["parent"]) if row["parent"] else None
    return SnapshotNode(row["sr"], row["uuid"], row["vdi_sr"], row["vdi"], parent, row["name"],
                        row["description"], row["created"])


class State:
    """The SQLite database. Reads use autocommit; `transaction()` groups writes."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "sm.db"
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        with self.transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All writes inside commit together or not at all (nesting joins the outer one)."""
        if self.db.in_transaction:
            yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return list(self.db.execute(sql, args))

    def _one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.db.execute(sql, args).fetchone()
        return row

    # -- settings -----------------------------------------------------------------------------

    def setting(self, key: str) -> str | None:
        row = self._one("SELECT value FROM settings WHERE key=?", key)
        return None if row is None else str(row["value"])

    def settings(self) -> dict[str, str]:
        return {r["key"]: r["value"] for r in self._all("SELECT key, value FROM settings")}

    def set_setting(self, key: str, value: str | None) -> None:
        with self.transaction() as db:
            if value is None:
                db.execute("DELETE FROM settings WHERE key=?", (key,))
            else:
                db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, value))

    # -- identity aliases ---------------------------------------------------------------------

    def identity(self, sr: str, uuid: str) -> Identity | None:
        row = self._one("SELECT * FROM identities WHERE sr=? AND uuid=?", sr, uuid)
        return None if row is None else Identity(*row)

    def identity_by_location(self, sr: str, location: str) -> Identity | None:
        row = self._one("SELECT * FROM identities WHERE sr=? AND location=?", sr, location)
        return None if row is None else Identity(*row)

    def backings(self, sr: str) -> dict[str, Backing]:
        rows = self._all("SELECT * FROM backings WHERE sr=?", sr)
        return {r["backing"]: Backing(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows}

    def live_backing(self, sr: str, public: str) -> Backing | None:
        row = self._one("SELECT * FROM backings WHERE sr=? AND public=? AND live=1", sr, public)
        return None if row is None else Backing(row[0], row[1], row[2], row[3], True)

    def hand_over(self, ident: Identity, old: str, old_location: str, new: str,
                  new_location: str) -> None:
        """Make volume `new` the data of public VDI `ident`, `old` a retired backing."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO identities VALUES (?, ?, ?, ?, ?)",
                       (ident.sr, ident.uuid, ident.location, ident.name_label,
                        ident.name_description))
            db.execute("INSERT OR REPLACE INTO backings VALUES (?, ?, ?, ?, 0)",
                       (ident.sr, old, old_location, ident.uuid))
            db.execute("UPDATE backings SET live=0 WHERE sr=? AND public=?",
                       (ident.sr, ident.uuid))
            db.execute("INSERT OR REPLACE INTO backings VALUES (?, ?, ?, ?, 1)",
                       (ident.sr, new, new_location, ident.uuid))

    def forget_vdi(self, sr: str, public: str) -> None:
        """Drop the identity and snapshot tree of a deleted VDI; its backings stay, retired,
        so snapshots that outlive it still name it by its public uuid."""
        with self.transaction() as db:
            db.execute("DELETE FROM identities WHERE sr=? AND uuid=?", (sr, public))
            db.execute("UPDATE backings SET live=0 WHERE sr=? AND public=?", (sr, public))
            db.execute("DELETE FROM current WHERE vdi_sr=? AND vdi=?", (sr, public))
            db.execute("DELETE FROM snapshots WHERE vdi_sr=? AND vdi=?", (sr, public))

    def forget_sr(self, sr: str) -> None:
        with self.transaction() as db:
            for table, col in (("identities", "sr"), ("backings", "sr"), ("current", "vdi_sr"),
                               ("snapshots", "sr"), ("snapshots", "vdi_sr")):
                db.execute(f"DELETE FROM {table} WHERE {col}=?", (sr,))

    # -- snapshot trees -----------------------------------------------------------------------

    def snapshot(self, key: Key) -> SnapshotNode | None:
        row = self._one("SELECT * FROM snapshots WHERE sr=? AND uuid=?", *key)
        return None if row is None else _node(row)

    def tree(self, vdi: Key) -> tuple[list[SnapshotNode], Key | None]:
        """The snapshots of `vdi` (oldest first) and its current snapshot."""
        rows = self._all("SELECT * FROM snapshots WHERE vdi_sr=? AND vdi=? ORDER BY created, rowid",
                         *vdi)
        cur = self._one("SELECT sr, uuid FROM current WHERE vdi_sr=? AND vdi=?", *vdi)
        return [_node(r) for r in rows], (None if cur is None else (cur["sr"], cur["uuid"]))

    def snapshots_named(self, name: str) -> set[Key]:
        return {(r["sr"], r["uuid"]) for r in self._all(
            "SELECT sr, uuid FROM snapshots WHERE name=?", name)}

    def current(self, vdi: Key) -> Key | None:
        return self.tree(vdi)[1]

    def add_snapshot(self, node: SnapshotNode) -> None:
        """Add `node` (its parent: the VDI's current snapshot) and make it current."""
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (node.sr, node.uuid, node.vdi_sr, node.vdi,
                        node.parent[0] if node.parent else None,
                        node.parent[1] if node.parent else None,
                        node.name, node.description, node.created))
            self.set_current((node.vdi_sr, node.vdi), node.key)

    def set_current(self, vdi: Key, snap: Key | None) -> None:
        with self.transaction() as db:
            if snap is None:
                db.execute("DELETE FROM current WHERE vdi_sr=? AND vdi=?", vdi)
            else:
                db.execute("INSERT OR REPLACE INTO current VALUES (?, ?, ?, ?)", (*vdi, *snap))

    def remove_snapshot(self, key: Key) -> None:
        """Remove one node: its children get its parent; if it was current, its parent is."""
        with self.transaction() as db:
            node = self.snapshot(key)
            if node is None:
                return
            psr, puuid = node.parent if node.parent else (None, None)
            db.execute("UPDATE snapshots SET parent_sr=?, parent=? WHERE parent_sr=? AND parent=?",
                       (psr, puuid, *key))
            vdi = (node.vdi_sr, node.vdi)
            if self.current(vdi) == key:
                self.set_current(vdi, node.parent)
            db.execute("DELETE FROM snapshots WHERE sr=? AND uuid=?", key)

    # -- journal ------------------------------------------------------------------------------

    def journal_begin(self, op: str, sr: str, **data: Any) -> int:
        with self.transaction() as db:
            cur = db.execute("INSERT INTO journal (op, sr, data, step, created) VALUES (?,?,?,?,?)",
                             (op, sr, json.dumps(data), "begun", time.time()))
            assert cur.lastrowid is not None
            return cur.lastrowid

    def journal_step(self, entry: int, step: str, **data: Any) -> None:
        with self.transaction() as db:
            row = self._one("SELECT data FROM journal WHERE id=?", entry)
            merged = json.loads(row["data"]) if row else {}
            merged.update(data)
            db.execute("UPDATE journal SET step=?, data=? WHERE id=?",
                       (step, json.dumps(merged), entry))

    def journal_done(self, entry: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM journal WHERE id=?", (entry,))

    def journal(self) -> list[JournalEntry]:
        return [JournalEntry(r["id"], r["op"], r["sr"], json.loads(r["data"]), r["step"],
                             r["created"]) for r in self._all("SELECT * FROM journal ORDER BY id")]
