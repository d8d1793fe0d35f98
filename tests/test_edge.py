"""The error edge (`sm.edge`): every source's failures map to the SM error the table in
docs/design.md ("The error edge") documents.

Errors come from the real components where a test can make them fail cheaply: the VHD engine on
damaged images, the OS (/dev/full, an offset past off_t, a missing file), lvm2 commands run
against a VG that does not exist, nbdkit serving read-only, a control socket with no server or a
server refusing. The rest (EROFS, EIO, EDQUOT, EFBIG, a full LV under the engine, Ceph's
answers) are instances of the real exception classes (the Ceph bindings' own classes).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sm import edge, vhd
from sm.capabilities import Capability
from sm.dispatch import respond
from sm.driver import SRDriver
from sm.errors import (
    LVMCreate,
    SMError,
    SRScan,
    VDIInUse,
    VDIResize,
    VDISnapshot,
    VDIUnavailable,
)
from sm.nbd import control
from tests.conftest import require_root, require_tool
from tests.smtest import call, fault

MiB = 1024 * 1024


def _code(err: BaseException, fallback: type[SMError] = VDISnapshot, **kw: Any) -> int:
    """The SM error number `err` answers inside ``errors_as(fallback)`` (and checks the rest of
    the contract: the message names what was being done and the cause is chained)."""
    with pytest.raises(SMError) as info, edge.errors_as(fallback, "doing x", **kw):
        raise err
    assert "doing x: " in info.value.message
    assert info.value.__cause__ is err
    return info.value.code


def _raised(fn: Callable[[], object]) -> BaseException:
    try:
        fn()
    except BaseException as err:  # the component's own error, whatever it is
        return err
    raise AssertionError("the component did not fail")


# -- OS ---------------------------------------------------------------------------------------


def _write_dev_full() -> None:
    with open("/dev/full", "wb", buffering=0) as f:
        f.write(b"x")


def test_os_errors(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        past_off_t = _raised(lambda: os.pread(fd, 1, 2**64))
    finally:
        os.close(fd)
    assert isinstance(past_off_t, OverflowError)
    cases = {
        _raised(_write_dev_full): 44,                       # ENOSPC, from the kernel
        OSError(errno.EDQUOT, "Disk quota exceeded"): 44,
        OSError(errno.EROFS, "Read-only file system"): 47,
        OSError(errno.EIO, "Input/output error"): 200,
        OSError(errno.EFBIG, "File too large"): 79,
        past_off_t: 79,
        _raised(lambda: os.stat(tmp_path / "missing")): VDISnapshot.code,  # the operation's
    }
    for err, code in cases.items():
        assert _code(err) == code, err
    ro = edge.to_sm_error(OSError(errno.EROFS, "Read-only file system"), what="vdi_create")
    assert ro is not None and "read-only" in ro.message and ro.message.startswith("vdi_create")
    # without a fallback only what means the same whatever the operation is answered
    assert edge.to_sm_error(FileNotFoundError(errno.ENOENT, "gone")) is None
    assert edge.from_os_error(OSError(errno.ENOSPC, "full")).code == 44  # type: ignore[union-attr]


# -- the VHD engine ---------------------------------------------------------------------------


def test_engine_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.vhd"
    garbage.write_bytes(b"x" * 4096)
    parent, child = str(tmp_path / "p.vhd"), str(tmp_path / "c.vhd")
    vhd.create(parent, MiB)
    vhd.snapshot(parent, child)
    os.unlink(parent)
    cases = {
        _raised(lambda: vhd.info(str(garbage))): 65,                        # VhdFormatError
        _raised(lambda: vhd.chain(child)): 65,                              # VhdChainError
        _raised(lambda: vhd.create(str(tmp_path / "big.vhd"), 3000 * 1024**3)): 79,  # unsupported
        vhd.VhdNoSpaceError("LV VHD-x is full"): 44,
        vhd.VhdError("something else"): 200,
    }
    for err, code in cases.items():
        assert isinstance(err, vhd.VhdError)
        assert _code(err) == code, err
        assert edge.to_sm_error(err) is not None  # the same without a fallback (dispatcher)
    with pytest.raises(SMError) as info, edge.errors_as(SRScan, "reading x"):
        vhd.info(str(garbage))
    assert "bad cookie" in info.value.message and "footer.cookie" in info.value.message


# -- lvm2 and other programs ------------------------------------------------------------------


@pytest.fixture
def lvm(tmp_path: Path) -> Any:
    """lvm2 with an isolated configuration that accepts no device: every VG is missing."""
    require_root()
    require_tool("lvm")
    from sm.executor import SubprocessExecutor
    from srtypes.lvhd.lvm import Lvm, write_config

    write_config(tmp_path / "lvm", accept_devices=[])
    return Lvm(SubprocessExecutor(default_timeout=60), tmp_path / "lvm")


def test_lvm_errors(lvm: Any) -> None:
    from srtypes.lvhd.lvm import LvmError

    vg = "VG_XenStorage-missing"
    cases = {
        "lvcreate": (lambda: lvm.lvcreate(vg, "VHD-x", 4 * MiB), 50),
        "lvremove": (lambda: lvm.lvremove(vg, "VHD-x"), 51),
        "lvrename": (lambda: lvm.lvrename(vg, "VHD-x", "VHD-y"), 54),
        "vgs": (lambda: lvm.vgs(vg), VDIResize.code),  # no entry: the operation's error
    }
    for command, (run, code) in cases.items():
        err = _raised(run)
        assert isinstance(err, LvmError) and err.command == command, err
        assert _code(err, VDIResize) == code, command
        sm_err = err.to_sm_error()  # the table's answer, SMGeneral 202 where it has none
        assert sm_err.code == (code if code != VDIResize.code else 202), command
        assert "not found" in sm_err.message and sm_err.details["argv"].startswith(command)
    # the table applies to the executor's errors as such (lvm2 run by anyone)
    from sm.executor import CommandError, SubprocessExecutor

    lvs = _raised(lambda: SubprocessExecutor().run(["lvcreate", "--config", "bad{", "x"]))
    assert isinstance(lvs, CommandError) and not isinstance(lvs, LvmError)
    assert _code(lvs) == LVMCreate.code
    other = _raised(lambda: SubprocessExecutor().run(["false"]))
    assert _code(other) == VDISnapshot.code
    assert edge.to_sm_error(other) is None  # the dispatcher: left as it is (1200)


# -- Ceph -------------------------------------------------------------------------------------


@pytest.fixture
def ceph() -> tuple[Any, Any]:
    from srtypes.rbd.ceph import CephUnavailable, load

    try:
        return load()
    except CephUnavailable as err:
        pytest.skip(str(err))


def test_ceph_errors(ceph: tuple[Any, Any]) -> None:
    rados, rbd = ceph
    cases = {
        rados.TimedOut("timed out", errno=errno.ETIMEDOUT): 47,
        rbd.Timeout("timed out", errno=errno.ETIMEDOUT): 47,
        rados.ConnectionShutdown("shut down", errno=errno.ESHUTDOWN): 47,
        rados.OSError("refused", errno=-errno.ECONNREFUSED): 47,  # librados' negative errnos
        rados.NoSpace("full", errno=errno.ENOSPC): 44,
        rbd.DiskQuotaExceeded("quota", errno=errno.EDQUOT): 44,
        rbd.ImageNotFound("no image", errno=errno.ENOENT): 144,
        rados.ObjectNotFound("no object", errno=errno.ENOENT): 144,
        rbd.ImageBusy("busy", errno=errno.EBUSY): 24,
        rbd.InvalidArgument("bad", errno=errno.EINVAL): VDISnapshot.code,
        rados.Error("other"): VDISnapshot.code,
    }
    for err, code in cases.items():
        assert _code(err) == code, err
    timeout = edge.to_sm_error(rados.TimedOut("t", errno=errno.ETIMEDOUT), what="listing")
    assert timeout is not None and "did not answer" in timeout.message
    assert "TimedOut" in timeout.message
    # the RBD SR's name for the edge reads OSErrors as the cluster's answers
    from srtypes.rbd.conn import ceph_errors

    with pytest.raises(SMError) as info, ceph_errors(VDIResize, "resize of x"):
        raise FileNotFoundError(errno.ENOENT, "no such image")
    assert info.value.code == 144
    assert _code(OSError(errno.EBUSY, "busy"), cluster=True) == VDIInUse.code
    assert _code(OSError(errno.EBUSY, "busy")) == VDISnapshot.code  # a local file: not 24


# -- NBD --------------------------------------------------------------------------------------


@pytest.fixture
def control_server(tmp_path: Path) -> Iterator[str]:
    """A real control server whose `pause` is refused."""

    def refuse(req: Any) -> dict[str, Any]:
        raise RuntimeError("3 requests still in flight after 60 s")

    path = str(tmp_path / "ctl")
    srv = control.ControlServer(path, {"pause": refuse, "status": lambda req: {"ok": 1}})
    srv.start()
    try:
        yield path
    finally:
        srv.stop()


def test_nbd_control_errors(tmp_path: Path, control_server: str) -> None:
    from sm.nbd import server

    gone = _raised(lambda: control.call(str(tmp_path / "none"), "status", timeout=5))
    assert isinstance(gone, control.ControlUnavailable)
    refused = _raised(lambda: control.call(control_server, "pause", timeout=5))
    assert type(refused) is control.ControlError
    assert _code(gone) == 46
    assert _code(refused) == VDISnapshot.code
    # the data path's own calls go through the edge: 46 without a server, 202 when refused
    info = server.ServerInfo(vdi_uuid="v1", socket="", export_name="", pid=0,
                             control=str(tmp_path / "none"), leaf_path="", writable=False,
                             log="")
    with pytest.raises(VDIUnavailable, match="status of the data path of VDI v1: the server"):
        server.status(info)
    with pytest.raises(SMError) as err:
        server.pause(dataclasses.replace(info, control=control_server), timeout=5)
    assert err.value.code == 202 and "in flight" in err.value.message
    assert "pause of the data path of VDI v1" in err.value.message


def test_nbd_client_error(tmp_path: Path) -> None:
    require_tool("nbdkit")
    from sm.nbd.client import NbdClient, NbdError

    sock, pidfile = str(tmp_path / "ro.sock"), str(tmp_path / "ro.pid")
    proc = subprocess.Popen(["nbdkit", "-f", "-r", "-U", sock, "-P", pidfile, "memory",
                             "size=1M"], stderr=subprocess.PIPE)
    try:
        ready = threading.Event()
        for _ in range(500):
            if os.path.exists(pidfile):
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            ready.wait(0.01)
        with NbdClient(sock) as client:
            err = _raised(lambda: client.write(0, b"x" * 512))
    finally:
        proc.terminate()
        proc.wait(10)
    assert isinstance(err, NbdError) and err.errno == errno.EPERM, err
    assert _code(err, VDIResize) == 46


# -- the contract of the edge -----------------------------------------------------------------


def test_passes_sm_errors_and_unknown_errors() -> None:
    own = VDIInUse("mine")
    with pytest.raises(VDIInUse) as info, edge.errors_as(VDISnapshot, "x"):
        raise own
    assert info.value is own
    with pytest.raises(RuntimeError), edge.errors_as(VDISnapshot, "x"):
        raise RuntimeError("a bug stays a bug")
    with pytest.raises(KeyboardInterrupt), edge.errors_as(VDISnapshot, "x"):
        raise KeyboardInterrupt
    assert edge.to_sm_error(own) is None


def test_old_names_are_the_edge() -> None:
    from srtypes.file.edge import engine_errors

    assert engine_errors is edge.errors_as


class _Failing(SRDriver):
    """sr_probe fails with the component error its device_config names."""

    TYPE = "failing"
    CAPABILITIES = frozenset({Capability.SR_PROBE})

    def sr_probe(self, request: Any) -> str:
        kind = request.device_config["kind"]
        if kind == "engine":
            raise vhd.VhdFormatError("bad cookie", field="footer.cookie", offset=0, path="/x")
        if kind == "lvm":
            from srtypes.lvhd.lvm import LvmError

            raise LvmError(["lvcreate", "--yes", "VG/x"], 5, b"  Insufficient free space")
        if kind == "os":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise RuntimeError("a bug")


@pytest.mark.parametrize(("kind", "code", "text"), [
    ("engine", 65, "bad cookie"), ("lvm", 50, "Insufficient free space"),
    ("os", 44, "No space left"), ("bug", 1200, "RuntimeError"),
])
def test_dispatcher_applies_the_edge(kind: str, code: int, text: str) -> None:
    err = fault(respond(_Failing, call("sr_probe", device_config={"kind": kind})))
    assert err.faultCode == code and text in err.faultString
    assert "[opterr=sr_probe: " in err.faultString or code == 1200


def test_import_loads_no_component() -> None:
    """Drivers import the edge on every command: it must load none of the components."""
    code = ("import sys, sm.edge; bad = [m for m in ('rados', 'rbd', 'sm.vhd', 'sm.executor', "
            "'sm.nbd', 'dataclasses', 'logging') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]", out
