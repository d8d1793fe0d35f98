"""The File SR: VDIs as VHD (or raw) files in one directory (see docs/file-sr.md).

The driver is imported on first use (PEP 562): the data path's opener
(:func:`.confine.open_disk`) runs inside nbdkit's Python, which has only the standard
library, and must not pull in the XML-RPC framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sr import FileSR

__all__ = ["FileSR"]


def __getattr__(name: str) -> Any:
    if name == "FileSR":
        from .sr import FileSR

        return FileSR
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
