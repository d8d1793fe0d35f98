"""Pure layout arithmetic: metadata extents, end of data, where the next block goes."""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping

from .records import PLAT_NONE, SECTOR, UNUSED, DynamicHeader, bitmap_bytes

ALIGN = 4096
BAT_PER_SECTOR = SECTOR // 4


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


def bat_problems(
    extents: list[tuple[str, int, int]], bat: array[int], block_size: int, limit: int
) -> list[tuple[int, int, str]]:
    """(block, byte offset, what) for every used BAT entry whose range (bitmap + data) overlaps
    a metadata extent or another block, or ends past ``limit`` (the file size or capacity).
    Sorting the entries is the only cost: no block is read."""
    span = bitmap_bytes(block_size) + block_size
    order = sorted((i for i, e in enumerate(bat) if e != UNUSED), key=bat.__getitem__)
    if not order:
        return []
    starts = [bat[i] * SECTOR for i in order]
    found: list[tuple[int, int, str]] = []
    for name, start, end in extents:
        # blocks starting in (start - span, end) overlap [start, end)
        for k in range(bisect_right(starts, start - span), bisect_left(starts, end)):
            off = starts[k]
            found.append((order[k], off, f"block {order[k]} range [{off},{off + span}) "
                                         f"overlaps {name} [{start},{end})"))
    for k in range(1, len(starts)):
        a, b = starts[k - 1], starts[k]
        if b - a < span:
            found.append((order[k], b, f"block {order[k]} range [{b},{b + span}) overlaps "
                                       f"block {order[k - 1]} at {a}"))
    for k in range(bisect_right(starts, limit - span), len(starts)):
        off = starts[k]
        found.append((order[k], off, f"block {order[k]} range [{off},{off + span}) lies "
                                     f"beyond the end of the image ({limit}): truncated"))
    return found


def footer_blocks(new: Mapping[int, int]) -> set[int]:
    """Of new blocks (block -> bitmap offset) whose BAT entries will be written in one write,
    those a footer must follow: a torn write publishes any subset of the BAT's sectors, and the
    end of data it leaves is the end of the last new block of one of them."""
    last: dict[int, int] = {}
    for blk, start in new.items():
        k = blk // BAT_PER_SECTOR
        if k not in last or start > new[last[k]]:
            last[k] = blk
    return set(last.values())


def next_block_start(eod: int, block_size: int) -> int:
    """Bitmap offset of a new block so that its data starts 4 KiB aligned."""
    bm = bitmap_bytes(block_size)
    return pad(eod + bm, ALIGN) - bm
