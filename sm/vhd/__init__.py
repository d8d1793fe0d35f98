"""The VHD engine: fixed, dynamic and differencing VHDs as XenServer's blktap writes them.

Standard library only: this package also runs inside nbdkit's Python plugin.

The rarely used operations (allocation maps, check, repair, coalesce) are imported on first
access (PEP 562), so a driver process that only snapshots does not pay for them.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from .backing import Backing, FileBacking, FileStorage, Storage
from .chain import Disk, VhdInfo, open_chain
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

if TYPE_CHECKING:
    from .allocmap import AllocationMap, ImageAllocation, allocation_map
    from .check import check, precheck
    from .coalesce import coalesce
    from .repair import repair

#: public name -> submodule that defines it, imported on first access
_LAZY = {
    "AllocationMap": "allocmap",
    "ImageAllocation": "allocmap",
    "allocation_map": "allocmap",
    "check": "check",
    "precheck": "check",
    "coalesce": "coalesce",
    "repair": "repair",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _Package(types.ModuleType):
    # Importing submodule `check` (say, by `repair`) binds the package attribute `check` to the
    # module; keep the function there, as the eager `from .check import check` did.
    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "DEFAULT_BLOCK_SIZE", "MAX_CHAIN_DEPTH", "MAX_VIRTUAL_SIZE", "AllocationMap", "Backing",
    "Disk", "DiskType", "FileBacking", "FileStorage", "ImageAllocation", "Storage",
    "VhdChainError", "VhdError", "VhdFormatError", "VhdInfo", "VhdNoSpaceError",
    "VhdUnsupportedError", "allocation_map", "chain", "check", "coalesce", "create", "info",
    "open_chain", "physical_size", "precheck", "repair", "reparent", "resize", "set_hidden",
    "set_uuid", "snapshot",
]
