"""`sm serve`: token, limits, hostile XML, TLS, Unix socket, the SMAPIv1 endpoint, and 16
`xmlrpc.client` clients doing snapshot/revert cycles at once."""

from __future__ import annotations

import http.client
import os
import stat
import subprocess
import threading
import time
import urllib.parse
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path

import pytest

from sm import locking
from sm import xmlrpc as smxml
from sm.api import StorageManager

from .conftest import Served, start_server

MiB = 1024 * 1024


def _post(served: Served, body: bytes, *, token: str | None = "", path: str = "/",
          headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    url = urllib.parse.urlparse(served.address)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    sent = {"Content-Type": "text/xml", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {served.token if token == '' else token}"
    conn.request("POST", path, body=body, headers=sent)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def _fault(data: bytes) -> xmlrpc.client.Fault:
    with pytest.raises(xmlrpc.client.Fault) as err:
        xmlrpc.client.loads(data.decode())
    return err.value


def test_token_required(server: Served, env: dict[str, str], tmp_path: Path) -> None:
    assert stat.S_IMODE(os.stat(server.token_file).st_mode) == 0o600
    assert len(server.token) >= 32
    assert server.client().sm.ping() == "pong"
    for token in (None, "wrong-token-wrong-token", server.token[:-1]):
        with pytest.raises(xmlrpc.client.ProtocolError) as err:
            server.client(token).sm.ping()
        assert err.value.errcode == 401
    # HTTP Basic with the token as password: what `http://user:TOKEN@host/` sends.
    host = server.address.removeprefix("http://")
    basic = xmlrpc.client.ServerProxy(f"http://sm:{server.token}@{host}")
    assert basic.sm.ping() == "pong"
    # The same token at the next start; a token file others can read is refused.
    server.stop()
    again = start_server(env, tmp_path, "--listen", "127.0.0.1:0")
    try:
        assert again.token == server.token and again.client(server.token).sm.ping() == "pong"
    finally:
        again.stop()
    os.chmod(server.token_file, 0o644)
    with pytest.raises(AssertionError, match="accessible by group/others"):
        start_server(env, tmp_path, "--listen", "127.0.0.1:0")
    log = server.log_file.read_text()
    assert "sm.ping ok" in log and "401 token missing or wrong" in log


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<methodCall><methodName>vdi.get</methodName><params><param><value>&lol4;</value></param>
</params></methodCall>"""

EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<methodCall><methodName>vdi.get</methodName><params><param><value>&xxe;</value></param>
</params></methodCall>"""


def test_hostile_and_oversized_requests(serve: Callable[..., Served]) -> None:
    server = serve("--listen", "127.0.0.1:0", "--max-request-bytes", "4096")
    for doc in (BILLION_LAUGHS, EXTERNAL, b"<methodCall><methodName>x</methodName>",
                b"<?xml version='1.0'?><methodResponse/>"):
        status, data = _post(server, doc)
        assert status == 200
        fault = _fault(data)
        assert fault.faultCode == 143, fault.faultString
        assert b"root:" not in data and b"lollol" not in data
    big = smxml.dumps_call("vdi.write", ["d", 0, b"x" * 8192]).encode()
    status, data = _post(server, big)
    assert status == 413 and b"larger than the 4096 allowed" in data
    status, _ = _post(server, BILLION_LAUGHS, token=None)
    assert status == 401  # refused before the body is looked at
    status, _ = _post(server, b"", headers={"Transfer-Encoding": "chunked"})
    assert status == 411
    # Deeply nested values are refused by the parser's depth limit.
    deep = (b"<methodCall><methodName>sm.ping</methodName><params><param>"
            + b"<value><array><data>" * 40 + b"</data></array></value>" * 40
            + b"</param></params></methodCall>")
    assert _fault(_post(server, deep)[1]).faultCode == 143
    assert server.client().sm.ping() == "pong"  # still serving
    log = server.log_file.read_text()
    assert "fault 143 BadRequest" in log and "413" in log


def test_api_and_smapiv1_over_a_unix_socket(serve: Callable[..., Served],
                                            tmp_path: Path) -> None:
    sock = Path("/tmp") / f"sm-test-{os.getpid()}-{time.monotonic_ns()}.sock"
    server = serve("--socket", str(sock))
    try:
        assert server.address == f"unix:{sock}"
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        api = server.client()
        disk = api.vdi.create(1 * MiB, "disk1", "over xml-rpc")
        assert disk["name_label"] == "disk1" and disk["virtual_size"] == MiB
        api.vdi.write("disk1", 0, b"hello")
        snap = api.vdi.snapshot("disk1", "clean")
        api.vdi.write("disk1", 0, b"HELLO")
        assert api.vdi.revert("disk1", "clean", {"safety": True})["path"] == "in-place"
        assert api.vdi.read("disk1", 0, 5) == b"hello"
        assert api.vdi.tree("disk1")["current"] == snap["uuid"]
        assert [v["uuid"] for v in api.vdi.list({"hidden": False})
                if v["is_a_snapshot"]] == [snap["uuid"]]
        with pytest.raises(xmlrpc.client.Fault) as err:
            api.vdi.get("missing")
        assert err.value.faultCode == 144
        with pytest.raises(xmlrpc.client.Fault) as err:
            api.no.such.method()
        assert err.value.faultCode == 38
        with pytest.raises(xmlrpc.client.Fault) as err:
            api.vdi.read("disk1")  # the whole disk in one response: refused
        assert err.value.faultCode == 1 and "at most" in err.value.faultString
        assert "vm.snapshot" in api.system.listMethods()
        # SMAPIv1, as the API sends it, and as a raw driver document on /smapiv1/<type>.
        info = api.smapi.file.sr_get_driver_info({})
        assert info["name"] == "Local Path VHD" and "VDI_SNAPSHOT" in info["capabilities"]
        default = api.sr.get("default")
        records = api.smapi.file.sm_vdi_list({
            "sr_uuid": default["uuid"], "device_config": default["device_config"],
            "host_ref": "OpaqueRef:h", "session_ref": "OpaqueRef:s", "sr_ref": "OpaqueRef:r"})
        assert disk["uuid"] in {r["uuid"] for r in records}
        with pytest.raises(xmlrpc.client.Fault) as err:
            api.smapi.nosuchtype.sr_get_driver_info({})
        assert err.value.faultCode == 48
        server.stop()
        assert not sock.exists()  # removed at SIGTERM
    finally:
        server.stop()
        sock.unlink(missing_ok=True)


def test_tls(serve: Callable[..., Served], tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server = serve("--listen", "127.0.0.1:0", "--cert", str(cert), "--key", str(key))
    assert server.address.startswith("https://127.0.0.1:")
    assert server.client(cafile=str(cert)).sm.ping() == "pong"
    with pytest.raises(OSError):  # no CA given: the certificate is not trusted
        server.client().sm.ping()
    plain = xmlrpc.client.ServerProxy(server.address.replace("https", "http"))
    with pytest.raises((OSError, xmlrpc.client.ProtocolError, http.client.HTTPException)):
        plain.sm.ping()
    assert server.client(cafile=str(cert)).sm.ping() == "pong"


def test_non_loopback_needs_allow_remote_and_tls(env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="not a loopback address"):
        start_server(env, tmp_path, "--listen", "0.0.0.0:0")
    with pytest.raises(AssertionError, match="needs TLS"):
        start_server(env, tmp_path, "--listen", "0.0.0.0:0", "--allow-remote")


CLIENTS = 16
RUN_FOR = 3.0


def test_sixteen_clients_snapshot_and_revert_at_once(env: dict[str, str],
                                                     server: Served) -> None:
    """Each client owns a VM with one disk and runs cycles (write, VM snapshot, overwrite, VM
    revert, read back, delete) until the deadline; every cycle must read its own data back.
    Reads go on while the API lock is held elsewhere (they do not queue behind writers)."""
    with StorageManager(environ=env) as sm:
        for i in range(CLIENTS):
            sm.vdi_create(1 * MiB, f"disk{i}")
            sm.vm_create(f"vm{i}")
            sm.vm_add_disk(f"vm{i}", f"disk{i}")
        state_dir = sm.paths.state_dir
    errors: list[str] = []
    cycles = [0] * CLIENTS
    deadline = time.monotonic() + RUN_FOR
    start = threading.Barrier(CLIENTS)

    def worker(i: int) -> None:
        api = server.client()
        try:
            start.wait()
            n = 0
            while time.monotonic() < deadline:
                mine = f"client {i} cycle {n}".encode().ljust(48, b".")
                api.vdi.write(f"disk{i}", 0, mine)
                api.vm.snapshot(f"vm{i}", f"c{n}")
                api.vdi.write(f"disk{i}", 0, b"X" * 48)
                api.vm.revert(f"vm{i}", f"c{n}")
                got = api.vdi.read(f"disk{i}", 0, 48)
                if got != mine:
                    errors.append(f"client {i} cycle {n}: read {got!r}")
                api.vm.snapshot_delete(f"vm{i}", f"c{n}")
                n += 1
                cycles[i] = n
        except Exception as err:
            errors.append(f"client {i}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    reader = server.client()
    with locking.lock(state_dir / "api.lock", purpose="test holds the API lock"):
        assert reader.sm.ping() == "pong"
        assert len(reader.vm.list()) == CLIENTS  # answered while writers wait
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a client is stuck (deadlock?)"
    assert errors == []
    assert all(c >= 1 for c in cycles), cycles
    api = server.client()
    for i in range(CLIENTS):
        assert api.vm.snapshots(f"vm{i}")["roots"] == []
        assert api.vdi.tree(f"disk{i}")["roots"] == []
    assert not [v for v in api.vdi.list() if v["is_a_snapshot"]]
    with StorageManager(environ=env) as sm:
        assert sm.state.journal() == []
    served = server.log_file.read_text().count(" vm.revert ok ")
    assert served == sum(cycles)


def test_calls_wait_for_the_locks_the_cli_and_drivers_take(env: dict[str, str],
                                                         server: Served) -> None:
    """A driver command waits for the SR lock (held here as another `FileSR` process would
    hold it), an API write for the API state lock; other calls go on meanwhile."""
    api = server.client()
    disk = api.vdi.create(1 * MiB, "d")
    sr = api.sr.get("default")
    location = sr["device_config"]["location"]
    struct = {"sr_uuid": sr["uuid"], "sr_ref": "OpaqueRef:sr", "host_ref": "OpaqueRef:h",
              "session_ref": "OpaqueRef:s", "device_config": sr["device_config"],
              "vdi_uuid": disk["uuid"], "vdi_location": disk["location"],
              "vdi_ref": "OpaqueRef:v", "driver_params": {}}
    done: dict[str, object] = {}

    def later(name: str, call: Callable[[], object]) -> threading.Thread:
        thread = threading.Thread(target=lambda: done.__setitem__(name, call()))
        thread.start()
        return thread

    for lock, name, call in (
            (locking.sr_lock_path(location), "driver",
             lambda: server.client().smapi.file.vdi_snapshot(struct)),
            (Path(env["SM_HOME"]) / "state" / "api.lock", "api",
             lambda: server.client().vdi.snapshot("d", "s"))):
        with locking.lock(lock, purpose="test"):
            thread = later(name, call)
            time.sleep(1.0)
            assert thread.is_alive() and name not in done, f"{name} call ignored the lock"
            assert api.sm.ping() == "pong" and api.vdi.get("d")["uuid"] == disk["uuid"]
        thread.join(60)
        assert name in done
    assert len([v for v in api.vdi.list() if v["is_a_snapshot"]]) == 2
