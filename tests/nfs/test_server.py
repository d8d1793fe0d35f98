"""srtypes.nfs.server against the real nfs-ganesha test server."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import defusedxml.ElementTree as ET
import pytest

from sm import errors
from sm.executor import RecordingExecutor, SubprocessExecutor
from srtypes.nfs import server as nfs

EX = SubprocessExecutor()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_port():
    """A TCP port that accepts connections and never answers (a hung server)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    yield srv.getsockname()[1]
    srv.close()


@pytest.mark.parametrize("version", ["3", "4", "4.1"])
def test_reachable(ganesha, version):
    nfs.check_reachable(ganesha.host, version=version, timeout=5, executor=EX)


def test_reachable_explicit_port(ganesha):
    nfs.check_reachable(ganesha.host, version="4", port=2049, timeout=5, executor=EX)


@pytest.mark.parametrize("version", ["3", "4"])
def test_closed_port_is_nfs_target(closed_port, version):
    start = time.monotonic()
    with pytest.raises(errors.NFSTarget) as info:
        nfs.check_reachable("127.0.0.1", version=version, port=closed_port, timeout=3,
                            executor=EX)
    assert info.value.code == 108
    assert "127.0.0.1" in info.value.message
    assert time.monotonic() - start < 3


def test_silent_server_times_out(silent_port):
    start = time.monotonic()
    with pytest.raises(errors.NFSTarget, match="within 1 s"):
        nfs.check_reachable("127.0.0.1", version="4", port=silent_port, timeout=1, executor=EX)
    assert time.monotonic() - start < 5


def test_list_exports(ganesha):
    exports = nfs.list_exports(ganesha.host, executor=EX)
    # showmount's access column verbatim, as the original puts it in <Accesslist>.
    assert (ganesha.export, ["(everyone)"]) in exports
    assert all(isinstance(e, nfs.Export) for e in exports)


def test_exports_xml_from_real_server(ganesha):
    text = nfs.exports_xml(ganesha.host, nfs.list_exports(ganesha.host, executor=EX))
    root = ET.fromstring(text)
    assert root.tag == "nfs-exports"
    found = [
        (e.findtext("Target"), e.findtext("Path"), e.findtext("Accesslist"))
        for e in root.findall("Export")
    ]
    assert (ganesha.host, ganesha.export, "(everyone)") in found


def test_list_exports_unreachable():
    # The test server listens on 127.0.0.1 only: its mountd is not on 127.0.0.2.
    with pytest.raises(errors.NFSTarget):
        nfs.list_exports("127.0.0.2", timeout=5, executor=EX)


def test_supported_versions(ganesha):
    assert nfs.supported_versions(ganesha.host, executor=EX) == ["3", "4", "4.1"]


def test_supported_versions_unreachable(closed_port):
    # rpcbind (all addresses) may well answer here, so make rpcinfo fail like a dead host.
    rec = RecordingExecutor().on(["rpcinfo"], returncode=1, stderr="rpcinfo: can't contact")
    with pytest.raises(errors.NFSTarget, match="can't contact"):
        nfs.supported_versions("127.0.0.1", port=closed_port, timeout=2, executor=rec)


def test_supported_versions_v4_without_rpcbind(ganesha):
    # A v4 server need not register with rpcbind: found by calling its NFS port directly.
    rec = RecordingExecutor().on(["rpcinfo"], returncode=1, stderr="no rpcbind")
    assert nfs.supported_versions(ganesha.host, executor=rec) == ["4", "4.1"]


@pytest.mark.parametrize("version", ["3", "4", "4.1"])
def test_make_list_remove_dir(ganesha, version):
    base = ganesha.unique_dir()
    sr = str(uuid.uuid4())
    path = f"{base}/{sr}"
    nfs.make_dir(ganesha.host, ganesha.export, path, version=version)
    assert (ganesha.directory / base / sr).is_dir()  # really on the served directory
    (ganesha.directory / base / "not-an-sr").mkdir()
    (ganesha.directory / base / str(uuid.uuid4())).write_text("a file, not an SR")

    entries = nfs.list_dir(ganesha.host, ganesha.export, base, version=version)
    assert nfs.sr_uuids(entries) == [sr]

    with pytest.raises(errors.SRExists):
        nfs.make_dir(ganesha.host, ganesha.export, path, version=version)
    nfs.make_dir(ganesha.host, ganesha.export, path, exist_ok=True, version=version)

    (ganesha.directory / base / sr / "x.vhd").write_bytes(b"x")
    with pytest.raises(errors.SRNotEmpty):
        nfs.remove_dir(ganesha.host, ganesha.export, path, version=version)
    (ganesha.directory / base / sr / "x.vhd").unlink()
    nfs.remove_dir(ganesha.host, ganesha.export, path, version=version)
    assert not (ganesha.directory / base / sr).exists()

    with pytest.raises(errors.NFSDelete):
        nfs.remove_dir(ganesha.host, ganesha.export, path, version=version)
    nfs.remove_dir(ganesha.host, ganesha.export, path, missing_ok=True, version=version)


def test_make_dir_missing_parent(ganesha):
    with pytest.raises(errors.FileSRCreate):
        nfs.make_dir(ganesha.host, ganesha.export, f"no-such-{uuid.uuid4().hex}/sr")


def test_list_missing_dir(ganesha):
    with pytest.raises(errors.NFSMount):
        nfs.list_dir(ganesha.host, ganesha.export, f"no-such-{uuid.uuid4().hex}")


@pytest.mark.parametrize("version", ["3", "4"])
def test_missing_export(ganesha, version):
    with pytest.raises(errors.NFSMount):
        nfs.list_dir(ganesha.host, f"/no/such/export-{uuid.uuid4().hex}", version=version)


@pytest.mark.parametrize("version", ["3", "4"])
def test_dir_ops_closed_port(closed_port, version):
    with pytest.raises(errors.NFSTarget):
        nfs.list_dir("127.0.0.1", "/x", version=version, port=closed_port, timeout=2)


def test_dir_ops_silent_server(silent_port):
    start = time.monotonic()
    with pytest.raises(errors.NFSTarget):
        nfs.list_dir("127.0.0.1", "/x", version="4", port=silent_port, timeout=1)
    assert time.monotonic() - start < 5


def test_srlist_xml_from_real_dirs(ganesha):
    base = ganesha.unique_dir()
    uuids = sorted(str(uuid.uuid4()) for _ in range(3))
    for u in uuids:
        nfs.make_dir(ganesha.host, ganesha.export, f"{base}/{u}")
    found = nfs.sr_uuids(nfs.list_dir(ganesha.host, ganesha.export, base))
    root = ET.fromstring(nfs.srlist_xml(found, nfs.supported_versions(ganesha.host)))
    assert [sr.findtext("UUID") for sr in root.findall("SR")] == uuids
    assert [v.text for v in root.find("SupportedVersions")] == ["3", "4", "4.1"]


def _fake_nfs4_server(status: int):
    """Answers one RPC call with an accepted reply whose body starts with ``status``."""
    import struct

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        with conn:
            (mark,) = struct.unpack(">I", conn.recv(4))
            data = b""
            while len(data) < mark & 0x7FFFFFFF:
                data += conn.recv(4096)
            xid = data[:4]
            body = xid + struct.pack(">IIIIII", 1, 0, 0, 0, 0, status) + struct.pack(">II", 0, 0)
            conn.sendall(struct.pack(">I", 0x80000000 | len(body)) + body)

    threading.Thread(target=serve, daemon=True).start()
    return srv


@pytest.mark.parametrize(("status", "expected"), [(0, True), (10021, False)])
def test_minor_version_probe_answers(status, expected):
    from srtypes.nfs import rpc

    srv = _fake_nfs4_server(status)
    with srv:
        port = srv.getsockname()[1]
        assert rpc.nfs4_minor_version_supported("127.0.0.1", 1, port=port, timeout=2) is expected
