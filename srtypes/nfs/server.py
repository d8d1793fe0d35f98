"""The part of the NFS SR that talks to the NFS server (no kernel mount needed).

- reachability, exports and versions: ``rpcinfo`` / ``showmount`` through the injected
  :class:`~sm.executor.Executor` (always with a timeout), plus a hand-made NFSv4 COMPOUND probe
  for minor versions (:mod:`srtypes.nfs.rpc`);
- directories on the export (``<serverpath>/<sr_uuid>``, SR discovery for ``sr_probe``):
  userspace NFS through libnfs (:mod:`srtypes.nfs.libnfs`);
- mount options and the probe XML documents, as the original NFS SR builds them.

Errors are :mod:`sm.errors` classes: an unreachable server is ``NFSTarget`` (108), an export
that cannot be opened ``NFSMount`` (73), a bad ``nfsversion`` ``NFSVersion`` (72).
"""

from __future__ import annotations

import errno
import socket
import uuid
import xml.dom.minidom
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sm import errors
from sm.executor import (
    CommandError,
    CommandNotFound,
    CommandTimeout,
    Executor,
    SubprocessExecutor,
)
from srtypes.nfs import libnfs, rpc

RPCINFO = "rpcinfo"
SHOWMOUNT = "showmount"
NFS_PROGRAM = "100003"
NFS_PORT = 2049
DEFAULT_VERSION = "3"
VALID_VERSIONS = ("3", "4", "4.0", "4.1")
DEFAULT_TIMEO = 200  # deciseconds, nfs(5) timeo
DEFAULT_RETRANS = 4
DEFAULT_TIMEOUT = 10.0  # seconds for one question to the server


class Export(NamedTuple):
    """One line of ``showmount -e``: the exported path and who may mount it."""

    path: str
    access: list[str]


def _executor(executor: Executor | None) -> Executor:
    return executor if executor is not None else SubprocessExecutor()


def _run(executor: Executor | None, argv: Sequence[str], server: str, timeout: float) -> str:
    try:
        return _executor(executor).run(argv, timeout=timeout).text()
    except CommandTimeout as err:
        raise errors.NFSTarget(f"NFS server {server} did not answer within {timeout:g} s") from err
    except CommandNotFound as err:
        raise errors.SMGeneral(f"{err.message} (install nfs-common)") from err
    except CommandError as err:
        detail = err.stderr_tail or f"exit status {err.returncode}"
        raise errors.NFSTarget(f"NFS server {server} did not answer: {detail}") from err


def _uaddr(server: str, port: int) -> tuple[str, str]:
    """(netid, universal address) for ``rpcinfo -a``: ``h1.h2.h3.h4.p1.p2``."""
    try:
        family, *_, sockaddr = socket.getaddrinfo(server, port, type=socket.SOCK_STREAM)[0]
    except OSError as err:
        raise errors.NFSTarget(f"cannot resolve NFS server {server}: {err}") from err
    netid = "tcp6" if family == socket.AF_INET6 else "tcp"
    return netid, f"{sockaddr[0]}.{port >> 8}.{port & 0xFF}"


def validate_version(version: str | None) -> str:
    """The ``nfsversion`` to mount with: ``3`` (default when empty), ``4``, ``4.0`` or ``4.1``."""
    if version is None or not version.strip():
        return DEFAULT_VERSION
    version = version.strip()
    if version not in VALID_VERSIONS:
        raise errors.NFSVersion(
            f"unsupported nfsversion {version!r} (expected one of {', '.join(VALID_VERSIONS)})"
        )
    return version


def check_reachable(
    server: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    version: str = DEFAULT_VERSION,
    port: int | None = None,
    executor: Executor | None = None,
) -> None:
    """Raise ``NFSTarget`` unless the server answers an NFS NULL call over TCP within ``timeout``.

    v3 asks rpcbind where NFS is (as the original does); v4 (or an explicit ``port``) calls the
    NFS port directly, since a v4 server need not register with rpcbind.
    """
    version = validate_version(version)
    if version == "3" and port is None:
        argv = [RPCINFO, "-T", "tcp", server, NFS_PROGRAM, "3"]
    else:
        netid, uaddr = _uaddr(server, port or NFS_PORT)
        argv = [RPCINFO, "-a", uaddr, "-T", netid, NFS_PROGRAM, version[0]]
    _run(executor, argv, server, timeout)


def list_exports(
    server: str, *, timeout: float = DEFAULT_TIMEOUT, executor: Executor | None = None
) -> list[Export]:
    """The server's exports as ``showmount -e`` lists them (access ``*`` when none is given)."""
    out = _run(executor, [SHOWMOUNT, "--no-headers", "-e", server], server, timeout)
    exports = []
    for line in out.splitlines():
        fields = line.split()
        if not fields:
            continue
        access = fields[1].split(",") if len(fields) > 1 else ["*"]
        exports.append(Export(fields[0], access))
    return exports


def exports_xml(server: str, exports: Iterable[Export]) -> str:
    """``<nfs-exports><Export><Target/><Path/><Accesslist/></Export>...</nfs-exports>``."""
    dom = xml.dom.minidom.Document()
    root = dom.appendChild(dom.createElement("nfs-exports"))
    for export in exports:
        entry = root.appendChild(dom.createElement("Export"))
        for tag, text in (
            ("Target", server),
            ("Path", export.path),
            ("Accesslist", ",".join(export.access)),
        ):
            entry.appendChild(dom.createElement(tag)).appendChild(dom.createTextNode(text))
    return dom.toprettyxml()


def srlist_xml(sr_uuids: Iterable[str], supported: Sequence[str] | None = None) -> str:
    """``<SRlist><SR><UUID>..</UUID></SR>...</SRlist>``, optionally with the server's
    ``<SupportedVersions><Version>..</Version></SupportedVersions>``."""
    dom = xml.dom.minidom.Document()
    root = dom.appendChild(dom.createElement("SRlist"))
    for sr_uuid in sr_uuids:
        entry = root.appendChild(dom.createElement("SR"))
        entry.appendChild(dom.createElement("UUID")).appendChild(dom.createTextNode(sr_uuid))
    if supported is not None:
        versions = root.appendChild(dom.createElement("SupportedVersions"))
        for version in supported:
            node = versions.appendChild(dom.createElement("Version"))
            node.appendChild(dom.createTextNode(version))
    return dom.toprettyxml()


def sr_uuids(entries: Iterable[libnfs.DirEntry]) -> list[str]:
    """The names of the directories that look like SR directories (a UUID each)."""
    found = []
    for entry in entries:
        if not entry.is_dir:
            continue
        try:
            if str(uuid.UUID(entry.name)) == entry.name.lower():
                found.append(entry.name)
        except ValueError:
            continue
    return found


def supported_versions(
    server: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    port: int | None = None,
    executor: Executor | None = None,
) -> list[str]:
    """Which of ``3``, ``4``, ``4.1`` the server serves over TCP.

    Program versions come from ``rpcinfo -p`` (rpcbind); a v4 server that did not register is
    tried directly on ``port`` (default 2049); v4.1 is tried with an empty COMPOUND.
    """
    versions: set[str] = set()
    nfs4_port = port
    rpcbind_error: errors.NFSTarget | None = None
    try:
        out = _run(executor, [RPCINFO, "-p", server], server, timeout)
    except errors.NFSTarget as err:
        rpcbind_error = err
    else:
        for line in out.splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[0] == NFS_PROGRAM and fields[2] == "tcp":
                if fields[1] in ("3", "4"):
                    versions.add(fields[1])
                if fields[1] == "4" and nfs4_port is None:
                    nfs4_port = int(fields[3])
    nfs4_port = nfs4_port or NFS_PORT
    try:
        if rpc.nfs4_minor_version_supported(server, 0, port=nfs4_port, timeout=timeout):
            versions.add("4")
        if "4" in versions and rpc.nfs4_minor_version_supported(
            server, 1, port=nfs4_port, timeout=timeout
        ):
            versions.add("4.1")
    except rpc.RpcError:
        pass
    if not versions:
        raise errors.NFSTarget(
            f"cannot read the NFS versions of server {server}"
            + (f": {rpcbind_error.message}" if rpcbind_error else "")
        )
    return sorted(versions, key=float)


@dataclass(frozen=True)
class MountConfig:
    """The settings that make up the NFS mount options of an SR."""

    version: str = DEFAULT_VERSION
    hard: bool = False
    timeo: int = DEFAULT_TIMEO  # deciseconds
    retrans: int = DEFAULT_RETRANS
    options: str = ""  # extra user options, appended verbatim

    @classmethod
    def from_device_config(cls, dc: Mapping[str, str]) -> MountConfig:
        """``nfsversion``, ``options``, ``nfs-timeout`` (deciseconds, >= 1), ``nfs-retrans``
        (>= 0) and ``hard`` (``true``/``false``)."""
        timeo = _int_setting(dc, "nfs-timeout", DEFAULT_TIMEO, minimum=1)
        retrans = _int_setting(dc, "nfs-retrans", DEFAULT_RETRANS, minimum=0)
        hard = dc.get("hard", "false").strip().lower()
        if hard not in ("true", "false", "1", "0", "yes", "no", ""):
            raise errors.InvalidArg(f"hard must be true or false, not {dc['hard']!r}")
        return cls(
            version=validate_version(dc.get("nfsversion")),
            hard=hard in ("true", "1", "yes"),
            timeo=timeo,
            retrans=retrans,
            options=dc.get("options", "").strip().strip(","),
        )


def _int_setting(dc: Mapping[str, str], key: str, default: int, *, minimum: int) -> int:
    raw = dc.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as err:
        raise errors.InvalidArg(f"{key} must be an integer, not {raw!r}") from err
    if value < minimum:
        raise errors.InvalidArg(f"{key} must be at least {minimum}, not {value}")
    return value


def mount_options(cfg: MountConfig) -> str:
    """``soft|hard,proto=tcp,vers=V,timeo=T,retrans=R,acdirmin=0,acdirmax=0[,user options]``."""
    opts = [
        "hard" if cfg.hard else "soft",
        "proto=tcp",
        f"vers={validate_version(cfg.version)}",
        f"timeo={cfg.timeo}",
        f"retrans={cfg.retrans}",
        "acdirmin=0",
        "acdirmax=0",
    ]
    if cfg.options:
        opts.append(cfg.options)
    return ",".join(opts)


# --- directories on the export, through libnfs ------------------------------------------------


def _libnfs_version(version: str) -> int:
    version = validate_version(version)
    if version == "4.1":
        # libnfs 4.0 speaks v4.0 only; directory operations do not depend on the minor version.
        return 4
    return int(version[0])


def _session(
    server: str, export: str, version: str, port: int | None, timeout: float
) -> libnfs.ExportSession:
    try:
        return libnfs.ExportSession.open(
            server, export, version=_libnfs_version(version), port=port, timeout=timeout
        )
    except libnfs.LibnfsUnavailable as err:
        raise errors.SMGeneral(str(err)) from err
    except libnfs.LibnfsError as err:
        if err.errno in (errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EHOSTUNREACH,
                         errno.ENETUNREACH, errno.EINTR):
            raise errors.NFSTarget(f"NFS server {server} did not answer: {err.strerror}") from err
        raise errors.NFSMount(f"cannot open {server}:{export}: {err.strerror}") from err


def _inside(path: str) -> str:
    return "/" + path.strip("/")


def make_dir(
    server: str,
    export: str,
    path: str,
    *,
    exist_ok: bool = False,
    version: str = DEFAULT_VERSION,
    port: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Create directory ``path`` (relative to the export's root) on ``server:export``.

    An existing one is ``SRExists`` (42) unless ``exist_ok``; other failures ``FileSRCreate``.
    """
    with _session(server, export, version, port, timeout) as nfs:
        try:
            nfs.mkdir(_inside(path))
        except libnfs.LibnfsError as err:
            if err.errno == errno.EEXIST:
                if exist_ok:
                    return
                raise errors.SRExists(f"{server}:{export}{_inside(path)} exists") from err
            raise errors.FileSRCreate(f"{server}:{export}{_inside(path)}: {err.strerror}") from err


def remove_dir(
    server: str,
    export: str,
    path: str,
    *,
    missing_ok: bool = False,
    version: str = DEFAULT_VERSION,
    port: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Remove the empty directory ``path``: ``SRNotEmpty`` (39) if it holds anything,
    ``NFSDelete`` (76) for other failures (a missing one too, unless ``missing_ok``)."""
    with _session(server, export, version, port, timeout) as nfs:
        try:
            nfs.rmdir(_inside(path))
        except libnfs.LibnfsError as err:
            where = f"{server}:{export}{_inside(path)}"
            if err.errno == errno.ENOENT and missing_ok:
                return
            if err.errno == errno.ENOTEMPTY:
                raise errors.SRNotEmpty(f"{where} is not empty") from err
            raise errors.NFSDelete(f"{where}: {err.strerror}") from err


def list_dir(
    server: str,
    export: str,
    path: str = "",
    *,
    version: str = DEFAULT_VERSION,
    port: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[libnfs.DirEntry]:
    """Entries of directory ``path`` (default: the export's root), sorted by name;
    ``NFSMount`` (73) when it cannot be read."""
    with _session(server, export, version, port, timeout) as nfs:
        try:
            return nfs.listdir(_inside(path))
        except libnfs.LibnfsError as err:
            raise errors.NFSMount(
                f"cannot list {server}:{export}{_inside(path)}: {err.strerror}"
            ) from err
