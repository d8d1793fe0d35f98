"""The server's token: generated at first start, stored owner-only (0600), compared in
constant time. Clients send it as `Authorization: Bearer <token>` or as the password of HTTP
Basic authentication (any user name), which `xmlrpc.client` sends for `http://u:TOKEN@host/`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
import stat
from pathlib import Path

from sm.errors import InvalidArg

__all__ = ["check", "load_or_create"]


def load_or_create(path: Path) -> str:
    """The token in `path`, created (0600, exclusively) if missing. A token file that group
    or others can read, or that another user owns, is refused: the token is the only key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
    st = os.stat(path)
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InvalidArg(f"token file {path} is accessible by group/others "
                         f"(mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it")
    if st.st_uid != os.geteuid():
        raise InvalidArg(f"token file {path} belongs to uid {st.st_uid}, not to us")
    token = path.read_text().strip()
    if len(token) < 16:
        raise InvalidArg(f"token file {path} holds no usable token")
    return token


def check(header: str | None, token: str) -> bool:
    """Whether an `Authorization` header carries the token."""
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        try:
            value = base64.b64decode(value, validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.encode(), token.encode())
