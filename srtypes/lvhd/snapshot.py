"""`vdi_snapshot` / `vdi_clone` on LVs: the File SR's layout with LV renames, journaled in MGT.

Snapshot (or clone) of a leaf VDI X, new uuids B (base) and S (the new VDI):

    journaled  intent {kind, vdi X, base B, new S, single, direct, time} in MGT's journal
    deflated   VHD-X shrunk to its physical size (a base never grows again)
    renamed    lvrename VHD-X -> VHD-B; tag ``sm_ro`` (bases are read-only)
    hidden     VHD-B: footer uuid B, hidden flag (single: stays visible)
    leaf       VHD-X = new LV + empty child of B (inflated if X is attached writable / thick)
    snap       VHD-S = new LV + empty child of B (single: none; S *is* B, read-only)
    records    one MGT write: B (hidden base), X (parent B), S; the journal entry removed

``driver_params`` ``type=single``: the snapshot is the base itself (one new image only).
A VDI that already has children is not renamed ("direct": the new VDI is a child of it).
Free space for both new LVs is checked before the journal is written (SRNoSpace 44).
Recovery (:func:`recover`, at sr_attach): nothing renamed yet -> drop the entry (a deflate is
harmless); otherwise roll forward, each step checking before it acts.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sm.edge import errors_as
from sm.errors import (
    MetadataError,
    SnapshotChainTooLong,
    VDIMissing,
    VDISnapshot,
    VDIType,
)
from sm.faults import crash_point

from .repo import LvhdRepo, full_vhd_size, metadata_size
from .repo import vhd_lv as _lv

__all__ = ["MAX_DEPTH", "RO_TAG", "STEPS", "recover", "run"]

STEPS = ("journaled", "deflated", "renamed", "hidden", "leaf", "snap", "records")
RO_TAG = "sm_ro"
MAX_DEPTH = 30


def leaf_size(repo: LvhdRepo, uuid: str, virtual: int, thick: bool) -> int:
    """LV size of a new leaf: full if thick or attached writable here, else metadata only."""
    marker = repo.host_dir / f"attached-vdi-{uuid}"
    rw = marker.exists() and marker.read_text() == "rw"
    return full_vhd_size(virtual) if thick or rw else metadata_size(virtual)


def run(repo: LvhdRepo, command: str, vdi_uuid: str,
        driver_params: Mapping[str, str] | None = None) -> str:
    kind = "snapshot" if command == "vdi_snapshot" else "clone"
    doc = repo.read()
    x = doc.vdis.get(vdi_uuid)
    if x is None:
        raise VDIMissing(f"no VDI {vdi_uuid} in SR {repo.sr_uuid}")
    from .srops import check_usable

    check_usable(repo, x.uuid, doc=doc)
    if x.vdi_type != "vhd":
        raise VDIType(f"VDI {x.uuid} is a raw VDI: raw VDIs cannot be snapshotted or cloned")
    if x.hidden:
        raise VDISnapshot(f"VDI {x.uuid} is a hidden base, not a VDI that can be {kind}ed")
    direct = any(r.parent == x.uuid for r in doc.vdis.values())
    single = (driver_params or {}).get("type") == "single" and not direct
    thick = repo.allocation(doc) == "thick"
    from sm.chain.records import depth as chain_depth
    from srtypes.file.edge import require_sound

    depth = chain_depth(doc.vdis, x.uuid)
    if depth + 1 > MAX_DEPTH:
        raise SnapshotChainTooLong(
            f"VDI {x.uuid}: a {kind} would make a chain of {depth + 1} images (limit {MAX_DEPTH})")
    need = [] if single else [leaf_size(repo, "", x.virtual_size, thick)]
    if not direct:
        need.append(leaf_size(repo, x.uuid, x.virtual_size, thick))
    repo.need_space(need, f"{kind} of VDI {x.uuid}")
    require_sound(repo.path(x), storage=repo.storage)
    base = str(uuidlib.uuid4())
    new = base if single else str(uuidlib.uuid4())
    data = {"op": command, "kind": kind, "vdi": x.uuid, "base": base, "new": new,
            "single": single, "direct": direct, "thick": thick,
            "time": datetime.now(UTC).replace(microsecond=0).isoformat()}
    with repo.transaction(command) as txn:
        txn.journal[new] = data
    from sm.journal import undo_on_failure

    with undo_on_failure(lambda _err: undo(repo, data)):
        crash_point(f"{command}:journaled")
        with errors_as(VDISnapshot, f"{kind} of {x.uuid}"):
            _forward(repo, data)
    return new


def undo(repo: LvhdRepo, d: Mapping[str, Any]) -> None:
    """A snapshot that failed in-process: completed if its records were written, else undone
    (new LVs removed, the base given back its name, uuid, visibility and tag, X inflated
    again where it was) and the entry dropped. Each step checks first: a crash in between
    leaves a state the replay rolls forward."""
    from sm import vhd

    from .vdiops import inflate, leaf_target

    if d["new"] in repo.read().vdis:
        _forward(repo, d)
        return
    lvm, vg = repo.lvm, repo.vg
    if not d.get("single") and lvm.lv_exists(vg, _lv(d["new"])):
        lvm.lvremove(vg, _lv(d["new"]))
    if not d["direct"] and lvm.lv_exists(vg, _lv(d["base"])):
        if lvm.lv_exists(vg, _lv(d["vdi"])):
            lvm.lvremove(vg, _lv(d["vdi"]))  # the new empty leaf over the base
        bp = repo.storage.path(_lv(d["base"]))
        info = vhd.info(bp, storage=repo.storage)
        if str(info.uuid) != d["vdi"]:
            vhd.set_uuid(bp, uuidlib.UUID(d["vdi"]), storage=repo.storage)
        if info.hidden:
            vhd.set_hidden(bp, False, storage=repo.storage)
        if RO_TAG in lvm.lv(vg, _lv(d["base"])).tags:
            lvm.lv_deltag(vg, _lv(d["base"]), RO_TAG)
        lvm.lvrename(vg, _lv(d["base"]), _lv(d["vdi"]))
        x = repo.read().vdis[d["vdi"]]
        full = leaf_size(repo, x.uuid, x.virtual_size, d["thick"]) == full_vhd_size(
            x.virtual_size)  # thick, or attached writable here: it was inflated
        if full and lvm.lv(vg, _lv(x.uuid)).size < leaf_target(repo, x):
            inflate(repo, x)  # deflated before the rename
    with repo.transaction("undo") as txn:
        txn.journal.pop(d["new"], None)


def recover(repo: LvhdRepo, data: Mapping[str, Any]) -> None:
    lvm = repo.lvm
    started = (lvm.lv_exists(repo.vg, _lv(data["new"])) if data["direct"]
               else lvm.lv_exists(repo.vg, _lv(data["base"])))
    if not started:
        with repo.transaction("recover") as txn:
            txn.journal.pop(data["new"], None)
        return
    _forward(repo, data)


def write_child(repo: LvhdRepo, lv: str, uuid: str, parent: str, size: int) -> None:
    """LV ``lv`` holding an empty child (uuid ``uuid``) of ``VHD-<parent>``; idempotent.

    The child is always written, never trusted when found: a new LV may sit on extents of a
    removed one, whose stale VHD can carry the same uuid and parent (a revert repeated, a
    snapshot replayed) and would bring its old blocks back. Rewriting is safe because callers
    run before the records expose the child, with the VDI's data path paused."""
    from sm import vhd

    if not repo.lvm.lv_exists(repo.vg, lv):
        repo.lvm.lvcreate(repo.vg, lv, size)
    vhd.snapshot(repo.storage.path(_lv(parent)), repo.storage.path(lv),
                 uuid=uuidlib.UUID(uuid), storage=repo.storage)


def _forward(repo: LvhdRepo, d: Mapping[str, Any]) -> None:
    from sm import vhd

    from .vdiops import resize_lv

    op, lvm, vg = d["op"], repo.lvm, repo.vg
    doc = repo.read()
    x = doc.vdis[d["vdi"]]
    parent = x.uuid
    if d["direct"]:
        for name in ("deflated", "renamed", "hidden", "leaf"):
            crash_point(f"{op}:{name}")
    else:
        if not lvm.lv_exists(vg, _lv(d["base"])):
            if not lvm.lv_exists(vg, _lv(x.uuid)):
                raise MetadataError(f"{op} of {x.uuid}: neither VHD-{x.uuid} nor base exists")
            used = vhd.physical_size(repo.path(x), storage=repo.storage)
            resize_lv(repo, x, used, "deflate")
            crash_point(f"{op}:deflated")
            lvm.lvrename(vg, _lv(x.uuid), _lv(d["base"]))
        else:
            crash_point(f"{op}:deflated")
        if RO_TAG not in lvm.lv(vg, _lv(d["base"])).tags:
            lvm.lv_addtag(vg, _lv(d["base"]), RO_TAG)
        crash_point(f"{op}:renamed")
        bp = repo.storage.path(_lv(d["base"]))
        info = vhd.info(bp, storage=repo.storage)
        if str(info.uuid) != d["base"]:
            vhd.set_uuid(bp, uuidlib.UUID(d["base"]), storage=repo.storage)
        if info.hidden != (not d.get("single")):
            vhd.set_hidden(bp, not d.get("single"), storage=repo.storage)
        crash_point(f"{op}:hidden")
        write_child(repo, _lv(x.uuid), x.uuid, d["base"],
                    leaf_size(repo, x.uuid, x.virtual_size, d["thick"]))
        crash_point(f"{op}:leaf")
        parent = d["base"]
    if not d.get("single"):
        write_child(repo, _lv(d["new"]), d["new"], parent,
                    leaf_size(repo, "", x.virtual_size, d["thick"]))
    crash_point(f"{op}:snap")
    sizes = {lv.name: lv.size for lv in lvm.lvs(vg)}
    with repo.transaction(op) as txn:
        _records(txn.vdis, d, sizes)
        txn.journal.pop(d["new"], None)
    crash_point(f"{op}:records")


def _records(vdis: dict[str, Any], d: Mapping[str, Any], sizes: Mapping[str, int]) -> None:
    from sm.chain.records import base_copy, with_parent
    from sm.records import VdiRecord

    if d["new"] in vdis:
        return
    x = vdis[d["vdi"]]
    snap = d["kind"] == "snapshot"
    parent = x.uuid
    if not d["direct"]:
        parent = d["base"]
        vdis[d["base"]] = base_copy(x, d["base"],
                                    physical_utilisation=sizes.get(_lv(d["base"]), 0))
        vdis[x.uuid] = with_parent(x.replace(
            physical_utilisation=sizes.get(_lv(x.uuid), 0)), d["base"])
        if d.get("single"):  # the base is the snapshot: visible, read-only
            vdis[d["base"]] = vdis[d["base"]].replace(
                name_label=x.name_label, name_description=x.name_description,
                hidden=False, managed=True, is_a_snapshot=snap,
                snapshot_of=x.uuid if snap else "", snapshot_time=d["time"] if snap else "")
            return
    vdis[d["new"]] = with_parent(VdiRecord(
        uuid=d["new"], location=d["new"], name_label=x.name_label,
        name_description=x.name_description, type=x.type, vdi_type="vhd",
        read_only=x.read_only, is_a_snapshot=snap, snapshot_of=x.uuid if snap else "",
        snapshot_time=d["time"] if snap else "", virtual_size=x.virtual_size,
        physical_utilisation=sizes.get(_lv(d["new"]), 0),
        sm_config={"vdi_type": "vhd"}), parent)
