"""`sm_sr_repair` on an LVHD SR: the `sm.repair.RepairBackend` over MGT's set-aside entries."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from sm.errors import MetadataError

if TYPE_CHECKING:
    from sm.journal import SetAside

    from .repo import LvhdRepo

__all__ = ["LvhdRepairBackend"]


class LvhdRepairBackend:
    """``locked``: the driver's chain lock (replays the live journal first)."""

    def __init__(self, repo: LvhdRepo,
                 locked: Callable[[str], contextlib.AbstractContextManager[object]]) -> None:
        self.repo = repo
        self.locked = locked

    def set_aside(self) -> list[SetAside]:
        from sm.journal import SetAside

        failed = self.repo.read().failed
        return sorted((SetAside.from_dict(v) for v in failed.values()), key=lambda a: a.time)

    def retry(self, entry_id: str) -> bool:
        from . import srops

        with self.locked("sr_repair"):
            with self.repo.transaction("sr_repair") as txn:
                raw = txn.failed.pop(entry_id, None)
                if raw is None or not isinstance(raw.get("entry"), dict):
                    raise MetadataError(f"no set-aside journal entry {entry_id}",
                                        details={"entry": entry_id})
                data = raw["entry"]
                txn.journal[entry_id] = data
            try:
                srops.replay(self.repo, entry_id, data)
            except Exception as err:
                srops.set_aside(self.repo, entry_id, err)
                return False
            from .datapath import resume_orphans

            resume_orphans(self.repo)  # a data path kept paused while unusable goes on
            return entry_id not in self.repo.read().journal

    def discard(self, entry_id: str) -> SetAside:
        from sm.journal import SetAside

        with self.locked("sr_repair"):
            with self.repo.transaction("sr_repair") as txn:
                raw = txn.failed.pop(entry_id, None)
                if raw is None:
                    raise MetadataError(f"no set-aside journal entry {entry_id}",
                                        details={"entry": entry_id})
            from .datapath import resume_orphans

            resume_orphans(self.repo)
        return SetAside.from_dict(raw)

    def check_image(self, uuid: str) -> tuple[str, list[str]] | None:
        lvm, vg = self.repo.lvm, self.repo.vg
        for name in (f"VHD-{uuid}", f"LV-{uuid}"):
            if lvm.lv_exists(vg, name):
                if name.startswith("LV-"):
                    return name, []
                from sm import vhd

                storage = self.repo.storage
                return name, vhd.check(storage.path(name), storage=storage)
        return None

    def has_record(self, uuid: str) -> bool:
        return uuid in self.repo.read().vdis
