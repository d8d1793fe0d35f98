"""Sector bitmaps as Python integers.

On disk, bit 7 of byte 0 is sector 0 (MSB first). In memory a bitmap is an ``int`` whose
bit i is sector i, so masks, unions and runs are computed with big-integer operations
instead of per-sector Python loops.
"""

from __future__ import annotations

from collections.abc import Iterator

_REVERSE = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def from_disk(buf: bytes, sectors: int) -> int:
    """Decode an on-disk (MSB-first) bitmap covering ``sectors`` sectors."""
    nbytes = (sectors + 7) // 8
    value = int.from_bytes(buf[:nbytes].translate(_REVERSE), "little")
    return value & mask(0, sectors)


def to_disk(bits: int, size: int) -> bytes:
    """Encode to ``size`` bytes on disk (MSB-first, zero padded)."""
    return bits.to_bytes(size, "little").translate(_REVERSE)


def mask(start: int, count: int) -> int:
    """Bits start .. start+count-1 set."""
    return ((1 << count) - 1) << start


def runs(bits: int) -> Iterator[tuple[int, int]]:
    """(first, count) of each run of set bits, in ascending order."""
    pos = 0
    while bits:
        low = (bits & -bits).bit_length() - 1
        bits >>= low
        pos += low
        length = (bits ^ (bits + 1)).bit_length() - 1
        yield pos, length
        bits >>= length
        pos += length


def count(bits: int) -> int:
    return bits.bit_count()
