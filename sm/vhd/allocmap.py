"""Which blocks and sector runs of a chain are present in which image."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import bitmap as bm
from .backing import Storage
from .chain import open_images
from .records import UNUSED


@dataclass(frozen=True)
class ImageAllocation:
    path: str
    uuid: str
    block_size: int
    blocks: tuple[int, ...]                       # allocated block numbers
    full_blocks: tuple[int, ...]                  # blocks with every bitmap bit set
    runs: tuple[tuple[int, int], ...] = field(default=())  # (first sector, count), virtual

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "uuid": self.uuid, "block_size": self.block_size,
                "blocks": list(self.blocks), "full_blocks": list(self.full_blocks),
                "runs": [list(r) for r in self.runs]}


@dataclass(frozen=True)
class AllocationMap:
    images: tuple[ImageAllocation, ...]           # leaf first
    virtual_size: int

    def to_dict(self) -> dict[str, Any]:
        return {"virtual_size": self.virtual_size,
                "images": [i.to_dict() for i in self.images]}


def allocation_map(path: str, *, storage: Storage | None = None) -> AllocationMap:
    images = open_images(path, storage=storage)
    try:
        out = []
        for img in images:
            spb = img.spb
            if img.header is None:
                n = -(-img.size // img.block_size)
                out.append(ImageAllocation(img.path, str(img.footer.uuid), img.block_size,
                                           tuple(range(n)), tuple(range(n)),
                                           ((0, img.size // 512),) if img.size else ()))
                continue
            blocks = tuple(i for i, e in enumerate(img.bat) if e != UNUSED)
            full: list[int] = []
            runs: list[tuple[int, int]] = []
            for blk in blocks:
                bits = img.bitmap(blk)
                if img.full(bits):
                    full.append(blk)
                for s, c in bm.runs(bits):
                    s += blk * spb
                    if runs and runs[-1][0] + runs[-1][1] == s:
                        runs[-1] = (runs[-1][0], runs[-1][1] + c)
                    else:
                        runs.append((s, c))
            out.append(ImageAllocation(img.path, str(img.footer.uuid), img.block_size, blocks,
                                       tuple(full), tuple(runs)))
        return AllocationMap(tuple(out), images[0].size)
    finally:
        for img in images:
            img.close()
