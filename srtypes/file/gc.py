"""The collector's backend for the File SR (and the NFS SR, which is a File SR): the chain
graph from the records and files, free space from statvfs, steps in `gcops`; background runs
(`kick`) and aborts (`abort`) for the driver's handlers. `python -m srtypes.file.gc LOCATION
SR_UUID RUN_DIR` is what a background run executes."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sm.gc import Action, Collector, Graph, Node, StepContext
from sm.sizes import fs_type

if TYPE_CHECKING:
    from .repo import FileRepo

__all__ = ["FileBackend", "abort", "kick", "report", "run"]

log = logging.getLogger(__name__)

SHARED_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "ceph", "glusterfs", "fuse.glusterfs",
                       "9p", "lustre", "gpfs", "ocfs2", "gfs2"})


def gc_dir(repo: FileRepo) -> Path:
    return repo.layout.meta / "gc"


class FileBackend:
    def __init__(self, repo: FileRepo) -> None:
        self.repo = repo
        self.gc_dir = gc_dir(repo)
        from sm.gc.collector import final_bytes

        self.final_bytes = final_bytes()

    def graph(self) -> Graph:
        from sm.gc.vhdops import block_set

        repo = self.repo
        with repo.chain_lock("gc graph"):
            records = repo.records.all()
            # VDIs a set-aside journal entry names are left alone, like attached ones
            attached = set(repo.attached_vdis()) | set(repo.unusable())
            nodes = []
            for r in records:
                path = repo.path(r)
                try:
                    st = os.stat(path)
                    size = st.st_size
                except FileNotFoundError:
                    nodes.append(Node(r.uuid, r.parent, r.hidden, vhd=False, attached=True))
                    continue
                blocks: frozenset[int] = frozenset()
                bs = 2 * 1024 * 1024
                vhd = r.vdi_type == "vhd"
                if vhd:
                    try:
                        blocks, bs = block_set(path)
                    except Exception as err:  # unreadable: never touched
                        log.warning("gc: %s unreadable (%s); leaving it alone", path, err)
                        vhd = False
                nodes.append(Node(r.uuid, r.parent, r.hidden, vhd=vhd,
                                  attached=r.uuid in attached, blocks=blocks, block_size=bs,
                                  physical=size, data_bytes=st.st_blocks * 512))
            frozen = self._unpausable(attached, {r.uuid: r.parent for r in records})
        if frozen:
            nodes = [dataclasses.replace(n, attached=True) if n.uuid in frozen else n
                     for n in nodes]
        return Graph.of(nodes)

    def _unpausable(self, attached: set[str], parents: dict[str, str]) -> set[str]:
        """The chains of attached VDIs without a data path the collector could pause (their
        readers open images themselves): left alone entirely."""
        from sm.chain.datapath import find

        out: set[str] = set()
        for uuid in attached:
            if find(self.repo.chain, uuid) is not None:
                continue
            cur = uuid
            while cur and cur not in out:
                out.add(cur)
                cur = parents.get(cur, "")
        return out

    def recover(self) -> None:
        with self.repo.chain_lock("gc recover"):
            pass

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.repo.layout.location).free

    def execute(self, action: Action, ctx: StepContext) -> dict[str, Any]:
        from . import gcops

        return gcops.execute(self.repo, action, ctx, shared=self.shared)

    @cached_property
    def shared(self) -> bool:
        """The SR is on a network file system (NFS...): other hosts may attach its VDIs."""
        return fs_type(str(self.repo.layout.location)) in SHARED_FS


def run(repo: FileRepo) -> dict[str, Any]:
    """One collector run in this process (`sm gc run`, `sm_gc_run`)."""
    repo.check()
    return Collector(FileBackend(repo)).run()


def report(repo: FileRepo) -> dict[str, Any]:
    from sm.gc import report as gc_report

    repo.check()
    return gc_report(FileBackend(repo))


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

    location, sr_uuid, run_dir = argv
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    from .repo import FileRepo

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
