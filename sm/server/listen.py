"""What the reader and the workers of `sm serve` share (`Server`: the token, the limits, how to
build a `StorageManager`) and the listening socket they serve (`bind`: a Unix socket created
0600, or TCP). The reader itself is `sm.server.http`."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sm import xmlrpc
from sm.errors import InvalidArg

if TYPE_CHECKING:
    from sm.api import StorageManager

__all__ = ["HEAD_TIMEOUT", "Server", "bind"]

HEAD_TIMEOUT = 10.0
"""Seconds from accept to a complete first request head (TLS handshake included)."""


class Server:
    """What the reader and the workers share: token, limits, how to build a StorageManager."""

    def __init__(self, token: str, new_manager: Callable[[], StorageManager], *,
                 max_request_bytes: int = xmlrpc.MAX_REQUEST_BYTES,
                 max_connections: int = 64, max_open: int | None = None,
                 head_timeout: float = HEAD_TIMEOUT) -> None:
        if max_connections < 1 or head_timeout <= 0:
            raise InvalidArg("max_connections and head_timeout must be positive")
        self.token = token
        self.new_manager = new_manager
        self.max_request_bytes = min(max_request_bytes, xmlrpc.MAX_REQUEST_BYTES)
        self.max_connections = max_connections
        self.max_open = max_open or _default_max_open(max_connections)
        self.head_timeout = head_timeout


def _default_max_open(workers: int) -> int:
    """Open connections the reader keeps: what the descriptor limit allows (raised to its hard
    limit), at most 4096."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
    return max(16, min(4096, soft - 64 - 2 * workers))


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


def bind(*, unix: Path | None = None, host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A bound, listening socket: on the Unix socket `unix` (only its owner may connect), else
    on TCP `host`:`port` (0: any free port)."""
    if unix is not None:
        _unix_path(unix)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is created 0600: only its owner may connect
        try:
            sock.bind(str(unix))
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old)
        sock.listen(socket.SOMAXCONN)
        return sock
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=socket.SOMAXCONN)
