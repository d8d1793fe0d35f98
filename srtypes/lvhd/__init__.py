"""LVM+VHD ("LVHD") SR type: VG ``VG_XenStorage-<sr_uuid>``, LVs ``MGT``, ``VHD-<uuid>`` /
``LV-<uuid>`` (docs/lvhd-sr.md).

Building blocks: :mod:`.lvm` (lvm2 commands; config in :mod:`.lvmconf`, reports in
:mod:`.lvmreport`), :mod:`.lvio` (LV data access), :mod:`.storage` (the engine's Storage over
LVs), :mod:`.mgt` (records in the VG); the driver is :class:`LVHDSR` (:mod:`.sr`).

The driver is imported on first use (PEP 562): the data-path modules (:mod:`.lvio`,
:mod:`.storage`, :mod:`.datapath`'s opener) also run inside nbdkit's Python, which has only
the standard library, and must not pull in the XML-RPC framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sr import LVHDSR

__all__ = ["LVHDSR"]


def __getattr__(name: str) -> Any:
    if name == "LVHDSR":
        from .sr import LVHDSR

        return LVHDSR
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
