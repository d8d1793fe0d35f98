"""What one host keeps of a chain SR (`ChainSR.host`): the attachment state of its VDIs, the
run directory of their data path's servers (`sm.nbd.serving`) and the per-VDI lock that orders
an attachment change with a chain change (`sm.chain.attach`, `sm.chain.datapath`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Protocol

from sm.struct import Frozen

__all__ = ["Attachment", "Host"]


class Attachment(Frozen):
    """A VDI's attachment on this host: `writable` once attached writable (until detached);
    `active` unless `vdi_deactivate` paused its data path (a fresh attachment is active)."""

    writable: bool
    active: bool = True


class Host(Protocol):
    """What this host keeps of the SR: attachment state, the run directory of the data path's
    servers (`sm.nbd.serving`), the per-VDI lock that orders attach/activate with a chain
    change (`sm.chain.datapath`)."""

    @property
    def run_dir(self) -> Path: ...

    def known(self, uuid: str) -> bool:
        """The SR may know `uuid` (a record, attachment state or lock); False is answered
        without creating anything (made-up uuids leave no trace)."""
        ...

    def attachment(self, uuid: str) -> Attachment | None: ...

    def set_attachment(self, uuid: str, state: Attachment | None) -> None:
        """Record the attachment (None: detached). Crash-safe: the old or the new state."""
        ...

    def attached(self) -> list[str]:
        """The VDIs attached on this host."""
        ...

    def vdi_lock(self, uuid: str, purpose: str) -> contextlib.AbstractContextManager[object]:
        """Held around an attachment change and a chain change of `uuid` (a no-op where every
        command holds the SR lock)."""
        ...
