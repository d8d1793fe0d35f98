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

from sm.errors import SRNoSpace, VDIExists, VDIMissing, VDISize

if TYPE_CHECKING:
    from sm.chain.host import Attachment
    from sm.chain.protocols import JournalEntry
    from sm.chain.vhdformat import VhdFormat
    from sm.errors import SMError
    from sm.journal import Entry, SetAside
    from sm.records import Transaction, VdiRecord

    from .repo import FileRepo

__all__ = ["FileChain", "physical"]


class FileVolumes:
    """Image files `<sr>/<uuid>.<vhd|raw>`."""

    atomic_create = True  # the engine writes a new image aside and renames it into place

    def __init__(self, repo: FileRepo) -> None:
        self.layout = repo.layout
        self.repo = repo

    def path(self, uuid: str, vdi_type: str = "vhd") -> str:
        if "." in uuid:  # a scratch name (`scratch`): `.<uuid>.<purpose>.vhd`
            return self.layout.temp_image(*uuid.split(".", 1))
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

    def scratch(self, uuid: str, purpose: str) -> str:
        return f"{uuid}.{purpose}"

    def replace(self, scratch: str, uuid: str) -> None:
        if self.exists(scratch):
            self.rename(scratch, uuid)  # one rename over the old file

    def shrink(self, uuid: str) -> None:
        pass  # a file holds what it uses

    def mark_base(self, uuid: str, base: bool) -> None:
        pass  # read-only is the record's business

    def regrow(self, uuid: str, record: VdiRecord) -> None:
        pass

    def leaf_size(self, uuid: str, virtual_size: int) -> int:
        return 0

    def opener(self, vdi_type: str) -> tuple[str, str | None]:
        # every image of a VHD chain inside the SR (`confine`)
        return ("sm.nbd.rawdisk:open_raw" if vdi_type == "raw"
                else "srtypes.file.confine:open_disk"), None

    def prepare_leaf(self, record: VdiRecord, writable: bool) -> None:
        pass  # a file grows as it is written

    def release_leaf(self, record: VdiRecord) -> None:
        pass

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

    # -- create, delete, resize, introduce ---------------------------------------------------

    prune_on_delete = False  # bases left without children: marked garbage, the collector's

    def attached(self, uuid: str) -> str:
        state = self.repo.attachment(uuid)
        return "" if state is None else "rw" if state.get("writable") else "ro"

    def check_size(self, size: int, vdi_type: str) -> int:
        from sm.sizes import check_vdi_size, file_size_limit

        loc = self.layout.location
        return check_vdi_size(size, fmt=vdi_type, limit=file_size_limit(loc),
                              container=f"the file system of {loc}")

    def new_volume(self, uuid: str, vdi_type: str, virtual_size: int) -> int:
        import shutil

        if shutil.disk_usage(self.layout.location).free < METADATA_RESERVE:
            raise SRNoSpace(f"{self.layout.location} cannot hold even the metadata of a new VDI")
        if vdi_type == "raw":
            _create_raw(self.path(uuid, "raw"), virtual_size)
        return virtual_size  # a VHD file: the format writes it

    def physical(self, uuid: str, vdi_type: str) -> int:
        return physical(self.path(uuid, vdi_type), vdi_type)

    def raw_size(self, uuid: str) -> int:
        return os.stat(self.path(uuid, "raw")).st_size

    def resize_room(self, record: VdiRecord, size: int) -> int:
        return size if record.vdi_type == "raw" else 0  # a VHD file grows as it is written

    def grow(self, uuid: str, vdi_type: str, size: int) -> None:
        path = self.path(uuid, vdi_type)
        if vdi_type == "raw" and os.stat(path).st_size < size:
            os.truncate(path, size)

    def trim(self, uuid: str) -> None:
        pass  # a file holds what it uses

    def adopt(self, uuid: str) -> VdiRecord:
        from .scan import adopt_record

        ext = next((e for e in ("vhd", "raw") if self.exists(uuid, e)), None)
        if ext is None:
            raise VDIMissing(f"no image {uuid}.vhd or {uuid}.raw in {self.layout.location}")
        return adopt_record(self.layout, uuid, ext)

    def make_room(self, uuid: str, blocks: int, leaf: str = "") -> None:
        pass  # a file grows as it is written

    def fit(self, uuid: str, leaf: bool) -> None:
        pass  # a file holds what it uses


METADATA_RESERVE = 1024 * 1024
"""Free space a new (thin) VDI needs at least: headers, BAT, a little slack."""


def physical(path: str, vdi_type: str) -> int:
    """Physical utilisation of an image: allocated bytes for sparse raw, file size for VHD."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return 0
    return st.st_blocks * 512 if vdi_type == "raw" else st.st_size


def _create_raw(path: str, size: int) -> None:
    from sm import atomic

    tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.new{atomic.TEMP_SUFFIX}"
    atomic.unlink(tmp, missing_ok=True, sync=False)  # a killed create's (the SR lock is ours)
    # a new file, never through a link planted under the scratch name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    try:
        try:
            os.ftruncate(fd, size)
        except OSError as err:
            raise VDISize(f"cannot make a raw file of {size} bytes: {err}") from err
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError as err:
        raise VDIExists(f"{path} already exists") from err
    finally:
        os.unlink(tmp)


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

    def recover(self) -> None:
        self.repo.recover()

    def set_aside(self) -> list[SetAside]:
        return self.repo.journal.set_aside_entries()

    def unusable(self) -> Mapping[str, SetAside]:
        return self.repo.unusable()

    def retry(self, entry_id: str) -> bool:
        return self.repo.journal.retry(entry_id)

    def discard(self, entry_id: str) -> SetAside:
        return self.repo.journal.discard(entry_id)

    def check_usable(self, *uuids: str) -> None:
        self.repo.check_usable(*uuids)

    @contextlib.contextmanager
    def begin_freeing(self, op: str, **data: Any) -> Iterator[Entry]:
        journal = self.repo.journal
        with journal.begin_freeing(op, **data) as entry:
            yield entry
        journal.make_reserve()  # given back to a delete on a full file system


class FileChain:
    """`ChainSR` of one opened File SR."""

    def __init__(self, repo: FileRepo) -> None:
        self.volumes = FileVolumes(repo)
        self.meta = FileMeta(repo)
        self.host = FileHost(repo)
        self._repo = repo

    @cached_property
    def format(self) -> VhdFormat:
        from sm.chain.vhdformat import VhdFormat

        return VhdFormat(self._repo.storage)

    def errors(self, fallback: type[SMError], what: str) -> contextlib.AbstractContextManager[None]:
        from .edge import engine_errors

        return engine_errors(fallback, what)


class FileHost:
    """Attachment state `<run_dir>/file/<sr>/<uuid>.json` ({writable, active}), VDI locks in
    the SR directory (`sm.locking`)."""

    def __init__(self, repo: FileRepo) -> None:
        self.repo = repo
        self.run_dir = repo.layout.host_dir.parent.parent

    def known(self, uuid: str) -> bool:
        from sm.locking import vdi_lock_path

        return (vdi_lock_path(self.repo.layout.location, uuid).exists()
                or self.repo.records.find(uuid) is not None
                or self.repo.layout.attachment(uuid).exists())

    def attachment(self, uuid: str) -> Attachment | None:
        from sm.chain.host import Attachment

        state = self.repo.attachment(uuid)
        if state is None:
            return None
        return Attachment(bool(state.get("writable")), bool(state.get("active", True)))

    def set_attachment(self, uuid: str, state: Attachment | None) -> None:
        self.repo.set_attachment(uuid, None if state is None else state.as_dict())

    def attached(self) -> list[str]:
        return self.repo.attached_vdis()

    def vdi_lock(self, uuid: str, purpose: str) -> contextlib.AbstractContextManager[object]:
        return self.repo.vdi_lock(uuid, purpose)
