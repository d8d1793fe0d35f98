"""Putting a server together: address, token file, TLS, one StorageManager per connection."""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sm import xmlrpc
from sm.errors import InvalidArg
from sm.settings import DEFAULT_RUN_DIR, Settings

from . import auth
from .http import HEAD_TIMEOUT, HTTPServer, Server, make_server

__all__ = ["Options", "build", "default_socket", "default_token_file"]

log = logging.getLogger("sm.server")


@dataclass(frozen=True)
class Options:
    config: str | None = None
    socket: str | None = None
    listen: str | None = None
    """`HOST:PORT` for TCP (port 0: any free port); else the Unix socket."""
    allow_remote: bool = False
    cert: str | None = None
    key: str | None = None
    token_file: str | None = None
    max_request_bytes: int = xmlrpc.MAX_REQUEST_BYTES
    max_connections: int = 64
    head_timeout: float = HEAD_TIMEOUT


def default_socket(settings: Settings, state_dir: Path) -> Path:
    run = settings.run_dir or (DEFAULT_RUN_DIR if os.geteuid() == 0 else state_dir / "run")
    return Path(run) / "api.sock"


def default_token_file(state_dir: Path) -> Path:
    return state_dir / "server.token"


def _host_port(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidArg(f"--listen wants HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build(opts: Options) -> tuple[HTTPServer, str, Path]:
    """The listening server, its address (`unix:/path` or a URL) and the token file."""
    from sm.api import StorageManager

    probe = StorageManager(opts.config)
    state_dir = probe.paths.state_dir
    environ = dict(probe.environ)
    if (opts.cert is None) != (opts.key is None):
        raise InvalidArg("TLS needs both --cert and --key")
    token_file = Path(opts.token_file) if opts.token_file else default_token_file(state_dir)
    ctx = Server(auth.load_or_create(token_file),
                 lambda: StorageManager(opts.config, environ=environ),
                 max_request_bytes=opts.max_request_bytes,
                 max_connections=opts.max_connections, head_timeout=opts.head_timeout)
    tls = None
    if opts.cert and opts.key:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2
        tls.load_cert_chain(opts.cert, opts.key)
    if opts.listen:
        host, port = _host_port(opts.listen)
        if not _loopback(host):
            if not opts.allow_remote:
                raise InvalidArg(f"{host} is not a loopback address; add --allow-remote")
            if tls is None:
                raise InvalidArg("listening beyond loopback needs TLS (--cert and --key)")
        server = make_server(ctx, host=host, port=port, tls=tls)
        bound: Any = server.server_address
        bound_host, bound_port = str(bound[0]), int(bound[1])
        shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
        address = f"{'https' if tls else 'http'}://{shown}:{bound_port}/"
    else:
        path = Path(opts.socket) if opts.socket else default_socket(probe.env_settings, state_dir)
        server = make_server(ctx, unix=path, tls=tls)
        address = f"unix:{path}"
    return server, address, token_file
