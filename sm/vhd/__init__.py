"""The VHD engine: fixed, dynamic and differencing VHDs as XenServer's blktap writes them.

Standard library only: this package also runs inside nbdkit's Python plugin.
"""

from __future__ import annotations

from .allocmap import AllocationMap, ImageAllocation, allocation_map
from .backing import Backing, FileBacking, FileStorage, Storage
from .chain import Disk, VhdInfo, open_chain
from .check import check
from .coalesce import coalesce
from .errors import (
    VhdChainError,
    VhdError,
    VhdFormatError,
    VhdNoSpaceError,
    VhdUnsupportedError,
)
from .ops import (
    chain,
    create,
    info,
    physical_size,
    reparent,
    resize,
    set_hidden,
    set_uuid,
    snapshot,
)
from .records import DEFAULT_BLOCK_SIZE, MAX_CHAIN_DEPTH, MAX_VIRTUAL_SIZE, DiskType
from .repair import repair

__all__ = [
    "DEFAULT_BLOCK_SIZE", "MAX_CHAIN_DEPTH", "MAX_VIRTUAL_SIZE", "AllocationMap", "Backing",
    "Disk", "DiskType", "FileBacking", "FileStorage", "ImageAllocation", "Storage",
    "VhdChainError", "VhdError", "VhdFormatError", "VhdInfo", "VhdNoSpaceError",
    "VhdUnsupportedError", "allocation_map", "chain", "check", "coalesce", "create", "info",
    "open_chain", "physical_size", "repair", "reparent", "resize", "set_hidden", "set_uuid",
    "snapshot",
]
