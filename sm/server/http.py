"""XML-RPC over HTTP(S) on a Unix socket or TCP: one reader thread, a bounded pool of workers.

The reader (the thread that calls `serve_forever`) owns every connection that is not being
answered: it accepts (never blocking: the listening socket is non-blocking and polled with the
others), runs TLS handshakes, reads request heads and bodies, all with non-blocking sockets and
one `selectors` loop. A connection gets a worker only once its whole request is in and has
passed `sm.server.wire.check` (POST, the token, a sane `Content-Length`), so clients without the
token never hold a worker: the `max_connections` workers are a reserve for authenticated
clients. Time limits cover whole stages, not single reads: the TLS handshake and the first
request head within `head_timeout` of accept (a later head within `head_timeout` of its first
byte, after at most `IDLE_TIMEOUT` of keep-alive idleness); the body within `BODY_TIMEOUT`
after its head. When `max_open` connections are open, the one waiting longest for its head is
dropped to make room. Errors (400, 401, 405, 408, 411, 413, 431, 503, 505) are answered by the
reader, which then half-closes and drains the socket briefly so the client reads the answer.

A worker (`sm.server.worker`) executes the call (`sm.server.methods`), writes the answer and
hands a kept-alive connection back to the reader; it waits `KEEP_WORKER` seconds for that
connection's next request (keeping its `StorageManager`, whose SQLite connection belongs to the
thread) before it ends. A complete request that finds every worker busy waits up to
`QUEUE_TIMEOUT` (503 after, or when `MAX_WAITING` already wait), and asks a worker idling on a
kept-alive connection to end.

Paths: `/` and `/RPC2` answer the methods of `sm.server.methods`; `/smapiv1/<type>` takes a
plain SMAPIv1 document (methodName = the command, one struct), as a driver executable does.
Mutating API calls serialize on the API's state lock and drivers take their SR and VDI locks
(`sm.locking`), the same file locks the `sm` command and the driver executables take.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import selectors
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from . import listen, wire
from .conn import BODY, BUSY, CLOSING, DRAIN, HANDSHAKE, HEAD, Conn
from .listen import HEAD_TIMEOUT, Server
from .worker import Request, Worker

__all__ = ["HEAD_TIMEOUT", "HTTPServer", "Server", "make_server"]

log = logging.getLogger("sm.server")

IDLE_TIMEOUT = 60.0
"""Seconds a kept-alive connection may wait for its next request."""
BODY_TIMEOUT = 60.0
"""Seconds for the body of an accepted head."""
QUEUE_TIMEOUT = 30.0
"""Seconds a complete request may wait for a worker (then 503)."""
MAX_WAITING = 128
"""Complete requests that may wait for a worker at once (more: 503)."""
DRAIN_TIMEOUT = 1.0
"""Seconds spent reading what a refused client still sends, before closing."""


class HTTPServer:
    """The listening socket, the reader loop and its workers (`serve_forever`, `shutdown`,
    `server_close`, `server_address`, as `socketserver` servers have)."""

    def __init__(self, ctx: Server, sock: socket.socket, tls: ssl.SSLContext | None) -> None:
        self.ctx = ctx
        self.socket = sock
        self.tls = tls
        self.server_address: Any = sock.getsockname()
        self.unix = sock.family == socket.AF_UNIX
        sock.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(sock, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.lock = threading.Lock()
        self.conns: set[Conn] = set()  # every open connection not held by a worker
        self.returned: collections.deque[Conn] = collections.deque()  # from workers
        self.waiting: collections.deque[tuple[Conn, Request, float]] = collections.deque()
        self.busy = 0  # workers alive (each holds a slot)
        self._stop = threading.Event()
        self._dropped = 0
        self._dropped_logged = 0.0
        self._next_expiry = 0.0

    # -- the reader loop ----------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._stop.clear()
        while not self._stop.is_set():
            for key, mask in self.sel.select(timeout=min(poll_interval, 0.25)):
                if key.data is None:
                    self._accept()
                elif key.data == "wake":
                    self._woken()
                else:
                    self._ready(key.data, mask)
            now = time.monotonic()
            if now >= self._next_expiry:  # deadlines are checked ten times a second
                self._next_expiry = now + 0.1
                self._expire(now)

    def shutdown(self) -> None:
        self._stop.set()
        self._wake()

    def server_close(self) -> None:
        self._stop.set()
        for conn in list(self.conns):
            self._close(conn)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(self.socket)
        self.socket.close()
        self.sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _accept(self) -> None:
        for _ in range(64):  # a burst, then the others get their turn
            try:
                sock, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # EMFILE and friends: make room, try later
                log.warning("accept failed: %s", err)
                self._make_room(force=True)
                return
            now = time.monotonic()
            if len(self.conns) >= self.ctx.max_open:
                self._make_room()
            sock.setblocking(False)
            if not self.unix:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                try:
                    sock = self.tls.wrap_socket(sock, server_side=True,
                                                do_handshake_on_connect=False)
                except (OSError, ValueError) as err:
                    log.warning("TLS setup failed: %s", err)
                    sock.close()
                    continue
            peer = "unix" if self.unix else f"{addr[0]}:{addr[1]}"
            conn = Conn(sock, peer, now, now + self.ctx.head_timeout, self.tls is not None)
            self.conns.add(conn)
            self._watch(conn, selectors.EVENT_READ)

    def _make_room(self, force: bool = False) -> None:
        """Drop the connection that has waited longest for its head (never one whose request
        is complete)."""
        waiting = [c for c in self.conns if c.state in (HANDSHAKE, HEAD, CLOSING, DRAIN)]
        if not waiting:
            return
        victim = min(waiting, key=lambda c: c.since)
        self._close(victim)
        self._dropped += 1
        now = time.monotonic()
        if force or now - self._dropped_logged > 10:
            log.warning("%d connection(s) dropped to make room (more than %d open)",
                        self._dropped, self.ctx.max_open)
            self._dropped, self._dropped_logged = 0, now

    def _watch(self, conn: Conn, events: int) -> None:
        if conn.events == events:
            return
        if conn.events:
            self.sel.modify(conn.sock, events, conn)
        else:
            self.sel.register(conn.sock, events, conn)
        conn.events = events

    def _unwatch(self, conn: Conn) -> None:
        if conn.events:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.sel.unregister(conn.sock)
            conn.events = 0

    def _close(self, conn: Conn) -> None:
        self._unwatch(conn)
        self.conns.discard(conn)
        with self.lock:
            worker, conn.parked = conn.parked, None
        if worker is not None:
            worker.inbox.put(None)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _woken(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        now = time.monotonic()
        while True:
            with self.lock:
                if not self.returned:
                    break
                conn = self.returned.popleft()
            conn.state, conn.since = HEAD, now
            conn.head = None
            conn.idle = not conn.buf
            conn.deadline = now + (IDLE_TIMEOUT if conn.idle else self.ctx.head_timeout)
            self.conns.add(conn)
            self._watch(conn, selectors.EVENT_READ)
            self._receive(conn)  # a pipelined request, or TLS data already decrypted
        self._start_waiting(now)

    def _ready(self, conn: Conn, mask: int) -> None:
        if conn.state == HANDSHAKE:
            self._handshake(conn)
        elif conn.state == CLOSING:
            self._flush(conn)
        elif conn.state == DRAIN:
            self._drain(conn)
        elif conn.state in (HEAD, BODY):
            self._receive(conn)

    def _handshake(self, conn: Conn) -> None:
        try:
            waiting = conn.handshake()
        except (OSError, ValueError) as err:
            log.warning("%s: TLS handshake failed: %s", conn.peer, err)
            self._close(conn)
            return
        if waiting:
            self._watch(conn, waiting)
            return
        conn.state = HEAD
        self._watch(conn, selectors.EVENT_READ)
        self._receive(conn)

    def _receive(self, conn: Conn) -> None:
        eof = conn.receive(wire.MAX_HEAD + self.ctx.max_request_bytes + 65536)
        try:
            self._advance(conn)
        except wire.HttpError as err:
            self._refuse(conn, err)
            return
        if eof and conn.state in (HEAD, BODY):
            self._close(conn)

    def _advance(self, conn: Conn) -> None:
        now = time.monotonic()
        if conn.state == HEAD:
            blank = len(conn.buf) - len(conn.buf.lstrip(b"\r\n"))
            del conn.buf[:blank]
            if not conn.buf:
                return
            if conn.idle:  # the next request has begun: its head has head_timeout
                conn.idle, conn.since = False, now
                conn.deadline = now + self.ctx.head_timeout
            end = wire.head_end(conn.buf[: wire.MAX_HEAD + 3])
            if end < 0:
                if len(conn.buf) > wire.MAX_HEAD:
                    raise wire.HttpError(431, f"request head longer than {wire.MAX_HEAD} bytes")
                return
            raw = bytes(conn.buf[:end])
            del conn.buf[:end]
            conn.head = wire.parse_head(raw)
            conn.body_len = wire.check(conn.head, self.ctx.token, self.ctx.max_request_bytes)
            conn.state, conn.deadline = BODY, now + BODY_TIMEOUT
            if conn.head.expects_continue and len(conn.buf) < conn.body_len:
                conn.send_continue()
        if conn.state == BODY and len(conn.buf) >= conn.body_len:
            assert conn.head is not None
            body = bytes(conn.buf[: conn.body_len])
            del conn.buf[: conn.body_len]
            self._dispatch(conn, Request(conn.head, body), now)

    def _dispatch(self, conn: Conn, request: Request, now: float) -> None:
        self._unwatch(conn)
        self.conns.discard(conn)
        conn.state = BUSY
        with self.lock:
            worker, conn.parked = conn.parked, None
            if worker is not None:
                worker.inbox.put(request)
                return
            start = self.busy < self.ctx.max_connections and not self.waiting
            if start:
                self.busy += 1
        if start:
            Worker(self, conn, request).start()
            return
        self.waiting.append((conn, request, now + QUEUE_TIMEOUT))
        if len(self.waiting) > max(MAX_WAITING, 4 * self.ctx.max_connections):
            late, _, _ = self.waiting.pop()
            self.conns.add(late)
            self._refuse(late, wire.HttpError(503, "server busy; retry later",
                                              {"Retry-After": "1"}))
        self._release_parked()

    def _release_parked(self) -> None:
        """Ask one worker waiting on an idle connection to end, freeing its slot."""
        for conn in self.conns:
            with self.lock:
                worker, conn.parked = conn.parked, None
            if worker is not None:
                worker.inbox.put(None)
                return

    def _start_waiting(self, now: float) -> None:
        while self.waiting:
            with self.lock:
                if self.busy >= self.ctx.max_connections:
                    break
                self.busy += 1
            conn, request, _ = self.waiting.popleft()
            Worker(self, conn, request).start()
        if self.waiting:
            self._release_parked()

    def _expire(self, now: float) -> None:
        for conn in [c for c in self.conns if c.deadline <= now]:
            if conn.state == BODY or (conn.state == HEAD and conn.buf):
                self._refuse(conn, wire.HttpError(408, "request not received in time"),
                             quiet=True)
            else:
                self._close(conn)
        while self.waiting and self.waiting[0][2] <= now:
            conn, _, _ = self.waiting.popleft()
            self.conns.add(conn)
            self._refuse(conn, wire.HttpError(503, "server busy; retry later",
                                              {"Retry-After": "1"}))

    # -- refusals: answer, half-close, drain ---------------------------------------------------

    def _refuse(self, conn: Conn, err: wire.HttpError, quiet: bool = False) -> None:
        head = conn.head
        what = f"{head.method} {head.target}" if head is not None else "-"
        (log.info if quiet else log.warning)("%s %s: %d %s", conn.peer, what, err.status,
                                             err.text)
        conn.out = wire.response(err.status, (err.text + "\n").encode(), headers=err.headers)
        conn.state = CLOSING
        conn.deadline = time.monotonic() + DRAIN_TIMEOUT
        self._flush(conn)

    def _flush(self, conn: Conn) -> None:
        done = conn.send_out()
        if done is None:
            self._close(conn)
            return
        if not done:
            self._watch(conn, selectors.EVENT_WRITE)
            return
        with contextlib.suppress(OSError, ValueError):
            conn.sock.shutdown(socket.SHUT_WR)
        conn.state = DRAIN
        self._watch(conn, selectors.EVENT_READ)

    def _drain(self, conn: Conn) -> None:
        if conn.drain():
            self._close(conn)

    # -- what workers call ---------------------------------------------------------------------

    def give_back(self, conn: Conn) -> None:
        conn.sock.setblocking(False)
        with self.lock:
            self.returned.append(conn)
        self._wake()

    def worker_done(self) -> None:
        with self.lock:
            self.busy -= 1
        self._wake()


def make_server(ctx: Server, *, unix: Path | None = None, host: str = "127.0.0.1",
                port: int = 0, tls: ssl.SSLContext | None = None) -> HTTPServer:
    """A bound, listening server (not yet serving: call `serve_forever`); the socket is
    `sm.server.listen.bind`'s."""
    return HTTPServer(ctx, listen.bind(unix=unix, host=host, port=port), tls)
