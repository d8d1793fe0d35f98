"""The files of the record store (`sm.records.store` describes the layout): which shard holds a
uuid, how a file is encoded, and the reading and validation of one shard file, records and
parent index (standard library only)."""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path
from typing import Any

from sm.errors import MetadataError

from .model import VERSION, RecordError, VdiRecord

__all__ = ["INDEX_MARKER", "SHARD_FILE", "dumps", "load_json", "load_shard", "shard_of"]

SHARD_FILE = re.compile(r"[0-9a-f]{2}\.json\Z")
INDEX_MARKER = "children.index"
"""Present in ``vdi/`` once every shard's parent index is complete."""


def shard_of(uuid: str) -> str:
    return f"{zlib.crc32(uuid.encode()) & 0xFF:02x}"


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def load_json(path: Path) -> Any:
    """The JSON in `path` (FileNotFoundError if absent); MetadataError if it is corrupt."""
    data = path.read_bytes()
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise MetadataError(f"corrupt record file {path}: {err}",
                            details={"path": str(path)}) from err


def load_shard(path: Path, shard: str) -> tuple[dict[str, VdiRecord], dict[str, set[str]]]:
    """(records, parent index) of shard `shard`, whose file is `path`; both empty if it has
    no file. A record filed in the wrong shard or a malformed index is a RecordError."""
    try:
        raw = load_json(path)
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
