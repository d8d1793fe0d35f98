"""The collector's leaf snapshot on an LVHD SR (`gc_leafsnap`, docs/gc.md): a visible leaf
X too big for the final step is snapshotted in place with its server paused for a rename and
a create only; the new hidden base X1 is merged later (`gcops.merge`) while X runs.

    journaled, renamed (VHD-X -> VHD-X1, tag sm_ro), hidden (X1's footer: uuid X1, hidden),
    leaf (new VHD-X over X1; recorded in the entry, never rewritten after), deflated
    (VHD-X1), records (one MGT write; the entry removed)

Replay (`gcops.recover`): nothing renamed yet: the entry is dropped; else roll forward.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from typing import TYPE_CHECKING, Any

from sm.faults import crash_point

from .gcops import attached, lv, recheck, servers_paused, write_entry

if TYPE_CHECKING:
    from sm.gc import Action, StepContext

    from .repo import LvhdRepo

__all__ = ["forward", "leaf_snapshot"]


def leaf_snapshot(repo: LvhdRepo, action: Action, ctx: StepContext) -> dict[str, Any]:
    """Visible leaf X (too big for the final step) snapshotted in place: VHD-X becomes the
    hidden base VHD-X1 and VHD-X a new empty leaf over it, with X's server paused for the
    rename and the create only; X1 is merged by a later `merge` while X runs."""
    from srtypes.file.edge import require_sound

    from .chainsr import leaf_size

    chk = recheck(repo, action)
    require_sound(repo.storage.path(lv(chk["child"])), storage=repo.storage)
    doc = repo.read()
    x = doc.vdis[chk["child"]]
    size = leaf_size(repo, x.uuid, x.virtual_size, repo.allocation(doc) == "thick")
    repo.need_space(size, f"snapshot in place of VDI {x.uuid}")
    d = {"op": "gc_leafsnap", "vdi": x.uuid, "new": str(uuidlib.uuid4()),
         "base": chk["base"], "size": size}
    key = f"gc_leafsnap-{x.uuid}"
    write_entry(repo, key, d)
    from sm.journal import undo_on_failure

    with undo_on_failure(lambda _err: undo(repo, key, d)):
        crash_point("gc_leafsnap:journaled")
        ctx.step("snapshot in place (paused)")
        with servers_paused(repo, [x.uuid]):
            t0 = time.monotonic()
            _new_leaf(repo, key, d)
            paused = time.monotonic() - t0
        forward(repo, key, d)
    return {"pause_seconds": round(paused, 4), "new_base": d["new"],
            "attached": x.uuid in attached(repo)}


def _new_leaf(repo: LvhdRepo, key: str, d: dict[str, Any]) -> None:
    from sm import vhd

    from .chainsr import RO_TAG
    from .chainsr import write_child_lv as write_child

    lvm, vg, st = repo.lvm, repo.vg, repo.storage
    if d.get("leaf"):  # the new leaf was written (and may have been written to since)
        return
    if not lvm.lv_exists(vg, lv(d["new"])):
        lvm.lvrename(vg, lv(d["vdi"]), lv(d["new"]))
    if RO_TAG not in lvm.lv(vg, lv(d["new"])).tags:
        lvm.lv_addtag(vg, lv(d["new"]), RO_TAG)
    crash_point("gc_leafsnap:renamed")
    np_ = st.path(lv(d["new"]))
    info = vhd.info(np_, storage=st)
    if str(info.uuid) != d["new"]:
        vhd.set_uuid(np_, uuidlib.UUID(d["new"]), storage=st)
    if not info.hidden:
        vhd.set_hidden(np_, True, storage=st)
    crash_point("gc_leafsnap:hidden")
    write_child(repo, lv(d["vdi"]), d["vdi"], d["new"], int(d["size"]))
    d["leaf"] = True
    write_entry(repo, key, d)
    crash_point("gc_leafsnap:leaf")


def undo(repo: LvhdRepo, key: str, d: dict[str, Any]) -> None:
    """Failed in-process: completed once the new leaf exists (it may have been written to
    since), else undone: X's LV and footer given back (name, uuid, visible, no tag)."""
    from sm import vhd

    from .chainsr import RO_TAG

    if d.get("leaf"):
        forward(repo, key, d)
        return
    lvm, vg, st = repo.lvm, repo.vg, repo.storage
    if lvm.lv_exists(vg, lv(d["new"])):
        if lvm.lv_exists(vg, lv(d["vdi"])):
            lvm.lvremove(vg, lv(d["vdi"]))  # a leaf being written when it failed
        np_ = st.path(lv(d["new"]))
        info = vhd.info(np_, storage=st)
        if str(info.uuid) != d["vdi"]:
            vhd.set_uuid(np_, uuidlib.UUID(d["vdi"]), storage=st)
        if info.hidden:
            vhd.set_hidden(np_, False, storage=st)
        if RO_TAG in lvm.lv(vg, lv(d["new"])).tags:
            lvm.lv_deltag(vg, lv(d["new"]), RO_TAG)
        lvm.lvrename(vg, lv(d["new"]), lv(d["vdi"]))
    write_entry(repo, key, None)


def forward(repo: LvhdRepo, key: str, d: dict[str, Any]) -> None:
    from sm import vhd
    from sm.chain.records import base_copy, with_parent

    from .provision import resize_lv

    _new_leaf(repo, key, d)
    x = repo.read().vdis[d["vdi"]]
    if x.parent != d["new"]:
        base = x.replace(uuid=d["new"], location=d["new"])
        used = vhd.physical_size(repo.storage.path(lv(d["new"])), storage=repo.storage)
        resize_lv(repo, base, used, "deflate")
    crash_point("gc_leafsnap:deflated")
    size = {v.name: v.size for v in repo.lvm.lvs(repo.vg)}
    with repo.transaction("gc_leafsnap") as txn:
        x = txn.vdis[d["vdi"]]
        if d["new"] not in txn.vdis:
            base = base_copy(x, d["new"], physical_utilisation=size.get(lv(d["new"]), 0))
            txn.vdis[d["new"]] = with_parent(base, x.parent)
            txn.vdis[x.uuid] = with_parent(x.replace(
                physical_utilisation=size.get(lv(x.uuid), 0)), d["new"])
        txn.journal.pop(key, None)
    crash_point("gc_leafsnap:records")
