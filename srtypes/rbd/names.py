"""Where a VDI of the RBD SR lives in the pool: its image (and, for a snapshot, the RBD snapshot
of it), named in the record's `sm_config`. Pure: the operations (`vdiops`) and the connected SR
(`repo`) both name images this way, neither through the other."""

from __future__ import annotations

from sm.records import VdiRecord

__all__ = ["IMAGE_KEY", "SNAP_KEY", "VDI_META", "image_of", "snap_of"]

IMAGE_KEY = "rbd-image"
SNAP_KEY = "rbd-snap"
VDI_META = "sm-vdi"


def image_of(rec: VdiRecord) -> str:
    return rec.sm_config.get(IMAGE_KEY, rec.uuid)


def snap_of(rec: VdiRecord) -> str | None:
    return rec.sm_config.get(SNAP_KEY) or None
