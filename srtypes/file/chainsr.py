"""The File SR as the chain core sees it (`sm.chain.protocols.ChainSR`): image files in the SR
directory, the record store and the journal directory, VHD through the SR's confined Storage.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sm.chain.protocols import JournalEntry
    from sm.chain.vhdformat import VhdFormat
    from sm.errors import SMError
    from sm.journal import Entry
    from sm.records import Transaction, VdiRecord

    from .repo import FileRepo

__all__ = ["FileChain"]


class FileVolumes:
    """Image files `<sr>/<uuid>.<vhd|raw>`."""

    atomic_create = True  # the engine writes a new image aside and renames it into place

    def __init__(self, repo: FileRepo) -> None:
        self.layout = repo.layout

    def path(self, uuid: str, vdi_type: str = "vhd") -> str:
        return self.layout.image(uuid, vdi_type)

    def exists(self, uuid: str, vdi_type: str = "vhd") -> bool:
        return os.path.exists(self.path(uuid, vdi_type))

    def create(self, uuid: str, size: int) -> None:
        pass  # the format writes the file

    def rename(self, old: str, new: str) -> None:
        from sm import atomic

        atomic.replace_atomic(self.path(old), self.path(new))

    def remove(self, uuid: str, vdi_type: str = "vhd") -> None:
        from sm import atomic

        atomic.unlink(self.path(uuid, vdi_type), missing_ok=True)

    def shrink(self, uuid: str) -> None:
        pass  # a file holds what it uses

    def mark_base(self, uuid: str, base: bool) -> None:
        pass  # read-only is the record's business

    def regrow(self, uuid: str, record: VdiRecord) -> None:
        pass

    def leaf_size(self, uuid: str, virtual_size: int) -> int:
        return 0

    def need_space(self, sizes: Sequence[int], what: str) -> None:
        pass  # sizes are refused up front (`sm.sizes`); a full file system answers 44

    def sizes(self, uuids: Iterable[str]) -> Mapping[str, int]:
        out = {}
        for uuid in uuids:
            try:
                out[uuid] = os.stat(self.path(uuid)).st_size
            except FileNotFoundError:
                continue
        return out


class FileMeta:
    """The record store and the journal directory."""

    new_sm_config: Mapping[str, str] = MappingProxyType({})

    def __init__(self, repo: FileRepo) -> None:
        self.repo = repo
        self.sr_uuid = repo.layout.sr_uuid or ""

    def find(self, uuid: str) -> VdiRecord | None:
        return self.repo.records.find(uuid)

    def get(self, uuid: str) -> VdiRecord:
        return self.repo.get(uuid)

    def children_of(self, uuid: str) -> list[str]:
        return self.repo.children_of(uuid)

    def records(self) -> Mapping[str, VdiRecord]:
        return {r.uuid: r for r in self.repo.records.all()}

    @contextlib.contextmanager
    def transaction(self, purpose: str, *, finishing: JournalEntry | None = None
                    ) -> Iterator[Transaction]:
        with self.repo.records.transaction(purpose=purpose) as txn:
            yield txn

    def begin(self, op: str, **data: Any) -> Entry:
        return self.repo.journal.begin(op, **data)

    def check_usable(self, *uuids: str) -> None:
        self.repo.check_usable(*uuids)


class FileChain:
    """`ChainSR` of one opened File SR."""

    def __init__(self, repo: FileRepo) -> None:
        self.volumes = FileVolumes(repo)
        self.meta = FileMeta(repo)
        self._repo = repo

    @cached_property
    def format(self) -> VhdFormat:
        from sm.chain.vhdformat import VhdFormat

        return VhdFormat(self._repo.storage)

    def errors(self, fallback: type[SMError], what: str) -> contextlib.AbstractContextManager[None]:
        from .edge import engine_errors

        return engine_errors(fallback, what)
