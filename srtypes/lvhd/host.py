"""What one host keeps of an LVHD SR (`sm.chain.host.Host`): attachment markers in the SR's
host directory, ``attached-vdi-<uuid>`` ("rw" / "ro") and ``deactivated-vdi-<uuid>`` while
`vdi_deactivate` holds its data path paused. Every command holds the chain lock: no VDI lock.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from sm.chain.host import Attachment

    from .repo import LvhdRepo

__all__ = ["LvhdHost"]


class LvhdHost:
    """The attachment markers of one LVHD SR on this host."""

    def __init__(self, repo: LvhdRepo) -> None:
        self.repo = repo
        self.run_dir = repo.host_dir.parent.parent

    def _marker(self, uuid: str, what: str = "attached") -> Path:
        return self.repo.host_dir / f"{what}-vdi-{uuid}"

    def known(self, uuid: str) -> bool:
        return self._marker(uuid).exists() or uuid in self.repo.read().vdis

    def attachment(self, uuid: str) -> Attachment | None:
        from sm.chain.host import Attachment

        try:
            mode = self._marker(uuid).read_text().strip()
        except FileNotFoundError:
            return None
        return Attachment(mode == "rw", not self._marker(uuid, "deactivated").exists())

    def set_attachment(self, uuid: str, state: Attachment | None) -> None:
        deactivated = self._marker(uuid, "deactivated")
        if state is None:
            deactivated.unlink(missing_ok=True)
            self._marker(uuid).unlink(missing_ok=True)
            return
        self.repo.host_dir.mkdir(parents=True, exist_ok=True)
        if not state.active:
            deactivated.touch()
        self._marker(uuid).write_text("rw" if state.writable else "ro")
        if state.active:
            deactivated.unlink(missing_ok=True)

    def attached(self) -> list[str]:
        return sorted(p.name.removeprefix("attached-vdi-")
                      for p in self.repo.host_dir.glob("attached-vdi-*"))

    def vdi_lock(self, uuid: str, purpose: str) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()
