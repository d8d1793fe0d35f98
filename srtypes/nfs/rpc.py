"""Just enough ONC RPC (RFC 5531) over TCP to ask an NFSv4 server which minor versions it serves.

``rpcinfo`` only knows program versions (3, 4); NFSv4 minor versions are negotiated inside
COMPOUND (RFC 7530 / 8881): a COMPOUND with no operations and ``minorversion = N`` answers
``NFS4_OK`` when N is served and ``NFS4ERR_MINOR_VERS_MISMATCH`` otherwise. libnfs 4.0 speaks
v4.0 only, so this probe is done by hand. Standard library only; every socket operation is
bounded by ``timeout``.
"""

from __future__ import annotations

import os
import socket
import struct

NFS_PROGRAM = 100003
NFS4_VERSION = 4
PROC_COMPOUND = 1
NFS4_OK = 0
NFS4ERR_MINOR_VERS_MISMATCH = 10021

_CALL, _REPLY = 0, 1
_MSG_ACCEPTED = 0
_SUCCESS = 0
_AUTH_SYS = 1
_LAST_FRAGMENT = 0x80000000


class RpcError(OSError):
    """The server did not answer, or answered something that is not a usable RPC reply."""


def _opaque(data: bytes) -> bytes:
    pad = (4 - len(data) % 4) % 4
    return struct.pack(">I", len(data)) + data + b"\0" * pad


def _auth_sys() -> bytes:
    body = struct.pack(">I", 0) + _opaque(b"sm") + struct.pack(">III", 0, 0, 0)
    return struct.pack(">I", _AUTH_SYS) + _opaque(body)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise RpcError("connection closed by the server")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv_record(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    data = b""
    while True:
        (mark,) = struct.unpack(">I", _recv_exact(sock, 4))
        size = mark & ~_LAST_FRAGMENT
        if len(data) + size > limit:
            raise RpcError("RPC reply too large")
        data += _recv_exact(sock, size)
        if mark & _LAST_FRAGMENT:
            return data


def call(host: str, port: int, prog: int, vers: int, proc: int, args: bytes, *,
         timeout: float) -> bytes:
    """One RPC call with AUTH_SYS credentials; returns the result body of a successful reply."""
    xid = int.from_bytes(os.urandom(4), "big")
    msg = struct.pack(">IIIIII", xid, _CALL, 2, prog, vers, proc) + _auth_sys()
    msg += struct.pack(">II", 0, 0) + args  # verifier AUTH_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">I", _LAST_FRAGMENT | len(msg)) + msg)
            reply = _recv_record(sock)
    except TimeoutError as err:
        raise RpcError(f"{host}:{port}: no RPC reply within {timeout:g} s") from err
    except OSError as err:
        if isinstance(err, RpcError):
            raise
        raise RpcError(f"{host}:{port}: {err.strerror or err}") from err
    try:
        rxid, mtype, rstat = struct.unpack_from(">III", reply, 0)
        if rxid != xid or mtype != _REPLY:
            raise RpcError("mismatched RPC reply")
        if rstat != _MSG_ACCEPTED:
            raise RpcError(f"RPC call denied (reply_stat {rstat})")
        _flavor, vlen = struct.unpack_from(">II", reply, 12)
        off = 20 + vlen + (4 - vlen % 4) % 4
        (accept,) = struct.unpack_from(">I", reply, off)
    except struct.error as err:
        raise RpcError("truncated RPC reply") from err
    if accept != _SUCCESS:
        raise RpcError(f"RPC call not accepted (accept_stat {accept})")
    return reply[off + 4 :]


def nfs4_minor_version_supported(host: str, minor: int, *, port: int = 2049,
                                 timeout: float = 5.0) -> bool:
    """Whether the server serves NFSv4.<minor> (an empty COMPOUND with that minor version)."""
    args = _opaque(b"") + struct.pack(">II", minor, 0)
    body = call(host, port, NFS_PROGRAM, NFS4_VERSION, PROC_COMPOUND, args, timeout=timeout)
    try:
        (status,) = struct.unpack_from(">I", body, 0)
    except struct.error as err:
        raise RpcError("truncated COMPOUND reply") from err
    if status == NFS4_OK:
        return True
    if status == NFS4ERR_MINOR_VERS_MISMATCH:
        return False
    raise RpcError(f"empty COMPOUND for minor version {minor} failed with status {status}")
