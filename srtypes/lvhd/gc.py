"""The collector's backend for the LVHD SR (docs/gc.md): the File SR's actions on LVs,
journaled in MGT like the SR's own operations. Crash points `gc_<op>:<step>`.

    gc_remove  journaled, lv, records                               garbage base B
    gc_merge   journaled, inflated (VHD-B grown for the child's new blocks), copied,
               merged (recorded in the entry: from here on it is finished, before it dropped),
                 hidden child C: reparented (C's children onto B), deleted (VHD-C), deflated
                 visible child C (not attached): uuid (B's footer takes C's uuid, visible),
                 switched (lvremove VHD-C, lvrename VHD-B VHD-C), deflated
               records (one MGT write; the entry removed)

Every action runs under the SR's chain lock (as every LVHD command does), so user operations
wait for it: merges here only go up (`allow_down = False`) and attached chains are left alone
(no data-path pause yet). Replay: at `sr_attach` (srops.recover) and at each collector run.
`python -m srtypes.lvhd.gc SR_UUID DEVICES RUN_DIR` runs the collector once.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import uuid as uuidlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sm.faults import crash_point
from sm.gc import Action, Collector, Graph, Node, Skip, StepContext

if TYPE_CHECKING:
    from .repo import LvhdRepo

__all__ = ["CRASH_POINTS", "LvhdBackend", "abort", "kick", "recover", "report", "run"]

log = logging.getLogger(__name__)

CRASH_POINTS: Mapping[str, tuple[str, ...]] = {
    "gc_remove": ("journaled", "lv", "records"),
    "gc_merge": ("journaled", "inflated", "copied", "merged", "reparented", "deleted", "uuid",
                 "switched", "deflated", "records"),
}


def _lv(uuid: str) -> str:
    return f"VHD-{uuid}"


@contextlib.contextmanager
def _locked(repo: LvhdRepo, purpose: str) -> Iterator[None]:
    from sm import locking

    repo.host_dir.mkdir(parents=True, exist_ok=True)
    with locking.lock(repo.host_dir / "chain.lock", purpose=purpose):
        yield


def _attached(repo: LvhdRepo) -> set[str]:
    return {p.name.removeprefix("attached-vdi-")
            for p in repo.host_dir.glob("attached-vdi-*")}


class LvhdBackend:
    allow_down = False
    final_bytes = 1 << 62  # no data path is paused: a leaf is merged only when not attached

    def __init__(self, repo: LvhdRepo) -> None:
        self.repo = repo
        self.gc_dir = repo.host_dir / "gc"

    def graph(self) -> Graph:
        from sm.gc.vhdops import block_set

        repo = self.repo
        with _locked(repo, "gc graph"):
            doc = repo.read()
            attached = _attached(repo)
            frozen: set[str] = set()
            for u in attached:  # an attached VDI's whole chain is left alone
                cur = u
                while cur and cur not in frozen:
                    frozen.add(cur)
                    rec = doc.vdis.get(cur)
                    cur = rec.parent if rec is not None else ""
            sizes = {lv.name: lv.size for lv in repo.lvm.lvs(repo.vg)}
            nodes = []
            for r in doc.vdis.values():
                vhd = r.vdi_type == "vhd" and _lv(r.uuid) in sizes
                blocks: frozenset[int] = frozenset()
                bs = 2 * 1024 * 1024
                if vhd:
                    try:
                        blocks, bs = block_set(repo.path(r), storage=repo.storage)
                    except Exception as err:
                        log.warning("gc: %s unreadable (%s); leaving it alone", r.uuid, err)
                        vhd = False
                nodes.append(Node(r.uuid, r.parent, r.hidden, vhd=vhd,
                                  attached=r.uuid in frozen, blocks=blocks, block_size=bs,
                                  physical=sizes.get(_lv(r.uuid), 0)))
        return Graph.of(nodes)

    def recover(self) -> None:
        with _locked(self.repo, "gc recover"):
            for key, data in sorted(self.repo.read().journal.items()):
                if str(data.get("op", "")).startswith("gc_"):
                    recover(self.repo, key, data)

    def free_bytes(self) -> int:
        return int(self.repo.lvm.vgs(self.repo.vg).free)

    def execute(self, action: Action, ctx: StepContext) -> dict[str, Any]:
        from sm.errors import LockErr, SRNoSpace

        try:
            with _locked(self.repo, "gc"):
                if action.kind == "remove":
                    _remove(self.repo, action)
                elif action.kind in ("merge", "leaf-merge") and action.direction == "up":
                    _merge(self.repo, action, ctx)
                else:
                    raise Skip(f"{action.kind} {action.direction} is not done on LVHD")
        except (LockErr, SRNoSpace) as err:
            raise Skip(str(err)) from err
        return {}


def _recheck(repo: LvhdRepo, action: Action) -> dict[str, Any]:
    doc = repo.read()
    b = doc.vdis.get(action.base)
    if b is None or not b.hidden or b.uuid in _attached(repo):
        raise Skip(f"{action.base} changed meanwhile")
    kids = sorted(u for u, r in doc.vdis.items() if r.parent == b.uuid)
    if action.kind == "remove":
        if kids:
            raise Skip(f"{b.uuid} has children again")
        return {"vdi": b.uuid}
    c = doc.vdis.get(action.child)
    if kids != [action.child] or c is None or c.uuid in _attached(repo):
        raise Skip(f"{action.base} no longer has {action.child} as its only child")
    leaf = not any(r.parent == c.uuid for r in doc.vdis.values())
    if not c.hidden and not leaf:
        raise Skip(f"{c.uuid} is a visible base (not merged on LVHD yet)")
    return {"base": b.uuid, "child": c.uuid, "parent": b.parent, "visible": not c.hidden}


def _journal(repo: LvhdRepo, key: str, data: Mapping[str, Any] | None) -> None:
    with repo.transaction("gc") as txn:
        if data is None:
            txn.journal.pop(key, None)
        else:
            txn.journal[key] = dict(data)


# -- remove -------------------------------------------------------------------------------


def _remove(repo: LvhdRepo, action: Action) -> None:
    d = {"op": "gc_remove", **_recheck(repo, action)}
    key = f"gc_remove-{d['vdi']}"
    _journal(repo, key, d)
    crash_point("gc_remove:journaled")
    _forward_remove(repo, key, d)


def _forward_remove(repo: LvhdRepo, key: str, d: Mapping[str, Any]) -> None:
    if repo.lvm.lv_exists(repo.vg, _lv(d["vdi"])):
        repo.lvm.lvremove(repo.vg, _lv(d["vdi"]))
    crash_point("gc_remove:lv")
    with repo.transaction("gc_remove") as txn:
        txn.vdis.pop(d["vdi"], None)
        txn.journal.pop(key, None)
    crash_point("gc_remove:records")


# -- merge up -----------------------------------------------------------------------------


def _merge(repo: LvhdRepo, action: Action, ctx: StepContext) -> None:
    from sm import vhd

    from .repo import BLOCK
    from .vdiops import resize_lv

    d = {"op": "gc_merge", **_recheck(repo, action)}
    key = f"gc_merge-{d['base']}"
    doc = repo.read()
    b = doc.vdis[d["base"]]
    bp = repo.path(b)
    _journal(repo, key, d)
    crash_point("gc_merge:journaled")
    new_blocks = len(repo_blocks(repo, d["child"]) - repo_blocks(repo, d["base"]))
    target = vhd.physical_size(bp, storage=repo.storage) + new_blocks * (BLOCK + 4096) + 8192
    if target > repo.lvm.lv(repo.vg, _lv(b.uuid)).size:
        try:
            resize_lv(repo, b, target, "inflate")
        except BaseException:
            _journal(repo, key, None)
            raise
    crash_point("gc_merge:inflated")
    ctx.step("copy")
    try:
        vhd.coalesce(repo.storage.path(_lv(d["child"])), progress=ctx.progress,
                     storage=repo.storage)
    except Exception:
        _undo(repo, key, d)
        raise
    crash_point("gc_merge:copied")
    _forward_merge(repo, key, d)


def repo_blocks(repo: LvhdRepo, uuid: str) -> frozenset[int]:
    from sm.gc.vhdops import block_set

    return block_set(repo.storage.path(_lv(uuid)), storage=repo.storage)[0]


def _undo(repo: LvhdRepo, key: str, d: Mapping[str, Any]) -> None:
    """Before `merged`: the base only holds extra copies of shadowed sectors; shrink it back
    and drop the entry."""
    from .vdiops import deflate

    with contextlib.suppress(Exception):
        b = repo.read().vdis.get(d["base"])
        if b is not None and repo.lvm.lv_exists(repo.vg, _lv(b.uuid)):
            deflate(repo, b)
    _journal(repo, key, None)


def _forward_merge(repo: LvhdRepo, key: str, d: Mapping[str, Any]) -> None:
    from sm import vhd

    from .vdiops import deflate, inflate

    lvm, vg, st = repo.lvm, repo.vg, repo.storage
    with repo.transaction("gc_merge") as txn:
        txn.journal[key] = {**d, "merged": True}
    crash_point("gc_merge:merged")
    base, child = d["base"], d["child"]
    doc = repo.read()
    kids = sorted(u for u, r in doc.vdis.items() if r.parent == child)
    if not d["visible"]:
        if lvm.lv_exists(vg, _lv(child)):
            for k in kids:
                kp = st.path(_lv(k))
                info = vhd.info(kp, storage=st)
                if str(info.parent_uuid) != base:
                    vhd.reparent(kp, st.path(_lv(base)), expect_uuid=uuidlib.UUID(base),
                                 storage=st)
        crash_point("gc_merge:reparented")
        if lvm.lv_exists(vg, _lv(child)):
            lvm.lvremove(vg, _lv(child))
        crash_point("gc_merge:deleted")
        survivor = base
    else:
        if lvm.lv_exists(vg, _lv(base)):
            bp = st.path(_lv(base))
            info = vhd.info(bp, storage=st)
            if str(info.uuid) != child:
                vhd.set_uuid(bp, uuidlib.UUID(child), storage=st)
            if info.hidden:
                vhd.set_hidden(bp, False, storage=st)
            crash_point("gc_merge:uuid")
            if lvm.lv_exists(vg, _lv(child)):
                lvm.lvremove(vg, _lv(child))
            lvm.lvrename(vg, _lv(base), _lv(child))
            with contextlib.suppress(Exception):
                if "sm_ro" in lvm.lv(vg, _lv(child)).tags and not doc.vdis[child].read_only:
                    lvm.lv_deltag(vg, _lv(child), "sm_ro")
        crash_point("gc_merge:switched")
        survivor = child
    doc = repo.read()
    rec = doc.vdis[survivor]
    if d["visible"] and repo.allocation(doc) == "thick":
        inflate(repo, rec)  # a thick leaf keeps its full size
    else:
        deflate(repo, rec)
    crash_point("gc_merge:deflated")
    _merge_records(repo, key, d, kids)
    crash_point("gc_merge:records")


def _merge_records(repo: LvhdRepo, key: str, d: Mapping[str, Any], kids: list[str]) -> None:
    from srtypes.file.chain import with_parent

    base, child = d["base"], d["child"]
    size = {lv.name: lv.size for lv in repo.lvm.lvs(repo.vg)}
    with repo.transaction("gc_merge") as txn:
        grown = max((txn.vdis[u].virtual_size for u in (base, child) if u in txn.vdis),
                    default=0)
        if not d["visible"]:
            txn.vdis.pop(child, None)
            for k in kids:
                if k in txn.vdis:
                    txn.vdis[k] = with_parent(txn.vdis[k], base)
            keep = base
        else:
            txn.vdis.pop(base, None)
            if child in txn.vdis:
                txn.vdis[child] = with_parent(txn.vdis[child], d["parent"])
            keep = child
        if keep in txn.vdis:
            txn.vdis[keep] = txn.vdis[keep].replace(
                physical_utilisation=size.get(_lv(keep), 0),
                virtual_size=txn.vdis[keep].virtual_size if d["visible"] else grown)
        txn.journal.pop(key, None)


# -- recovery and entry points ------------------------------------------------------------


def recover(repo: LvhdRepo, key: str, data: Mapping[str, Any]) -> None:
    """Replay one collector entry (caller holds the chain lock)."""
    op = data.get("op")
    if op == "gc_remove":
        _forward_remove(repo, key, data)
    elif op == "gc_merge":
        if data.get("merged"):
            _forward_merge(repo, key, data)
        else:
            _undo(repo, key, data)
    else:
        log.warning("unknown collector journal entry %s (%s) left alone", key, op)


def run(repo: LvhdRepo) -> dict[str, Any]:
    """One collector run in this process (`sm gc run`, `sm_gc_run`)."""
    repo.check()
    return Collector(LvhdBackend(repo)).run()


def report(repo: LvhdRepo) -> dict[str, Any]:
    from sm.gc import report as gc_report

    repo.check()
    return gc_report(LvhdBackend(repo))


def kick(repo: LvhdRepo) -> None:
    """Start a background run unless one runs or `SM_GC_AUTO=0`; never fails the caller."""
    from sm.gc import spawn

    spawn.kick(repo.host_dir / "gc", ["-m", "srtypes.lvhd.gc", repo.sr_uuid,
                                      ",".join(repo.devices), str(repo.host_dir.parent.parent)])


def abort(repo: LvhdRepo, *, vdi: str | None = None, reason: str = "",
          timeout: float = 30.0) -> contextlib.AbstractContextManager[None]:
    """Stop a running collector and keep new ones out for the `with` block."""
    from sm.gc import spawn

    return spawn.abort(repo.host_dir / "gc", vdi=vdi, reason=reason, timeout=timeout)


def main(argv: list[str]) -> int:
    from sm.executor import SubprocessExecutor

    from .repo import LvhdRepo

    sr_uuid, devices, run_dir = argv
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    repo = LvhdRepo(sr_uuid, {"device": devices}, SubprocessExecutor(), Path(run_dir))
    summary = run(repo)
    log.info("gc run: %s", {k: v for k, v in summary.items() if k != "actions"})
    return 0 if summary.get("result") in ("done", "busy") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
