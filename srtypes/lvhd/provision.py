"""LV sizes of VHD images: the inflate/deflate journal of the LVHD SR (`LvhdVolumes`).

Provisioning: a VHD leaf's LV is *inflated* to :func:`leaf_target` (room for every block its
virtual size allows) while attached writable (always, on thick SRs) and *deflated* to the
image's physical size (rounded up to extents) when it rests on a thin SR, and before it
becomes a read-only base. Free space is checked before any change: a request that does not
fit fails with SRNoSpace (44) and changes nothing.

:func:`resize_lv` is journaled in MGT (crash points ``inflate:<step>`` / ``deflate:<step>``):

    journaled  intent {op, vdi, lv, size} written
    resized    lvresize done (atomic in lvm2)
    records    the LV size in the VDI's record; the entry removed (one MGT write)

:func:`recover` finishes an interrupted one (sr_attach, the next chain command).
:class:`LvVolumeSizes` is the part of the adapter's `Volumes` (`.chainsr.LvhdVolumes`) that
create, delete, resize and introduce use: new volumes, resize room, growth, trimming, adoption.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sm.chain.plan import Steps
from sm.errors import VDIMissing, VDISize, VDIUnavailable
from sm.faults import crash_point

from .repo import ALIGN, full_vhd_size, grown_size, lv_name, metadata_size

if TYPE_CHECKING:
    from sm.records import VdiRecord

    from .repo import LvhdRepo

__all__ = ["LvSizeSteps", "LvVolumeSizes", "deflate", "inflate", "leaf_target", "recover",
           "resize_lv"]


class LvSizeSteps(Steps):
    journaled = "intent {op, vdi, lv, size} written"
    resized = "lvresize done"
    records = "the LV size in the VDI's record; the entry removed"


def resize_lv(repo: LvhdRepo, rec: VdiRecord, size: int, why: str) -> int:
    """Resize the VDI's LV to ``size`` (rounded up to extents), journaled as `why` ("inflate"
    or "deflate"); the new LV size."""
    from sm.journal import undo_on_failure

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
    # lvresize is atomic: failing, it changed nothing; the entry goes before the error answers
    with undo_on_failure(lambda _err: _drop(repo, key, why)):
        crash_point(f"{why}:{LvSizeSteps.journaled.name}")
        new = repo.lvm.lvresize(repo.vg, name, target)
    crash_point(f"{why}:{LvSizeSteps.resized.name}")
    _record_size(repo, rec.uuid, new, key, why)
    crash_point(f"{why}:{LvSizeSteps.records.name}")
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


def recover(repo: LvhdRepo, key: str, data: Mapping[str, Any]) -> None:
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

    used = vhd.physical_size(repo.path(rec), storage=repo.storage)
    return resize_lv(repo, rec, used, "deflate")


class LvVolumeSizes:
    """`sm.chain.protocols.Volumes` for create, delete, resize, introduce on LVs (mixed into
    `LvhdVolumes`)."""

    repo: LvhdRepo
    prune_on_delete = True  # an LV's space comes back at once, not at the next collection

    def attached(self, uuid: str) -> str:
        try:
            return (self.repo.host_dir / f"attached-vdi-{uuid}").read_text().strip()
        except FileNotFoundError:
            return ""

    def check_size(self, size: int, vdi_type: str) -> int:
        from sm.sizes import check_vdi_size

        vg = self.repo.lvm.vgs(self.repo.vg)
        size = check_vdi_size(size, fmt=vdi_type, limit=vg.size,
                              container=f"the volume group {vg.name}")
        if size <= 0:
            raise VDISize(f"invalid size {size}: an LV holds at least one extent")
        return size

    def new_volume(self, uuid: str, vdi_type: str, virtual_size: int) -> int:
        repo = self.repo
        thick = repo.allocation(repo.read()) == "thick"
        lv_size = virtual_size if vdi_type == "raw" else (
            full_vhd_size(virtual_size) if thick else metadata_size(virtual_size))
        repo.need_space(lv_size, f"VDI {uuid}")
        info = repo.lvm.lvcreate(repo.vg, lv_name(uuid, vdi_type), lv_size)
        return info.size if vdi_type == "raw" else virtual_size

    def physical(self, uuid: str, vdi_type: str) -> int:
        name = lv_name(uuid, vdi_type)
        return next((lv.size for lv in self.repo.lvm.lvs(self.repo.vg) if lv.name == name), 0)

    def raw_size(self, uuid: str) -> int:
        return self.repo.lvm.lv(self.repo.vg, lv_name(uuid, "raw")).size

    def resize_room(self, record: VdiRecord, size: int) -> int:
        """Thin: room for a BAT moved to the end of the data; thick or attached writable:
        for every block of `size` too; a raw LV: `size`. Never less than the LV is."""
        from sm import vhd

        repo = self.repo
        current = repo.lvm.lv(repo.vg, lv_name(record.uuid, record.vdi_type)).size
        target = size
        if record.vdi_type == "vhd":
            info = vhd.info(repo.path(record), storage=repo.storage)
            room = info.physical_size + metadata_size(size) + ALIGN
            full = (repo.allocation(repo.read()) == "thick"
                    or self.attached(record.uuid) == "rw")
            target = max(room, grown_size(room, size, info.allocated_blocks)) if full else room
        extent = repo.extent()
        target = max(current, -(-target // extent) * extent)
        if target > current:
            repo.need_space(target - current, f"resize of VDI {record.uuid}")
        return target

    def grow(self, uuid: str, vdi_type: str, size: int) -> None:
        lvm, vg, name = self.repo.lvm, self.repo.vg, lv_name(uuid, vdi_type)
        if lvm.lv(vg, name).size < size:
            lvm.lvresize(vg, name, size)

    def trim(self, uuid: str) -> None:
        from sm.records import VdiRecord

        repo = self.repo
        if repo.allocation(repo.read()) == "thin" and self.attached(uuid) != "rw":
            deflate(repo, VdiRecord(uuid=uuid, location=uuid))

    def adopt(self, uuid: str) -> VdiRecord:
        from .srops import adopt_record

        repo = self.repo
        lvs = {lv.name: lv for lv in repo.lvm.lvs(repo.vg)}
        for kind in ("vhd", "raw"):
            lv = lvs.get(lv_name(uuid, kind))
            if lv is not None:
                rec = adopt_record(repo, lv.name, lv.size)
                if rec is None:
                    raise VDIUnavailable(f"the LV {lv.name} does not hold a readable VHD")
                return rec
        raise VDIMissing(f"no LV VHD-{uuid} or LV-{uuid} in {repo.vg}")
