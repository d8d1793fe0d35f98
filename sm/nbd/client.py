"""A small NBD client (fixed newstyle handshake, simple replies) over a Unix or TCP socket.

The API layer reads and writes VDIs whose image is not a local file (LVM volumes, Ceph
images) through the server their driver started. Only what that needs: `NBD_OPT_GO` with an
export name, READ / WRITE (with FUA) / FLUSH / DISC, one request in flight at a time.

Protocol: https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md
(`NBDMAGIC`/`IHAVEOPT` greeting, option haggling, transmission phase).
"""

from __future__ import annotations

import socket
import struct
from types import TracebackType

__all__ = ["NbdClient", "NbdError", "parse_url"]

_NBDMAGIC = b"NBDMAGIC"
_IHAVEOPT = 0x49484156454F5054
_OPT_REPLY_MAGIC = 0x3E889045565A9
_REQUEST_MAGIC = 0x25609513
_SIMPLE_REPLY_MAGIC = 0x67446698

_FLAG_FIXED_NEWSTYLE = 1
_FLAG_NO_ZEROES = 2
_OPT_GO = 7
_REP_ACK = 1
_REP_INFO = 3
_INFO_EXPORT = 0
_REP_ERROR_BIT = 1 << 31

_CMD_READ, _CMD_WRITE, _CMD_DISC, _CMD_FLUSH = 0, 1, 2, 3
_CMD_FLAG_FUA = 1
_TFLAG_READ_ONLY = 1 << 1

_OPT_HDR = struct.Struct(">QII")      # magic, option, length
_OPT_REPLY = struct.Struct(">QIII")   # magic, option, reply type, length
_REQUEST = struct.Struct(">IHHQQI")   # magic, flags, type, handle, offset, length
_REPLY = struct.Struct(">IIQ")        # magic, error, handle

CHUNK = 4 * 1024 * 1024  # below every server's maximum request size (nbdkit: 32 MiB)


class NbdError(OSError):
    """The server refused, or spoke something other than NBD."""


def parse_url(url: str) -> tuple[str, str]:
    """`nbd:unix:<socket>:exportname=<name>` -> (socket path, export name)."""
    if not url.startswith("nbd:unix:"):
        raise NbdError(f"not an nbd:unix: address: {url!r}")
    rest = url[len("nbd:unix:"):]
    path, sep, name = rest.partition(":exportname=")
    return path, name if sep else ""


class NbdClient:
    """One connection to one export. `size`, `read_only`; read/write/flush/close."""

    def __init__(self, sock_path: str, export_name: str = "", *, timeout: float = 60.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._handle = 0
        try:
            self._sock.connect(sock_path)
            self.size, flags = self._handshake(export_name)
        except BaseException:
            self._sock.close()
            raise
        self.read_only = bool(flags & _TFLAG_READ_ONLY)

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 60.0) -> NbdClient:
        path, name = parse_url(url)
        return cls(path, name, timeout=timeout)

    # -- handshake ------------------------------------------------------------------------

    def _recv(self, n: int) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self._sock.recv_into(view[got:], n - got)
            if k == 0:
                raise NbdError("the NBD server closed the connection")
            got += k
        return bytes(buf)

    def _handshake(self, name: str) -> tuple[int, int]:
        if self._recv(8) != _NBDMAGIC:
            raise NbdError("not an NBD server (no NBDMAGIC)")
        magic, hflags = struct.unpack(">QH", self._recv(10))
        if magic != _IHAVEOPT or not hflags & _FLAG_FIXED_NEWSTYLE:
            raise NbdError("the NBD server does not speak fixed newstyle")
        self._sock.sendall(struct.pack(">I", _FLAG_FIXED_NEWSTYLE | (hflags & _FLAG_NO_ZEROES)))
        raw = name.encode()
        data = struct.pack(">I", len(raw)) + raw + struct.pack(">H", 0)
        self._sock.sendall(_OPT_HDR.pack(_IHAVEOPT, _OPT_GO, len(data)) + data)
        size = flags = None
        while True:
            magic, opt, rtype, length = _OPT_REPLY.unpack(self._recv(_OPT_REPLY.size))
            body = self._recv(length) if length else b""
            if magic != _OPT_REPLY_MAGIC or opt != _OPT_GO:
                raise NbdError("malformed option reply from the NBD server")
            if rtype & _REP_ERROR_BIT:
                text = body.decode(errors="replace")
                raise NbdError(f"export {name!r} refused (reply {rtype:#x}) {text}".rstrip())
            if rtype == _REP_INFO and len(body) >= 12:
                (info,) = struct.unpack(">H", body[:2])
                if info == _INFO_EXPORT:
                    size, flags = struct.unpack(">QH", body[2:12])
            elif rtype == _REP_ACK:
                break
        if size is None or flags is None:
            raise NbdError("the NBD server sent no export size")
        return size, flags

    # -- transmission ---------------------------------------------------------------------

    def _request(self, cmd: int, offset: int, length: int, *, flags: int = 0,
                 payload: bytes | memoryview = b"") -> None:
        self._handle += 1
        self._sock.sendall(_REQUEST.pack(_REQUEST_MAGIC, flags, cmd, self._handle, offset,
                                         length))
        if payload:
            self._sock.sendall(payload)

    def _reply(self, what: str) -> None:
        magic, error, handle = _REPLY.unpack(self._recv(_REPLY.size))
        if magic != _SIMPLE_REPLY_MAGIC or handle != self._handle:
            raise NbdError("malformed reply from the NBD server")
        if error:
            raise NbdError(error, f"NBD {what} failed: {_errname(error)}")

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"range {offset}+{length} outside the export ({self.size} bytes)")

    def read(self, offset: int, length: int) -> bytes:
        self._check_range(offset, length)
        out = bytearray()
        while length > 0:
            n = min(length, CHUNK)
            self._request(_CMD_READ, offset, n)
            self._reply("read")
            out += self._recv(n)
            offset += n
            length -= n
        return bytes(out)

    def write(self, offset: int, data: bytes | bytearray | memoryview, *,
              fua: bool = False) -> None:
        view = memoryview(data).cast("B")
        self._check_range(offset, len(view))
        for start in range(0, len(view), CHUNK):
            part = view[start:start + CHUNK]
            self._request(_CMD_WRITE, offset + start, len(part),
                          flags=_CMD_FLAG_FUA if fua else 0, payload=part)
            self._reply("write")

    def flush(self) -> None:
        self._request(_CMD_FLUSH, 0, 0)
        self._reply("flush")

    def close(self) -> None:
        try:
            self._request(_CMD_DISC, 0, 0)
        except OSError:
            pass
        finally:
            self._sock.close()

    def __enter__(self) -> NbdClient:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


_ERRNAMES = {1: "EPERM", 5: "EIO", 12: "ENOMEM", 22: "EINVAL", 28: "ENOSPC", 75: "EOVERFLOW",
             95: "ENOTSUP", 108: "ESHUTDOWN"}


def _errname(code: int) -> str:
    return _ERRNAMES.get(code, f"error {code}")
