"""`sm vdi attach` / `detach`: a VDI served over NBD until detached (docs/api.md).

Attach is the driver's own data path: `vdi_attach` (which starts the VDI's nbdkit server,
`sm.nbd`) and `vdi_activate`; the URL is the `params_nbd` it returns, written the way NBD
tools take it (`nbd+unix:///<export>?socket=<path>`). The attachment outlives the command, so
it is recorded in the state database (`exports` table, created here); while a VDI is exported,
this layer's own data access (read, write, export, import, copy) reuses that attachment
instead of attaching and detaching around it, which would stop the server. Detach is
`vdi_deactivate` + `vdi_detach` (which stops the server) and forgets the record.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sm.errors import InvalidArg, SMError, Unimplemented, VDIInUse, VDIUnavailable
from sm.faults import crash_point

from .models import VDI

if TYPE_CHECKING:
    from .client import SRClient
    from .state import State

__all__ = ["Export", "attach", "detach", "exports", "find", "nbd_uri"]

_SCHEMA = """CREATE TABLE IF NOT EXISTS exports (
    sr TEXT NOT NULL, uuid TEXT NOT NULL, backing TEXT NOT NULL, location TEXT NOT NULL,
    writable INTEGER NOT NULL, url TEXT NOT NULL, attach TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (sr, uuid))"""


@dataclass(frozen=True)
class Export:
    """A VDI served over NBD by `sm vdi attach`."""

    sr: str
    uuid: str
    backing: str
    location: str
    writable: bool
    url: str
    """`nbd+unix:///<export>?socket=<path>` (qemu-img, qemu-io, nbdinfo, nbdcopy take it)."""
    created: float
    attach: Mapping[str, Any]
    """The driver's `vdi_attach` result (`params`, `params_nbd`, ...)."""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "attach": dict(self.attach)}


def _table(state: State) -> State:
    state.db.execute(_SCHEMA)
    return state


def _export(row: Any) -> Export:
    return Export(row["sr"], row["uuid"], row["backing"], row["location"], bool(row["writable"]),
                  row["url"], row["created"], json.loads(row["attach"]))


def nbd_uri(params_nbd: str) -> str:
    """`nbd:unix:<socket>:exportname=<name>` (the driver's form) as an NBD URI."""
    from sm.nbd.client import parse_url

    sock, name = parse_url(params_nbd)
    return f"nbd+unix:///{name}?socket={sock}"


def exports(state: State) -> list[Export]:
    rows = _table(state).db.execute("SELECT * FROM exports ORDER BY created").fetchall()
    return [_export(r) for r in rows]


def find(state: State, sr: str, uuid: str) -> Export | None:
    row = _table(state).db.execute("SELECT * FROM exports WHERE sr=? AND uuid=?",
                                   (sr, uuid)).fetchone()
    return None if row is None else _export(row)


def attach(state: State, client: SRClient, vdi: VDI, writable: bool) -> Export:
    """Serve `vdi` over NBD (read-only unless `writable`) until `detach`."""
    if vdi.hidden:
        raise InvalidArg(f"{vdi.uuid} is a hidden snapshot base")
    known = find(state, vdi.sr, vdi.uuid)
    if known is not None and known.url:
        if known.writable == writable:
            return known
        raise VDIInUse(f"{vdi.uuid} is attached {'writable' if known.writable else 'read-only'}"
                       f" at {known.url}; detach it first")
    if writable and (vdi.is_a_snapshot or vdi.read_only):
        raise VDIUnavailable(f"{vdi.uuid} is {'a snapshot' if vdi.is_a_snapshot else 'read-only'}"
                             ": attach it without --writable")
    not_attached_elsewhere(client, vdi)
    # Recorded first, without a URL: an attach interrupted after the driver's can be detached.
    _put(state, Export(vdi.sr, vdi.uuid, vdi.ref[0], vdi.ref[1], writable, "", time.time(), {}))
    try:
        result = dict(client.vdi_attach(vdi.ref, writable))
        crash_point("api.attach.attached")
        url = result.get("params_nbd")
        if not isinstance(url, str) or not url.startswith("nbd:unix:"):
            raise VDIUnavailable(f"SR {client.sr.name} ({client.sr.type}) did not serve VDI "
                                 f"{vdi.uuid} over NBD (nbdkit missing, or SM_DATA_PATH=none)")
    except BaseException:
        with contextlib.suppress(SMError):
            client.vdi_detach(vdi.ref)
        forget(state, vdi.sr, vdi.uuid)
        raise
    export = Export(vdi.sr, vdi.uuid, vdi.ref[0], vdi.ref[1], writable, nbd_uri(url),
                    time.time(), result)
    _put(state, export)
    return export


def _put(state: State, export: Export) -> None:
    with state.transaction() as db:
        _table(state)
        db.execute("INSERT OR REPLACE INTO exports VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (export.sr, export.uuid, export.backing, export.location,
                    int(export.writable), export.url, json.dumps(dict(export.attach)),
                    export.created))


def detach(state: State, client: SRClient, vdi: VDI) -> Export:
    """Stop serving `vdi` (VDIUnavailable if `sm vdi attach` did not attach it)."""
    export = find(state, vdi.sr, vdi.uuid)
    if export is None:
        raise VDIUnavailable(f"{vdi.uuid} is not attached (see sm vdi attachments)")
    client.vdi_detach((export.backing, export.location))
    forget(state, vdi.sr, vdi.uuid)
    return export


def forget(state: State, sr: str, uuid: str) -> None:
    with state.transaction() as db:
        _table(state)
        db.execute("DELETE FROM exports WHERE sr=? AND uuid=?", (sr, uuid))


@contextlib.contextmanager
def attached(state: State, client: SRClient, vdi: VDI, writable: bool
             ) -> Iterator[Mapping[str, Any]]:
    """The `vdi_attach` result for this layer's data access: an export's (kept attached after)
    or a fresh attachment (detached after)."""
    export = find(state, vdi.sr, vdi.uuid)
    if export is not None and not export.url:
        raise VDIUnavailable(f"{vdi.uuid}: an `sm vdi attach` of it was interrupted; "
                             "run sm vdi detach (or attach) again")
    if export is not None:
        if writable and not export.writable:
            raise VDIInUse(f"{vdi.uuid} is attached read-only at {export.url}; detach it first")
        yield export.attach
        return
    not_attached_elsewhere(client, vdi)
    result = client.vdi_attach(vdi.ref, writable)
    try:
        yield result
    finally:
        client.vdi_detach(vdi.ref)


def not_attached_elsewhere(client: SRClient, vdi: VDI, action: str = "open") -> None:
    """Refuse a VDI its driver reports attached on this host (`sm_vdi_get`: `attached`) where
    this layer did not attach it itself: SMAPIv1 attachments are not counted, so this layer's
    own attach beside a toolstack's, and its detach after, would end the toolstack's (and a
    `vdi_delete` would then delete the disk in use)."""
    try:
        mode = str(client.record(*vdi.ref).get("attached") or "")
    except Unimplemented:
        return
    if mode:
        how = {"rw": "read-write", "ro": "read-only"}.get(mode, mode)
        raise VDIInUse(f"cannot {action} {vdi.uuid}: it is attached {how} on this host (by a "
                       "toolstack through its driver, or `sm vdi attach`); detach it first")
