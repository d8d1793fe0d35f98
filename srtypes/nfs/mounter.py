"""How an NFS SR gets its export onto a local mount point.

:class:`KernelMounter` is the production path: ``mount -t nfs`` / ``umount`` through the injected
executor. :class:`BindMounter` is for TESTS ONLY, on machines whose kernel has no NFS client:
it bind-mounts the local directory that a local NFS server (the tests' nfs-ganesha) exports
under that export path, so that the SR's data path runs on the very files the server serves.
It is chosen only when :data:`BIND_EXPORTS_ENV` is set (by the test fixture); production never
sets it. Everything else (reachability, exports, SR directories) still talks to the real server.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from sm import errors
from sm.executor import CommandError, Executor
from sm.settings import Settings, env_name

BIND_EXPORTS_ENV = env_name("test_nfs_bind_exports")
"""TEST ONLY: JSON object mapping an export path of a server on this host to its local directory."""

MOUNT_TIMEOUT = 180.0  # a soft mount gives up after timeo * retrans; leave it room
UMOUNT_TIMEOUT = 60.0


class Mounter(Protocol):
    """Mounts ``server:export_path`` at ``mountpoint`` (which exists) with NFS ``options``."""

    def mount(self, server: str, export_path: str, mountpoint: str, options: str) -> None: ...

    def unmount(self, mountpoint: str) -> None: ...

    def is_mounted(self, mountpoint: str) -> bool: ...


def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and i + 4 <= len(field):
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points(mountinfo: str = "/proc/self/mountinfo") -> set[str]:
    """Every mount point of this process's mount namespace (bind mounts included, unlike
    :func:`os.path.ismount`, which misses a bind mount within one file system)."""
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        return {_unescape_mountinfo(line.split()[4]) for line in f if line.strip()}


def _is_mounted(mountpoint: str) -> bool:
    return os.path.realpath(mountpoint) in mount_points()


def _umount(executor: Executor, mountpoint: str) -> None:
    try:
        executor.run(["umount", mountpoint], timeout=UMOUNT_TIMEOUT)
    except CommandError as err:
        raise errors.NFSUnMount(f"umount {mountpoint}: {err.message}") from err


class KernelMounter:
    """``mount -t nfs server:export mountpoint -o options`` (the kernel's NFS client)."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    @staticmethod
    def mount_argv(server: str, export_path: str, mountpoint: str, options: str) -> list[str]:
        host = f"[{server}]" if ":" in server else server
        return ["mount", "-t", "nfs", f"{host}:{export_path}", mountpoint, "-o", options]

    def mount(self, server: str, export_path: str, mountpoint: str, options: str) -> None:
        argv = self.mount_argv(server, export_path, mountpoint, options)
        try:
            self.executor.run(argv, timeout=MOUNT_TIMEOUT)
        except CommandError as err:
            raise errors.NFSMount(f"mount of {server}:{export_path} failed: {err.message}") from err

    def unmount(self, mountpoint: str) -> None:
        _umount(self.executor, mountpoint)

    def is_mounted(self, mountpoint: str) -> bool:
        return _is_mounted(mountpoint)


def _is_local(server: str) -> bool:
    if server == "localhost":
        return True
    try:
        return ipaddress.ip_address(server.strip("[]")).is_loopback
    except ValueError:
        return False


class BindMounter:
    """TEST ONLY: ``mount --bind <local dir of export_path> mountpoint`` for a server on this host.

    ``exports`` maps each export path of the local server to the directory it serves; an
    ``export_path`` below an export (``<serverpath>/<sr_uuid>``) maps to the same sub-directory.
    NFS ``options`` are accepted and ignored (a bind mount has none of them).
    """

    def __init__(self, executor: Executor, exports: Mapping[str, str | os.PathLike[str]]) -> None:
        self.executor = executor
        self.exports = {"/" + k.strip("/"): Path(v) for k, v in exports.items()}

    def local_path(self, server: str, export_path: str) -> Path:
        if not _is_local(server):
            raise errors.NFSMount(f"the test-only bind mounter serves local servers, not {server}")
        wanted = "/" + export_path.strip("/")
        for export in sorted(self.exports, key=len, reverse=True):
            if wanted == export or wanted.startswith(export.rstrip("/") + "/"):
                rest = wanted[len(export) :].strip("/")
                return self.exports[export] / rest if rest else self.exports[export]
        raise errors.NFSMount(f"{server}:{export_path} is not a known test export")

    def mount(self, server: str, export_path: str, mountpoint: str, options: str) -> None:
        source = self.local_path(server, export_path)
        if not source.is_dir():
            raise errors.NFSMount(f"{server}:{export_path}: no such directory on the server")
        try:
            self.executor.run(["mount", "--bind", str(source), mountpoint], timeout=MOUNT_TIMEOUT)
        except CommandError as err:
            raise errors.NFSMount(f"bind mount of {source} failed: {err.message}") from err

    def unmount(self, mountpoint: str) -> None:
        _umount(self.executor, mountpoint)

    def is_mounted(self, mountpoint: str) -> bool:
        return _is_mounted(mountpoint)


def select_mounter(executor: Executor, env: Mapping[str, str] | None = None, *,
                   settings: Settings | None = None) -> Mounter:
    """:class:`KernelMounter`, unless the TEST-ONLY :data:`BIND_EXPORTS_ENV` is set (in
    `settings`, else in `env`, default the process environment)."""
    exports = (settings or Settings.from_environ(env)).test_nfs_bind_exports
    if exports is None:
        return KernelMounter(executor)
    return BindMounter(executor, dict(exports))
