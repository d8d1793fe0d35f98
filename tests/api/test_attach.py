"""`sm vdi attach` / `detach` (issue 16, workflows): a VDI served over NBD through the driver's
own data path until detached; read with qemu-io and nbdinfo through the printed URL; this
layer's reads and writes meanwhile go through the same attachment."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sm.api import StorageManager
from sm.errors import VDIInUse, VDIUnavailable
from tests.conftest import require_tool

from .conftest import new_sr, run_sm

MiB = 1 << 20


def _qemu_io(url: str, command: str, *, read_only: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-io", *(["-r"] if read_only else []), "-f", "raw", "-c", command,
                           url], capture_output=True, text=True, timeout=60, check=False)


def _served(url: str) -> bool:
    return subprocess.run(["nbdinfo", "--size", url], capture_output=True,
                          timeout=60, check=False).returncode == 0


@pytest.mark.nbd
def test_attach_serves_until_detach(env: dict[str, str], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    require_tool("nbdkit", "qemu-io", "nbdinfo")
    monkeypatch.setenv("SM_RUN_DIR", env["SM_RUN_DIR"])
    with StorageManager(environ=env) as sm:
        sr = new_sr(sm, "file", tmp_path, "fs")
        disk = sm.vdi_create(16 * MiB, "disk1", sr=sr).uuid
        sm.vdi_write(disk, MiB, b"\x5a" * 4096, sr=sr)
        export = sm.vdi_attach(disk, sr=sr)
        assert export.url.startswith(f"nbd+unix:///{disk}?socket=") and not export.writable
        size = subprocess.run(["nbdinfo", "--size", export.url], capture_output=True, text=True,
                              check=True).stdout.strip()
        assert int(size) == 16 * MiB
        read = _qemu_io(export.url, f"read -P 0x5a {MiB} 4k")
        assert read.returncode == 0 and "Pattern verification failed" not in read.stdout, read
        assert sm.vdi_attach(disk, sr=sr) == export  # again: the same
        with pytest.raises(VDIInUse, match="read-only"):
            sm.vdi_attach(disk, writable=True, sr=sr)
        with pytest.raises(VDIInUse, match="read-only"):
            sm.vdi_write(disk, 0, b"x", sr=sr)
        assert sm.vdi_read(disk, MiB, 2, sr=sr) == b"ZZ"  # through the attachment
        assert _served(export.url)  # ... which is still there
        assert [e.uuid for e in sm.vdi_attachments()] == [disk]
        sm.vdi_detach(disk, sr=sr)
        assert not _served(export.url) and sm.vdi_attachments() == []
        with pytest.raises(VDIUnavailable, match="not attached"):
            sm.vdi_detach(disk, sr=sr)

        writable = sm.vdi_attach(disk, writable=True, sr=sr)
        wrote = _qemu_io(writable.url, "write -P 0x77 0 64k", read_only=False)
        assert wrote.returncode == 0, wrote
        sm.vdi_write(disk, 65536, b"tail", sr=sr)  # paused server, written here, resumed
        assert _qemu_io(writable.url, "read -P 0x77 0 64k").returncode == 0
        sm.vdi_detach(disk, sr=sr)
        assert sm.vdi_read(disk, 0, 2, sr=sr) == b"ww"
        assert sm.vdi_read(disk, 65536, 4, sr=sr) == b"tail"

        snap = sm.vdi_snapshot(disk, "s", sr=sr).uuid
        with pytest.raises(VDIUnavailable, match="snapshot"):
            sm.vdi_attach(snap, writable=True, sr=sr)


def test_attach_without_a_data_path_says_why(manager: StorageManager, tmp_path: Path) -> None:
    sm = manager  # the suite runs File SR attaches without NBD here (SM_DATA_PATH=none)
    sr = new_sr(sm, "file", tmp_path, "fs")
    disk = sm.vdi_create(MiB, "d", sr=sr).uuid
    with pytest.raises(VDIUnavailable, match="SM_DATA_PATH=none"):
        sm.vdi_attach(disk, sr=sr)
    assert sm.vdi_attachments() == []
    sm.vdi_write(disk, 0, b"ok", sr=sr)  # not left attached


@pytest.mark.nbd
def test_cli_attach_prints_the_url(env: dict[str, str], tmp_path: Path) -> None:
    require_tool("nbdkit", "nbdinfo")
    assert run_sm(env, "vdi", "create", "d", "--size", "4M").returncode == 0
    out = run_sm(env, "vdi", "attach", "d")
    assert out.returncode == 0, out.stderr
    url = out.stdout.decode().strip()
    assert url.startswith("nbd+unix:///") and _served(url)
    listed: Any = json.loads(run_sm(env, "vdi", "attachments", "--json").stdout)
    assert [e["url"] for e in listed] == [url]
    assert run_sm(env, "vdi", "detach", "d").returncode == 0
    assert not _served(url)


@pytest.mark.nbd
def test_an_interrupted_attach_can_be_detached(env: dict[str, str], tmp_path: Path) -> None:
    require_tool("nbdkit")
    from sm.faults import crash_env

    assert run_sm(env, "vdi", "create", "d", "--size", "4M").returncode == 0
    crashed = run_sm(env, "vdi", "attach", "d", "--writable",
                     extra=crash_env("api.attach.attached"))
    assert crashed.returncode == -9, crashed.stderr
    listed: Any = json.loads(run_sm(env, "vdi", "attachments", "--json").stdout)
    assert [e["url"] for e in listed] == [""]  # recorded before the driver was asked
    blocked = run_sm(env, "vdi", "write", "d", "x")
    assert blocked.returncode == 1 and b"interrupted" in blocked.stderr
    assert run_sm(env, "vdi", "detach", "d").returncode == 0
    assert run_sm(env, "vdi", "write", "d", "x").returncode == 0  # its server is gone
    again = run_sm(env, "vdi", "attach", "d")
    assert again.returncode == 0 and _served(again.stdout.decode().strip())
    assert run_sm(env, "vdi", "detach", "d").returncode == 0
