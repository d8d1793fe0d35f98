"""One opened File SR: its layout, records, journal, locks and per-host attachment state.

Every operation module (`vdiops`, `snapshot`, `revert`, `scan`) works on a `FileRepo`.
Chain-changing operations run `with repo.chain_lock(purpose):`, which takes the SR lock and
replays orphaned journal entries first, so an operation never starts on a half-done chain.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sm.errors import SRUnavailable, VDIMissing
from sm.log import get_logger

from .layout import SRLayout, is_uuid

if TYPE_CHECKING:
    from sm.journal import Entry, Journal, SetAside
    from sm.records import RecordStore, VdiRecord

    from .chainsr import FileChain
    from .confine import SRStorage

__all__ = ["FileRepo"]

log = get_logger(__name__)


class _Handlers(Mapping[str, "Callable[[Entry], None]"]):
    """The journal handlers of a File SR, by op; built on first use (imports the op modules)."""

    OPS = ("vdi_snapshot", "vdi_clone", "vdi_revert", "vdi_delete", "vdi_resize",
           "gc_remove", "gc_merge", "gc_leafsnap")

    def __init__(self, repo: FileRepo) -> None:
        self.repo = repo

    def __getitem__(self, op: str) -> Callable[[Entry], None]:
        from sm.chain import collect, gcsteps, resize, revert, snapshot, vdiops

        from .gc import FileGc

        repo = self.repo
        table: Mapping[str, Callable[[Entry], None]] = {
            "vdi_snapshot": lambda e: snapshot.recover(repo.chain, e),
            "vdi_clone": lambda e: snapshot.recover(repo.chain, e),
            "vdi_revert": lambda e: revert.recover(repo.chain, e),
            "vdi_delete": lambda e: vdiops.recover_delete(repo.chain, e),
            "vdi_resize": lambda e: resize.recover(repo.chain, e),
            **dict.fromkeys(gcsteps.OPS, lambda e: collect.recover(repo.chain, FileGc(repo), e)),
        }
        return table[op]

    def __iter__(self) -> Iterator[str]:
        return iter(self.OPS)

    def __len__(self) -> int:
        return len(self.OPS)


class FileRepo:
    def __init__(self, layout: SRLayout) -> None:
        self.layout = layout

    # -- opening -----------------------------------------------------------------------------

    def check(self) -> None:
        """The directory exists and holds this SR (SRUnavailable 47 otherwise)."""
        lay = self.layout
        if not lay.location.is_dir():
            raise SRUnavailable(f"no such directory {lay.location}")
        if not lay.has_sr():
            raise SRUnavailable(f"{lay.location} holds no SR (no {lay.sr_record})")
        sr = self.records.sr()
        if lay.sr_uuid is not None and sr.uuid != lay.sr_uuid:
            raise SRUnavailable(f"{lay.location} holds SR {sr.uuid}, not {lay.sr_uuid}")

    @cached_property
    def records(self) -> RecordStore:
        from sm.records import RecordStore

        return RecordStore(self.layout.meta)

    @cached_property
    def storage(self) -> SRStorage:
        """The engine's Storage confined to this SR (`confine`): no link, no parent outside."""
        from .confine import SRStorage

        return SRStorage(self.layout.location)

    @cached_property
    def chain(self) -> FileChain:
        """This SR as the chain core sees it (`sm.chain`)."""
        from .chainsr import FileChain

        return FileChain(self)

    @cached_property
    def journal(self) -> Journal:
        """The SR's journal; each op's handler settles an operation that fails in-process
        (undo, or complete past its point of no return) and replays it after a crash."""
        from sm.journal import Journal

        return Journal(self.layout.journal_dir, _Handlers(self))

    # -- locks and recovery ------------------------------------------------------------------

    @contextlib.contextmanager
    def chain_lock(self, purpose: str) -> Iterator[None]:
        """The SR lock (exclusive) with orphaned journal entries replayed first."""
        from sm.locking import sr_lock

        with sr_lock(self.layout.location, purpose=purpose):
            self.recover()
            if self.attached_vdis():
                from sm.chain.datapath import resume_orphans

                resume_orphans(self.chain)
            yield

    def vdi_lock(self, uuid: str, purpose: str) -> contextlib.AbstractContextManager[object]:
        from sm.locking import vdi_lock

        return vdi_lock(self.layout.location, uuid, purpose=purpose)

    def recover(self) -> list[Entry]:
        """Roll orphaned operations forward (caller holds the SR lock); an entry whose replay
        fails is set aside and its VDIs become unusable (`sm.journal`)."""
        if not self.layout.journal_dir.is_dir() or not any(
            n.endswith(".json") for n in os.listdir(self.layout.journal_dir)
        ):
            return []  # the common case: nothing imported on a driver's start-up path
        done = self.journal.recover()
        for name in self.layout.sweep_scratch():  # what the interrupted commands were making
            log.warning("removed scratch file %s of an interrupted command", name)
        for entry in done:
            log.warning("recovered %s %s (last step %s)", entry.op, entry.id,
                        entry.last_step.name if entry.last_step else None)
        return done

    def unusable(self) -> dict[str, SetAside]:
        """VDI uuid -> the set-aside journal entry that makes it unusable."""
        if not (self.layout.journal_dir / "failed").is_dir():
            return {}  # the common case: one stat
        return self.journal.unusable()

    def check_usable(self, *uuids: str) -> None:
        """VDIUnavailable (46) if a set-aside journal entry makes one of the VDIs unusable."""
        bad = self.unusable()
        for uuid in uuids:
            if uuid in bad:
                from sm.journal import unusable_error

                raise unusable_error(uuid, bad[uuid], self.layout.sr_uuid or "SR")

    # -- VDIs --------------------------------------------------------------------------------

    def get(self, uuid: str) -> VdiRecord:
        record = self.records.find(uuid)
        if record is None:
            raise VDIMissing(f"no VDI {uuid} in SR {self.layout.sr_uuid}")
        self.path(record)  # an image that is a link or not ours: 46 before anything starts
        return record

    def resolve(self, uuid: str, location: str | None) -> VdiRecord:
        """A VDI by uuid, falling back to its location; VDIMissing (144)."""
        record = self.records.find(uuid)
        if record is None and location:
            record = self.records.find_by_location(location)
        if record is None:
            raise VDIMissing(f"no VDI {uuid} (location {location}) in SR {self.layout.sr_uuid}")
        return record

    def path(self, record: VdiRecord) -> str:
        """The image file of a record (built from its uuid, never from its location)."""
        return self.layout.image(record.uuid, record.vdi_type)

    def children_of(self, uuid: str) -> list[str]:
        """One VDI's children, from the parent index (one shard read)."""
        return self.records.children_of(uuid)

    # -- per-host attachment state -----------------------------------------------------------

    def attachment(self, uuid: str) -> dict[str, Any] | None:
        try:
            raw = json.loads(self.layout.attachment(uuid).read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            log.warning("unreadable attachment state of %s; treating as attached", uuid)
            return {"writable": True, "active": False}
        return raw if isinstance(raw, dict) else None

    def set_attachment(self, uuid: str, state: Mapping[str, Any] | None) -> None:
        from sm import atomic

        path = self.layout.attachment(uuid)
        if state is None:
            atomic.unlink(path, missing_ok=True, sync=False)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_atomic(path, json.dumps(dict(state), sort_keys=True).encode(), sync=False)

    def attached_vdis(self) -> list[str]:
        try:
            names = os.listdir(self.layout.host_dir)
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".json") and is_uuid(n[:-5]))

    def host_dir(self) -> Path:
        return self.layout.host_dir
