"""The collector's backend for every chain SR type (`sm.gc.Backend`, docs/gc.md).

One :class:`ChainBackend` over a `ChainSR`: the chain graph from the records and the images'
BATs; :func:`run` runs one action (remove here, `gcmerge`, `gcleaf`; steps, plans and checks
in `sm.chain.gcsteps`), :func:`recover` is the journal handler of the three ops. An SR type
hands it a :class:`GcSite`, what is truly its own: the lock and its scope, which VDIs are
attached here and which have a data path the collector can pause, free space, the state
directory, and how a merge's bulk copy shares the lock with user commands (File: without it,
LVHD: between slices).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from sm.gc import Action, Graph, Node, Skip, StepContext
from sm.gc.collector import final_bytes

from . import gcleaf, gcmerge
from .gcsteps import RemovePlan, RemoveSteps, recheck
from .records import is_garbage, with_gc_mark

if TYPE_CHECKING:
    from pathlib import Path

    from .protocols import ChainSR, JournalEntry

__all__ = ["ChainBackend", "GcSite", "Lock", "held", "recover", "run"]

log = logging.getLogger(__name__)


class Lock(Protocol):
    """The SR's chain lock as the collector holds it, for one action; a merge may let go of it
    and take it again."""

    held: bool

    def acquire(self) -> None: ...

    def release(self) -> None: ...


class GcSite(Protocol):
    """What the collector needs of an SR type besides its `ChainSR`."""

    gc_dir: Path
    """Directory of the collector's lock, status and abort files."""
    unlocked_copy: bool
    """True: a merge's bulk copy runs without the lock, the images receiving data marked
    ``gc-busy`` (attach and revert refuse them); False: it holds the lock and lets go of it
    between slices (`gcsteps.SLICE`)."""

    @property
    def shared(self) -> bool:
        """Other hosts may attach the SR's VDIs (NFS): a leaf is touched only where it is
        attached writable here."""
        ...

    def lock(self, purpose: str, *uuids: str) -> Lock:
        """The chain lock (with the locks of `uuids` where the SR has per-VDI locks); taking it
        may replay orphaned journal entries first."""
        ...

    def attached(self) -> Mapping[str, bool]:
        """VDIs attached on this host -> attached writable."""
        ...

    def served(self, uuid: str) -> bool:
        """`uuid` has a data path (an NBD server) the collector can pause."""
        ...

    def paused(self, uuids: Iterable[str]) -> contextlib.AbstractContextManager[None]:
        """The data paths of those of `uuids` that are served, paused for the block and resumed
        on their leaf after (caller holds the lock)."""
        ...

    def unusable(self) -> Iterable[str]:
        """VDIs a set-aside journal entry names (left alone)."""
        ...

    def free_bytes(self) -> int: ...

    def data_bytes(self, uuid: str, leaf_step: bool) -> int | None:
        """Bytes the image of `uuid` holds itself, where the SR can tell cheaply (a leaf
        step's bound; `leaf_step`: `uuid` is a candidate); None: its allocated blocks."""
        ...

    def generation(self) -> object:
        """A value that changes with every write of the records (None: unknown); a sliced copy
        checks the chain again only when it changed."""
        ...

    def recover(self) -> None:
        """Replay the collector's interrupted steps (and resume data paths a killed collector
        left paused)."""
        ...


@contextlib.contextmanager
def held(lock: Lock) -> Iterator[None]:
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


class ChainBackend:
    """`sm.gc.Backend` of one chain SR."""

    def __init__(self, sr: ChainSR, site: GcSite) -> None:
        self.sr = sr
        self.site = site
        self.gc_dir = site.gc_dir
        self.final_bytes = final_bytes()  # SM_GC_FINAL_BYTES

    def graph(self) -> Graph:
        sr, site = self.sr, self.site
        vols, fmt = sr.volumes, sr.format
        with held(site.lock("gc graph")):
            records = dict(sr.meta.records())
            on = site.attached()
            frozen: set[str] = set()
            # left alone with its whole chain: a VDI a set-aside entry names, and an attached
            # one without a data path to pause (its readers open the images themselves)
            for u in sorted({*site.unusable(), *(u for u in on if not site.served(u))}):
                cur = u
                while cur and cur not in frozen:
                    frozen.add(cur)
                    rec = records.get(cur)
                    cur = rec.parent if rec is not None else ""
            sizes = vols.sizes(records)
            parents = {r.parent for r in records.values()}
            kids: dict[str, int] = {}
            for r in records.values():
                kids[r.parent] = kids.get(r.parent, 0) + 1
            nodes = []
            for r in records.values():
                attached = r.uuid in frozen or r.uuid in on
                if r.vdi_type != "vhd":
                    nodes.append(Node(r.uuid, r.parent, r.hidden, vhd=False, attached=attached))
                    continue
                if r.uuid not in sizes:  # no image: never touched
                    nodes.append(Node(r.uuid, r.parent, r.hidden, vhd=False, attached=True))
                    continue
                vhd = True
                blocks: frozenset[int] = frozenset()
                bs = 2 * 1024 * 1024
                try:
                    blocks, bs = fmt.blocks(vols.path(r.uuid))
                except Exception as err:  # unreadable: never touched
                    log.warning("gc: %s unreadable (%s); leaving it alone", r.uuid, err)
                    vhd = False
                leaf_step = (vhd and not r.hidden and r.uuid not in parents
                             and kids.get(r.parent) == 1)
                nodes.append(Node(r.uuid, r.parent, r.hidden, vhd=vhd, attached=attached,
                                  blocks=blocks, block_size=bs, physical=sizes[r.uuid],
                                  data_bytes=site.data_bytes(r.uuid, leaf_step)))
        return Graph.of(nodes)

    def recover(self) -> None:
        self.site.recover()

    def free_bytes(self) -> int:
        return self.site.free_bytes()

    def execute(self, action: Action, ctx: StepContext) -> dict[str, Any]:
        return run(self.sr, self.site, action, ctx)


def run(sr: ChainSR, site: GcSite, action: Action, ctx: StepContext) -> dict[str, Any]:
    """Run one planned action under the SR's lock; extra facts for the run summary. Skip if the
    SR is busy, the chain changed, an image is damaged or the space is missing."""
    from sm.errors import LockErr, SRNoSpace, VDIUnavailable

    lock = site.lock("gc", action.base, action.child)
    try:
        lock.acquire()
        if action.kind == "remove":
            _remove(sr, site, action)
            return {}
        if action.kind == "leaf-snapshot":
            return gcleaf.leaf_snapshot(sr, site, action, ctx)
        return gcmerge.merge(sr, site, action, ctx, lock)
    except (LockErr, SRNoSpace, VDIUnavailable) as err:  # VDIUnavailable: a damaged image
        raise Skip(str(err)) from err
    finally:
        lock.release()


def recover(sr: ChainSR, site: GcSite, entry: JournalEntry) -> None:
    """The journal handler of the collector's ops (the caller holds the chain lock): settle a
    step that failed in-process (`entry.failure`), replay one whose collector was killed."""
    if entry.op == "gc_merge":
        gcmerge.settle_merge(sr, site, entry)
    elif entry.op == "gc_leafsnap":
        gcleaf.settle_leafsnap(sr, site, entry)
    else:
        r = RemovePlan.from_journal(entry.data)
        if entry.failure is not None and sr.volumes.exists(r.vdi):
            return  # the volume was not removed: nothing changed
        _forward_remove(sr, r, entry)


def _remove(sr: ChainSR, site: GcSite, action: Action) -> None:
    """`gc_remove`: a garbage base's volume, then its record; rolled forward once the volume
    is gone."""
    r = recheck(sr, site, action)
    assert isinstance(r, RemovePlan)
    with sr.meta.begin("gc_remove", **r.to_journal()) as entry:
        entry.passed(RemoveSteps.journaled)
        _forward_remove(sr, r, entry)


def _forward_remove(sr: ChainSR, r: RemovePlan, entry: JournalEntry) -> None:
    sr.volumes.remove(r.vdi)
    entry.passed(RemoveSteps.volume)
    x = sr.meta.find(r.vdi)
    others = [k for k in sr.meta.children_of(x.parent) if k != r.vdi] if x and x.parent else []
    with sr.meta.transaction("gc_remove", finishing=entry) as txn:
        if x is not None:
            txn.delete(r.vdi)
            p = txn.find(x.parent) if x.parent else None
            if p is not None:  # left without children: garbage for the next round
                txn.put(with_gc_mark(p, is_garbage(p, {p.uuid: others})))
    entry.passed(RemoveSteps.records)
