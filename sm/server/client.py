"""A client of `sm serve`: Python's own `xmlrpc.client.ServerProxy`, with the token sent as
`Authorization: Bearer` and `unix:/path` addresses supported.

    from sm.server.client import connect
    sm = connect("unix:/run/sm/api.sock", token=open("/var/lib/sm/server.token").read())
    sm.vdi.snapshot("disk1", "clean")
"""

from __future__ import annotations

import http.client
import socket
import ssl
import xmlrpc.client
from typing import Any

__all__ = ["UnixTransport", "connect"]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


class UnixTransport(xmlrpc.client.Transport):
    """HTTP over a Unix stream socket (the connection is kept alive between calls)."""

    def __init__(self, path: str, *, timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.unix_path = path
        self.timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        cached = self._connection[1] if self._connection[0] == "unix" else None
        if cached is not None:
            return cached
        conn = _UnixConnection(self.unix_path, self.timeout)
        self._connection = ("unix", conn)
        return conn


def connect(address: str, token: str | None, *, cafile: str | None = None,
            timeout: float | None = 600.0) -> xmlrpc.client.ServerProxy:
    """`address`: `unix:/path`, `http://host:port/` or `https://host:port/`."""
    headers = [("Authorization", f"Bearer {token.strip()}")] if token else []
    if address.startswith("unix:"):
        transport: xmlrpc.client.Transport = UnixTransport(
            address[5:], timeout=timeout, use_builtin_types=True, headers=headers)
        return xmlrpc.client.ServerProxy("http://localhost/", transport=transport,
                                         allow_none=True)
    if address.startswith("https:"):
        context = ssl.create_default_context(cafile=cafile)
        transport = xmlrpc.client.SafeTransport(use_builtin_types=True, headers=headers,
                                                context=context)
    else:
        transport = xmlrpc.client.Transport(use_builtin_types=True, headers=headers)
    return xmlrpc.client.ServerProxy(address, transport=transport, allow_none=True)
