"""The extension commands a chain SR serves from its records and its data path, written once
(docs/smapiv1.md): `sm_vdi_list`, `sm_vdi_get`, `sm_vdi_set_names`, `sm_vdi_allocation`,
`sm_vdi_pause`, `sm_vdi_resume` (`sm.vdipause`) and `sm_sr_repair` (`sm.repair`).

A driver inherits :class:`ChainCommands`, adds :data:`ChainCommands.COMMANDS` to its
`EXTRA_COMMANDS`, and supplies `_chain_read()` (the opened SR, for a read that needs no lock)
and `_chain_locked(purpose)` (the SR under its chain lock, the journal replayed first: what
`sm_sr_repair` changes under). The VDI commands run in `_chain_vdi(purpose)`, the chain lock
unless the driver says otherwise (the File SR needs none: its record store and VDI locks order
them).

Imported by drivers at start-up: nothing heavy at import.
"""

from __future__ import annotations

import contextlib
import os
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sm.driver import Command
from sm.errors import VDIMissing
from sm.recordwire import RecordList, RecordResult
from sm.repair import SRRepairRequest
from sm.requests import SRRequest, VDINamesRequest, VDIRequest
from sm.vdipause import VDIPauseRequest

if TYPE_CHECKING:
    from collections.abc import Callable

    from sm.journal import SetAside
    from sm.records import VdiRecord

    from .protocols import ChainSR

__all__ = ["ChainCommands", "ChainRepair", "resolve"]


def resolve(sr: ChainSR, uuid: str, location: str | None = None) -> VdiRecord:
    """A VDI by uuid, falling back to its location; VDIMissing (144)."""
    record = sr.meta.find(uuid)
    if record is None and location:
        record = next((r for r in sr.meta.records().values() if r.location == location), None)
    if record is None:
        raise VDIMissing(f"no VDI {uuid} (location {location}) in SR {sr.meta.sr_uuid}")
    return record


class ChainRepair:
    """`sm.repair.RepairBackend` over a chain SR's set-aside journal entries (`Meta`).
    `locked`: the driver's SR lock (which replays the live journal first)."""

    def __init__(self, sr: ChainSR,
                 locked: Callable[[str], contextlib.AbstractContextManager[object]]) -> None:
        self.sr = sr
        self.locked = locked

    def set_aside(self) -> list[SetAside]:
        return self.sr.meta.set_aside()

    def retry(self, entry_id: str) -> bool:
        from .datapath import resume_orphans

        with self.locked("sr_repair"):
            done = self.sr.meta.retry(entry_id)
            if done:  # a data path kept paused while the VDI was unusable goes on
                resume_orphans(self.sr)
            return done

    def discard(self, entry_id: str) -> SetAside:
        from .datapath import resume_orphans

        with self.locked("sr_repair"):
            aside = self.sr.meta.discard(entry_id)
            resume_orphans(self.sr)
            return aside

    def check_image(self, uuid: str) -> tuple[str, list[str]] | None:
        volumes, fmt = self.sr.volumes, self.sr.format
        for vdi_type in (fmt.name, "raw"):
            if volumes.exists(uuid, vdi_type):
                path = volumes.path(uuid, vdi_type)
                return os.path.basename(path), [] if vdi_type == "raw" else fmt.problems(path)
        return None

    def has_record(self, uuid: str) -> bool:
        return self.sr.meta.find(uuid) is not None


class ChainCommands:
    """The record, data-path and repair extension commands of a chain SR driver."""

    COMMANDS = MappingProxyType({
        "sm_vdi_list": Command(SRRequest, "sm_vdi_list"),
        "sm_vdi_get": Command(VDIRequest, "sm_vdi_get"),
        "sm_vdi_set_names": Command(VDINamesRequest, "sm_vdi_set_names"),
        "sm_vdi_allocation": Command(VDIRequest, "sm_vdi_allocation"),
        "sm_vdi_pause": Command(VDIPauseRequest, "sm_vdi_pause"),
        "sm_vdi_resume": Command(VDIPauseRequest, "sm_vdi_resume"),
        "sm_sr_repair": Command(SRRepairRequest, "sm_sr_repair"),
    })

    def _chain_read(self) -> ChainSR:
        raise NotImplementedError

    def _chain_locked(self, purpose: str) -> contextlib.AbstractContextManager[ChainSR]:
        raise NotImplementedError

    def _chain_vdi(self, purpose: str) -> contextlib.AbstractContextManager[ChainSR]:
        return self._chain_locked(purpose)

    def sm_vdi_list(self, request: SRRequest) -> RecordList:
        """Every VDI record of the SR (hidden bases included)."""
        return RecordList(tuple(self._chain_read().meta.records().values()))

    def sm_vdi_get(self, request: VDIRequest) -> RecordResult:
        """The record of one VDI (VDIMissing 144 if none), and its attachment on this host."""
        sr = self._chain_read()
        record = resolve(sr, request.vdi_uuid, request.vdi_location)
        state = sr.host.attachment(record.uuid)
        return RecordResult(record, "" if state is None else "rw" if state.writable else "ro")

    def sm_vdi_set_names(self, request: VDINamesRequest) -> None:
        """Set a VDI's name-label and name-description in its record."""
        with self._chain_vdi("sm_vdi_set_names") as sr:
            uuid = resolve(sr, request.vdi_uuid, request.vdi_location).uuid
            with sr.meta.transaction("set names") as txn:
                txn.put(txn.get(uuid).replace(name_label=request.name_label,
                                              name_description=request.name_description))

    def sm_vdi_allocation(self, request: VDIRequest) -> str:
        """Where the VDI's chain holds data (`sm.extents`), as a JSON string."""
        from sm import extents

        with self._chain_vdi("sm_vdi_allocation") as sr:
            record = resolve(sr, request.vdi_uuid, request.vdi_location)
            if record.vdi_type == "raw":
                return extents.raw_allocation(record.uuid, record.virtual_size)
            return sr.format.allocation(sr.volumes.path(record.uuid, record.vdi_type))

    def sm_vdi_pause(self, request: VDIPauseRequest) -> str:
        """Pause the VDI's data path on this host for `owner` (`sm.vdipause`)."""
        from .datapath import hold

        with self._chain_vdi("sm_vdi_pause") as sr:
            return hold(sr, resolve(sr, request.vdi_uuid, request.vdi_location).uuid,
                        request.owner)

    def sm_vdi_resume(self, request: VDIPauseRequest) -> str:
        """Resume the VDI's data path paused by `owner` (`sm.vdipause`)."""
        from .datapath import release

        with self._chain_vdi("sm_vdi_resume") as sr:
            return release(sr, resolve(sr, request.vdi_uuid, request.vdi_location).uuid,
                           request.owner)

    def sm_sr_repair(self, request: SRRepairRequest) -> str:
        """Show and resolve journal entries set aside by a failed replay (`sm.repair`), as a
        JSON string."""
        import json

        from sm import repair

        def locked(purpose: str) -> contextlib.AbstractContextManager[Any]:
            return self._chain_locked(purpose)

        backend = ChainRepair(self._chain_read(), locked)
        return json.dumps(repair.run(backend, request), sort_keys=True)
