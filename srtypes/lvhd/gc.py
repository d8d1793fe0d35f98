"""The collector on the LVHD SR (docs/gc.md): the backend is the chain core's
(`sm.chain.collect`, steps in `sm.chain.gcsteps`, journaled in MGT like the SR's own
operations); this module supplies what is the LVHD SR's own (:class:`LvhdGc`: the chain lock,
attachment markers, NBD servers, the VG's free space, MGT's generation), background runs
(`kick`) and aborts (`abort`) for the driver's handlers.

Merges go up or down, whichever copies less. An attached leaf with a running NBD server is
coalesced like the File SR's: snapshotted in place (its server paused for a rename and a
create), the bulk merged while it runs, then a final step of at most `SM_GC_FINAL_BYTES`
(8 MiB) with its server paused; the chain of a VDI attached without a server is left alone.
Actions run under the SR's chain lock (`ChainLock`), which a merge's bulk copy lets go of
between slices, so LVHD commands wait for a slice rather than for the merge. Replay: at
`sr_attach` and every chain command (srops.recover, unless the collector still runs), and at
each collector run (which also resumes servers a killed collector left paused).
`python -m srtypes.lvhd.gc SR_UUID DEVICES RUN_DIR` runs the collector once.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sm.chain.collect import ChainBackend

    from .repo import LvhdRepo

__all__ = ["ChainLock", "LvhdGc", "abort", "backend", "kick", "recover", "report", "run"]

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


class LvhdGc:
    """`sm.chain.collect.GcSite` of an LVHD SR."""

    unlocked_copy = False  # a bulk copy holds the chain lock and lets go of it between slices
    shared = False

    def __init__(self, repo: LvhdRepo) -> None:
        self.repo = repo
        self.gc_dir = repo.host_dir / "gc"

    def lock(self, purpose: str, *uuids: str) -> ChainLock:
        return ChainLock(self.repo, purpose)

    def attached(self) -> Mapping[str, bool]:
        return {p.name.removeprefix("attached-vdi-"): p.read_text() == "rw"
                for p in self.repo.host_dir.glob("attached-vdi-*")}

    def served(self, uuid: str) -> bool:
        from sm.chain.datapath import find

        return find(self.repo.chain, uuid) is not None

    @contextlib.contextmanager
    def paused(self, uuids: Iterable[str]) -> Iterator[None]:
        from sm.chain.datapath import live

        with contextlib.ExitStack() as stack:
            for u in sorted(set(uuids)):
                stack.enter_context(live(self.repo.chain, u))
            yield

    def unusable(self) -> Iterable[str]:
        from .srops import unusable

        doc = self.repo.read()
        return unusable(self.repo, doc) if doc.failed else ()

    def free_bytes(self) -> int:
        return int(self.repo.lvm.vgs(self.repo.vg).free)

    def data_bytes(self, uuid: str, leaf_step: bool) -> int | None:
        if not leaf_step:  # an LV's size says nothing of what its image holds; only bound
            return None    # the candidates of a leaf step, whose bitmaps are read
        chain = self.repo.chain
        return chain.format.data_bytes(chain.volumes.path(uuid))

    def generation(self) -> object:
        return self.repo.read().generation

    def recover(self) -> None:
        from sm.chain.datapath import resume_orphans

        lock = ChainLock(self.repo, "gc recover")
        lock.acquire()
        try:
            for key, data in sorted(self.repo.read().journal.items()):
                if str(data.get("op", "")).startswith("gc_"):
                    self.repo.chain.replay(key, data)
            resume_orphans(self.repo.chain)
        finally:
            lock.release()


def recover(repo: LvhdRepo, key: str, data: Mapping[str, Any]) -> None:
    """Replay one collector entry found by a user command (caller holds the chain lock), unless
    its collector still runs: a merge's bulk copy lets user commands in between its slices,
    with its entry in MGT."""
    from sm.gc import state

    if state.GCLock(repo.host_dir / "gc").busy():
        log.info("gc entry %s belongs to the running collector; left to it", key)
        return
    repo.chain.replay(key, data)


def backend(repo: LvhdRepo) -> ChainBackend:
    from sm.chain.collect import ChainBackend

    return ChainBackend(repo.chain, LvhdGc(repo))


def run(repo: LvhdRepo) -> dict[str, Any]:
    """One collector run in this process (`sm gc run`, `sm_gc_run`)."""
    from sm.gc import Collector

    repo.check()
    return Collector(backend(repo)).run()


def report(repo: LvhdRepo) -> dict[str, Any]:
    from sm.gc import report as gc_report

    repo.check()
    return gc_report(backend(repo))


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
