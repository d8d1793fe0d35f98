"""HTTP/1.1 request heads for `sm serve`: parsing, and the checks a request passes before it
gets a worker (pure functions, no I/O; `sm.server.http` drives them).

A request head is at most `MAX_HEAD` bytes and `MAX_HEADERS` header lines. Anything that is not
a plain HTTP/1.0 or 1.1 head (a bad request line, a folded or nameless header, a control
character in a value, a duplicated `Content-Length` or `Authorization`) answers 400; the checks
then run in this order: only `POST` (405), the token (401), no `Transfer-Encoding` and a
`Content-Length` (411) of ASCII digits (400: `²`, `-1`, 5,000 digits) no larger than the limit
(413), `Expect` only `100-continue` (417).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

from . import auth

__all__ = ["MAX_HEAD", "Head", "HttpError", "check", "head_end", "parse_head", "response"]

MAX_HEAD = 16 * 1024
"""Largest request head (request line and headers) read; a longer one answers 431."""
MAX_HEADERS = 64

_METHOD = re.compile(r"[A-Z]{1,16}")
_TARGET = re.compile(r"[\x21-\x7e]{1,4096}")
_VERSION = re.compile(r"HTTP/([0-9])\.([0-9])")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_LENGTH = re.compile(r"[0-9]{1,19}")
_SINGLE = ("content-length", "authorization", "transfer-encoding", "expect", "host")


class HttpError(Exception):
    """A request answered with an HTTP error status (the connection is then closed)."""

    def __init__(self, status: int, text: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Head:
    method: str
    target: str
    version: tuple[int, int]
    headers: Mapping[str, str] = field(default_factory=dict)
    """Lower-cased names; repeated headers joined with ", "."""

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version >= (1, 1):
            return "close" not in tokens
        return "keep-alive" in tokens

    @property
    def expects_continue(self) -> bool:
        return (self.version >= (1, 1)
                and self.headers.get("expect", "").strip().lower() == "100-continue")


def head_end(buf: bytes | bytearray) -> int:
    """The length of the head at the start of `buf` (through its blank line); -1 while it is
    incomplete. Bare LF line ends are accepted, as most servers do."""
    ends = [i + n for i, n in ((buf.find(b"\n\r\n"), 3), (buf.find(b"\n\n"), 2)) if i >= 0]
    return min(ends) if ends else -1


def parse_head(raw: bytes) -> Head:
    """A complete head (as `head_end` delimits it) -> `Head`; raises `HttpError`."""
    lines = raw.decode("latin-1").split("\n")
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise HttpError(400, "empty request")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    match = _VERSION.fullmatch(version)
    if not _METHOD.fullmatch(method) or not _TARGET.fullmatch(target) or match is None:
        raise HttpError(400, "malformed request line")
    if match.group(1) != "1":
        raise HttpError(505, f"{version} is not supported (use HTTP/1.1)")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header lines")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HttpError(400, "malformed header line")
        value = value.strip(" \t")
        if _BAD_VALUE.search(value):
            raise HttpError(400, f"control character in header {name}")
        key = name.lower()
        if key in headers:
            if key in _SINGLE:
                raise HttpError(400, f"header {name} given twice")
            value = f"{headers[key]}, {value}"
        headers[key] = value
    return Head(method, target, (1, int(match.group(2))), headers)


def check(head: Head, token: str, max_bytes: int) -> int:
    """The body length of an acceptable request; raises `HttpError` otherwise (in the order of
    the module docstring: nothing that follows the token check is said to a client without
    it)."""
    if head.method != "POST":
        raise HttpError(405, "use POST with an XML-RPC methodCall", {"Allow": "POST"})
    if not auth.check(head.headers.get("authorization"), token):
        raise HttpError(401, "token missing or wrong", {"WWW-Authenticate": 'Basic realm="sm"'})
    if "transfer-encoding" in head.headers:
        raise HttpError(411, "Content-Length required (no Transfer-Encoding)")
    length = head.headers.get("content-length")
    if length is None:
        raise HttpError(411, "Content-Length required")
    if not _LENGTH.fullmatch(length):
        raise HttpError(400, f"invalid Content-Length {length[:24]!r}")
    if int(length) > max_bytes:
        raise HttpError(413, f"request of {length} bytes is larger than the {max_bytes} allowed")
    expect = head.headers.get("expect")
    if expect is not None and not head.expects_continue:
        raise HttpError(417, f"cannot meet Expect: {expect[:40]!r}")
    return int(length)


def response(status: int, body: bytes, *, content_type: str = "text/plain; charset=utf-8",
             keep_alive: bool = False, headers: Mapping[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 response."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    lines = [f"HTTP/1.1 {status} {reason}", "Server: sm-xmlrpc",
             f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
