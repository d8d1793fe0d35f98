"""Fixtures for the data-path tests: short run directories (Unix socket paths are limited to
107 bytes) and a session-wide writable server reused by the read/write tests."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_tool

SIZE = 64 * 1024 * 1024
RAW_OPENER = "tests.nbd.rawdisk:open_chain"


def nbd_tools() -> None:
    require_tool("nbdkit", "qemu-io", "qemu-img", "nbdinfo", "nbdcopy")
    if subprocess.run(["nbdkit", "python", "--dump-plugin"], capture_output=True).returncode:
        pytest.skip("nbdkit-plugin-python is not installed (scripts/setup.sh installs it)")


def qemu_io(url: str, *cmds: str, check: bool = True,
            readonly: bool = False) -> subprocess.CompletedProcess[str]:
    argv = ["qemu-io", "-f", "raw", *(["-r"] if readonly else [])]
    for c in cmds:
        argv += ["-c", c]
    proc = subprocess.run([*argv, url], capture_output=True, text=True, timeout=120)
    if check:
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "fail" not in out.lower() and "error" not in out.lower(), out
    return proc


def nbd_uri(sock: str, name: str) -> str:
    """libnbd's URI form (nbdinfo, nbdcopy)."""
    return f"nbd+unix:///{name}?socket={sock}"


def short_dir(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


@pytest.fixture
def run_dir() -> Iterator[str]:
    d = short_dir("smnbd-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def work_dir() -> Iterator[Path]:
    d = short_dir("smnbdw-")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@dataclass
class Served:
    info: object  # sm.nbd.server.ServerInfo
    leaf: str
    run_dir: str

    @property
    def url(self) -> str:
        return self.info.params_nbd  # type: ignore[attr-defined,no-any-return]

    @property
    def uri(self) -> str:
        return nbd_uri(self.info.socket, self.info.export_name)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def served() -> Iterator[Served]:
    """One writable 64 MiB dynamic VHD served for the whole session. Tests using it write
    only to their own 4 MiB slot (see `slot`)."""
    nbd_tools()
    import sm.vhd
    from sm.nbd import server

    d = short_dir("smnbds-")
    leaf = f"{d}/leaf.vhd"
    sm.vhd.create(leaf, SIZE)
    with pytest.MonkeyPatch.context() as mp:  # not one test's server (tests/conftest.py)
        mp.setenv("SM_TEST_TAG", "session")
        info = server.start(str(uuid.uuid4()), leaf, writable=True, run_dir=f"{d}/run")
    try:
        yield Served(info, leaf, f"{d}/run")
    finally:
        server.stop(info)
        shutil.rmtree(d, ignore_errors=True)


_slots = iter(range(1, SIZE // (4 << 20)))


@pytest.fixture
def slot() -> int:
    """A 4 MiB region of the session disk that no other test touches (slot 0 is shared)."""
    return next(_slots) * (4 << 20)
