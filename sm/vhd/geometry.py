"""CHS geometry as the VHD specification (2006, appendix "CHS calculation") defines it."""

from __future__ import annotations

SECTOR = 512
_MAX_SECTORS = 65535 * 16 * 255


def chs(size: int) -> tuple[int, int, int]:
    """(cylinders, heads, sectors per track) for a virtual size in bytes."""
    total = min(size // SECTOR, _MAX_SECTORS)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt
