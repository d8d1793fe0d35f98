"""The collector on the File SR (and the NFS SR, which is a File SR): the backend is the chain
core's (`sm.chain.collect`, steps in `sm.chain.gcsteps`); this module supplies what is the File
SR's own (:class:`FileGc`: the SR lock with the VDI locks, attachments, data paths, statvfs, a
bulk copy without the lock), background runs (`kick`) and aborts (`abort`) for the driver's
handlers. `python -m srtypes.file.gc LOCATION SR_UUID RUN_DIR` is what a background run
executes."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sm.sizes import fs_type

if TYPE_CHECKING:
    from sm.chain.collect import ChainBackend

    from .repo import FileRepo

__all__ = ["FileGc", "abort", "backend", "kick", "report", "run"]

log = logging.getLogger(__name__)

SHARED_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "ceph", "glusterfs", "fuse.glusterfs",
                       "9p", "lustre", "gpfs", "ocfs2", "gfs2"})


def gc_dir(repo: FileRepo) -> Path:
    return repo.layout.meta / "gc"


class _Lock:
    """The SR lock (its journal replayed first), then the VDI locks by uuid."""

    def __init__(self, repo: FileRepo, purpose: str, uuids: Iterable[str]) -> None:
        self.repo = repo
        self.purpose = purpose
        self.uuids = sorted({u for u in uuids if u})
        self.held = False
        self._stack = contextlib.ExitStack()

    def acquire(self) -> None:
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.repo.chain_lock(self.purpose))
            for u in self.uuids:
                stack.enter_context(self.repo.vdi_lock(u, self.purpose))
            self._stack = stack.pop_all()
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._stack.close()


class FileGc:
    """`sm.chain.collect.GcSite` of a File SR."""

    unlocked_copy = True  # protected by gc-busy marks, which attach and revert honour

    def __init__(self, repo: FileRepo) -> None:
        self.repo = repo
        self.gc_dir = gc_dir(repo)

    @cached_property
    def shared(self) -> bool:
        """The SR is on a network file system (NFS...): other hosts may attach its VDIs."""
        return fs_type(str(self.repo.layout.location)) in SHARED_FS

    def lock(self, purpose: str, *uuids: str) -> _Lock:
        return _Lock(self.repo, purpose, uuids)

    def attached(self) -> Mapping[str, bool]:
        return {u: bool((self.repo.attachment(u) or {}).get("writable"))
                for u in self.repo.attached_vdis()}

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
        return self.repo.unusable()

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.repo.layout.location).free

    def data_bytes(self, uuid: str, leaf_step: bool) -> int | None:
        try:
            return os.stat(self.repo.layout.image(uuid)).st_blocks * 512
        except FileNotFoundError:
            return None

    def generation(self) -> object:
        return None

    def recover(self) -> None:
        with self.repo.chain_lock("gc recover"):
            pass  # the SR lock replays the journal


def backend(repo: FileRepo) -> ChainBackend:
    from sm.chain.collect import ChainBackend

    return ChainBackend(repo.chain, FileGc(repo))


def run(repo: FileRepo) -> dict[str, Any]:
    """One collector run in this process (`sm gc run`, `sm_gc_run`)."""
    from sm.gc import Collector

    repo.check()
    return Collector(backend(repo)).run()


def report(repo: FileRepo) -> dict[str, Any]:
    from sm.gc import report as gc_report

    repo.check()
    return gc_report(backend(repo))


def kick(repo: FileRepo) -> None:
    """Start a background run unless one runs or `SM_GC_AUTO=0`; never fails the caller."""
    from sm.gc import spawn

    lay = repo.layout
    spawn.kick(gc_dir(repo), ["-m", "srtypes.file.gc", str(lay.location), lay.sr_uuid or "",
                              str(lay.host_dir.parent.parent)])


def abort(repo: FileRepo, *, vdi: str | None = None, reason: str = "",
          timeout: float = 30.0) -> contextlib.AbstractContextManager[None]:
    """Stop a running collector (all of it; with `vdi`, only if its current step touches
    that VDI) and keep new ones out for the `with` block."""
    from sm.gc import spawn

    return spawn.abort(gc_dir(repo), vdi=vdi, reason=reason, timeout=timeout)


def main(argv: list[str]) -> int:
    from .layout import SRLayout
    from .repo import FileRepo

    location, sr_uuid, run_dir = argv
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    repo = FileRepo(SRLayout(Path(location), sr_uuid or None, Path(run_dir)))
    try:
        summary = run(repo)
    except Exception:
        log.exception("gc run failed")
        return 1
    log.info("gc run: %s", {k: v for k, v in summary.items() if k != "actions"})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
