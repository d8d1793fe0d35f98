"""A small typed binding (ctypes) to Debian's libnfs (``libnfs.so.13``, libnfs 4.0).

Used to work on an export without a kernel mount: create, remove and list directories.
Why ctypes rather than the PyPI ``libnfs`` package: that binding (1.0.post4, 2016) exposes no
timeout, ignores a failed mount and then loops forever on the next call (seen against a
missing export), and is untyped. This module sets libnfs's RPC timeout, checks every return
code and raises :class:`LibnfsError` (an ``OSError`` with the server's message).

libnfs's sync calls wait for RPC replies with the timeout set here, but a TCP connect to a host
that drops packets is not covered by it, so :meth:`ExportSession.open` first checks that the
server accepts TCP connections within the same time.

Only the C functions below are used (see ``<nfsc/libnfs.h>``): ``nfs_init_context``,
``nfs_destroy_context``, ``nfs_set_timeout``, ``nfs_set_version``, ``nfs_parse_url_dir``,
``nfs_destroy_url``, ``nfs_mount``, ``nfs_get_error``, ``nfs_mkdir2``, ``nfs_rmdir``,
``nfs_opendir``, ``nfs_readdir``, ``nfs_closedir``.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import math
import os
import socket
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import quote

LIBRARY_NAMES = ("libnfs.so.13", "libnfs.so")
NF3DIR = 2  # nfsdirent.type for a directory (libnfs-raw-nfs.h: ftype3)
NFS_PORT = 2049
RPCBIND_PORT = 111


class LibnfsError(OSError):
    """A libnfs call failed; ``errno`` is set when libnfs returned ``-errno``."""


class LibnfsUnavailable(LibnfsError):
    """The libnfs shared library cannot be loaded (package libnfs13 missing)."""


class _NfsUrl(ctypes.Structure):
    _fields_ = [
        ("server", ctypes.c_char_p),
        ("path", ctypes.c_char_p),
        ("file", ctypes.c_char_p),
    ]


class _NfsDirent(ctypes.Structure):
    pass


# Only the leading fields are declared: entries are always used through pointers.
_NfsDirent._fields_ = [
    ("next", ctypes.POINTER(_NfsDirent)),
    ("name", ctypes.c_char_p),
    ("inode", ctypes.c_uint64),
    ("type", ctypes.c_uint32),
    ("mode", ctypes.c_uint32),
]


@functools.cache
def library() -> ctypes.CDLL:
    """Load libnfs once and declare the signatures used here."""
    last: OSError | None = None
    for name in LIBRARY_NAMES:
        try:
            lib = ctypes.CDLL(name, use_errno=True)
            break
        except OSError as err:
            last = err
    else:
        raise LibnfsUnavailable(errno.ENOENT, f"cannot load libnfs ({last}); install libnfs13")
    vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    sigs: dict[str, tuple[object, list[object]]] = {
        "nfs_init_context": (vp, []),
        "nfs_destroy_context": (None, [vp]),
        "nfs_set_timeout": (None, [vp, ci]),
        "nfs_set_version": (ci, [vp, ci]),
        "nfs_parse_url_dir": (ctypes.POINTER(_NfsUrl), [vp, cp]),
        "nfs_destroy_url": (None, [ctypes.POINTER(_NfsUrl)]),
        "nfs_mount": (ci, [vp, cp, cp]),
        "nfs_get_error": (cp, [vp]),
        "nfs_mkdir2": (ci, [vp, cp, ci]),
        "nfs_rmdir": (ci, [vp, cp]),
        "nfs_opendir": (ci, [vp, cp, ctypes.POINTER(vp)]),
        "nfs_readdir": (ctypes.POINTER(_NfsDirent), [vp, vp]),
        "nfs_closedir": (None, [vp, vp]),
    }
    for fname, (restype, argtypes) in sigs.items():
        func = getattr(lib, fname)
        func.restype = restype
        func.argtypes = argtypes
    return lib


@dataclass(frozen=True)
class DirEntry:
    name: str
    is_dir: bool


def check_tcp(host: str, port: int, timeout: float) -> None:
    """Raise :class:`LibnfsError` unless ``host:port`` accepts a TCP connection in time."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except TimeoutError as err:
        msg = f"{host}:{port}: no answer within {timeout:g} s"
        raise LibnfsError(errno.ETIMEDOUT, msg) from err
    except OSError as err:
        raise LibnfsError(err.errno, f"{host}:{port}: {err.strerror or err}") from err


class ExportSession:
    """One export of one server, reached through libnfs (NFSv3 or NFSv4.0); a context manager.

    Paths are absolute inside the export (``/`` is the export's root).
    """

    def __init__(self, ctx: int, lib: ctypes.CDLL, server: str, export: str) -> None:
        self._ctx: int | None = ctx
        self._lib = lib
        self.server = server
        self.export = export

    @classmethod
    def open(
        cls,
        server: str,
        export: str,
        *,
        version: int = 3,
        port: int | None = None,
        timeout: float = 10.0,
    ) -> ExportSession:
        """Connect and mount ``server:export``. ``port`` is the NFS port (v4: no rpcbind)."""
        if version not in (3, 4):
            raise ValueError(f"libnfs speaks NFS v3 and v4.0 only, not {version}")
        # v3 asks rpcbind for the mount and nfs ports; v4 goes to the NFS port directly.
        check_tcp(server, port or (NFS_PORT if version == 4 else RPCBIND_PORT), timeout)
        lib = library()
        ctx = lib.nfs_init_context()
        if not ctx:
            raise LibnfsError(errno.ENOMEM, "nfs_init_context failed")
        session = cls(ctx, lib, server, export)
        try:
            # libnfs rounds timeouts to whole seconds.
            lib.nfs_set_timeout(ctx, max(1, math.ceil(timeout)) * 1000)
            if lib.nfs_set_version(ctx, version) != 0:
                raise LibnfsError(errno.EINVAL, session._error(f"NFS version {version}"))
            session._mount(port)
        except BaseException:
            session.close()
            raise
        return session

    def _mount(self, port: int | None) -> None:
        host = f"[{self.server}]" if ":" in self.server else self.server
        url = f"nfs://{host}{quote(self.export)}"
        if port is not None:
            url += f"?nfsport={port}"
        parsed = self._lib.nfs_parse_url_dir(self._ctx, url.encode())
        if not parsed:
            raise LibnfsError(errno.EINVAL, self._error(f"bad NFS URL {url}"))
        try:
            rc = self._lib.nfs_mount(self._ctx, parsed.contents.server, parsed.contents.path)
        finally:
            self._lib.nfs_destroy_url(parsed)
        self._check(rc, f"mount {self.server}:{self.export}")

    def _error(self, what: str) -> str:
        msg = self._lib.nfs_get_error(self._ctx) if self._ctx else None
        text = msg.decode("utf-8", "replace") if msg else ""
        return f"{what}: {text}" if text else what

    def _check(self, rc: int, what: str) -> None:
        if rc < 0:
            err = -rc
            raise LibnfsError(err, self._error(f"{what} ({os.strerror(err)})"))

    def _live(self) -> int:
        if self._ctx is None:
            raise LibnfsError(errno.EBADF, "session is closed")
        return self._ctx

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        self._check(self._lib.nfs_mkdir2(self._live(), path.encode(), mode), f"mkdir {path}")

    def rmdir(self, path: str) -> None:
        self._check(self._lib.nfs_rmdir(self._live(), path.encode()), f"rmdir {path}")

    def listdir(self, path: str) -> list[DirEntry]:
        """Entries of directory ``path`` without ``.`` and ``..``, sorted by name."""
        ctx = self._live()
        handle = ctypes.c_void_p()
        rc = self._lib.nfs_opendir(ctx, path.encode(), ctypes.byref(handle))
        self._check(rc, f"opendir {path}")
        entries = []
        try:
            while True:
                ent = self._lib.nfs_readdir(ctx, handle)
                if not ent:
                    break
                name = (ent.contents.name or b"").decode("utf-8", "surrogateescape")
                if name not in (".", ".."):
                    entries.append(DirEntry(name, ent.contents.type == NF3DIR))
        finally:
            self._lib.nfs_closedir(ctx, handle)
        return sorted(entries, key=lambda e: e.name)

    def close(self) -> None:
        if self._ctx is not None:
            self._lib.nfs_destroy_context(self._ctx)
            self._ctx = None

    def __enter__(self) -> ExportSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
