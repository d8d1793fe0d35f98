"""`sm serve` under hostile clients (issue 15, section 4): slow clients do not starve clients
with the token, request heads are bounded as a whole, bad `Content-Length`s answer 400, and
random request heads and bodies each get one well-formed HTTP answer. Real sockets against a
real `sm serve` process."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import urllib.parse
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path

import pytest
from defusedxml.ElementTree import fromstring
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sm import xmlrpc as smxml

from .conftest import Served

SLOW_CLIENTS = 200
PING = smxml.dumps_call("sm.ping", []).encode()


def _addr(served: Served) -> tuple[str, int]:
    url = urllib.parse.urlparse(served.address)
    assert url.hostname and url.port
    return url.hostname, url.port


def _ping(served: Served, conn: http.client.HTTPConnection | None = None) -> float:
    """One `sm.ping` with the token on a new (or the given) connection; seconds it took."""
    start = time.monotonic()
    conn = conn or http.client.HTTPConnection(*_addr(served), timeout=10)
    conn.request("POST", "/", body=PING, headers={"Authorization": f"Bearer {served.token}",
                                                 "Content-Type": "text/xml"})
    response = conn.getresponse()
    assert response.status == 200
    assert xmlrpc.client.loads(response.read())[0] == ("pong",)
    return time.monotonic() - start


class Slowloris:
    """`n` connections without the token, each sending its head one line every `every`
    seconds, reconnecting when the server closes it; counts 408 answers."""

    def __init__(self, address: tuple[str, int], n: int, every: float = 0.2) -> None:
        self.address, self.n, self.every = address, n, every
        self.stop = threading.Event()
        self.timeouts = 0
        self.closed = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.opened = threading.Event()

    def _open(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=5)
        sock.sendall(b"POST / HTTP/1.1\r\nHost: sm\r\n")
        sock.setblocking(False)
        return sock

    def run(self) -> None:
        socks = [self._open() for _ in range(self.n)]
        self.opened.set()
        while not self.stop.wait(self.every):
            for i, sock in enumerate(socks):
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    data = None
                except OSError:
                    data = b""
                if data is not None:  # answered (408) or closed: the head took too long
                    self.timeouts += data.startswith(b"HTTP/1.1 408")
                    self.closed += 1
                    sock.close()
                    socks[i] = self._open()
                    continue
                try:
                    sock.send(b"X-Slow: one more line\r\n")
                except OSError:
                    pass
        for sock in socks:
            sock.close()


def test_slow_clients_do_not_starve_clients_with_the_token(
        serve: Callable[..., Served]) -> None:
    """200 clients sending their heads a line at a time (each line well within any per-line
    timeout) neither fill the 4 workers nor block accept: 5 pings, each on a new connection,
    and 5 on one kept-alive connection, are each answered within 1 s (the bound issue 15 asks
    for). The slow heads are cut when the whole head has taken --head-timeout."""
    server = serve("--listen", "127.0.0.1:0", "--max-connections", "4",
                   "--head-timeout", "1.5")
    attack = Slowloris(_addr(server), SLOW_CLIENTS)
    attack.thread.start()
    try:
        assert attack.opened.wait(30)
        time.sleep(0.3)
        kept = http.client.HTTPConnection(*_addr(server), timeout=10)
        for _ in range(5):
            assert _ping(server) < 1.0
            assert _ping(server, kept) < 1.0
            time.sleep(0.3)
        deadline = time.monotonic() + 10
        while attack.closed < SLOW_CLIENTS and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        attack.stop.set()
        attack.thread.join(30)
    # Every slow head was cut although each of its lines came within 0.2 s.
    assert attack.closed >= SLOW_CLIENTS
    assert attack.timeouts >= SLOW_CLIENTS // 2
    assert _ping(server) < 1.0
    assert "Traceback" not in server.log_file.read_text()


def _exchange(served: Served, data: bytes) -> tuple[int, bytes, bytes]:
    """Send `data`, read one answer; (status, body, what follows until the server closes)."""
    sock = socket.create_connection(_addr(served), timeout=10)
    try:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
        rest = b""
        if response.will_close:
            while chunk := sock.recv(65536):  # a reset raises here: the close must be clean
                rest += chunk
        return response.status, body, rest
    finally:
        sock.close()


BAD_LENGTHS = ["²", "-1", "9" * 5000, "+5", "5 5", "0x10", "1e3", "\u0663", "", "5,5",
               "99999999999999999999"]


def test_bad_content_length_answers_400(serve: Callable[..., Served]) -> None:
    server = serve("--listen", "127.0.0.1:0")
    for value in BAD_LENGTHS:
        head = (f"POST / HTTP/1.1\r\nHost: sm\r\nAuthorization: Bearer {server.token}\r\n"
                f"Content-Length: {value}\r\n\r\n").encode()
        status, body, rest = _exchange(server, head + PING)
        assert status == 400, (value[:20], status, body)
        assert b"Content-Length" in body and rest == b""
    # Two different lengths, or a length with Transfer-Encoding: refused, not guessed.
    for extra in ("Content-Length: 5\r\nContent-Length: 6\r\n",
                  f"Content-Length: {len(PING)}\r\nTransfer-Encoding: chunked\r\n"):
        head = (f"POST / HTTP/1.1\r\nAuthorization: Bearer {server.token}\r\n{extra}\r\n")
        assert _exchange(server, head.encode() + PING)[0] in (400, 411)
    assert _ping(server) < 10
    server.stop()
    _, err = server.proc.communicate(timeout=10)
    assert b"Traceback" not in err
    assert "Traceback" not in server.log_file.read_text()


ANSWERS = {200, 400, 401, 405, 408, 411, 413, 417, 431, 505}

_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=40)
_header = st.one_of(
    st.tuples(st.sampled_from(["Content-Type", "Connection", "Expect", "Host", "X-A",
                               "Transfer-Encoding", "Authorization", "Bad Name", ""]), _text),
    st.tuples(_text, _text),
    st.just(("Content-Length", "\u00b2")),
    st.just(("Content-Length", "-3")),
    st.just(("Content-Length", "7" * 30)),
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """A complete head (random request line and headers, the token or not, a Content-Length
    that is exact, absent or malformed) and a random body."""
    method = draw(st.sampled_from(["POST", "GET", "PUT", "post", "P\u00d6ST", "", "POST POST"]))
    target = draw(st.sampled_from(["/", "/RPC2", "/smapiv1/file", "/smapiv1/nope", "/x/y/z",
                                   "", "*", "/\u00e9"]))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x", "HTTP",
                                    "http/1.1"]))
    body = draw(st.one_of(
        st.binary(max_size=200),
        st.sampled_from([PING, smxml.dumps_call("vdi.read", ["x", -1, 5]).encode(),
                         b"<methodCall><methodName>\xc3\xa9</methodName></methodCall>"])))
    headers = draw(st.lists(_header, max_size=6))
    if draw(st.booleans()):
        headers.append(("Authorization", f"Bearer {draw(st.just('TOKEN'))}"))
    if draw(st.booleans()):
        headers.append(("Content-Length", str(len(body))))
    lines = [f"{method} {target} {version}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def test_random_heads_and_bodies_get_one_well_formed_answer(
        serve: Callable[..., Served]) -> None:
    server = serve("--listen", "127.0.0.1:0")
    token = server.token.encode()

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(requests())
    def one(request: bytes) -> None:
        status, body, _ = _exchange(server, request.replace(b"TOKEN", token))
        assert status in ANSWERS, (status, body[:200])
        if status == 200:
            fromstring(body)  # well-formed XML (defusedxml)
            with pytest.raises(xmlrpc.client.Fault) if b"<fault>" in body else contextlib.nullcontext():
                xmlrpc.client.loads(body)
        else:
            assert body.endswith(b"\n") and b"Traceback" not in body

    one()
    assert _ping(server) < 10
    server.stop()
    _, err = server.proc.communicate(timeout=10)
    assert b"Traceback" not in err
    assert "Traceback" not in server.log_file.read_text()



def test_numbers_and_names_are_checked_before_anything_runs(serve: Callable[..., Served],
                                                            tmp_path: Path) -> None:
    """Every integer parameter is a size, an offset or a length (0 to 2^63-1, ASCII digits
    when sent as a string), and names follow sm.api.checks: InvalidArg (1), never 202/1200."""
    server = serve("--listen", "127.0.0.1:0")
    api = server.client()
    api.vdi.create("1048576", "d")
    calls: list[tuple[str, tuple[object, ...]]] = [
        ("vdi.read", ("d", 0, -5)), ("vdi.read", ("d", -1, 5)), ("vdi.read", ("d", "²", "5")),
        ("vdi.read", ("d", "0", "9" * 30)), ("vdi.read", ("d", True, 5)),
        ("vdi.read", ("d", 1.5, 5)), ("vdi.read", ("d", "\u0663", 5)),
        ("vdi.write", ("d", -1, b"x")), ("vdi.write", ("d", "-0", b"x")),
        ("vdi.create", ("-1",)), ("vdi.create", ("9" * 5000,)),
        ("vdi.resize", ("d", "9223372036854775808")), ("vdi.resize", ("d", -1)),
        ("vdi.create", ("1048576", "a/b")), ("vdi.create", ("1048576", "c1\x85")),
        ("sr.create", ("", "file", {"location": str(tmp_path / "x")})),
        ("sr.create", ("x", "file", {"location": str(tmp_path / "x"), "n": 5})),
        ("sr.create", ("x", "file", {"location": str(tmp_path / "x")}, {"size": "-1"})),
        ("vm.create", ("a/b",)),
    ]
    for method, params in calls:
        with pytest.raises(xmlrpc.client.Fault) as err:
            getattr(api, method)(*params)
        assert err.value.faultCode == 1, (method, params, err.value.faultString)
    assert api.vdi.read("d", "0", "4") == b"\0" * 4
    assert [s["name"] for s in api.sr.list()] == ["default"]
    assert not (tmp_path / "x").exists()
    assert "fault 1200" not in server.log_file.read_text()


def test_more_clients_than_workers_all_get_answers(serve: Callable[..., Served]) -> None:
    """16 kept-alive clients calling at once against 2 workers: requests wait for a worker
    (workers idle on a kept-alive connection give way), none is refused or lost."""
    server = serve("--listen", "127.0.0.1:0", "--max-connections", "2")
    calls, errors = [0] * 16, []
    deadline = time.monotonic() + 2.0

    def client(i: int) -> None:
        api = server.client()
        try:
            while time.monotonic() < deadline:
                assert api.sm.ping() == "pong"
                assert api.sr.get("default")["name"] == "default"
                calls[i] += 1
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and all(calls), (errors, calls)
