"""`vdi_create`, `vdi_delete`, `vdi_resize`, `vdi_update`, `vdi_introduce` (+ recovery).

Delete (journaled): `journaled` -> `file` (leaf: unlink; a VDI other VDIs depend on: set its
image hidden instead) -> `records` (record removed, or turned into a hidden base; a hidden
parent left without children is marked garbage).
Resize (journaled, grow only): `journaled` -> `file` (engine resize / raw truncate) ->
`records`. Both roll forward on recovery. Failing in its own process before `file`, a delete
or resize is undone (nothing to undo but a hidden flag), after it completed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid as uuidlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sm.chain.records import is_garbage, with_gc_mark
from sm.errors import (
    InvalidArg,
    SRNoSpace,
    VDICreate,
    VDIDelete,
    VDIExists,
    VDIInUse,
    VDIMissing,
    VDIResize,
    VDISize,
    VDIUnavailable,
)
from sm.faults import crash_point

from .edge import engine_errors, require_sound
from .layout import is_uuid

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sm.journal import Entry
    from sm.records import VdiRecord
    from sm.requests import VDICreateRequest, VDIIntroduceRequest

    from .repo import FileRepo

__all__ = ["DELETE_STEPS", "RESIZE_STEPS", "create", "delete", "introduce", "resize", "update"]

DELETE_STEPS = ("journaled", "file", "records")
RESIZE_STEPS = ("journaled", "file", "records")
SECTOR = 512
METADATA_RESERVE = 1024 * 1024
"""Free space a new (thin) VDI needs at least: headers, BAT, a little slack."""


def check_size(repo: FileRepo, size: int, fmt: str) -> int:
    """`sm.sizes.check_vdi_size` with the limit of the SR's file system (VDISize 79)."""
    from sm.sizes import check_vdi_size, file_size_limit

    loc = repo.layout.location
    return check_vdi_size(size, fmt=fmt, limit=file_size_limit(loc),
                          container=f"the file system of {loc}")


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


def physical(path: str, vdi_type: str) -> int:
    """Physical utilisation of an image: allocated bytes for sparse raw, file size for VHD."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return 0
    return st.st_blocks * 512 if vdi_type == "raw" else st.st_size


def create(repo: FileRepo, request: VDICreateRequest) -> str:
    from sm.records import VDI_TYPES, VdiRecord

    lay = repo.layout
    raw = request.sm_config.get("type") == "raw"
    size = check_size(repo, request.size, "raw" if raw else "vhd")
    if request.vdi_type not in VDI_TYPES:
        raise InvalidArg(f"unknown vdi_type {request.vdi_type[:40]!r}")
    snapshot_of = request.snapshot_of
    if snapshot_of and not is_uuid(snapshot_of):
        raise InvalidArg(f"snapshot_of is not a uuid: {snapshot_of[:60]!r}")
    uuid = request.vdi_uuid or str(uuidlib.uuid4())
    ext = "raw" if raw else "vhd"
    path = lay.image(uuid, ext)
    if repo.records.find(uuid) is not None or any(
            os.path.exists(lay.image(uuid, e)) for e in ("vhd", "raw")):
        raise VDIExists(f"VDI {uuid} already exists in SR {lay.sr_uuid}")
    if shutil.disk_usage(lay.location).free < METADATA_RESERVE:
        raise SRNoSpace(f"{lay.location} cannot hold even the metadata of a new VDI")
    with engine_errors(VDICreate, f"create {path}"):
        if raw:
            _create_raw(path, size)
        else:
            from sm import vhd

            vhd.create(path, size, uuid=uuidlib.UUID(uuid), storage=repo.storage)
    record = VdiRecord(
        uuid=uuid, location=uuid, name_label=request.name_label,
        name_description=request.name_description, type=request.vdi_type, vdi_type=ext,
        read_only=request.read_only, is_a_snapshot=request.is_a_snapshot,
        snapshot_of=snapshot_of.lower(), snapshot_time=_snapshot_time(request.snapshot_time),
        virtual_size=size, physical_utilisation=physical(path, ext),
        sm_config=dict(request.sm_config),
    )
    try:
        repo.records.put(record)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return uuid


def _create_raw(path: str, size: int) -> None:
    from sm import atomic

    tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.new{atomic.TEMP_SUFFIX}"
    atomic.unlink(tmp, missing_ok=True, sync=False)  # a killed create's (the SR lock is ours)
    # a new file, never through a link planted under the scratch name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    try:
        try:
            os.ftruncate(fd, size)
        except OSError as err:
            raise VDISize(f"cannot make a raw file of {size} bytes: {err}") from err
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError as err:
        raise VDIExists(f"{path} already exists") from err
    finally:
        os.unlink(tmp)


# -- delete --------------------------------------------------------------------------------


def delete(repo: FileRepo, uuid: str) -> None:
    x = repo.get(uuid)
    repo.check_usable(uuid)
    if repo.attachment(uuid) is not None:
        raise VDIInUse(f"VDI {uuid} is attached on this host")
    mode = "hide" if repo.children_of(uuid) else "remove"
    if mode == "hide" and os.path.exists(repo.path(x)):
        require_sound(repo.path(x))  # its footer is rewritten (a leaf is just removed)
    with repo.journal.begin_freeing("vdi_delete", vdi=uuid, mode=mode,
                                    ext=x.vdi_type) as entry:
        crash_point("vdi_delete:journaled")
        _forward_delete(repo, entry.data, entry)
    repo.journal.make_reserve()


def recover_delete(repo: FileRepo, entry: Entry) -> None:
    d = entry.data
    path = repo.layout.image(d["vdi"], d["ext"])
    if entry.failure is not None and not entry.has_step("file") and os.path.exists(path):
        # failed in-process before the image changed (remove) or while hiding it: undo
        if d["mode"] == "hide" and d["ext"] == "vhd":
            from sm import vhd

            if vhd.info(path, storage=repo.storage).hidden:
                vhd.set_hidden(path, False, storage=repo.storage)
        return
    _forward_delete(repo, d, entry)


def _forward_delete(repo: FileRepo, d: Mapping[str, Any], entry: Entry) -> None:
    from sm import atomic

    path = repo.layout.image(d["vdi"], d["ext"])
    with engine_errors(VDIDelete, f"delete {d['vdi']}"):
        if d["mode"] == "remove":
            atomic.unlink(path, missing_ok=True)
        elif os.path.exists(path):
            from sm import vhd

            if not vhd.info(path, storage=repo.storage).hidden:
                vhd.set_hidden(path, True, storage=repo.storage)
    _step(entry, "vdi_delete", "file")
    with repo.records.transaction(purpose="vdi_delete") as txn:
        x = txn.find(d["vdi"])
        if x is not None:
            if d["mode"] == "remove":
                txn.delete(x.uuid)
            else:
                txn.put(x.replace(
                    hidden=True, managed=False, read_only=True, is_a_snapshot=False,
                    snapshot_of="", snapshot_time=""))
            if x.parent:
                mark_garbage(txn, [x.parent])
    _step(entry, "vdi_delete", "records")


def mark_garbage(txn: Any, uuids: list[str]) -> None:
    """Mark (or unmark) the given VDIs as garbage according to the staged records (their
    children from the staged parent index, not from every record)."""
    for uuid in uuids:
        record = txn.find(uuid)
        if record is not None:
            marked = with_gc_mark(record, is_garbage(record, {uuid: txn.children_of(uuid)}))
            if marked is not record:
                txn.put(marked)


def _step(entry: Entry, command: str, name: str) -> None:
    if not entry.has_step(name):
        entry.step(name)
    crash_point(f"{command}:{name}")


# -- resize --------------------------------------------------------------------------------


def resize(repo: FileRepo, uuid: str, new_size: int) -> VdiRecord:
    x = repo.get(uuid)
    repo.check_usable(uuid)
    size = check_size(repo, new_size, x.vdi_type)
    if size < x.virtual_size:
        raise VDISize(f"VDI {uuid}: shrinking from {x.virtual_size} to {size} is not supported")
    if x.hidden or repo.children_of(uuid):
        raise VDIResize(f"VDI {uuid} is a base other VDIs depend on; it cannot be resized")
    if x.is_a_snapshot or x.read_only:
        raise VDIUnavailable(f"VDI {uuid} is {'a snapshot' if x.is_a_snapshot else 'read-only'}"
                             "; snapshots and read-only VDIs are never resized")
    if size == x.virtual_size:
        return x
    if x.vdi_type == "vhd":
        require_sound(repo.path(x))
    with repo.journal.begin("vdi_resize", vdi=uuid, size=size, ext=x.vdi_type) as entry:
        crash_point("vdi_resize:journaled")
        _forward_resize(repo, entry.data, entry)
    return repo.get(uuid)


def recover_resize(repo: FileRepo, entry: Entry) -> None:
    d = entry.data
    if entry.failure is not None and not entry.has_step("file") and not _grown(repo, d):
        return  # failed in-process before the image grew: it is as it was (a VHD's BAT
        # moved to make room is harmless), nothing to undo
    _forward_resize(repo, d, entry)


def _grown(repo: FileRepo, d: Mapping[str, Any]) -> bool:
    path = repo.layout.image(d["vdi"], d["ext"])
    if not os.path.exists(path):
        return False
    if d["ext"] == "raw":
        return os.stat(path).st_size >= int(d["size"])
    from sm import vhd

    return vhd.info(path, storage=repo.storage).virtual_size >= int(d["size"])


def _forward_resize(repo: FileRepo, d: Mapping[str, Any], entry: Entry) -> None:
    path = repo.layout.image(d["vdi"], d["ext"])
    if not os.path.exists(path):
        return  # deleted meanwhile: nothing left to resize
    with engine_errors(VDIResize, f"resize {d['vdi']}"):
        if d["ext"] == "raw":
            if os.stat(path).st_size < d["size"]:
                os.truncate(path, d["size"])
        else:
            from sm import vhd

            if vhd.info(path, storage=repo.storage).virtual_size < d["size"]:
                vhd.resize(path, d["size"], storage=repo.storage)
    _step(entry, "vdi_resize", "file")
    with repo.records.transaction(purpose="vdi_resize") as txn:
        x = txn.find(d["vdi"])
        if x is not None:
            txn.put(x.replace(virtual_size=max(x.virtual_size, d["size"]),
                                        physical_utilisation=physical(path, d["ext"])))
    _step(entry, "vdi_resize", "records")


# -- update / introduce --------------------------------------------------------------------


def update(repo: FileRepo, uuid: str) -> VdiRecord:
    from .scan import image_facts

    x = repo.get(uuid)
    path = repo.path(x)
    if not os.path.exists(path):
        raise VDIMissing(f"the image of VDI {uuid} is missing: {path}")
    with engine_errors(VDIUnavailable, f"vdi_update of {uuid}"):  # damaged: 65, not 1200
        facts = image_facts(path, x.vdi_type)
    return repo.records.update(uuid, virtual_size=facts["virtual_size"],
                               physical_utilisation=facts["physical_utilisation"])


def introduce(repo: FileRepo, request: VDIIntroduceRequest) -> str:
    from .scan import adopt_record

    lay = repo.layout
    location = request.vdi_location
    if not is_uuid(location):
        raise InvalidArg(f"a File SR location is a VDI uuid, not {location[:60]!r}")
    if request.vdi_uuid != location:
        raise InvalidArg(f"new_uuid {request.vdi_uuid} must equal the location {location} "
                         "(a File SR names each image after its VDI's uuid)")
    if repo.records.find(location) is not None:
        raise VDIExists(f"VDI {location} already has a record in SR {lay.sr_uuid}")
    ext = next((e for e in ("vhd", "raw") if os.path.exists(lay.image(location, e))), None)
    if ext is None:
        raise VDIMissing(f"no image {location}.vhd or {location}.raw in {lay.location}")
    record = adopt_record(lay, location, ext)
    record = record.replace(sm_config={**record.sm_config, **request.sm_config})
    with repo.records.transaction(purpose="vdi_introduce") as txn:
        if txn.find(location) is not None:
            raise VDIExists(f"VDI {location} already has a record")
        txn.put(record)
    return location
