"""nbdkit Python plugin serving one VHD chain (standard library only).

    nbdkit -f -U <sock> python sm/nbd/plugin.py leaf=<path> [writable=true] \
        [control=<ctl sock>] [export=<name>] [package=<name>:<dir>]... \
        [opener=<module>:<function>]

Config keys:
  leaf      the leaf image of the chain to serve (required)
  writable  true/false (default false); with false nbdkit also refuses writes
  control   path of the control socket (`sm.nbd.control`); none -> no pause/resume
  export    the export name to accept (and list); the empty default name maps to it
  package   `<name>:<dir>`, repeatable: import the package `name` from `dir` (its own
            directory, where the driver has it: `sm`, the opener's package), whatever this
            Python's path holds; without it the package must be on nbdkit's Python's path
  opener    `module:function(path, *, writable) -> Disk` (default `sm.vhd:open_chain`;
            raw VDIs use `sm.nbd.rawdisk:open_raw`, LVM volumes an opener of their SR type)
  opener_arg  a string handed to the opener as the keyword `arg` (e.g. where the SR's
            storage configuration lives); absent -> the opener is called without it

Thread model: PARALLEL. `sm.vhd.Disk` is thread-safe (writes and metadata updates hold the
engine's lock, reads are lock-free preads that release the GIL), the pause gate is a condition
variable, and one Disk is shared by every connection, which also makes multi-conn safe (a flush
on any connection fsyncs the leaf all of them write to).

FUA and flush: `can_fua` is FUA_NATIVE and a write with FLAG_FUA calls `Disk.flush` (fsync of
the leaf) before it returns; `flush` does the same. So an acknowledged flush/FUA is on disk.
Zero: writes zeros only where the range does not already read as zeros (no fast zero).
Trim: not advertised (the engine cannot deallocate).
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
from typing import Any

import nbdkit  # provided by nbdkit-plugin-python at run time

API_VERSION = 2


class _Config:
    """The one plugin instance. nbdkit calls module-level functions, so the state of this
    server process has to live at module level; it is kept in this single object."""

    leaf: str | None = None
    writable = False
    control: str | None = None
    export_name: str | None = None
    packages: tuple[tuple[str, str], ...] = ()
    opener = "sm.vhd:open_chain"
    opener_arg: str | None = None
    export: Any = None  # sm.nbd.export.Export, imported once the packages are
    server: Any = None  # sm.nbd.control.ControlServer


_C = _Config()


def _truth(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def config(key: str, value: str) -> None:
    if key == "leaf":
        _C.leaf = os.path.abspath(value)
    elif key == "writable":
        _C.writable = _truth(value)
    elif key == "control":
        _C.control = os.path.abspath(value)
    elif key == "export":
        _C.export_name = value
    elif key == "package":
        name, _, directory = value.partition(":")
        if not name.isidentifier() or not directory:
            raise ValueError(f"package must be <name>:<dir>, not {value!r}")
        _C.packages += ((name, os.path.abspath(directory)),)
    elif key == "opener":
        _C.opener = value
    elif key == "opener_arg":
        _C.opener_arg = value
    else:
        raise ValueError(f"unknown parameter {key!r}")


def config_complete() -> None:
    if not _C.leaf:
        raise ValueError("leaf=<path> is required")
    for name, directory in _C.packages:
        _load_package(name, directory)
    from sm.nbd.export import Export

    module, _, func = _C.opener.partition(":")
    fn = getattr(importlib.import_module(module), func)

    extra = {} if _C.opener_arg is None else {"arg": _C.opener_arg}

    def opener(path: str, writable: bool) -> Any:
        return fn(path, writable=writable, **extra)

    _C.export = Export(opener, _C.leaf, writable=_C.writable)


def _load_package(name: str, directory: str) -> None:
    """Import the package `name` from its directory `directory` (its submodules follow)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        name, os.path.join(directory, "__init__.py"), submodule_search_locations=[directory])
    if spec is None or spec.loader is None or not os.path.isdir(directory):
        raise ValueError(f"no package {name} in {directory}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def thread_model() -> int:
    return int(nbdkit.THREAD_MODEL_PARALLEL)


def get_ready() -> None:
    # Open the chain before nbdkit binds its socket: a bad leaf makes the server fail to start.
    _C.export.start()


def after_fork() -> None:
    if _C.control is None:
        return
    from sm.nbd.control import ControlServer

    def status(_req: Any) -> dict[str, Any]:
        return dict(_C.export.status(), pid=os.getpid(), export=_C.export_name,
                    control=_C.control)

    def pause(req: Any) -> dict[str, Any]:
        timeout = req.get("drain_timeout")
        owner = req.get("owner")
        _C.export.pause(None if timeout is None else float(timeout),
                        None if owner is None else str(owner))
        return status(req)

    def resume(req: Any) -> dict[str, Any]:
        path = req.get("path")
        _C.export.resume(None if path is None else os.path.abspath(str(path)))
        return status(req)

    def flush(req: Any) -> dict[str, Any]:
        _C.export.flush()
        return status(req)

    def shutdown(req: Any) -> dict[str, Any]:
        _C.export.shutdown()
        nbdkit.shutdown()
        return status(req)

    _C.server = ControlServer(_C.control, {"status": status, "pause": pause, "resume": resume,
                                           "flush": flush, "shutdown": shutdown})
    _C.server.start()


def cleanup() -> None:
    if _C.server is not None:
        _C.server.stop()
    if _C.export is not None:
        try:
            _C.export.shutdown()
        except Exception as err:
            nbdkit.debug(f"sm: shutdown at cleanup failed: {err}")


def default_export(readonly: bool, is_tls: bool) -> str:
    return _C.export_name or ""


def list_exports(readonly: bool, is_tls: bool) -> list[str]:
    return [_C.export_name or ""]


def open(readonly: bool) -> int:  # the name nbdkit calls
    name = nbdkit.export_name()
    if _C.export_name is not None and name not in ("", _C.export_name):
        nbdkit.set_error(errno.ENOENT)
        raise ValueError(f"unknown export {name!r}")
    return 1  # all connections share the one Export


def get_size(h: int) -> int:
    return int(_C.export.size)


def can_write(h: int) -> bool:
    return bool(_C.writable)


def can_flush(h: int) -> bool:
    return True


def can_fua(h: int) -> int:
    return int(nbdkit.FUA_NATIVE)


def can_multi_conn(h: int) -> bool:
    return True


def can_zero(h: int) -> bool:
    return bool(_C.writable)


def can_fast_zero(h: int) -> bool:
    return False


def can_trim(h: int) -> bool:
    return False


def _fail(err: Exception) -> None:
    """Pick the errno the client sees for an engine error, then let nbdkit report it."""
    name = type(err).__name__
    if name == "VhdNoSpaceError" or (isinstance(err, OSError) and err.errno == errno.ENOSPC):
        nbdkit.set_error(errno.ENOSPC)
    elif name == "ExportClosed":
        nbdkit.set_error(errno.ESHUTDOWN)
    elif isinstance(err, OSError) and err.errno:
        nbdkit.set_error(err.errno)
    else:
        nbdkit.set_error(errno.EIO)


def pread(h: int, buf: bytearray, offset: int, flags: int) -> None:
    try:
        _C.export.readinto(offset, buf)
    except Exception as err:
        _fail(err)
        raise


def pwrite(h: int, buf: bytes, offset: int, flags: int) -> None:
    try:
        _C.export.write(offset, buf, fua=bool(flags & nbdkit.FLAG_FUA))
    except Exception as err:
        _fail(err)
        raise


def flush(h: int, flags: int) -> None:
    try:
        _C.export.flush()
    except Exception as err:
        _fail(err)
        raise


def zero(h: int, count: int, offset: int, flags: int) -> None:
    if flags & nbdkit.FLAG_FAST_ZERO:
        nbdkit.set_error(errno.ENOTSUP)
        raise OSError(errno.ENOTSUP, "no fast zero")
    try:
        _C.export.zero(offset, count, fua=bool(flags & nbdkit.FLAG_FUA))
    except Exception as err:
        _fail(err)
        raise
