"""`sm serve`: SMAPIv1 and the sm.api layer over XML-RPC (docs/server.md)."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import click


@click.command()
@click.option("--socket", "socket_path", type=click.Path(dir_okay=False),
              help="Unix socket to listen on (default: <run dir>/api.sock).")
@click.option("--listen", metavar="HOST:PORT",
              help="Listen on TCP instead (loopback only unless --allow-remote; port 0: any).")
@click.option("--allow-remote", is_flag=True, help="Allow a non-loopback --listen (needs TLS).")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False), help="TLS certificate.")
@click.option("--key", type=click.Path(exists=True, dir_okay=False), help="TLS private key.")
@click.option("--token-file", type=click.Path(dir_okay=False),
              help="Token file (default: <state dir>/server.token, made at first start).")
@click.option("--max-request-bytes", type=click.IntRange(1024), default=1024 * 1024,
              show_default=True, help="Largest request body accepted.")
@click.option("--max-connections", type=click.IntRange(1), default=64, show_default=True,
              help="Requests answered at once (workers, kept for clients with the token).")
@click.option("--head-timeout", type=click.FloatRange(0.1, 3600), default=10.0,
              show_default=True,
              help="Seconds a client has for a whole request head (TLS handshake included).")
@click.option("--log-file", type=click.Path(dir_okay=False),
              help="Log requests here instead of stderr.")
@click.option("--show-token", is_flag=True, help="Print the token (made if missing) and exit.")
@click.pass_context
def serve(ctx: click.Context, socket_path: str | None, listen: str | None, allow_remote: bool,
          cert: str | None, key: str | None, token_file: str | None, max_request_bytes: int,
          max_connections: int, head_timeout: float, log_file: str | None,
          show_token: bool) -> None:
    """Serve SMAPIv1 and the sm API over XML-RPC (token required)."""
    from sm.errors import SMError
    from sm.server.run import Options, build, default_token_file

    root = ctx.find_root()
    config = (root.obj or {}).get("config") if isinstance(root.obj, dict) else None
    try:
        if show_token:
            from sm.api import StorageManager
            from sm.server import auth

            with StorageManager(config) as sm:
                path = default_token_file(sm.paths.state_dir)
            click.echo(auth.load_or_create(Path(token_file) if token_file else path))
            return
        server, address, tokens = build(Options(
            config, socket_path, listen, allow_remote, cert, key, token_file,
            max_request_bytes, max_connections, head_timeout))
    except SMError as err:
        raise click.ClickException(f"{err.name} ({err.code}): {err.message}") from err
    logger = logging.getLogger("sm.server")
    logger.setLevel(logging.INFO)
    handler = (logging.FileHandler(log_file, encoding="utf-8", errors="backslashreplace")
               if log_file else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    click.echo(f"listening on {address} (token in {tokens})")
    sys.stdout.flush()

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if address.startswith("unix:"):
            Path(address[5:]).unlink(missing_ok=True)

