"""The LVHD SR as the chain core sees it (`sm.chain.protocols.ChainSR`): VHD images in LVs of
the SR's VG, the records and the journal in the MGT volume, VHD through the LV Storage.

The journal entries live in MGT's ``journal`` map, by key, as ``{"op", ...plan, "steps"}``: a
step is one MGT write, and the commit of the records removes the entry in the same write
(``Meta.transaction(finishing=entry)``), so records and journal never disagree.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any

from sm.edge import errors_as
from sm.errors import VDIMissing
from sm.faults import crash_point

from .host import LvhdHost
from .provision import LvVolumeSizes
from .repo import full_vhd_size, metadata_size, vhd_lv

if TYPE_CHECKING:
    from sm.chain.protocols import JournalEntry
    from sm.chain.vhdformat import VhdFormat
    from sm.errors import SMError
    from sm.journal import SetAside
    from sm.records import VdiRecord

    from .repo import LvhdRepo

__all__ = ["RO_TAG", "LvhdChain", "MgtEntry", "leaf_size", "write_child_lv"]

log = logging.getLogger(__name__)

RO_TAG = "sm_ro"
"""LV tag of a read-only base."""


def leaf_size(repo: LvhdRepo, uuid: str, virtual: int, thick: bool | None = None) -> int:
    """LV size of a new leaf: full if thick or attached writable here, else metadata only."""
    if thick is None:
        thick = repo.allocation(repo.read()) == "thick"
    marker = repo.host_dir / f"attached-vdi-{uuid}"
    rw = bool(uuid) and marker.exists() and marker.read_text() == "rw"
    return full_vhd_size(virtual) if thick or rw else metadata_size(virtual)


def write_child_lv(repo: LvhdRepo, lv: str, uuid: str, parent: str, size: int) -> None:
    """LV `lv` holding an empty child (uuid `uuid`) of ``VHD-<parent>``, always rewritten
    (see `sm.chain.snapshot.write_child`); for the steps not in the chain core yet."""
    from sm import vhd

    if not repo.lvm.lv_exists(repo.vg, lv):
        repo.lvm.lvcreate(repo.vg, lv, size)
    vhd.snapshot(repo.storage.path(vhd_lv(parent)), repo.storage.path(lv),
                 uuid=uuidlib.UUID(uuid), storage=repo.storage)


class LvhdVolumes(LvVolumeSizes):
    """LVs ``VHD-<uuid>`` / ``LV-<uuid>`` of the SR's VG."""

    atomic_create = False  # a new LV may sit on a removed one's extents

    def __init__(self, repo: LvhdRepo) -> None:
        self.repo = repo

    def _lv(self, uuid: str, vdi_type: str = "vhd") -> str:
        from .repo import lv_name

        return lv_name(uuid, vdi_type)

    def path(self, uuid: str, vdi_type: str = "vhd") -> str:
        return self.repo.storage.path(self._lv(uuid, vdi_type))

    def exists(self, uuid: str, vdi_type: str = "vhd") -> bool:
        return self.repo.lvm.lv_exists(self.repo.vg, self._lv(uuid, vdi_type))

    def create(self, uuid: str, size: int) -> None:
        if not self.exists(uuid):
            self.repo.lvm.lvcreate(self.repo.vg, vhd_lv(uuid), size)

    def rename(self, old: str, new: str) -> None:
        self.repo.lvm.lvrename(self.repo.vg, vhd_lv(old), vhd_lv(new))

    def remove(self, uuid: str, vdi_type: str = "vhd") -> None:
        if self.exists(uuid, vdi_type):
            self.repo.lvm.lvremove(self.repo.vg, self._lv(uuid, vdi_type))

    def scratch(self, uuid: str, purpose: str) -> str:
        return f"{uuid}.{purpose}"  # LV VHD-<uuid>.<purpose>: scan takes no such name

    def replace(self, scratch: str, uuid: str) -> None:
        if self.exists(scratch):  # lvrename cannot replace: the old LV goes first
            self.remove(uuid)
            self.rename(scratch, uuid)

    def shrink(self, uuid: str) -> None:
        from sm import vhd
        from sm.records import VdiRecord

        from .provision import resize_lv

        used = vhd.physical_size(self.path(uuid), storage=self.repo.storage)
        resize_lv(self.repo, VdiRecord(uuid=uuid, location=uuid), used, "deflate")

    def mark_base(self, uuid: str, base: bool) -> None:
        lvm, vg, lv = self.repo.lvm, self.repo.vg, vhd_lv(uuid)
        tagged = RO_TAG in lvm.lv(vg, lv).tags
        if base and not tagged:
            lvm.lv_addtag(vg, lv, RO_TAG)
        elif tagged and not base:
            lvm.lv_deltag(vg, lv, RO_TAG)

    def regrow(self, uuid: str, record: VdiRecord) -> None:
        from .provision import inflate, leaf_target

        full = leaf_size(self.repo, uuid, record.virtual_size) == full_vhd_size(
            record.virtual_size)  # thick, or attached writable here: it was inflated
        if full and self.repo.lvm.lv(self.repo.vg, vhd_lv(uuid)).size < leaf_target(
                self.repo, record):
            inflate(self.repo, record)

    def leaf_size(self, uuid: str, virtual_size: int) -> int:
        return leaf_size(self.repo, uuid, virtual_size)

    def opener(self, vdi_type: str) -> tuple[str, str | None]:
        from .datapath import OPENER, opener_arg

        return OPENER, opener_arg(self.repo)

    def prepare_leaf(self, record: VdiRecord, writable: bool) -> None:
        from .provision import inflate

        if writable and record.vdi_type == "vhd" and not record.hidden:
            inflate(self.repo, record)

    def release_leaf(self, record: VdiRecord) -> None:
        from sm import vhd

        from .provision import deflate

        if record.vdi_type == "vhd" and self.repo.allocation(self.repo.read()) == "thin":
            try:
                deflate(self.repo, record)
            except vhd.VhdError as err:  # a damaged image keeps its LV's size; still detached
                log.warning("VDI %s not deflated: %s", record.uuid, err)

    def need_space(self, sizes: Sequence[int], what: str) -> None:
        self.repo.need_space(list(sizes), what)

    def sizes(self, uuids: Iterable[str]) -> Mapping[str, int]:
        wanted = {vhd_lv(u): u for u in uuids}
        return {wanted[lv.name]: lv.size for lv in self.repo.lvm.lvs(self.repo.vg)
                if lv.name in wanted}

    def _full(self, uuid: str) -> bool:
        """A leaf stays inflated on a thick SR and while attached writable here."""
        marker = self.repo.host_dir / f"attached-vdi-{uuid}"
        return self.repo.allocation(self.repo.read()) == "thick" or (
            marker.exists() and marker.read_text() == "rw")

    def make_room(self, uuid: str, blocks: int, leaf: str = "") -> None:
        from sm import vhd

        from .provision import leaf_target, resize_lv
        from .repo import ALIGN, BLOCK

        repo = self.repo
        rec = self.repo.read().vdis[uuid]
        need = (vhd.physical_size(self.path(uuid), storage=repo.storage)
                + blocks * (BLOCK + ALIGN) + 2 * ALIGN)
        if leaf and self._full(leaf):  # the image becomes the running leaf
            need = max(need, leaf_target(repo, rec),
                       leaf_target(repo, repo.read().vdis[leaf]))
        if need > repo.lvm.lv(repo.vg, vhd_lv(uuid)).size:
            resize_lv(repo, rec, need, "inflate")

    def fit(self, uuid: str, leaf: bool) -> None:
        from .provision import deflate, inflate

        rec = self.repo.read().vdis[uuid]
        if leaf and self._full(uuid):
            inflate(self.repo, rec)
        else:
            deflate(self.repo, rec)


class _VdisTxn:
    """The records of one MGT transaction as `sm.chain.protocols.RecordTxn`."""

    def __init__(self, vdis: dict[str, VdiRecord], sr_uuid: str) -> None:
        self.vdis = vdis
        self.sr_uuid = sr_uuid

    def find(self, uuid: str) -> VdiRecord | None:
        return self.vdis.get(uuid)

    def get(self, uuid: str) -> VdiRecord:
        found = self.vdis.get(uuid)
        if found is None:
            raise VDIMissing(f"no VDI {uuid} in SR {self.sr_uuid}")
        return found

    def put(self, record: VdiRecord) -> None:
        self.vdis[record.uuid] = record

    def delete(self, uuid: str) -> None:
        self.vdis.pop(uuid, None)

    def children_of(self, uuid: str) -> list[str]:
        return sorted(r.uuid for r in self.vdis.values() if r.parent == uuid)


class LvhdMeta:
    """The MGT volume: records, journal, set-aside entries."""

    new_sm_config: Mapping[str, str] = MappingProxyType({"vdi_type": "vhd"})

    def __init__(self, repo: LvhdRepo, handlers: Callable[[str], Callable[[MgtEntry], None]]
                 ) -> None:
        self.repo = repo
        self.sr_uuid = repo.sr_uuid
        self.handlers = handlers

    def find(self, uuid: str) -> VdiRecord | None:
        return self.repo.read().vdis.get(uuid)

    def get(self, uuid: str) -> VdiRecord:
        found = self.find(uuid)
        if found is None:
            raise VDIMissing(f"no VDI {uuid} in SR {self.sr_uuid}")
        return found

    def children_of(self, uuid: str) -> list[str]:
        return sorted(r.uuid for r in self.repo.read().vdis.values() if r.parent == uuid)

    def records(self) -> Mapping[str, VdiRecord]:
        return self.repo.read().vdis

    @contextlib.contextmanager
    def transaction(self, purpose: str, *, finishing: JournalEntry | None = None
                    ) -> Iterator[_VdisTxn]:
        with self.repo.transaction(purpose) as doc:
            yield _VdisTxn(doc.vdis, self.sr_uuid)
            if isinstance(finishing, MgtEntry):
                doc.journal.pop(finishing.id, None)
                finishing.finished = True

    def begin(self, op: str, **data: Any) -> MgtEntry:
        key = str(data.get("new") or uuidlib.uuid4())
        with self.repo.transaction(op) as doc:
            doc.journal[key] = {"op": op, **data, "steps": []}
        return MgtEntry(self, key, {"op": op, **data, "steps": []}, owned=True)

    def recover(self) -> None:
        from .srops import recover

        if self.repo.read().journal:
            recover(self.repo)

    def set_aside(self) -> list[SetAside]:
        from .srops import set_aside_entries

        return set_aside_entries(self.repo)

    def unusable(self) -> Mapping[str, SetAside]:
        from .srops import unusable

        doc = self.repo.read()
        return unusable(self.repo, doc) if doc.failed else {}

    def retry(self, entry_id: str) -> bool:
        from .srops import retry

        return retry(self.repo, entry_id)

    def discard(self, entry_id: str) -> SetAside:
        from .srops import discard

        return discard(self.repo, entry_id)

    def check_usable(self, *uuids: str) -> None:
        from .srops import check_usable

        check_usable(self.repo, *uuids)

    def begin_freeing(self, op: str, **data: Any) -> MgtEntry:
        return self.begin(op, **data)  # MGT has its room: nothing to give back


class MgtEntry:
    """One journal entry in MGT, with `sm.journal.Entry`'s behaviour: steps recorded once, a
    failure in the owner's ``with`` block settled in-process by the op's handler."""

    def __init__(self, meta: LvhdMeta, key: str, raw: Mapping[str, Any], *,
                 owned: bool = False) -> None:
        self.meta = meta
        self.id = key
        self.op = str(raw.get("op"))
        self.data: Mapping[str, Any] = {k: v for k, v in raw.items() if k not in ("op", "steps")}
        self._steps = [str(s) for s in raw.get("steps", [])]
        self.owned = owned
        self.finished = False
        self.failure: BaseException | None = None

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(self._steps)

    def has_step(self, name: str) -> bool:
        return name in self._steps

    def step(self, name: str) -> None:
        with self.meta.repo.transaction(self.op) as doc:
            entry = doc.journal.get(self.id)
            if entry is not None:
                entry["steps"] = [*entry.get("steps", []), name]
        self._steps.append(name)

    def once(self, step: str | enum.Enum) -> None:
        name = step if isinstance(step, str) else step.name
        if not self.finished and name not in self._steps:
            self.step(name)
        crash_point(f"{self.op}:{name}")

    def passed(self, step: str | enum.Enum) -> None:
        crash_point(f"{self.op}:{step if isinstance(step, str) else step.name}")

    def done(self) -> None:
        if not self.finished:
            with self.meta.repo.transaction(self.op) as doc:
                doc.journal.pop(self.id, None)
        self.finished = True

    def release(self) -> None:
        self.owned = False

    def __enter__(self) -> MgtEntry:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        from sm.journal import settle

        if kind is None or self.finished:
            self.done()
        elif isinstance(value, Exception):
            settle(self, value, lambda: self.meta.handlers(self.op)(self))
        else:
            self.release()


class LvhdChain:
    """`ChainSR` of one opened LVHD SR."""

    def __init__(self, repo: LvhdRepo) -> None:
        self._repo = repo
        self.volumes = LvhdVolumes(repo)
        self.meta = LvhdMeta(repo, self.handler)
        self.host = LvhdHost(repo)  # attachment markers (.host)

    @cached_property
    def format(self) -> VhdFormat:
        from sm.chain.vhdformat import VhdFormat

        return VhdFormat(self._repo.storage)

    def handler(self, op: str) -> Callable[[MgtEntry], None]:
        """The core's recovery for `op` on this SR."""
        from sm.chain import collect, gcsteps, resize, revert, snapshot, vdiops

        from .gc import LvhdGc

        table: dict[str, Callable[[Any], None]] = {
            "vdi_snapshot": lambda e: snapshot.recover(self, e),
            "vdi_clone": lambda e: snapshot.recover(self, e),
            "vdi_delete": lambda e: vdiops.recover_delete(self, e),
            "vdi_resize": lambda e: resize.recover(self, e),
            "vdi_revert": lambda e: revert.recover(self, e),
            **dict.fromkeys(gcsteps.OPS, lambda e: collect.recover(self, LvhdGc(self._repo), e)),
        }
        return table[op]

    def replay(self, key: str, raw: Mapping[str, Any]) -> None:
        """Replay an orphaned entry of the core (sr_attach, the next chain command)."""
        entry = MgtEntry(self.meta, key, raw)
        self.handler(entry.op)(entry)
        entry.done()

    def errors(self, fallback: type[SMError], what: str) -> contextlib.AbstractContextManager[None]:
        return errors_as(fallback, what)  # the one error edge (sm.edge), as the File SR's
