"""`vdi_create`, `vdi_delete`, `vdi_update`, `vdi_introduce` of a chain SR, written once.

Delete of VDI X (crash points ``vdi_delete:<step>``; journaled, rolled forward on replay):

    journaled  intent {vdi X, type, mode remove|hide, prune} written (on a full SR too)
    file       X's image removed (a leaf), or hidden (a VDI others depend on: files only)
    lv         the hidden bases X leaves without children removed with it (prune: LVs; a
               File SR leaves them to the collector)
    records    one transaction: X's record removed (or made a hidden base), the pruned ones
               removed, a hidden parent left without children marked garbage

Failing in its own process before ``file``, a delete is undone (X's image visible again);
after it, completed. Where bases are pruned (`Volumes.prune_on_delete`: LVs) a VDI others
depend on, or a hidden base, is refused (VDIInUse 24) instead of hidden.

Create, update and introduce change one record and at most one volume: not journaled (a
failing create removes the volume it made; a create killed midway leaves a volume without a
record, which `sr_scan` adopts).
"""

from __future__ import annotations

import re
import uuid as uuidlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sm.errors import (
    InvalidArg,
    VDICreate,
    VDIDelete,
    VDIExists,
    VDIInUse,
    VDIMissing,
    VDIUnavailable,
)

from .plan import Plan, Steps
from .records import is_garbage, with_gc_mark

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from sm.records import VdiRecord
    from sm.requests import VDICreateRequest

    from .protocols import ChainSR, JournalEntry, RecordTxn

__all__ = ["DeletePlan", "DeleteSteps", "create", "delete", "introduce", "mark_garbage",
           "recover_delete", "update"]

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class DeleteSteps(Steps):
    journaled = "intent {vdi X, type, mode remove|hide, prune} written"
    file = "X's image removed (a leaf) or hidden (a VDI others depend on)"
    lv = "the hidden bases X leaves without children removed (LVs; files: the collector)"
    records = "X's record removed or made a hidden base; pruned ones removed; garbage marked"


class DeletePlan(Plan, kw_only=True):
    vdi: str
    vdi_type: str
    mode: str  # "remove" | "hide"
    prune: tuple[str, ...] = ()


# -- create ----------------------------------------------------------------------------------


def create(sr: ChainSR, request: VDICreateRequest) -> str:
    """A new VDI (VHD, or raw with sm_config ``type=raw``); its uuid. Caller holds the lock."""
    from sm.records import VDI_TYPES, VdiRecord

    meta, vols = sr.meta, sr.volumes
    kind = "raw" if request.sm_config.get("type") == "raw" else "vhd"
    size = vols.check_size(request.size, kind)
    if request.vdi_type not in VDI_TYPES:
        raise InvalidArg(f"unknown vdi_type {request.vdi_type[:40]!r}")
    snapshot_of = request.snapshot_of.lower()
    if snapshot_of and not _UUID.match(snapshot_of):
        raise InvalidArg(f"snapshot_of is not a uuid: {request.snapshot_of[:60]!r}")
    snapshot_time = _snapshot_time(request.snapshot_time)
    uuid = request.vdi_uuid or str(uuidlib.uuid4())
    if meta.find(uuid) is not None or vols.exists(uuid, "vhd") or vols.exists(uuid, "raw"):
        raise VDIExists(f"VDI {uuid} already exists in SR {meta.sr_uuid}")
    sm_config = {**request.sm_config, **_typed(meta.new_sm_config, kind)}
    with sr.errors(VDICreate, f"create of VDI {uuid}"):
        virtual = vols.new_volume(uuid, kind, size)
        try:
            if kind == "vhd":
                sr.format.create(vols.path(uuid), size, uuid)
            record = VdiRecord(
                uuid=uuid, location=uuid, name_label=request.name_label,
                name_description=request.name_description, type=request.vdi_type,
                vdi_type=kind, read_only=request.read_only,
                is_a_snapshot=request.is_a_snapshot, snapshot_of=snapshot_of,
                snapshot_time=snapshot_time, virtual_size=virtual,
                physical_utilisation=vols.physical(uuid, kind), sm_config=sm_config)
            with meta.transaction("vdi_create") as txn:
                txn.put(record)
        except BaseException:
            try:
                vols.remove(uuid, kind)
            except Exception:  # the original failure is the one to answer
                pass
            raise
    return uuid


def _typed(sm_config: Mapping[str, str], kind: str) -> dict[str, str]:
    """The SR's sm_config of a new record, its ``vdi_type`` (where it keeps one) `kind`."""
    return {k: (kind if k == "vdi_type" else v) for k, v in sm_config.items()}


def _snapshot_time(text: str) -> str:
    if not text:
        return ""
    for parse in (datetime.fromisoformat,
                  lambda t: datetime.strptime(t, "%Y%m%dT%H:%M:%SZ").replace(tzinfo=UTC)):
        try:
            return parse(text).isoformat()
        except ValueError:
            continue
    raise InvalidArg(f"snapshot_time is not a time: {text[:40]!r}")


# -- delete ----------------------------------------------------------------------------------


def delete(sr: ChainSR, uuid: str) -> None:
    """Delete VDI `uuid` (see the module docstring). Caller holds the chain lock."""
    meta, vols = sr.meta, sr.volumes
    x = meta.get(uuid)
    meta.check_usable(uuid)
    if vols.attached(uuid):
        raise VDIInUse(f"VDI {uuid} is attached on this host")
    children = meta.children_of(uuid)
    prune: list[str] = []
    if vols.prune_on_delete:
        if x.hidden:
            raise VDIInUse(f"VDI {uuid} is a hidden base")
        if children:
            raise VDIInUse(f"VDI {uuid} has children")
        prune = _orphaned_bases(meta.records(), x)
    mode = "hide" if children else "remove"
    if mode == "hide" and vols.exists(uuid, x.vdi_type):
        sr.format.check(vols.path(uuid))  # its footer is rewritten (a leaf is just removed)
    plan = DeletePlan(vdi=uuid, vdi_type=x.vdi_type, mode=mode, prune=tuple(prune))
    with meta.begin_freeing("vdi_delete", **plan.to_journal()) as entry:
        entry.passed(DeleteSteps.journaled)
        _forward_delete(sr, plan, entry)


def _orphaned_bases(records: Mapping[str, VdiRecord], x: VdiRecord) -> list[str]:
    """The hidden ancestors of `x` that deleting it leaves without children, nearest first."""
    remaining = {u: r for u, r in records.items() if u != x.uuid}
    out: list[str] = []
    parent = remaining.get(x.parent)
    while parent is not None and parent.hidden and not any(
            r.parent == parent.uuid for r in remaining.values()):
        out.append(parent.uuid)
        del remaining[parent.uuid]
        parent = remaining.get(parent.parent)
    return out


def recover_delete(sr: ChainSR, entry: JournalEntry) -> None:
    """The journal handler: undo a delete that failed in-process before its image changed,
    complete it otherwise (and after a kill)."""
    p = DeletePlan.from_journal(entry.data)
    vols = sr.volumes
    if (entry.failure is not None and not entry.has_step(DeleteSteps.file.name)
            and vols.exists(p.vdi, p.vdi_type)):
        if p.mode == "hide" and p.vdi_type == "vhd":
            with sr.errors(VDIDelete, f"undo of the delete of {p.vdi}"):
                _set_hidden(sr, vols.path(p.vdi), False)
        return
    _forward_delete(sr, p, entry)


def _forward_delete(sr: ChainSR, p: DeletePlan, entry: JournalEntry) -> None:
    vols = sr.volumes
    with sr.errors(VDIDelete, f"delete of {p.vdi}"):
        if p.mode == "remove":
            vols.remove(p.vdi, p.vdi_type)
        elif vols.exists(p.vdi, p.vdi_type):
            _set_hidden(sr, vols.path(p.vdi), True)
        entry.once(DeleteSteps.file)
        for base in p.prune:
            vols.remove(base)
        entry.once(DeleteSteps.lv)
    with sr.meta.transaction("vdi_delete", finishing=entry) as txn:
        x = txn.find(p.vdi)
        if x is not None:
            if p.mode == "remove":
                txn.delete(x.uuid)
            else:
                txn.put(x.replace(hidden=True, managed=False, read_only=True,
                                  is_a_snapshot=False, snapshot_of="", snapshot_time=""))
            for base in p.prune:
                txn.delete(base)
            if x.parent and x.parent not in p.prune:
                mark_garbage(txn, [x.parent])
    entry.once(DeleteSteps.records)


def _set_hidden(sr: ChainSR, path: str, hidden: bool) -> None:
    """Only the hidden flag: the image keeps its own uuid (an adopted image's may differ from
    its VDI's, and its children name their parent by it)."""
    info = sr.format.info(path)
    if info.hidden != hidden:
        sr.format.set_identity(path, str(info.uuid), hidden)


def mark_garbage(txn: RecordTxn, uuids: Iterable[str]) -> None:
    """Mark (or unmark) the given VDIs as garbage by the staged records (their children from
    the staged parent index)."""
    for uuid in uuids:
        record = txn.find(uuid)
        if record is not None:
            marked = with_gc_mark(record, is_garbage(record, {uuid: txn.children_of(uuid)}))
            if marked is not record:
                txn.put(marked)


# -- update, introduce -----------------------------------------------------------------------


def update(sr: ChainSR, uuid: str) -> VdiRecord:
    """The record's sizes refreshed from the image and its volume."""
    vols = sr.volumes
    x = sr.meta.get(uuid)
    if not vols.exists(uuid, x.vdi_type):
        raise VDIMissing(f"the image of VDI {uuid} is missing: {vols.path(uuid, x.vdi_type)}")
    with sr.errors(VDIUnavailable, f"vdi_update of {uuid}"):  # damaged: 65, not 1200
        virtual = (vols.raw_size(uuid) if x.vdi_type == "raw"
                   else sr.format.info(vols.path(uuid)).virtual_size)
        physical = vols.physical(uuid, x.vdi_type)
    with sr.meta.transaction("vdi_update") as txn:
        cur = txn.get(uuid)
        new = cur.replace(virtual_size=virtual, physical_utilisation=physical)
        txn.put(new)
    return new


def introduce(sr: ChainSR, uuid: str, location: str, sm_config: Mapping[str, str]) -> str:
    """Make the image named `location` (which must be `uuid`: images are named after their
    VDI) a VDI."""
    meta = sr.meta
    if not _UUID.match(location):
        raise InvalidArg(f"an image's location is its VDI's uuid, not {location[:60]!r}")
    if uuid != location:
        raise InvalidArg(f"new_uuid {uuid} must equal the location {location} (the SR "
                         "names each image after its VDI's uuid)")
    if meta.find(location) is not None:
        raise VDIExists(f"VDI {location} already has a record in SR {meta.sr_uuid}")
    record = sr.volumes.adopt(location)
    record = record.replace(sm_config={**record.sm_config, **sm_config})
    with meta.transaction("vdi_introduce") as txn:
        if txn.find(location) is not None:
            raise VDIExists(f"VDI {location} already has a record")
        txn.put(record)
    return location
