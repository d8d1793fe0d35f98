"""LVM+VHD ("LVHD") SR type: VG ``VG_XenStorage-<sr_uuid>``, LVs ``MGT``, ``VHD-<uuid>`` /
``LV-<uuid>`` (docs/lvhd-sr.md).

Building blocks: :mod:`.lvm` (lvm2 commands; config in :mod:`.lvmconf`, reports in
:mod:`.lvmreport`), :mod:`.lvio` (LV data access), :mod:`.storage` (the engine's Storage over
LVs), :mod:`.mgt` (records in the VG); the driver is :class:`LVHDSR` (:mod:`.sr`).
"""

from .sr import LVHDSR

__all__ = ["LVHDSR"]
