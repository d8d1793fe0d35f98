"""LVM+VHD ("LVHD") SR type: VG ``VG_XenStorage-<sr_uuid>``, LVs ``VHD-<uuid>`` / ``LV-<uuid>``.

So far only the building blocks: :mod:`.lvm` (lvm2 commands; config in :mod:`.lvmconf`, reports
in :mod:`.lvmreport`) and :mod:`.lvio` (LV data access). See docs/lvm.md.
"""
