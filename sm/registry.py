"""SR types, found through the `sm.srtypes` entry-point group.

Built-in types register in this project's `pyproject.toml` exactly as a vendor's package would:

    [project.entry-points."sm.srtypes"]
    file = "srtypes.file:FileSR"

The table of entry points is read once, on first use (this is the one piece of module state
the project allows); a type's module is imported only when that type is asked for.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from sm.errors import SRUnknownType

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from sm.driver import SRDriver

__all__ = ["GROUP", "get", "names", "reload"]

GROUP = "sm.srtypes"
log = logging.getLogger(__name__)


@functools.cache
def _entry_points() -> Mapping[str, EntryPoint]:
    # importlib.metadata is slow to import; only needed once a driver is looked up.
    from importlib.metadata import entry_points

    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        name = ep.name.lower()
        if name in found:
            log.warning("SR type %r registered twice; keeping %s", name, found[name].value)
            continue
        found[name] = ep
    return found


def names() -> list[str]:
    """The registered type names, sorted."""
    return sorted(_entry_points())


def get(type_name: str) -> type[SRDriver]:
    """The driver class of SR type `type_name` (case-insensitive). Unknown type, or an entry
    point that cannot be loaded or is not an `SRDriver`: SRUnknownType (48)."""
    from sm.driver import SRDriver

    ep = _entry_points().get(type_name.lower())
    if ep is None:
        raise SRUnknownType(f"no SR type {type_name!r} is installed")
    try:
        cls = ep.load()
    except Exception as err:
        log.exception("cannot load SR type %r from %s", type_name, ep.value)
        raise SRUnknownType(f"SR type {type_name!r} cannot be loaded: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, SRDriver)):
        raise SRUnknownType(f"SR type {type_name!r} ({ep.value}) is not an SRDriver")
    return cls


def reload() -> None:
    """Forget the table (tests, or after installing a package in a running process)."""
    _entry_points.cache_clear()
