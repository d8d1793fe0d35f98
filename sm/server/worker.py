"""A worker of `sm serve`: executes the calls of one connection while they come, then ends
(see `sm.server.http` for who reads requests and when a worker is started)."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING

from sm import xmlrpc
from sm.errors import BadRequest, GenericException, SMError

from . import methods, wire

if TYPE_CHECKING:
    from sm.api import StorageManager

    from .conn import Conn
    from .http import HTTPServer

__all__ = ["KEEP_WORKER", "WRITE_TIMEOUT", "Request", "Worker"]

log = logging.getLogger("sm.server")

WRITE_TIMEOUT = 60.0
"""Seconds a client may take to receive an answer."""
KEEP_WORKER = 2.0
"""Seconds a worker waits for the next request on its kept-alive connection."""


class Request:
    __slots__ = ("body", "head")

    def __init__(self, head: wire.Head, body: bytes) -> None:
        self.head = head
        self.body = body


class Worker(threading.Thread):
    """Answers the requests of one connection while they come (see the module docstring)."""

    def __init__(self, server: HTTPServer, conn: Conn, request: Request) -> None:
        super().__init__(daemon=True, name=f"sm-worker {conn.peer}")
        self.server = server
        self.conn = conn
        self.request: Request | None = request
        self.inbox: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._mgr: StorageManager | None = None

    def manager(self) -> StorageManager:
        if self._mgr is None:
            self._mgr = self.server.ctx.new_manager()
        return self._mgr

    def run(self) -> None:
        conn = self.conn
        try:
            while self.request is not None:
                conn.sock.settimeout(WRITE_TIMEOUT)
                if not self._answer(self.request):
                    with contextlib.suppress(OSError):
                        conn.sock.close()
                    return
                with self.server.lock:
                    conn.parked = self
                self.server.give_back(conn)
                try:
                    self.request = self.inbox.get(timeout=KEEP_WORKER)
                except queue.Empty:
                    with self.server.lock:
                        if conn.parked is self:
                            conn.parked = None
                            return
                    self.request = self.inbox.get()  # handed over meanwhile
        except Exception:
            log.exception("%s: worker failed", conn.peer)
            with contextlib.suppress(OSError):
                conn.sock.close()
        finally:
            if self._mgr is not None:
                with contextlib.suppress(Exception):
                    self._mgr.close()
            self.server.worker_done()

    def _answer(self, request: Request) -> bool:
        """Execute one call and send its answer; whether the connection stays open."""
        start = time.monotonic()
        head = request.head
        route = head.target.split("?", 1)[0].rstrip("/")
        method, outcome = "?", "ok"
        try:
            method, params = xmlrpc.loads_call(request.body)
            if route in ("", "/RPC2"):
                value = methods.call(self.manager, method, params)
            elif route.startswith("/smapiv1/") and route.count("/") == 2:
                value = methods.call(self.manager, f"smapi.{route[9:]}.{method}", params)
            else:
                raise BadRequest(f"no endpoint {head.target!r} (use / or /smapiv1/<type>)")
            document = xmlrpc.dumps_response(value)
        except SMError as err:
            outcome = f"fault {err.code} {err.name}: {err.message}"[:300]
            document = xmlrpc.dumps_fault(err.code, err.fault_string)
        except Exception as err:
            log.exception("%s failed with an unexpected error", method)
            fault = GenericException(f"{type(err).__name__}: {err}")
            outcome = f"fault {fault.code}: {fault.message}"[:300]
            document = xmlrpc.dumps_fault(fault.code, fault.fault_string)
        data = wire.response(200, xmlrpc.encode(document), content_type="text/xml",
                             keep_alive=head.keep_alive)
        try:
            self.conn.sock.sendall(data)
        except (OSError, ValueError) as err:
            log.warning("%s: answer to %s not sent: %s", self.conn.peer, method, err)
            return False
        finally:
            log.info("%s %s %s %s %.1f ms", self.conn.peer, route or "/", method,
                     outcome.encode("ascii", "backslashreplace").decode(),
                     (time.monotonic() - start) * 1000)
        return head.keep_alive
