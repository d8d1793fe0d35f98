"""The RBD SR: VDIs as raw RBD images in a Ceph pool (or a namespace of it); snapshots,
layered clones and rollback are Ceph's own. See docs/rbd-sr.md.

The driver class is imported on first use (PEP 562), so the nbdkit side (`nbddisk`, which runs
in Debian's /usr/bin/python3) imports nothing of the framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from srtypes.rbd.sr import RBDSR

__all__ = ["RBDSR"]


def __getattr__(name: str) -> Any:
    if name == "RBDSR":
        from srtypes.rbd.sr import RBDSR

        return RBDSR
    raise AttributeError(name)
