"""XML-RPC over HTTP(S) on a Unix socket or TCP, one thread per connection.

Per request, in this order, before any storage is touched: only `POST`; the token
(`sm.server.auth`, else 401); a `Content-Length` (else 411) no larger than the limit (else
413, the body is never read); the body parsed by `sm.xmlrpc.loads_call` (defusedxml: no DTD,
no entities, no external references, depth and size limits; else Fault 143). Each request is
logged (client, method, result, milliseconds) on the `sm.server` logger.

Paths: `/` and `/RPC2` answer the methods of `sm.server.methods`; `/smapiv1/<type>` takes a
plain SMAPIv1 document (methodName = the command, one struct), as a driver executable does.

Each connection thread has its own `StorageManager` (SQLite connections are per thread);
mutating API calls serialize on the API's state lock and drivers take their SR and VDI locks
(`sm.locking`), the same file locks the `sm` command and the driver executables take, so the
server, the CLI and a toolstack's driver calls exclude each other correctly.
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sm import xmlrpc
from sm.errors import BadRequest, GenericException, InvalidArg, SMError

from . import auth, methods

if TYPE_CHECKING:
    from sm.api import StorageManager

__all__ = ["Server", "make_server"]

log = logging.getLogger("sm.server")

IDLE_TIMEOUT = 60.0
"""Seconds a connection may sit idle (or a client take to send a request) before it is closed."""


class Server:
    """What the request handlers share: token, limits, how to build a StorageManager."""

    def __init__(self, token: str, new_manager: Callable[[], StorageManager], *,
                 max_request_bytes: int = xmlrpc.MAX_REQUEST_BYTES,
                 max_connections: int = 64) -> None:
        self.token = token
        self.new_manager = new_manager
        self.max_request_bytes = min(max_request_bytes, xmlrpc.MAX_REQUEST_BYTES)
        self.slots = threading.BoundedSemaphore(max_connections)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sm-xmlrpc"
    sys_version = ""
    wbufsize = 64 * 1024  # headers and body leave in one write (flushed per response)
    ctx: Server

    def setup(self) -> None:
        self.request.settimeout(IDLE_TIMEOUT)
        if self.request.family in (socket.AF_INET, socket.AF_INET6):
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._mgr: StorageManager | None = None
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self._mgr is not None:
                self._mgr.close()

    def manager(self) -> StorageManager:
        if self._mgr is None:
            self._mgr = self.ctx.new_manager()
        return self._mgr

    def address_string(self) -> str:
        addr = self.client_address
        return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) and addr else "unix"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _plain(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        body = (text + "\n").encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        log.warning("%s %s %s: %d %s", self.address_string(), self.command, self.path,
                    status, text)

    def do_GET(self) -> None:
        self.close_connection = True
        self._plain(405, "use POST with an XML-RPC methodCall", {"Allow": "POST"})

    do_PUT = do_DELETE = do_HEAD = do_GET

    def do_POST(self) -> None:
        start = time.monotonic()
        if not auth.check(self.headers.get("Authorization"), self.ctx.token):
            self.close_connection = True
            self._plain(401, "token missing or wrong", {"WWW-Authenticate": 'Basic realm="sm"'})
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            self._plain(411, "Content-Length required")
            return
        if int(length) > self.ctx.max_request_bytes:
            self.close_connection = True
            self._plain(413, f"request of {length} bytes is larger than the "
                             f"{self.ctx.max_request_bytes} allowed")
            return
        body = self.rfile.read(int(length))
        route = self.path.split("?", 1)[0].rstrip("/")
        method, outcome, response = "?", "ok", ""
        try:
            method, params = xmlrpc.loads_call(body)
            if route in ("", "/RPC2"):
                value = methods.call(self.manager, method, params)
            elif route.startswith("/smapiv1/") and route.count("/") == 2:
                value = methods.call(self.manager, f"smapi.{route[9:]}.{method}", params)
            else:
                raise BadRequest(f"no endpoint {self.path!r} (use / or /smapiv1/<type>)")
            response = xmlrpc.dumps_response(value)
        except SMError as err:
            outcome = f"fault {err.code} {err.name}: {err.message}"[:300]
            response = xmlrpc.dumps_fault(err.code, err.fault_string)
        except Exception as err:
            log.exception("%s failed with an unexpected error", method)
            fault = GenericException(f"{type(err).__name__}: {err}")
            outcome = f"fault {fault.code}: {fault.message}"[:300]
            response = xmlrpc.dumps_fault(fault.code, fault.fault_string)
        data = response.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        log.info("%s %s %s %s %.1f ms", self.address_string(), route or "/", method, outcome,
                 (time.monotonic() - start) * 1000)


class _Mixin(socketserver.ThreadingMixIn):
    daemon_threads = True
    block_on_close = False
    ctx: Server
    tls: ssl.SSLContext | None = None

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.ctx.slots.acquire(timeout=IDLE_TIMEOUT):
            log.warning("too many connections; refusing one")
            self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            if self.tls is not None:
                request.settimeout(IDLE_TIMEOUT)
                try:
                    request.do_handshake()
                except (OSError, ssl.SSLError) as err:
                    log.warning("TLS handshake failed: %s", err)
                    self.shutdown_request(request)  # type: ignore[attr-defined]
                    return
            super().process_request_thread(request, client_address)
        finally:
            self.ctx.slots.release()


class TCPServer(_Mixin, socketserver.TCPServer):
    allow_reuse_address = True


class UnixServer(_Mixin, socketserver.UnixStreamServer):
    pass


def _unix_path(path: Path) -> None:
    """Remove a stale socket; refuse if a server answers there."""
    if len(str(path).encode()) > 107:
        raise InvalidArg(f"socket path {path} is longer than 107 bytes")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
        else:
            raise InvalidArg(f"a server is already listening on {path}")
        finally:
            probe.close()


def make_server(ctx: Server, *, unix: Path | None = None, host: str = "127.0.0.1",
                port: int = 0, tls: ssl.SSLContext | None = None
                ) -> TCPServer | UnixServer:
    """A bound, listening server (not yet serving: call `serve_forever`)."""
    handler = type("Handler", (_Handler,), {"ctx": ctx})
    server: TCPServer | UnixServer
    if unix is not None:
        _unix_path(unix)
        old = os.umask(0o177)  # the socket is created 0600: only its owner may connect
        try:
            server = UnixServer(str(unix), handler)
        finally:
            os.umask(old)
    else:
        server = TCPServer((host, port), handler)
    server.ctx = ctx
    if tls is not None:
        server.tls = tls
        server.socket = tls.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    return server
