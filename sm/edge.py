"""The error edge: what a failure of a storage component means as an SM error, in one table.

SR types run the component calls of an operation inside ``with errors_as(VDISnapshot, "what
was being done"):``; an exception of a component below becomes the SM error of the table, its
message prefixed with ``what``, chained (``raise ... from err``). `SMError`s pass untouched, and
so does anything not listed (a bug stays a bug: GenericException 1200 with its traceback
logged). `sm.dispatch` applies the same table (`to_sm_error` without a fallback) to whatever
escapes a command. docs/design.md ("The error edge") has the table with its reasons.

    source      error                                                 SM error
    OS          OSError ENOSPC, EDQUOT                                SRNoSpace 44
                OSError EROFS                                         SRUnavailable 47
                OSError EIO                                           EIO 200
                OSError EFBIG (past the file system's largest file)   VDISize 79
                OverflowError (an offset past off_t)                  VDISize 79
                any other OSError                                     the operation's error
    VHD engine  VhdNoSpaceError                                       SRNoSpace 44
                VhdFormatError, VhdChainError                         VDILoad 65
                VhdUnsupportedError (a size the format cannot hold)   VDISize 79
                any other VhdError                                    EIO 200
    lvm2        lvcreate fails (sm.executor.CommandError, LvmError)   LVMCreate 50
                lvremove fails                                        LVMDelete 51
                lvresize fails                                        LVMResize 59
                lvrename, lvchange fail                               LVMWrite 54
                any other command fails (lvm or not)                  the operation's error
    Ceph        rados.TimedOut, rbd.Timeout; errno ETIMEDOUT,         SRUnavailable 47
                ECONNREFUSED, ESHUTDOWN, ENOTCONN, EHOSTUNREACH,      (the cluster did
                ECONNRESET, EINTR                                     not answer)
                errno ENOSPC, EDQUOT                                  SRNoSpace 44
                errno ENOENT                                          VDIMissing 144
                errno EBUSY                                           VDIInUse 24
                any other rados.Error, rbd.Error                      the operation's error
    NBD         ControlUnavailable (no server answers)                VDIUnavailable 46
                NbdError (the server refused, or is not NBD)          VDIUnavailable 46
                ControlError (the server refused the request)         the operation's error

"The operation's error" is the `fallback` of `errors_as` (VDISnapshot 82, VDIResize 110, ...);
without one (the dispatcher) the exception stays what it is (GenericException 1200).

``cluster=True`` says the block talks to a Ceph cluster: an `OSError` there is read as a Ceph
error (its errno is the cluster's answer: ENOENT is no such image), not the local file
system's.

Standard library only and cheap to import: drivers load it on every command. No component is
imported here: an exception is recognised by the classes of modules already loaded (an
exception of ``rados`` exists only once ``rados`` is), so the Ceph bindings, the executor and
the engine are never loaded by the edge.
"""

from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Iterator, Mapping
from types import MappingProxyType

from sm.errors import (
    EIO,
    LVMCreate,
    LVMDelete,
    LVMResize,
    LVMWrite,
    SMError,
    SRNoSpace,
    SRUnavailable,
    VDIInUse,
    VDILoad,
    VDIMissing,
    VDISize,
    VDIUnavailable,
)

__all__ = ["CEPH_UNREACHABLE", "LVM_ERRORS", "errors_as", "from_os_error", "to_sm_error"]

LVM_ERRORS: Mapping[str, type[SMError]] = MappingProxyType({
    "lvcreate": LVMCreate,
    "lvremove": LVMDelete,
    "lvresize": LVMResize,
    "lvrename": LVMWrite,
    "lvchange": LVMWrite,
})
"""lvm command -> the SM error of its failure."""

CEPH_UNREACHABLE = frozenset({errno.ETIMEDOUT, errno.ECONNREFUSED, errno.ESHUTDOWN,
                              errno.ENOTCONN, errno.EHOSTUNREACH, errno.ECONNRESET,
                              errno.EINTR})
"""errnos of a Ceph call that mean the cluster did not answer."""


def _is(err: BaseException, module: str, *names: str) -> bool:
    """`err` is an instance of one of `module`'s classes `names` (False if `module` is not
    loaded: then no such exception can exist)."""
    mod = sys.modules.get(module)
    if mod is None:
        return False
    classes = tuple(c for c in (getattr(mod, n, None) for n in names) if isinstance(c, type))
    return isinstance(err, classes)


def from_os_error(err: OSError, what: str = "") -> SMError | None:
    """The SM error an OS error means whatever the operation (a full, read-only or failing file
    system), or None when only the operation can tell (its own error class)."""
    prefix = f"{what}: " if what else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return SRNoSpace(f"{prefix}{err}")
    if err.errno == errno.EROFS:
        return SRUnavailable(f"{prefix}the SR's file system is read-only ({err})")
    if err.errno == errno.EIO:
        return EIO(f"{prefix}{err}")
    if err.errno == errno.EFBIG:  # past the file system's largest file (NFS: the server's)
        return VDISize(f"{prefix}the file system cannot hold a file that large ({err})")
    return None


def _engine(err: Exception, prefix: str) -> SMError:
    if _is(err, "sm.vhd.errors", "VhdNoSpaceError"):
        return SRNoSpace(f"{prefix}{err}")
    if _is(err, "sm.vhd.errors", "VhdFormatError", "VhdChainError"):
        return VDILoad(f"{prefix}{err}")
    if _is(err, "sm.vhd.errors", "VhdUnsupportedError"):
        return VDISize(f"{prefix}{err}")
    return EIO(f"{prefix}{err}")


def _command(err: Exception, fallback: type[SMError] | None, prefix: str) -> SMError | None:
    argv: tuple[str, ...] = getattr(err, "argv", ())
    cls = LVM_ERRORS.get(argv[0].rsplit("/", 1)[-1] if argv else "") or fallback
    return None if cls is None else cls(f"{prefix}{err}", details={"argv": " ".join(argv)})


def _ceph(err: Exception, fallback: type[SMError] | None, prefix: str) -> SMError | None:
    code = getattr(err, "errno", None)
    code = abs(code) if isinstance(code, int) else None
    text = f"{prefix}{type(err).__name__}: {err}"
    if (_is(err, "rados", "TimedOut") or _is(err, "rbd", "Timeout")
            or code in CEPH_UNREACHABLE):
        return SRUnavailable(f"the Ceph cluster did not answer: {text}")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return SRNoSpace(text)
    if code == errno.ENOENT:
        return VDIMissing(text)
    if code == errno.EBUSY:
        return VDIInUse(text)
    return None if fallback is None else fallback(text)


def to_sm_error(err: BaseException, fallback: type[SMError] | None = None, what: str = "",
                *, cluster: bool = False) -> SMError | None:
    """The SM error `err` means by the table (module docstring), its message prefixed with
    `what`. Where the table says "the operation's error" that is `fallback`, or None without
    one; None too for an `SMError` (it already says what it means) and for anything not in
    the table."""
    if isinstance(err, SMError) or not isinstance(err, Exception):
        return None
    prefix = f"{what}: " if what else ""
    if _is(err, "sm.nbd.control", "ControlUnavailable"):
        return VDIUnavailable(f"{prefix}the server is not running: {err}")
    if _is(err, "sm.nbd.control", "ControlError"):
        return None if fallback is None else fallback(f"{prefix}{err}")
    if _is(err, "sm.nbd.client", "NbdError"):
        return VDIUnavailable(f"{prefix}{err}")
    if _is(err, "rados", "Error") or _is(err, "rbd", "Error") or (
            cluster and isinstance(err, OSError)):
        return _ceph(err, fallback, prefix)
    if isinstance(err, OSError):
        mapped = from_os_error(err, what)
        if mapped is None and fallback is not None:
            mapped = fallback(f"{prefix}{err}")
        return mapped
    if isinstance(err, OverflowError):  # an offset past off_t: a size no image can have
        return VDISize(f"{prefix}{err}")
    if _is(err, "sm.vhd.errors", "VhdError"):
        return _engine(err, prefix)
    if _is(err, "sm.executor", "CommandError"):
        return _command(err, fallback, prefix)
    return None


@contextlib.contextmanager
def errors_as(fallback: type[SMError], what: str = "", *, cluster: bool = False
              ) -> Iterator[None]:
    """Component failures inside the block become SM errors by the table; `fallback` is the
    operation's own error (VDISnapshot 82, VDIResize 110, ...), `what` says what was being
    done (it prefixes the message)."""
    try:
        yield
    except Exception as err:
        mapped = to_sm_error(err, fallback, what, cluster=cluster)
        if mapped is None:
            raise
        raise mapped from err
