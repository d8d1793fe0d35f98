"""sm.server.wire: any bytes are a head, an HttpError with a status, or incomplete; never an
exception of another kind (the socket-level fuzz in test_hostile_clients runs fewer cases)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sm.server import wire

TOKEN = "t" * 32
STATUSES = {400, 401, 405, 411, 413, 417, 431, 505}

_line = st.one_of(
    st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"")),
    st.sampled_from([b"POST / HTTP/1.1", b"Content-Length: 5", b"Content-Length: \xc2\xb2",
                     b"Authorization: Bearer " + TOKEN.encode(), b"Expect: 100-continue",
                     b"Transfer-Encoding: chunked", b" folded", b"Connection: close",
                     b"Content-Length: " + b"9" * 5000, b"Content-Length: -1"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_line, min_size=1, max_size=8), st.sampled_from([b"\r\n", b"\n"]))
def test_any_head_parses_or_is_refused_with_a_status(lines: list[bytes], end: bytes) -> None:
    raw = end.join(lines) + end + end
    assert wire.head_end(raw) > 0
    try:
        head = wire.parse_head(raw[: wire.head_end(raw)])
        length = wire.check(head, TOKEN, 1024)
    except wire.HttpError as err:
        assert err.status in STATUSES and err.text
        assert wire.response(err.status, err.text.encode()).startswith(b"HTTP/1.1 ")
    else:
        assert head.method == "POST" and 0 <= length <= 1024


def test_examples() -> None:
    head = wire.parse_head(b"POST /RPC2 HTTP/1.1\r\nContent-Length: 5\r\n"
                           b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
    assert wire.check(head, TOKEN, 1024) == 5 and head.keep_alive
    assert wire.head_end(b"POST / HTTP/1.1\r\nX: y\r\n") == -1
    for value, status in (("\u00b2", 400), ("-1", 400), ("9" * 5000, 400), ("2048", 413)):
        head = wire.parse_head(f"POST / HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                               f"Content-Length: {value}\r\n\r\n".encode())
        try:
            wire.check(head, TOKEN, 1024)
        except wire.HttpError as err:
            assert err.status == status
        else:
            raise AssertionError(value)
