"""`sm_sr_repair` on a File SR: the `sm.repair.RepairBackend` over the SR's journal."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sm.journal import SetAside

    from .repo import FileRepo

__all__ = ["FileRepairBackend"]


class FileRepairBackend:
    def __init__(self, repo: FileRepo) -> None:
        self.repo = repo

    def set_aside(self) -> list[SetAside]:
        return self.repo.journal.set_aside_entries()

    def retry(self, entry_id: str) -> bool:
        with self.repo.chain_lock("sr_repair"):
            done = self.repo.journal.retry(entry_id)
            if done:  # a data path kept paused while the VDI was unusable goes on
                from .datapath import resume_orphans

                resume_orphans(self.repo)
            return done

    def discard(self, entry_id: str) -> SetAside:
        with self.repo.chain_lock("sr_repair"):
            aside = self.repo.journal.discard(entry_id)
            from .datapath import resume_orphans

            resume_orphans(self.repo)
            return aside


    def check_image(self, uuid: str) -> tuple[str, list[str]] | None:
        lay = self.repo.layout
        for ext in ("vhd", "raw"):
            path = lay.image(uuid, ext)
            if os.path.exists(path):
                if ext == "raw":
                    return os.path.basename(path), []
                from sm import vhd

                return os.path.basename(path), vhd.check(path)
        return None

    def has_record(self, uuid: str) -> bool:
        return self.repo.records.find(uuid) is not None
