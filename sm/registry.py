"""SR types, found through the `sm.srtypes` entry-point group.

Built-in types register in this project's `pyproject.toml` exactly as a vendor's package would:

    [project.entry-points."sm.srtypes"]
    file = "srtypes.file:FileSR"

The table of entry points is read once, on first use (this is the one piece of module state
the project allows); a type's module is imported only when that type is asked for. The common
case reads the `entry_points.txt` files on sys.path directly; a name not found that way is
looked up through importlib.metadata, which also sees exotic installs (zips, custom finders).
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from sm.errors import SRUnknownType
from sm.log import get_logger

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from sm.driver import SRDriver

__all__ = ["GROUP", "get", "names", "reload"]

GROUP = "sm.srtypes"
log = get_logger(__name__)


@functools.cache
def _fast_table() -> Mapping[str, str]:
    """name -> "module:attr" from the `entry_points.txt` of every `*.dist-info` / `*.egg-info`
    directory on sys.path, in sys.path order. This is what importlib.metadata's path finder
    reads; doing it directly keeps importlib.metadata (~25 ms of imports: email, zipfile, csv)
    off every driver run."""
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as it:
                dirs = sorted(e.path for e in it if e.name.endswith((".dist-info", ".egg-info")))
        except OSError:
            continue
        for meta in dirs:
            try:
                with open(os.path.join(meta, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                continue
            for name, value in _parse_group(text):
                found.setdefault(name, value)
    return found


def _parse_group(text: str) -> list[tuple[str, str]]:
    pairs, section = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
        elif section == GROUP and "=" in line:
            name, _, value = line.partition("=")
            pairs.append((name.strip().lower(), value.split("[")[0].strip()))
    return pairs


@functools.cache
def _metadata_table() -> Mapping[str, EntryPoint]:
    # The complete answer (zip imports, custom finders); only consulted on a miss.
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
    return sorted(set(_fast_table()) | set(_metadata_table()))


def _load(value: str) -> object:
    module, _, attrs = value.partition(":")
    obj: object = importlib.import_module(module.strip())
    for attr in filter(None, attrs.strip().split(".")):
        obj = getattr(obj, attr)
    return obj


def get(type_name: str) -> type[SRDriver]:
    """The driver class of SR type `type_name` (case-insensitive). Unknown type, or an entry
    point that cannot be loaded or is not an `SRDriver`: SRUnknownType (48)."""
    from sm.driver import SRDriver

    key = type_name.lower()
    value = _fast_table().get(key)
    if value is None:
        ep = _metadata_table().get(key)
        if ep is None:
            raise SRUnknownType(f"no SR type {type_name!r} is installed (installed: "
                                f"{', '.join(names()) or 'none'})")
        value = ep.value
    try:
        cls = _load(value)
    except Exception as err:
        log.exception("cannot load SR type %r from %s", type_name, value)
        raise SRUnknownType(f"SR type {type_name!r} cannot be loaded: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, SRDriver)):
        raise SRUnknownType(f"SR type {type_name!r} ({value}) is not an SRDriver")
    return cls


def reload() -> None:
    """Forget the table (tests, or after installing a package in a running process)."""
    _fast_table.cache_clear()
    _metadata_table.cache_clear()
