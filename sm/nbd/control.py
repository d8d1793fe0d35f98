"""The pause protocol between the driver and a running NBD server (standard library only).

A Unix stream socket (mode 0600) served by a thread inside the nbdkit plugin. Each request is
one line, each answer one line; a connection may carry several requests in turn.

Requests, as a JSON object or as plain words::

    {"cmd": "status"}                         status
    {"cmd": "pause"}                          pause
    {"cmd": "pause", "drain_timeout": 30, "owner": "<pid>:<start time>"}
    {"cmd": "resume"}                         resume
    {"cmd": "resume", "path": "/sr/x.vhd"}    resume /sr/x.vhd
    {"cmd": "flush"}                          flush
    {"cmd": "shutdown"}                       shutdown

Answers: ``{"ok": true, "status": {...}}`` or ``{"ok": false, "error": "<text>",
"kind": "<ExceptionClass>"}``. `status` holds `state` (running | paused | closed), `path`,
`writable`, `size` (the size served), `chain_size`, `inflight`, `generation` (resumes so far),
`requests`, `pauses`, `paused_by` (the `owner` of the pause that stopped the running server,
None while running), and the server's `pid`, `export`, `socket`, `control`.

`pause` answers only once new requests are held, in-flight ones have finished, the chain is
flushed and closed; `resume` only once the chain is open again. All commands are idempotent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["ControlError", "ControlServer", "ControlUnavailable", "call", "parse_request"]

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024
DEFAULT_TIMEOUT = 120.0

Handler = Callable[[Mapping[str, Any]], Mapping[str, Any]]


class ControlError(Exception):
    """The server answered with an error."""

    def __init__(self, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind


class ControlUnavailable(ControlError):
    """Nobody answers on the control socket (no server, or it died)."""


def parse_request(line: str) -> dict[str, Any]:
    """One request line (JSON object or words) -> a dict with at least `cmd`."""
    text = line.strip()
    if text.startswith("{"):
        req = json.loads(text)
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            raise ValueError("request must be a JSON object with a string 'cmd'")
        return req
    words = text.split(maxsplit=1)
    if not words:
        raise ValueError("empty request")
    req = {"cmd": words[0]}
    if len(words) == 2:
        req["path"] = words[1]
    return req


class ControlServer:
    """Serve `handlers` (command name -> function of the request) on a Unix socket."""

    def __init__(self, path: str, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self._handlers = dict(handlers)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._inode: tuple[int, int] | None = None  # the socket file this server bound

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(self.path)
        finally:
            os.umask(old)
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        sock.listen(8)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="sm-nbd-control",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            self._unlink_own()

    def _unlink_own(self) -> None:
        """Unlink the socket file only while it is still the one this server bound: a new
        server of the same VDI (detach, attach) may have replaced it while this one was
        exiting, and must keep its socket."""
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)

    def _accept_loop(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="sm-nbd-control-conn",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as stream:
            for raw in stream:
                answer = self.handle(raw[:MAX_LINE].decode("utf-8", "replace"))
                stream.write(json.dumps(answer).encode() + b"\n")
                stream.flush()

    def handle(self, line: str) -> dict[str, Any]:
        try:
            req = parse_request(line)
            handler = self._handlers.get(req["cmd"])
            if handler is None:
                raise ValueError(f"unknown command {req['cmd']!r}; "
                                 f"known: {', '.join(sorted(self._handlers))}")
            return {"ok": True, "status": dict(handler(req))}
        except Exception as err:  # every failure becomes an answer, never a dead thread
            log.warning("control request %r failed: %s", line.strip(), err)
            return {"ok": False, "error": str(err), "kind": type(err).__name__}


def call(path: str, cmd: str, /, *, timeout: float = DEFAULT_TIMEOUT,
         **args: Any) -> dict[str, Any]:
    """Send one request (`cmd` plus `args`, None values left out) to the control socket at
    `path`; return the `status` of the answer.
    Raises ControlUnavailable if nobody answers, ControlError if the server refuses."""
    req = {"cmd": cmd, **{k: v for k, v in args.items() if v is not None}}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(json.dumps(req).encode() + b"\n")
            with sock.makefile("rb") as stream:
                line = stream.readline(MAX_LINE)
    except TimeoutError as err:
        raise ControlError(f"{cmd} on {path}: no answer within {timeout} s", "Timeout") from err
    except (FileNotFoundError, ConnectionRefusedError) as err:
        raise ControlUnavailable(f"no server on {path}: {err}", type(err).__name__) from err
    except OSError as err:
        raise ControlUnavailable(f"control socket {path}: {err}", type(err).__name__) from err
    if not line:
        raise ControlUnavailable(f"control socket {path} closed without an answer")
    answer = json.loads(line)
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error")), str(answer.get("kind", "")))
    status = answer.get("status")
    return dict(status) if isinstance(status, dict) else {}
