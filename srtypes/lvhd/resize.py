"""`vdi_resize` (grow only), `vdi_update` and `vdi_introduce` of the LVHD SR.

Resize of a VHD leaf X to virtual size v (crash points ``vdi_resize:<step>``, MGT journal):

    journaled  intent {vdi, size v, lv size L}; free space for L was checked before (44)
    grown      VHD-X resized to L: room for a BAT moved to the end of data (thin) or for every
               block of v (attached writable / thick)
    resized    the VHD's virtual size is v (the engine moves the BAT if it has no room)
    deflated   thin and not attached writable: VHD-X back to the image's physical size
    records    virtual size and LV size in X's record; the entry removed

A raw VDI's LV is grown by one ``lvresize`` (its virtual size is the LV size). Recovery rolls
forward: every step checks before it acts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sm.edge import errors_as
from sm.errors import InvalidArg, VDIExists, VDIMissing, VDIResize, VDISize, VDIUnavailable
from sm.faults import crash_point

from .repo import ALIGN, LvhdRepo, grown_size, lv_name, metadata_size
from .vdiops import check_size

if TYPE_CHECKING:
    from sm.records import VdiRecord
    from sm.requests import VDIIntroduceRequest

__all__ = ["STEPS", "introduce", "recover", "resize", "update"]

STEPS = ("journaled", "grown", "resized", "deflated", "records")
SECTOR = 512


def _get(repo: LvhdRepo, uuid: str) -> VdiRecord:
    rec = repo.read().vdis.get(uuid)
    if rec is None:
        raise VDIMissing(f"no VDI {uuid} in SR {repo.sr_uuid}")
    return rec


def _writable_here(repo: LvhdRepo, uuid: str) -> bool:
    marker = repo.host_dir / f"attached-vdi-{uuid}"
    return marker.exists() and marker.read_text() == "rw"


def resize(repo: LvhdRepo, uuid: str, new_size: int) -> VdiRecord:
    from sm import vhd
    from srtypes.file.edge import require_sound

    from .srops import check_usable

    x = _get(repo, uuid)
    check_usable(repo, uuid)
    size = check_size(repo, new_size, x.vdi_type)
    if size < x.virtual_size:
        raise VDISize(f"VDI {uuid}: shrinking from {x.virtual_size} to {size} is not supported")
    doc = repo.read()
    if x.hidden or any(r.parent == uuid for r in doc.vdis.values()):
        raise VDIResize(f"VDI {uuid} is a base other VDIs depend on; it cannot be resized")
    if x.is_a_snapshot or x.read_only:
        raise VDIUnavailable(f"VDI {uuid} is {'a snapshot' if x.is_a_snapshot else 'read-only'}"
                             "; snapshots and read-only VDIs are never resized")
    if size == x.virtual_size:
        return x
    if x.vdi_type == "vhd":
        require_sound(repo.path(x), storage=repo.storage)
    name = lv_name(uuid, x.vdi_type)
    current = repo.lvm.lv(repo.vg, name).size
    if x.vdi_type == "raw":
        target = size
    else:
        info = vhd.info(repo.path(x), storage=repo.storage)
        room = info.physical_size + metadata_size(size) + ALIGN  # a BAT moved to the end
        full = grown_size(room, size, info.allocated_blocks)
        grow = repo.allocation(doc) == "thick" or _writable_here(repo, uuid)
        target = max(room, full) if grow else room
    extent = repo.extent()
    target = max(current, -(-target // extent) * extent)
    if target > current:
        repo.need_space(target - current, f"resize of VDI {uuid}")
    key = f"vdi_resize-{uuid}"
    data = {"op": "vdi_resize", "vdi": uuid, "lv": name, "size": size, "lv_size": target}
    with repo.transaction("vdi_resize") as txn:
        txn.journal[key] = data
    from sm.journal import undo_on_failure

    with undo_on_failure(lambda _err: _settle(repo, key, data)):
        crash_point("vdi_resize:journaled")
        _forward(repo, key, data)
    return _get(repo, uuid)


def _settle(repo: LvhdRepo, key: str, d: Mapping[str, Any]) -> None:
    """A resize that failed in-process: before the image grew there is nothing to undo (an LV
    grown for it is only room, given back at the next deflate): the entry goes; once the
    image grew, the resize is completed."""
    from sm import vhd

    name = d["lv"]
    grown = False
    if repo.lvm.lv_exists(repo.vg, name):
        if name.startswith("LV-"):
            grown = repo.lvm.lv(repo.vg, name).size >= int(d["size"])
        else:
            info = vhd.info(repo.storage.path(name), storage=repo.storage)
            grown = info.virtual_size >= int(d["size"])
    if grown:
        _forward(repo, key, d)
        return
    with repo.transaction("vdi_resize") as txn:
        txn.journal.pop(key, None)


def recover(repo: LvhdRepo, key: str, data: Mapping[str, Any]) -> None:
    _forward(repo, key, data)


def _forward(repo: LvhdRepo, key: str, d: Mapping[str, Any]) -> None:
    from sm import vhd

    from .vdiops import deflate

    lvm, vg, name = repo.lvm, repo.vg, d["lv"]
    if not lvm.lv_exists(vg, name):  # deleted meanwhile: nothing left to resize
        with repo.transaction("vdi_resize") as txn:
            txn.journal.pop(key, None)
        return
    if lvm.lv(vg, name).size < d["lv_size"]:
        lvm.lvresize(vg, name, d["lv_size"])
    crash_point("vdi_resize:grown")
    raw = name.startswith("LV-")
    if not raw:
        path = repo.storage.path(name)
        with errors_as(VDIResize, f"resize of {d['vdi']}"):
            if vhd.info(path, storage=repo.storage).virtual_size < d["size"]:
                vhd.resize(path, d["size"], storage=repo.storage)
            virtual = vhd.info(path, storage=repo.storage).virtual_size
    else:
        virtual = lvm.lv(vg, name).size
    crash_point("vdi_resize:resized")
    rec = repo.read().vdis.get(d["vdi"])
    if (rec is not None and not raw and repo.allocation(repo.read()) == "thin"
            and not _writable_here(repo, d["vdi"])):
        deflate(repo, rec)
    crash_point("vdi_resize:deflated")
    size = lvm.lv(vg, name).size
    with repo.transaction("vdi_resize") as txn:
        cur = txn.vdis.get(d["vdi"])
        if cur is not None:
            txn.vdis[cur.uuid] = cur.replace(
                virtual_size=max(cur.virtual_size, virtual), physical_utilisation=size)
        txn.journal.pop(key, None)
    crash_point("vdi_resize:records")


def update(repo: LvhdRepo, uuid: str) -> None:
    """Refresh the record's sizes from the image and the LVM report."""
    from sm import vhd

    x = _get(repo, uuid)
    name = lv_name(uuid, x.vdi_type)
    if not repo.lvm.lv_exists(repo.vg, name):
        raise VDIMissing(f"the LV {name} of VDI {uuid} is missing")
    size = repo.lvm.lv(repo.vg, name).size
    with errors_as(VDIUnavailable, f"vdi_update of {uuid}"):  # damaged: 65 naming it, not 1200
        virtual = size if x.vdi_type == "raw" else vhd.info(
            repo.path(x), storage=repo.storage).virtual_size
    with repo.transaction("vdi_update") as txn:
        cur = txn.vdis.get(uuid)
        if cur is not None:
            txn.vdis[uuid] = cur.replace(virtual_size=virtual,
                                                 physical_utilisation=size)


def introduce(repo: LvhdRepo, request: VDIIntroduceRequest) -> str:
    """Make an image LV without a record (``VHD-<uuid>`` or ``LV-<uuid>``) a VDI."""
    from .srops import adopt_record

    location = request.vdi_location
    if request.vdi_uuid != location:
        raise InvalidArg(f"new_uuid {request.vdi_uuid} must equal the location {location} "
                         "(an LVHD SR names each LV after its VDI's uuid)")
    if location in repo.read().vdis:
        raise VDIExists(f"VDI {location} already has a record in SR {repo.sr_uuid}")
    lvs = {lv.name: lv for lv in repo.lvm.lvs(repo.vg)}
    rec = None
    for kind in ("vhd", "raw"):
        lv = lvs.get(lv_name(location, kind))
        if lv is not None:
            rec = adopt_record(repo, lv.name, lv.size)
            if rec is None:
                raise VDIUnavailable(f"the LV {lv.name} does not hold a readable VHD")
            break
    if rec is None:
        raise VDIMissing(f"no LV VHD-{location} or LV-{location} in {repo.vg}")
    rec = rec.replace(sm_config={**rec.sm_config, **request.sm_config})
    with repo.transaction("vdi_introduce") as txn:
        if location in txn.vdis:
            raise VDIExists(f"VDI {location} already has a record")
        txn.vdis[location] = rec
    return location
