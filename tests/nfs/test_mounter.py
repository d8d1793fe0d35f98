"""Mounters: the kernel mounter's argv (this kernel has no NFS client) and the test-only bind
mounter for real, on a directory served by the real nfs-ganesha."""

from __future__ import annotations

import json
import uuid

import pytest

from sm import errors
from sm.executor import RecordingExecutor, SubprocessExecutor
from srtypes.nfs import server as nfs
from srtypes.nfs.mounter import (
    BIND_EXPORTS_ENV,
    BindMounter,
    KernelMounter,
    mount_points,
    select_mounter,
)
from tests.conftest import require_root

OPTS = "soft,proto=tcp,vers=3,timeo=200,retrans=4,acdirmin=0,acdirmax=0"


def test_kernel_mounter_argv(tmp_path):
    rec = RecordingExecutor().on(["mount"]).on(["umount"])
    m = KernelMounter(rec)
    m.mount("filer", "/srv/nfs/sr1", str(tmp_path), OPTS)
    m.mount("fd00::7", "/srv", str(tmp_path), OPTS.replace("vers=3", "vers=4.1"))
    m.unmount(str(tmp_path))
    assert rec.argvs == [
        ("mount", "-t", "nfs", "filer:/srv/nfs/sr1", str(tmp_path), "-o", OPTS),
        ("mount", "-t", "nfs", "[fd00::7]:/srv", str(tmp_path), "-o",
         OPTS.replace("vers=3", "vers=4.1")),
        ("umount", str(tmp_path)),
    ]
    assert all(c.timeout for c in rec.calls)  # never unbounded


def test_kernel_mounter_errors(tmp_path):
    rec = RecordingExecutor().on(["mount"], returncode=32, stderr="mount.nfs: access denied")
    rec.on(["umount"], returncode=32, stderr="umount: not mounted")
    m = KernelMounter(rec)
    with pytest.raises(errors.NFSMount, match="access denied") as info:
        m.mount("filer", "/srv", str(tmp_path), OPTS)
    assert info.value.code == 73
    with pytest.raises(errors.NFSUnMount, match="not mounted") as info2:
        m.unmount(str(tmp_path))
    assert info2.value.code == 74


def test_select_mounter():
    ex = RecordingExecutor()
    assert isinstance(select_mounter(ex, env={}), KernelMounter)
    chosen = select_mounter(ex, env={BIND_EXPORTS_ENV: json.dumps({"/e": "/srv/e"})})
    assert isinstance(chosen, BindMounter)
    with pytest.raises(errors.InvalidArg):
        select_mounter(ex, env={BIND_EXPORTS_ENV: "not json"})
    with pytest.raises(errors.InvalidArg):
        select_mounter(ex, env={BIND_EXPORTS_ENV: "[1]"})


def test_bind_mounter_local_path(tmp_path):
    m = BindMounter(RecordingExecutor(), {"/exp": tmp_path / "a", "/exp/deeper": tmp_path / "b"})
    assert m.local_path("127.0.0.1", "/exp") == tmp_path / "a"
    assert m.local_path("localhost", "/exp/x/y/") == tmp_path / "a" / "x" / "y"
    assert m.local_path("::1", "/exp/deeper/sr") == tmp_path / "b" / "sr"  # longest export wins
    with pytest.raises(errors.NFSMount):
        m.local_path("127.0.0.1", "/expo")
    with pytest.raises(errors.NFSMount, match="local servers"):
        m.local_path("filer.example", "/exp")


def test_bind_mounter_for_real(ganesha, tmp_path):
    """The SR directory is created THROUGH the server; the bind mount shows the same files the
    server serves, in both directions."""
    require_root()
    ex = SubprocessExecutor()
    base = ganesha.unique_dir()
    sr = str(uuid.uuid4())
    nfs.make_dir(ganesha.host, ganesha.export, f"{base}/{sr}")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    mounter = select_mounter(ex, env=ganesha.bind_exports_env)
    assert isinstance(mounter, BindMounter)
    assert not mounter.is_mounted(str(mountpoint))

    mounter.mount(ganesha.host, f"{ganesha.export}/{base}/{sr}", str(mountpoint), OPTS)
    try:
        assert mounter.is_mounted(str(mountpoint))
        assert str(mountpoint) in mount_points()
        (mountpoint / "disk.vhd").write_bytes(b"conectix")
        seen = nfs.list_dir(ganesha.host, ganesha.export, f"{base}/{sr}", version="4")
        assert [e.name for e in seen] == ["disk.vhd"]
        nfs.make_dir(ganesha.host, ganesha.export, f"{base}/{sr}/from-server")
        assert (mountpoint / "from-server").is_dir()
    finally:
        mounter.unmount(str(mountpoint))
    assert not mounter.is_mounted(str(mountpoint))
    assert list(mountpoint.iterdir()) == []


def test_bind_mounter_missing_sr_dir(ganesha, tmp_path):
    require_root()
    mounter = BindMounter(SubprocessExecutor(), ganesha.bind_exports)
    with pytest.raises(errors.NFSMount, match="no such directory"):
        mounter.mount(ganesha.host, f"{ganesha.export}/{uuid.uuid4()}", str(tmp_path), OPTS)


def test_unmount_not_mounted(tmp_path):
    require_root()
    with pytest.raises(errors.NFSUnMount):
        BindMounter(SubprocessExecutor(), {}).unmount(str(tmp_path))


def test_mount_points_unescapes(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "40 22 8:1 /x /mnt/with\\040space rw - ext4 /dev/sda1 rw\n"
    )
    assert mount_points(str(info)) == {"/", "/mnt/with space"}
