"""The metadata volume ``MGT``: the SR record and every VDI record, stored inside the VG.

Layout: the LV is split into two equal slots. Each slot is a 32-byte header followed by a JSON
document ``{"sr": {...}, "vdis": {uuid: {...}}}``::

    magic "SMLVMGT1" | generation u64 | length u64 | crc32 u32 | reserved u32   (big-endian)

A write goes to the slot that does NOT hold the current generation, with generation + 1, and is
fsynced; a reader takes the valid slot with the highest generation. A crash mid-write leaves
the older slot intact, so every write is atomic. The whole document is rewritten each time:
records are small (~1 KiB per VDI) and an SR move must find everything in the VG.

Writers serialise on a lock file under the run directory (an LV cannot hold flock).
"""

from __future__ import annotations

import contextlib
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sm.errors import SRUnavailable
from sm.records import SrRecord, VdiRecord

from .lvio import LvBacking

__all__ = ["HEADER", "MGT_LV", "MGT_SIZE", "MetaDoc", "MgtError", "MgtStore"]

MGT_LV = "MGT"
MGT_SIZE = 8 * 1024 * 1024
MAGIC = b"SMLVMGT1"
HEADER = struct.Struct(">8sQQII")


class MgtError(SRUnavailable):
    """The metadata volume holds no valid slot."""


@dataclass
class MetaDoc:
    """The decoded contents of MGT."""

    sr: SrRecord
    vdis: dict[str, VdiRecord] = field(default_factory=dict)
    generation: int = 0
    journal: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Multi-step operations in flight, by id (replayed at sr_attach)."""
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Journal entries whose replay failed, set aside (`sm.journal.SetAside.to_dict()` plus
    the entry under ``entry``), by id: their VDIs are unusable until `sm sr repair`."""

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"sr": self.sr.to_dict(), "journal": self.journal,
                                "vdis": {u: r.to_dict() for u, r in sorted(self.vdis.items())}}
        if self.failed:
            body["failed"] = self.failed
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes, generation: int) -> MetaDoc:
        body: dict[str, Any] = json.loads(raw)
        sr = SrRecord.from_dict(body["sr"], path="MGT")
        vdis = {u: VdiRecord.from_dict(r, path=f"MGT/{u}") for u, r in body["vdis"].items()}
        return cls(sr, vdis, generation, dict(body.get("journal", {})),
                   dict(body.get("failed", {})))


def _decode_slot(head: bytes, read_body: Any) -> tuple[int, bytes] | None:
    magic, gen, length, crc, _ = HEADER.unpack(head)
    if magic != MAGIC:
        return None
    body: bytes = read_body(length)
    if len(body) != length or zlib.crc32(body) != crc:
        return None
    return gen, body


class MgtStore:
    """Read and write the MGT document through an open LV backing."""

    def __init__(self, backing: LvBacking, lock_path: Path | None = None) -> None:
        self.backing = backing
        self.lock_path = lock_path
        self.slot_size = backing.capacity() // 2

    def _slot(self, index: int) -> tuple[int, bytes] | None:
        base = index * self.slot_size
        head = self.backing.pread(HEADER.size, base)
        limit = self.slot_size - HEADER.size

        def body(n: int) -> bytes:
            return self.backing.pread(n, base + HEADER.size) if n <= limit else b""

        return _decode_slot(head, body)

    def read(self) -> MetaDoc:
        found = [s for s in (self._slot(0), self._slot(1)) if s is not None]
        if not found:
            raise MgtError("the metadata volume MGT holds no valid record slot")
        gen, body = max(found, key=lambda s: s[0])
        try:
            return MetaDoc.from_json(body, gen)
        except (ValueError, KeyError, TypeError) as err:
            raise MgtError(f"MGT generation {gen} does not decode: {err}") from err

    def write(self, doc: MetaDoc) -> None:
        """Write ``doc`` as generation ``doc.generation + 1`` into the other slot."""
        body = doc.to_json()
        if HEADER.size + len(body) > self.slot_size:
            raise MgtError(f"SR metadata ({len(body)} bytes) exceeds the MGT slot size")
        gen = doc.generation + 1
        head = HEADER.pack(MAGIC, gen, len(body), zlib.crc32(body), 0)
        self.backing.pwrite(head + body, (gen % 2) * self.slot_size)
        self.backing.fsync()
        doc.generation = gen

    def init(self, sr: SrRecord) -> None:
        """A fresh MGT: invalidate both slots, then write generation 1."""
        for index in (0, 1):
            self.backing.pwrite(bytes(HEADER.size), index * self.slot_size)
        self.write(MetaDoc(sr))

    @contextlib.contextmanager
    def transaction(self, purpose: str = "") -> Iterator[MetaDoc]:
        """Read, let the caller change the document, write it back (under the SR's lock)."""
        from sm import locking

        if self.lock_path is None:
            doc = self.read()
            yield doc
            self.write(doc)
            return
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with locking.lock(self.lock_path, purpose=purpose or "mgt"):
            doc = self.read()
            yield doc
            self.write(doc)
