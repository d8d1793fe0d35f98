"""Where a VDI's data is: the answer of the extension command `sm_vdi_allocation`.

A JSON document `{"virtual_size": N, "images": [{"uuid": U, "path": P, "extents": [[offset,
length], ...]}, ...]}`, images leaf first, extents in bytes of the virtual disk, merged, at the
image's block granularity (a VHD block with any sector present counts whole). An image that is not a
VHD (raw) is one extent over the whole disk. Readers (`sm.api.copy`) copy only these ranges and
compare the images (uuid and path) of two chains to find where they can differ.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sm.vhd.backing import Storage

__all__ = ["document", "raw_allocation", "vhd_allocation"]


def _merge(extents: list[tuple[int, int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for off, length in sorted(extents):
        if out and out[-1][0] + out[-1][1] >= off:
            out[-1][1] = max(out[-1][1], off + length - out[-1][0])
        else:
            out.append([off, length])
    return out


def vhd_allocation(path: str, *, storage: Storage | None = None) -> str:
    """The allocation document of the VHD chain whose leaf is `path`."""
    from sm import vhd

    amap = vhd.allocation_map(path, storage=storage)
    size = amap.virtual_size
    images = []
    for img in amap.images:
        bs = img.block_size
        extents = [(b * bs, min(bs, size - b * bs)) for b in img.blocks if b * bs < size]
        images.append({"uuid": img.uuid, "path": img.path, "extents": _merge(extents)})
    return json.dumps({"virtual_size": size, "images": images})


def raw_allocation(uuid: str, size: int) -> str:
    """The allocation document of a raw image: everything, one image."""
    extents = [[0, size]] if size else []
    return json.dumps({"virtual_size": size,
                       "images": [{"uuid": uuid, "path": "", "extents": extents}]})


def document(size: int, images: list[tuple[str, str, list[tuple[int, int]]]]) -> str:
    """The allocation document of a chain given as (uuid, path, extents) per image, leaf
    first (SR types that find extents their own way: RBD's diff_iterate)."""
    return json.dumps({"virtual_size": size,
                       "images": [{"uuid": u, "path": p, "extents": _merge(e)}
                                  for u, p, e in images]})
