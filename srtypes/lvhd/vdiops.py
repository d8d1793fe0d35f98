"""VDI commands of the LVHD SR: create, delete, attach/detach with inflate/deflate.

Provisioning: a VHD leaf's LV is *inflated* to :func:`~.repo.full_vhd_size` of its virtual
size while attached writable (always, on thick SRs) and *deflated* to the image's physical
size (rounded up to extents) when detached on a thin SR. Free space is checked before any
change, so a request that does not fit fails with SRNoSpace (44) and changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import uuid as uuidlib
from typing import TYPE_CHECKING

from sm.edge import to_sm_error
from sm.errors import (
    InvalidArg,
    VDICreate,
    VDIExists,
    VDIInUse,
    VDIMissing,
    VDISize,
    VDIUnavailable,
)
from sm.faults import crash_point

from .lvm import LvmError
from .repo import LvhdRepo, full_vhd_size, grown_size, lv_name, metadata_size

if TYPE_CHECKING:
    from sm.records import VdiRecord
    from sm.requests import VDICreateRequest

__all__ = ["attach", "create", "deflate", "delete", "detach", "inflate"]

log = logging.getLogger(__name__)
SECTOR = 512
INFLATE_STEPS = ("journaled", "resized", "records")
"""Crash points ``inflate:<step>`` / ``deflate:<step>`` of :func:`resize_lv`."""


def _get(repo: LvhdRepo, uuid: str) -> VdiRecord:
    rec = repo.read().vdis.get(uuid)
    if rec is None:
        raise VDIMissing(f"no VDI {uuid} in SR {repo.sr_uuid}")
    return rec


def check_size(repo: LvhdRepo, size: int, fmt: str) -> int:
    """`sm.sizes.check_vdi_size` with the VG's size as the limit (VDISize 79)."""
    from sm.sizes import check_vdi_size

    vg = repo.lvm.vgs(repo.vg)
    return check_vdi_size(size, fmt=fmt, limit=vg.size, container=f"the volume group {vg.name}")


def create(repo: LvhdRepo, request: VDICreateRequest) -> str:
    from sm import vhd
    from sm.records import VDI_TYPES, VdiRecord

    raw = request.sm_config.get("type") == "raw"
    size = check_size(repo, request.size, "raw" if raw else "vhd")
    if size <= 0:
        raise VDISize(f"invalid size {request.size}")
    if request.vdi_type not in VDI_TYPES:
        raise InvalidArg(f"unknown vdi_type {request.vdi_type[:40]!r}")
    uuid = request.vdi_uuid or str(uuidlib.uuid4())
    kind = "raw" if raw else "vhd"
    name = lv_name(uuid, kind)
    doc = repo.read()
    if uuid in doc.vdis or repo.lvm.lv_exists(repo.vg, name):
        raise VDIExists(f"VDI {uuid} already exists in SR {repo.sr_uuid}")
    thick = repo.allocation(doc) == "thick"
    lv_size = size if raw else (full_vhd_size(size) if thick else metadata_size(size))
    repo.need_space(lv_size, f"VDI {uuid}")
    info = repo.lvm.lvcreate(repo.vg, name, lv_size)
    try:
        if not raw:
            vhd.create(repo.storage.path(name), size, uuid=uuidlib.UUID(uuid),
                       storage=repo.storage)
        record = VdiRecord(
            uuid=uuid, location=uuid, name_label=request.name_label,
            name_description=request.name_description, type=request.vdi_type,
            vdi_type=kind, read_only=request.read_only,
            is_a_snapshot=request.is_a_snapshot, snapshot_of=request.snapshot_of.lower(),
            virtual_size=info.size if raw else size, physical_utilisation=info.size,
            sm_config={**request.sm_config, "vdi_type": kind},
        )
        with repo.transaction("vdi_create") as txn:
            txn.vdis[uuid] = record
    except BaseException as err:
        with contextlib.suppress(LvmError):
            repo.lvm.lvremove(repo.vg, name)
        mapped = to_sm_error(err, VDICreate, f"cannot write the image of {uuid}")
        if mapped is None:
            raise
        raise mapped from err
    return uuid


def delete(repo: LvhdRepo, uuid: str) -> None:
    from .srops import check_usable

    doc = repo.read()
    rec = doc.vdis.get(uuid)
    if rec is None:
        raise VDIMissing(f"no VDI {uuid} in SR {repo.sr_uuid}")
    check_usable(repo, uuid, doc=doc)
    if (repo.host_dir / f"attached-vdi-{uuid}").exists():
        raise VDIInUse(f"VDI {uuid} is attached")
    if rec.hidden:
        raise VDIInUse(f"VDI {uuid} is a hidden base")
    if any(r.parent == uuid for r in doc.vdis.values()):
        raise VDIInUse(f"VDI {uuid} has children")
    # the leaf, then every hidden base left without children (no coalesce yet)
    doomed = [rec]
    remaining = {u: r for u, r in doc.vdis.items() if u != uuid}
    parent = remaining.get(rec.parent)
    while parent is not None and parent.hidden and not any(
            r.parent == parent.uuid for r in remaining.values()):
        doomed.append(parent)
        del remaining[parent.uuid]
        parent = remaining.get(parent.parent)
    for victim in doomed:
        name = lv_name(victim.uuid, victim.vdi_type)
        if repo.lvm.lv_exists(repo.vg, name):
            repo.lvm.lvremove(repo.vg, name)
        crash_point("vdi_delete:lv")
    with repo.transaction("vdi_delete") as txn:
        for victim in doomed:
            txn.vdis.pop(victim.uuid, None)


def resize_lv(repo: LvhdRepo, rec: VdiRecord, size: int, why: str) -> int:
    """Resize the VDI's LV to ``size`` (rounded to extents), journaled in MGT: the intent
    {op, vdi, size} is written first, ``lvresize`` (atomic in lvm) runs, then one MGT write
    records the new size and drops the entry. :func:`recover_resize` finishes it at attach."""
    name = lv_name(rec.uuid, rec.vdi_type)
    current = repo.lvm.lv(repo.vg, name).size
    extent = repo.extent()
    target = -(-size // extent) * extent
    if target == current:
        return current
    if target > current:
        repo.need_space(target - current, f"{why} of VDI {rec.uuid}")
    key = f"{why}-{rec.uuid}"
    with repo.transaction(why) as txn:
        txn.journal[key] = {"op": why, "vdi": rec.uuid, "lv": name, "size": target}
    from sm.journal import undo_on_failure

    # lvresize is atomic: failing, it changed nothing; the entry goes before the error answers
    with undo_on_failure(lambda _err: _drop(repo, key, why)):
        crash_point(f"{why}:journaled")
        new = repo.lvm.lvresize(repo.vg, name, target)
    crash_point(f"{why}:resized")
    _record_size(repo, rec.uuid, new, key, why)
    crash_point(f"{why}:records")
    return new


def _drop(repo: LvhdRepo, key: str, why: str) -> None:
    with repo.transaction(why) as txn:
        txn.journal.pop(key, None)


def _record_size(repo: LvhdRepo, uuid: str, size: int, key: str, why: str) -> None:
    with repo.transaction(why) as txn:
        cur = txn.vdis.get(uuid)
        if cur is not None:
            txn.vdis[uuid] = cur.replace(physical_utilisation=size)
        txn.journal.pop(key, None)


def recover_resize(repo: LvhdRepo, key: str, data: dict[str, str | int]) -> None:
    """Finish an interrupted inflate/deflate: the LV gets the journaled size, never less than
    the image it holds (a VHD's physical size)."""
    from sm import vhd

    name, size = str(data["lv"]), int(data["size"])
    if repo.lvm.lv_exists(repo.vg, name):
        if name.startswith("VHD-"):
            used = vhd.physical_size(repo.storage.path(name), storage=repo.storage)
            size = max(size, used)
        size = repo.lvm.lvresize(repo.vg, name, size)
    _record_size(repo, str(data["vdi"]), size, key, str(data["op"]))


def leaf_target(repo: LvhdRepo, rec: VdiRecord) -> int:
    """The inflated size of a VHD leaf: room for every block its virtual size allows."""
    from sm import vhd

    info = vhd.info(repo.path(rec), storage=repo.storage)
    return max(full_vhd_size(info.virtual_size),
               grown_size(info.physical_size, info.virtual_size, info.allocated_blocks))


def inflate(repo: LvhdRepo, rec: VdiRecord) -> int:
    return resize_lv(repo, rec, leaf_target(repo, rec), "inflate")


def deflate(repo: LvhdRepo, rec: VdiRecord) -> int:
    from sm import vhd

    path = repo.path(rec)
    used = vhd.physical_size(path, storage=repo.storage)
    return resize_lv(repo, rec, used, "deflate")


def attach(repo: LvhdRepo, uuid: str, writable: bool) -> str:
    """Inflate a writable VHD leaf, mark it attached; return its image path."""
    from srtypes.file.edge import require_sound

    from .srops import check_usable

    rec = _get(repo, uuid)
    check_usable(repo, uuid)
    if writable and (rec.read_only or rec.is_a_snapshot):
        raise VDIUnavailable(f"VDI {uuid} is read-only (a snapshot or read-only VDI); "
                             "attach it read-only")
    if writable and rec.vdi_type == "vhd" and not rec.hidden:
        require_sound(repo.path(rec), storage=repo.storage)  # damaged: 46, nothing inflated
        inflate(repo, rec)
    repo.host_dir.mkdir(parents=True, exist_ok=True)
    (repo.host_dir / f"attached-vdi-{uuid}").write_text("rw" if writable else "ro")
    return repo.path(rec)


def detach(repo: LvhdRepo, uuid: str) -> None:
    """Deflate a thin VHD leaf to its physical size, unmark it."""
    marker = repo.host_dir / f"attached-vdi-{uuid}"
    rec = repo.read().vdis.get(uuid)
    if rec is not None and rec.vdi_type == "vhd" and repo.allocation(repo.read()) == "thin":
        from sm import vhd

        try:
            deflate(repo, rec)
        except vhd.VhdError as err:  # a damaged image keeps its LV's size; still detached
            log.warning("vdi_detach: %s not deflated: %s", uuid, err)
    with contextlib.suppress(FileNotFoundError):
        marker.unlink()
