"""The SR's records in the cluster: the omap of ONE RADOS object, `sm.sr`, in the SR's
namespace, so every host sees the same SR and every change is one atomic write operation.

| omap key | value (JSON) |
|---|---|
| `sr` | the SR record (`sm.records.SrRecord`) |
| `lock` | the chain lock (`srtypes.rbd.lease`); "" when free |
| `vdi.<uuid>` | one VDI record (`sm.records.VdiRecord`) |
| `intent.<id>` | an operation in progress (what to roll back or forward if its owner died) |

`commit` writes any set of keys and removes others in one RADOS write op; while the chain lock
is held it also carries `omap_cmp(lock == our lease)`, so a writer whose lease was broken can
no longer change anything (fencing).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sm.errors import LockErr, MetadataError, SRUnavailable, VDIMissing
from sm.records import SrRecord, VdiRecord

from .conn import Connection, ceph_errors

__all__ = ["LOCK_KEY", "SR_OBJECT", "Snapshot", "Store"]

SR_OBJECT = "sm.sr"
SR_KEY = "sr"
LOCK_KEY = "lock"
VDI_PREFIX = "vdi."
INTENT_PREFIX = "intent."
_PAGE = 1000


@dataclass(frozen=True)
class Snapshot:
    """Everything in `sm.sr`, read in one go."""

    sr: SrRecord | None
    lock: str
    vdis: Mapping[str, VdiRecord]
    intents: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def get(self, uuid: str) -> VdiRecord:
        try:
            return self.vdis[uuid]
        except KeyError:
            raise VDIMissing(f"no VDI {uuid} in this SR") from None

    def find_location(self, location: str | None) -> VdiRecord | None:
        if not location:
            return None
        return next((r for r in self.vdis.values() if r.location == location), None)


class Store:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lease_value: str | None = None  # set by the lease while held
        self.fence = threading.RLock()  # a renewal never slips between reading and writing

    # -- reading -------------------------------------------------------------------------

    def _omap(self) -> dict[str, bytes] | None:
        rados = self.conn.rados
        out: dict[str, bytes] = {}
        after = ""
        with ceph_errors(SRUnavailable, "reading the SR records"):
            while True:
                with rados.ReadOpCtx() as op:
                    it, _ = self.conn.ioctx.get_omap_vals(op, after, "", _PAGE)
                    try:
                        self.conn.ioctx.operate_read_op(op, SR_OBJECT)
                    except rados.ObjectNotFound:
                        return None
                    page = list(it)
                for key, value in page:
                    out[key] = value or b""
                if len(page) < _PAGE:
                    return out
                after = page[-1][0]

    def read(self) -> Snapshot:
        """The SR's records; an SR with no `sm.sr` object yields `sr=None`."""
        raw = self._omap()
        if raw is None:
            return Snapshot(None, "", {})
        sr = None
        vdis: dict[str, VdiRecord] = {}
        intents: dict[str, Mapping[str, Any]] = {}
        try:
            for key, value in raw.items():
                if key == SR_KEY:
                    sr = SrRecord.from_dict(json.loads(value), path=SR_OBJECT)
                elif key.startswith(VDI_PREFIX):
                    rec = VdiRecord.from_dict(json.loads(value), path=f"{SR_OBJECT}:{key}")
                    vdis[rec.uuid] = rec
                elif key.startswith(INTENT_PREFIX):
                    intents[key[len(INTENT_PREFIX):]] = json.loads(value)
        except ValueError as err:
            raise MetadataError(f"unreadable record in {SR_OBJECT}: {err}") from err
        return Snapshot(sr, raw.get(LOCK_KEY, b"").decode(), vdis, intents)

    def lock_value(self) -> str:
        with ceph_errors(SRUnavailable, "reading the SR lock"):
            with self.conn.rados.ReadOpCtx() as op:
                it, _ = self.conn.ioctx.get_omap_vals_by_keys(op, (LOCK_KEY,))
                try:
                    self.conn.ioctx.operate_read_op(op, SR_OBJECT)
                except self.conn.rados.ObjectNotFound:
                    raise SRUnavailable("the SR has no record (sm.sr is missing)") from None
                value: bytes = dict(it).get(LOCK_KEY, b"") or b""
                return value.decode()

    # -- writing -------------------------------------------------------------------------

    def cas_lock(self, expected: str, new: str) -> bool:
        """Atomically replace the lock value `expected` by `new`; False if it was not."""
        rados = self.conn.rados
        with ceph_errors(SRUnavailable, "updating the SR lock"):
            with rados.WriteOpCtx() as op:
                op.omap_cmp(LOCK_KEY, expected, rados.LIBRADOS_CMPXATTR_OP_EQ)
                self.conn.ioctx.set_omap(op, (LOCK_KEY,), (new.encode(),))
                try:
                    self.conn.ioctx.operate_write_op(op, SR_OBJECT)
                except rados.OSError as err:
                    if abs(getattr(err, "errno", 0) or 0) == 125:  # ECANCELED: compare failed
                        return False
                    raise
        return True

    def commit(
        self,
        *,
        put: Iterable[VdiRecord] = (),
        remove: Iterable[str] = (),
        sr: SrRecord | None = None,
        intent: tuple[str, Mapping[str, Any]] | None = None,
        done: Iterable[str] = (),
    ) -> None:
        """One atomic write: VDI records put/removed, the SR record, an intent added, intents
        done (removed). Fenced by the lease when one is held."""
        rados = self.conn.rados
        keys: list[str] = []
        values: list[bytes] = []
        for rec in put:
            keys.append(VDI_PREFIX + rec.uuid)
            values.append(json.dumps(rec.to_dict(), sort_keys=True).encode())
        if sr is not None:
            keys.append(SR_KEY)
            values.append(json.dumps(sr.to_dict(), sort_keys=True).encode())
        if intent is not None:
            keys.append(INTENT_PREFIX + intent[0])
            values.append(json.dumps(intent[1], sort_keys=True).encode())
        gone = [VDI_PREFIX + u for u in remove] + [INTENT_PREFIX + i for i in done]
        with self.fence, ceph_errors(SRUnavailable, "writing the SR records"):
            with rados.WriteOpCtx() as op:
                if self.lease_value is not None:
                    op.omap_cmp(LOCK_KEY, self.lease_value, rados.LIBRADOS_CMPXATTR_OP_EQ)
                if keys:
                    self.conn.ioctx.set_omap(op, tuple(keys), tuple(values))
                if gone:
                    self.conn.ioctx.remove_omap_keys(op, tuple(gone))
                try:
                    self.conn.ioctx.operate_write_op(op, SR_OBJECT)
                except rados.OSError as err:
                    if abs(getattr(err, "errno", 0) or 0) == 125:
                        raise LockErr("the SR lock was broken while this operation held it; "
                                      "nothing was written") from err
                    raise

    def create(self, sr: SrRecord) -> bool:
        """Create `sm.sr` exclusively with the SR record and a free lock; False if it exists."""
        rados = self.conn.rados
        with ceph_errors(SRUnavailable, "creating the SR record"):
            with rados.WriteOpCtx() as op:
                op.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
                self.conn.ioctx.set_omap(
                    op, (SR_KEY, LOCK_KEY),
                    (json.dumps(sr.to_dict(), sort_keys=True).encode(), b""))
                try:
                    self.conn.ioctx.operate_write_op(op, SR_OBJECT)
                except rados.ObjectExists:
                    return False
        return True

    def destroy(self) -> None:
        with ceph_errors(SRUnavailable, "removing the SR record"):
            try:
                self.conn.ioctx.remove_object(SR_OBJECT)
            except self.conn.rados.ObjectNotFound:
                pass
