"""Pure layout arithmetic: metadata extents, end of data, where the next block goes."""

from __future__ import annotations

from array import array
from collections.abc import Iterable

from .records import PLAT_NONE, SECTOR, UNUSED, DynamicHeader, bitmap_bytes

ALIGN = 4096


def pad(n: int, to: int = SECTOR) -> int:
    return -(-n // to) * to


def bat_bytes(entries: int) -> int:
    return pad(entries * 4)


def batmap_sectors(entries: int) -> int:
    return max(1, -(-pad(entries, 8) // 8 // SECTOR))


def metadata_extents(
    data_offset: int, header: DynamicHeader, batmap: tuple[int, int] | None
) -> list[tuple[str, int, int]]:
    """(name, start, end) of every metadata region; ``batmap`` is (header offset, map end)."""
    ext = [("footer copy", 0, SECTOR), ("header", data_offset, data_offset + 1024)]
    bat_end = header.table_offset + bat_bytes(header.max_table_entries)
    ext.append(("BAT", header.table_offset, bat_end))
    if batmap is not None:
        ext.append(("batmap", batmap[0], batmap[1]))
    for i, loc in enumerate(header.locators):
        if loc.code != PLAT_NONE and loc.data_offset:
            ext.append((f"locator {i}", loc.data_offset, loc.data_offset + loc.space_bytes))
    return ext


def end_of_data(extents: Iterable[tuple[str, int, int]], bat: array[int], block_size: int) -> int:
    """First byte after all metadata and blocks (where the trailing footer belongs)."""
    end = max(e for _, _, e in extents)
    used = [b for b in bat if b != UNUSED]
    if used:
        end = max(end, max(used) * SECTOR + bitmap_bytes(block_size) + block_size)
    return end


def next_block_start(eod: int, block_size: int) -> int:
    """Bitmap offset of a new block so that its data starts 4 KiB aligned."""
    bm = bitmap_bytes(block_size)
    return pad(eod + bm, ALIGN) - bm
