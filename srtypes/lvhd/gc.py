"""The collector's backend for the LVHD SR (docs/gc.md): the chain graph from MGT and the
images' BATs, free space from the VG, the journaled steps in :mod:`.gcops` (crash points
`gc_<op>:<step>`, `gcops.CRASH_POINTS`); background runs (`kick`) and aborts (`abort`) for
the driver's handlers.

Merges go up or down, whichever copies less. An attached leaf with a running NBD server is
coalesced like the File SR's: snapshotted in place (its server paused for a rename and a
create), the bulk merged while it runs, then a final step of at most `SM_GC_FINAL_BYTES`
(8 MiB) with its server paused (`pause_seconds` in the run summary); the chain of a VDI
attached without a server is left alone. Actions run under the SR's chain lock (`ChainLock`),
which a merge's bulk copy lets go of between slices, so LVHD commands wait for a slice
rather than for the merge. Replay: at `sr_attach` and every
chain command (srops.recover), and at each collector run (which also resumes servers a
killed collector left paused).
`python -m srtypes.lvhd.gc SR_UUID DEVICES RUN_DIR` runs the collector once.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sm.gc import Action, Collector, Graph, Node, Skip, StepContext
from sm.gc.collector import final_bytes

from .gcops import CRASH_POINTS, attached, lv, served

if TYPE_CHECKING:
    from .repo import LvhdRepo

__all__ = ["CRASH_POINTS", "LvhdBackend", "abort", "kick", "recover", "report", "run"]

log = logging.getLogger(__name__)


class ChainLock:
    """The SR's chain lock as the collector takes it (the lvm report cache dropped: other
    processes changed LVs meanwhile); a merge lets go of it between slices of its copy."""

    def __init__(self, repo: LvhdRepo, purpose: str) -> None:
        from sm import locking

        repo.host_dir.mkdir(parents=True, exist_ok=True)
        self.repo = repo
        self.purpose = purpose
        self.lock = locking.FileLock(repo.host_dir / "chain.lock")
        self.held = False

    def acquire(self) -> None:
        self.lock.acquire(purpose=self.purpose)
        self.held = True
        self.repo.lvm.invalidate()

    def release(self) -> None:
        if self.held:
            self.held = False
            self.lock.release()


@contextlib.contextmanager
def _locked(repo: LvhdRepo, purpose: str) -> Iterator[None]:
    lock = ChainLock(repo, purpose)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


class LvhdBackend:
    def __init__(self, repo: LvhdRepo) -> None:
        self.repo = repo
        self.gc_dir = repo.host_dir / "gc"
        self.final_bytes = final_bytes()  # SM_GC_FINAL_BYTES, 8 MiB

    def graph(self) -> Graph:
        from sm.gc.vhdops import block_set

        repo = self.repo
        with _locked(repo, "gc graph"):
            doc = repo.read()
            on = attached(repo)
            frozen: set[str] = set()
            if doc.failed:  # VDIs a set-aside journal entry names are left alone
                from .srops import unusable

                frozen.update(unusable(repo, doc))
            for u in on:  # without a server to pause, an attached VDI's chain is left alone
                if served(repo, u):
                    continue
                cur = u
                while cur and cur not in frozen:
                    frozen.add(cur)
                    rec = doc.vdis.get(cur)
                    cur = rec.parent if rec is not None else ""
            sizes = {x.name: x.size for x in repo.lvm.lvs(repo.vg)}
            nodes = []
            parents = {r.parent for r in doc.vdis.values()}
            kids: dict[str, int] = {}
            for r in doc.vdis.values():
                kids[r.parent] = kids.get(r.parent, 0) + 1
            for r in doc.vdis.values():
                vhd = r.vdi_type == "vhd" and lv(r.uuid) in sizes
                blocks: frozenset[int] = frozenset()
                bs = 2 * 1024 * 1024
                if vhd:
                    try:
                        blocks, bs = block_set(repo.path(r), storage=repo.storage)
                    except Exception as err:
                        log.warning("gc: %s unreadable (%s); leaving it alone", r.uuid, err)
                        vhd = False
                data = None
                if vhd and not r.hidden and r.uuid not in parents and kids.get(r.parent) == 1:
                    data = _data_bytes(repo, r.uuid)  # a leaf step's candidate: its bound
                nodes.append(Node(r.uuid, r.parent, r.hidden, vhd=vhd, data_bytes=data,
                                  attached=r.uuid in frozen or r.uuid in on, blocks=blocks,
                                  block_size=bs,
                                  physical=sizes.get(lv(r.uuid), 0)))
        return Graph.of(nodes)

    def recover(self) -> None:
        from sm.chain.datapath import resume_orphans

        from . import gcops

        with _locked(self.repo, "gc recover"):
            for key, data in sorted(self.repo.read().journal.items()):
                if str(data.get("op", "")).startswith("gc_"):
                    gcops.recover(self.repo, key, data)
            resume_orphans(self.repo.chain)

    def free_bytes(self) -> int:
        return int(self.repo.lvm.vgs(self.repo.vg).free)

    def execute(self, action: Action, ctx: StepContext) -> dict[str, Any]:
        from sm.errors import LockErr, SRNoSpace, VDIUnavailable

        from . import gcleaf, gcops

        lock = ChainLock(self.repo, "gc")
        try:
            lock.acquire()
            if action.kind == "remove":
                gcops.remove(self.repo, action)
                return {}
            if action.kind == "leaf-snapshot":
                return gcleaf.leaf_snapshot(self.repo, action, ctx)
            return gcops.merge(self.repo, action, ctx, lock)
        except (LockErr, SRNoSpace, VDIUnavailable) as err:  # VDIUnavailable: damaged image
            raise Skip(str(err)) from err
        finally:
            lock.release()


def recover(repo: LvhdRepo, key: str, data: Mapping[str, Any]) -> None:
    """Replay one collector entry found by a user command (caller holds the chain lock), unless
    its collector still runs: a merge's bulk copy lets user commands in between its slices,
    with its entry in MGT."""
    from sm.gc import state

    from . import gcops

    if state.GCLock(repo.host_dir / "gc").busy():
        log.info("gc entry %s belongs to the running collector; left to it", key)
        return
    gcops.recover(repo, key, data)


def _data_bytes(repo: LvhdRepo, uuid: str) -> int | None:
    """Bytes of the sectors an image holds (its block bitmaps): a leaf written in scattered
    small pieces holds far less than its allocated blocks."""
    from sm.vhd.image import Image

    try:
        img = Image.open(repo.storage.path(lv(uuid)), storage=repo.storage)
    except Exception:
        return None
    try:
        if img.header is None:
            return None
        return sum((img.bitmap(b) if not img.known_full(b) else (1 << img.spb) - 1).bit_count()
                   for b in range(len(img.bat)) if img.data_offset(b) is not None) * 512
    except Exception:
        return None
    finally:
        img.close()


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
