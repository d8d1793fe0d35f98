"""A client connection as the reader of `sm serve` holds it (`sm.server.http`): its state,
buffer and deadline, and the non-blocking socket I/O the reader does on it (read what has
arrived, send a refusal, drain what the client still sends). Which state comes next is the
reader's business; a worker (`sm.server.worker`) holds the connection between `BUSY` and its
hand-back."""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import wire
    from .worker import Worker

__all__ = ["BODY", "BUSY", "CLOSING", "DRAIN", "HANDSHAKE", "HEAD", "Conn"]

HANDSHAKE, HEAD, BODY, BUSY, CLOSING, DRAIN = range(6)
"""The states of a connection: TLS handshake, reading a head, reading a body, with a worker,
sending a refusal, draining after it."""

_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_CHUNK = 65536


class Conn:
    __slots__ = ("body_len", "buf", "deadline", "events", "head", "idle", "out", "parked",
                 "peer", "since", "sock", "state")

    def __init__(self, sock: socket.socket, peer: str, now: float, deadline: float,
                 tls: bool) -> None:
        self.sock = sock
        self.peer = peer
        self.buf = bytearray()
        self.state = HANDSHAKE if tls else HEAD
        self.since = now
        self.deadline = deadline
        self.idle = False
        self.head: wire.Head | None = None
        self.body_len = 0
        self.out = b""
        self.events = 0
        self.parked: Worker | None = None

    def handshake(self) -> int:
        """Go on with the TLS handshake: the selector events it waits for, 0 once it is done
        (OSError or ValueError when it failed)."""
        assert isinstance(self.sock, ssl.SSLSocket)
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            return selectors.EVENT_READ
        except ssl.SSLWantWriteError:
            return selectors.EVENT_WRITE
        return 0

    def send_continue(self) -> None:
        """`100 Continue` for a client waiting for it before it sends the body (best effort:
        the body may come anyway)."""
        with contextlib.suppress(OSError, ssl.SSLError):
            self.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def receive(self, limit: int) -> bool:
        """Append what has arrived to `buf`, up to `limit` bytes buffered; whether the client
        is gone (end of stream or a socket error)."""
        while len(self.buf) < limit:
            try:
                chunk = self.sock.recv(_CHUNK)
            except _WOULD_BLOCK:
                return False
            except (OSError, ValueError):
                return True
            if not chunk:
                return True
            self.buf += chunk
        return False

    def send_out(self) -> bool | None:
        """Send what `out` holds as far as the socket takes it: True when all is sent, False
        when some is left, None when the socket failed."""
        try:
            sent = self.sock.send(self.out)
        except _WOULD_BLOCK:
            sent = 0
        except (OSError, ValueError):
            return None
        self.out = self.out[sent:]
        return not self.out

    def drain(self) -> bool:
        """Read and drop what the client still sends (a bounded amount per call); whether it
        is time to close (end of stream, an error, or enough read)."""
        for _ in range(16):
            try:
                chunk = self.sock.recv(_CHUNK)
            except _WOULD_BLOCK:
                return False
            except (OSError, ValueError):
                return True
            if not chunk:
                return True
        return True
