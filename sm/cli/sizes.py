"""The one size parser of the `sm` command: `64M`, `10G`, `512`, `1.5T` is refused (whole
numbers only). Suffixes K, M, G, T, P (also KiB/KB, ...) are powers of 1024.

`SIZE` takes any byte count (offsets, lengths); `DISK_SIZE` is a disk's virtual size: 0 is
refused, and so is a size no disk can have, naming the limits (a VHD holds at most 2040 GiB,
any image at most 2^63-1 bytes). Whether a size between the two fits is the driver's answer
(VDISize 79: the SR's format and room, `sm.sizes`).
"""

from __future__ import annotations

import re
from typing import Any

import click

__all__ = ["DISK_SIZE", "MAX_BYTES", "SIZE", "SizeType", "parse_size"]

MAX_BYTES = 2**63 - 1
VHD_MAX = 2040 * 1024**3
_SUFFIXES = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGTP]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """`"64M"` -> 67108864; ValueError naming the accepted forms."""
    match = _SIZE_RE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (use bytes or a K/M/G/T suffix, e.g. 64M, 10G)")
    return int(match.group(1)) * _SUFFIXES[match.group(2).upper()]


class SizeType(click.ParamType[int]):
    """A byte count from `minimum` to 2^63-1; `disk`: a disk's size (the message of a size
    too large names the VHD limit)."""

    name = "SIZE"

    def __init__(self, *, minimum: int = 0, disk: bool = False) -> None:
        self.minimum, self.disk = minimum, disk

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            n = value
        else:
            try:
                n = parse_size(str(value))
            except ValueError as err:
                self.fail(str(err), param, ctx)
        if n < self.minimum:
            what = "a disk needs at least 1 byte" if self.disk else f"at least {self.minimum}"
            self.fail(f"{value} is too small ({what})", param, ctx)
        if n > MAX_BYTES:
            limit = (f"VHD maximum 2040 GiB, raw maximum {MAX_BYTES} bytes" if self.disk
                     else f"maximum {MAX_BYTES} bytes")
            self.fail(f"{value} ({n} bytes) is too large ({limit})", param, ctx)
        return n


SIZE = SizeType()
DISK_SIZE = SizeType(minimum=1, disk=True)
