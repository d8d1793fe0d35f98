"""What the chain core asks of an SR type: three small protocols and the bundle of them.

- :class:`Volumes`: where image bytes live (files in a directory, LVs in a VG): create,
  rename, remove, sizes; sealing a volume that becomes a read-only base (an LV is deflated
  and tagged) and the opposite.
- :class:`Meta`: the SR's records and journal (the File SR's record store and journal
  directory, the LVHD SR's MGT volume) behind one interface: lookups, one all-or-nothing
  transaction, ``begin`` of a journal entry, the set-aside check.
- :class:`ImageFormat`: what the core asks of an image (empty child, identity and hidden flag,
  info, soundness check). The VHD engine implements it (`sm.chain.vhdformat`); a second format
  plugs in there.

A chain SR type hands the core one :class:`ChainSR`. Operations take it first:
``snapshot.run(sr, ...)``.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from types import TracebackType

    from sm.errors import SMError
    from sm.journal import SetAside
    from sm.records import VdiRecord

    from .host import Host

__all__ = ["ChainSR", "ImageFormat", "ImageInfo", "JournalEntry", "Meta", "RecordTxn", "Volumes"]


class Volumes(Protocol):
    """Where the images live. Names are VDI uuids; each call is idempotent where it says so."""

    @property
    def atomic_create(self) -> bool:
        """True when a new image appears whole or not at all (files: written aside and renamed), so
    one found after a crash can be trusted; False (LVs: a new LV may sit on a removed one's
    extents) when it must be rewritten."""
        ...

    def path(self, uuid: str, vdi_type: str = "vhd") -> str:
        """The path the image engine opens for `uuid`."""
        ...

    def exists(self, uuid: str, vdi_type: str = "vhd") -> bool: ...

    def create(self, uuid: str, size: int) -> None:
        """Make room for a new image of up to `size` bytes (an LV; nothing for a file: the
        format creates it). Idempotent."""
        ...

    def rename(self, old: str, new: str) -> None:
        """Atomically give the volume of `old` the name of `new` (which must not exist)."""
        ...

    def scratch(self, uuid: str, purpose: str) -> str:
        """The name of a scratch volume for an image of `uuid` being built (`purpose`: an
        alphanumeric word), invisible to scan; :meth:`path`, :meth:`exists`, :meth:`create`
        and :meth:`remove` take it in place of a uuid."""
        ...

    def replace(self, scratch: str, uuid: str) -> None:
        """The scratch volume becomes the volume of `uuid`, whose old content goes: in one
        rename where the store can (files); else the old volume is removed, then the scratch
        renamed (LVs: a crash in between leaves only the scratch). Nothing if the scratch is
        gone (replaced already)."""
        ...

    def remove(self, uuid: str, vdi_type: str = "vhd") -> None:
        """Remove the volume; nothing if it is gone. Idempotent."""
        ...

    def shrink(self, uuid: str) -> None:
        """The image is about to become a read-only base: its volume shrinks to what it uses
        (an LV is deflated; a file needs nothing). Idempotent."""
        ...

    def mark_base(self, uuid: str, base: bool) -> None:
        """Mark the volume as a read-only base, or no longer one (an LV tag). Idempotent."""
        ...

    def regrow(self, uuid: str, record: VdiRecord) -> None:
        """A base given back to its leaf `record` (the undo of a failed snapshot): the volume
        grows back to the size the leaf had (inflated where thick or attached writable)."""
        ...

    def leaf_size(self, uuid: str, virtual_size: int) -> int:
        """The size to :meth:`create` a new leaf image `uuid` with (LVs: full when thick or
        attached writable, else its metadata; files: 0)."""
        ...

    def need_space(self, sizes: Sequence[int], what: str) -> None:
        """SRNoSpace (44) unless new volumes of these sizes fit."""
        ...

    def sizes(self, uuids: Iterable[str]) -> Mapping[str, int]:
        """Physical utilisation of those of `uuids` whose volumes exist (for the records)."""
        ...

    def opener(self, vdi_type: str) -> tuple[str, str | None]:
        """How the data path's nbdkit opens a served image of `vdi_type`: the opener
        (``module:function``, run inside nbdkit's Python) and its argument (`sm.nbd.server`)."""
        ...

    def prepare_leaf(self, record: VdiRecord, writable: bool) -> None:
        """Before `record` is attached (`writable`): make room for it to grow (an LV is
        inflated to its full size; a file needs nothing)."""
        ...

    def release_leaf(self, record: VdiRecord) -> None:
        """After `record` is detached: give back the room it did not use (a thin LV is
        deflated; a file needs nothing). Never fails on a damaged image."""
        ...

    # -- create, delete, resize, introduce (sm.chain.vdiops, sm.chain.resize) ---------------

    @property
    def prune_on_delete(self) -> bool:
        """True (LVs): deleting a leaf removes at once the hidden bases it leaves without
        children, and a VDI others depend on (or a hidden base) cannot be deleted; False
        (files): such a VDI is hidden instead and bases left without children are marked
        garbage for the collector."""
        ...

    def attached(self, uuid: str) -> str:
        """How `uuid` is attached on this host: "rw", "ro", or "" (not attached)."""
        ...

    def check_size(self, size: int, vdi_type: str) -> int:
        """`sm.sizes.check_vdi_size` with the limit of what holds the volumes (a file
        system, a VG): the size rounded, or VDISize (79)."""
        ...

    def new_volume(self, uuid: str, vdi_type: str, virtual_size: int) -> int:
        """The volume of a new VDI: a raw image of (at least) `virtual_size` bytes, or room
        for the format to write a new image of that virtual size (an LV: full when thick,
        else its metadata; a file: nothing). SRNoSpace (44) before anything when it cannot
        fit. Returns the virtual size the VDI has (a raw LV rounds up to extents)."""
        ...

    def physical(self, uuid: str, vdi_type: str) -> int:
        """The physical utilisation a record carries (0 if the volume is gone)."""
        ...

    def raw_size(self, uuid: str) -> int:
        """The size of a raw image (its virtual size)."""
        ...

    def resize_room(self, record: VdiRecord, size: int) -> int:
        """The volume size a resize of `record` to virtual `size` needs, checked to fit
        (SRNoSpace 44): an LV with room for the grown image (every block when thick or
        attached writable), a raw volume of `size`; 0 where the image grows as it is written
        (a VHD file)."""
        ...

    def grow(self, uuid: str, vdi_type: str, size: int) -> None:
        """The volume is at least `size` bytes (a raw file truncated up, an LV resized).
        Idempotent."""
        ...

    def trim(self, uuid: str) -> None:
        """A leaf's volume gives back the room it does not need at rest (a thin LV not
        attached writable here is deflated; nothing for files or thick LVs). Idempotent."""
        ...

    def adopt(self, uuid: str) -> VdiRecord:
        """A record for the image `uuid` found without one, from what the image says:
        VDIMissing (144) if there is none, VDIUnavailable (46) if it cannot be read."""
        ...

    def make_room(self, uuid: str, blocks: int, leaf: str = "") -> None:
        """Before a merge: room for `blocks` more (LV inflated), or as `leaf`'s leaf."""
        ...

    def fit(self, uuid: str, leaf: bool) -> None:
        """After a merge: the survivor sized as a `leaf` (full if thick/rw) or a base."""
        ...


class ImageInfo(Protocol):
    @property
    def uuid(self) -> Any: ...

    @property
    def parent_uuid(self) -> Any: ...

    @property
    def hidden(self) -> bool: ...

    @property
    def virtual_size(self) -> int: ...

    @property
    def allocated_blocks(self) -> int: ...


class ImageFormat(Protocol):
    """What the core asks of an image format."""

    @property
    def name(self) -> str: ...

    def info(self, path: str) -> ImageInfo: ...

    def child(self, parent: str, path: str, uuid: str) -> None:
        """Write an empty child image of `parent` at `path` with identity `uuid`."""
        ...

    def set_identity(self, path: str, uuid: str, hidden: bool) -> None:
        """The image's own uuid and hidden flag (written only where they differ)."""
        ...

    def check(self, *paths: str) -> None:
        """VDIUnavailable (46) naming the first damaged image; before an operation starts."""
        ...

    def problems(self, path: str) -> list[str]:
        """Every problem of the image at `path` ([] if sound): the full check `sm sr repair`
        shows."""
        ...

    def allocation(self, path: str) -> str:
        """Where the chain whose leaf is `path` holds data: `sm.extents`' JSON document."""
        ...

    def create(self, path: str, size: int, uuid: str) -> None:
        """Write a new empty image of virtual `size` with identity `uuid` at `path`."""
        ...

    def resize(self, path: str, size: int) -> None:
        """Grow the image's virtual size to `size`."""
        ...

    def blocks(self, path: str) -> tuple[frozenset[int], int]:
        """(allocated blocks, block size); raises on a damaged image."""
        ...

    def data_bytes(self, path: str) -> int | None:
        """Bytes of the sectors the image holds itself (None: cannot tell)."""
        ...

    def coalesce(self, child: str, progress: Callable[[int, int], None]) -> None:
        """The child's sectors into its parent (reading the same at every moment)."""
        ...

    def fill(self, child: str, progress: Callable[[int, int], None]) -> None:
        """Into the child the parent's sectors it lacks (reading the same at every moment)."""
        ...

    def reparent(self, path: str, parent: str, parent_uuid: str) -> None:
        """`parent` (identity `parent_uuid`, checked) as the image's parent, unless it is."""
        ...


class JournalEntry(Protocol):
    """One journaled operation, as the core uses it (``sm.journal.Entry`` for the File SR; an
    MGT entry for the LVHD SR)."""

    @property
    def id(self) -> str: ...

    @property
    def op(self) -> str: ...

    @property
    def data(self) -> Mapping[str, Any]: ...

    @property
    def failure(self) -> BaseException | None:
        """Set while the op's handler settles a failure in the op's own process."""
        ...

    def has_step(self, name: str) -> bool: ...

    def once(self, step: str | enum.Enum) -> None:
        """Record the step unless it already is, then hit its crash point."""
        ...

    def passed(self, step: str | enum.Enum) -> None:
        """Only the step's crash point (a step this path has nothing to do for)."""
        ...

    def done(self) -> None: ...

    def release(self) -> None: ...

    def __enter__(self) -> JournalEntry: ...

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class RecordTxn(Protocol):
    """The records inside one transaction."""

    def find(self, uuid: str) -> VdiRecord | None: ...

    def get(self, uuid: str) -> VdiRecord: ...

    def put(self, record: VdiRecord) -> None: ...

    def delete(self, uuid: str) -> None: ...

    def children_of(self, uuid: str) -> list[str]:
        """The staged children of `uuid`."""
        ...


class Meta(Protocol):
    """The SR's records and journal."""

    @property
    def sr_uuid(self) -> str: ...

    @property
    def new_sm_config(self) -> Mapping[str, str]:
        """The `sm_config` of a VDI record the core creates (before its `vhd-parent`)."""
        ...

    def find(self, uuid: str) -> VdiRecord | None: ...

    def get(self, uuid: str) -> VdiRecord:
        """The record, VDIMissing (144) if none."""
        ...

    def children_of(self, uuid: str) -> list[str]: ...

    def records(self) -> Mapping[str, VdiRecord]:
        """Every record by uuid."""
        ...

    def transaction(self, purpose: str, *, finishing: JournalEntry | None = None
                    ) -> contextlib.AbstractContextManager[RecordTxn]:
        """Change records all or nothing. `finishing`: the journal entry this commit ends,
        removed in the same write where the store can (MGT), else by its owner right after."""
        ...

    def begin(self, op: str, **data: Any) -> JournalEntry:
        """A journal entry owned by this process (``sm.journal.Entry`` semantics: a failure in
        the ``with`` block runs the op's handler in-process, ``entry.once`` marks steps)."""
        ...

    def check_usable(self, *uuids: str) -> None:
        """VDIUnavailable (46) if a set-aside journal entry makes one of them unusable."""
        ...

    def recover(self) -> None:
        """Replay orphaned journal entries (caller holds the SR lock); one whose replay fails
        is set aside."""
        ...

    def set_aside(self) -> list[SetAside]:
        """The journal entries set aside by a failed replay, oldest first."""
        ...

    def unusable(self) -> Mapping[str, SetAside]:
        """VDI uuid -> the set-aside entry that makes it unusable."""
        ...

    def retry(self, entry_id: str) -> bool:
        """Put a set-aside entry back and replay it (caller holds the SR lock): True if it was
        recovered, False if it failed again (set aside again). MetadataError if none."""
        ...

    def discard(self, entry_id: str) -> SetAside:
        """Forget a set-aside entry (caller holds the SR lock); returns it. MetadataError if
        none."""
        ...

    def begin_freeing(self, op: str, **data: Any
                      ) -> contextlib.AbstractContextManager[JournalEntry]:
        """:meth:`begin` for an operation that frees space (delete): it starts on a full SR
        (the File SR gives back a reserve, made again once the operation is done)."""
        ...


class ChainSR(Protocol):
    """One SR as the chain core sees it."""

    @property
    def volumes(self) -> Volumes: ...

    @property
    def meta(self) -> Meta: ...

    @property
    def format(self) -> ImageFormat: ...

    @property
    def host(self) -> Host: ...

    def errors(self, fallback: type[SMError], what: str) -> contextlib.AbstractContextManager[None]:
        """Around engine and volume work: their errors become SM errors (`fallback` for an
        image that cannot be read or written), naming `what`."""
        ...
