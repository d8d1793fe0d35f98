"""`vdi_resize` (grow only) of a leaf VDI X to virtual size v, written once, journaled.

Crash points ``vdi_resize:<step>``:

    journaled  intent {vdi X, type, size v, room L}; space for L was checked before (44)
    grown      X's volume holds L bytes (an LV grown: room for a BAT moved to the end of the
               data when thin, for every block of v when thick or attached writable; a raw
               volume at v); a VHD file needs nothing
    resized    a VHD's virtual size is v (the engine moves the BAT if it has no room)
    file       the image reads at size v: from here a failure completes the resize
    deflated   a thin LV not attached writable here given back what the image does not use
    records    X's record: virtual size and physical utilisation; the entry removed

Recovery rolls forward, every step checking before it acts. A resize that fails in its own
process before the image reached v changes nothing that matters (a volume grown for it is
only room, given back at the next deflate): the entry goes; once the image reached v, it is
completed. An image deleted meanwhile ends the entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sm.errors import VDIResize, VDISize, VDIUnavailable

from .plan import Plan, Steps

if TYPE_CHECKING:
    from sm.records import VdiRecord

    from .protocols import ChainSR, JournalEntry

__all__ = ["ResizePlan", "ResizeSteps", "recover", "run"]


class ResizeSteps(Steps):
    journaled = "intent {vdi X, type, size v, room L} written; space for L checked"
    grown = "X's volume holds L (an LV grown; a raw volume at v); nothing for a VHD file"
    resized = "a VHD's virtual size is v"
    file = "the image reads at size v: a failure from here completes the resize"
    deflated = "a thin LV not attached writable here given back what the image does not use"
    records = "X's record: virtual size, physical utilisation; the entry removed"


class ResizePlan(Plan, kw_only=True):
    vdi: str
    vdi_type: str
    size: int
    room: int = 0


def run(sr: ChainSR, uuid: str, new_size: int) -> VdiRecord:
    """Grow VDI `uuid` to `new_size` (rounded to sectors); its record after. The caller holds
    the chain lock (and has paused the VDI's data path)."""
    meta, vols = sr.meta, sr.volumes
    x = meta.get(uuid)
    meta.check_usable(uuid)
    size = vols.check_size(new_size, x.vdi_type)
    if size < x.virtual_size:
        raise VDISize(f"VDI {uuid}: shrinking from {x.virtual_size} to {size} is not supported")
    if x.hidden or meta.children_of(uuid):
        raise VDIResize(f"VDI {uuid} is a base other VDIs depend on; it cannot be resized")
    if x.is_a_snapshot or x.read_only:
        raise VDIUnavailable(f"VDI {uuid} is {'a snapshot' if x.is_a_snapshot else 'read-only'}"
                             "; snapshots and read-only VDIs are never resized")
    if size == x.virtual_size:
        return x
    if x.vdi_type == "vhd":
        sr.format.check(vols.path(uuid))
    with sr.errors(VDIResize, f"resize of {uuid}"):
        room = vols.resize_room(x, size)
    plan = ResizePlan(vdi=uuid, vdi_type=x.vdi_type, size=size, room=room)
    with meta.begin("vdi_resize", **plan.to_journal()) as entry:
        entry.passed(ResizeSteps.journaled)
        _forward(sr, plan, entry)
    return meta.get(uuid)


def recover(sr: ChainSR, entry: JournalEntry) -> None:
    """The journal handler: settle a failed resize in-process, replay a killed one."""
    p = ResizePlan.from_journal(entry.data)
    if entry.failure is not None and not _reached(sr, p):
        return  # failed before the image reached v: as it was (the room is harmless)
    _forward(sr, p, entry)


def _reached(sr: ChainSR, p: ResizePlan) -> bool:
    vols = sr.volumes
    if not vols.exists(p.vdi, p.vdi_type):
        return False
    with sr.errors(VDIResize, f"resize of {p.vdi}"):
        return _virtual(sr, p) >= p.size


def _virtual(sr: ChainSR, p: ResizePlan) -> int:
    if p.vdi_type == "raw":
        return sr.volumes.raw_size(p.vdi)
    return sr.format.info(sr.volumes.path(p.vdi)).virtual_size


def _forward(sr: ChainSR, p: ResizePlan, entry: JournalEntry) -> None:
    vols = sr.volumes
    if not vols.exists(p.vdi, p.vdi_type):  # deleted meanwhile: nothing left to resize
        with sr.meta.transaction("vdi_resize", finishing=entry):
            pass
        return
    with sr.errors(VDIResize, f"resize of {p.vdi}"):
        vols.grow(p.vdi, p.vdi_type, p.room)
        entry.once(ResizeSteps.grown)
        if p.vdi_type == "vhd":
            path = vols.path(p.vdi)
            if sr.format.info(path).virtual_size < p.size:
                sr.format.resize(path, p.size)
            entry.once(ResizeSteps.resized)
        else:
            entry.passed(ResizeSteps.resized)
        virtual = _virtual(sr, p)
        entry.once(ResizeSteps.file)
        if p.vdi_type == "vhd":
            vols.trim(p.vdi)
        entry.once(ResizeSteps.deflated)
        physical = vols.physical(p.vdi, p.vdi_type)
    with sr.meta.transaction("vdi_resize", finishing=entry) as txn:
        cur = txn.find(p.vdi)
        if cur is not None:
            txn.put(cur.replace(virtual_size=max(cur.virtual_size, virtual),
                                physical_utilisation=physical))
    entry.once(ResizeSteps.records)
