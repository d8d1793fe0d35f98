"""sm.atomic: atomic replace, exclusive create, durable unlink, stale temporaries."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sm import atomic
from sm.faults import crash_env


def test_write_atomic_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic.write_atomic(target, b"one")
    assert target.read_bytes() == b"one"
    atomic.write_atomic(target, b"two" * 1000, mode=0o600)
    assert target.read_bytes() == b"two" * 1000
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path)) == ["f.json"]


def test_write_atomic_replaces_inode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic.write_atomic(target, b"a")
    with open(target, "rb") as old:
        atomic.write_atomic(target, b"b", sync=False)
        # An open reader keeps the old contents: the new ones arrived by rename.
        assert old.read() == b"a"
    assert target.read_bytes() == b"b"


def test_write_atomic_failure_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "dir-not-file"
    target.mkdir()
    with pytest.raises(OSError):
        atomic.write_atomic(target, b"x")
    assert os.listdir(tmp_path) == ["dir-not-file"]


def test_writer_killed_before_rename_keeps_old_contents(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic.write_atomic(target, b"old")
    # A child that dies right after writing its temporary file, before the rename.
    code = (
        "import sys, os\n"
        "from pathlib import Path\n"
        "from sm import atomic, faults\n"
        "real = atomic._write_temp\n"
        "def hooked(*a, **k):\n"
        "    tmp = real(*a, **k)\n"
        "    faults.crash_point('atomic.temp-written')\n"
        "    return tmp\n"
        "atomic._write_temp = hooked\n"
        "atomic.write_atomic(sys.argv[1], b'new')\n"
    )
    env = {**os.environ, **crash_env("atomic.temp-written")}
    proc = subprocess.run([sys.executable, "-c", code, str(target)], env=env, check=False)
    assert proc.returncode == -9
    assert target.read_bytes() == b"old"
    leftovers = [n for n in os.listdir(tmp_path) if atomic.is_temp_name(n)]
    assert len(leftovers) == 1
    assert atomic.remove_stale_temps(tmp_path) == []  # too young to be called stale
    old = time.time() - 3600
    os.utime(tmp_path / leftovers[0], (old, old))
    assert atomic.remove_stale_temps(tmp_path) == leftovers
    assert os.listdir(tmp_path) == ["f"]


def test_replace_atomic_across_directories(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    src = tmp_path / "a" / "x"
    src.write_bytes(b"payload")
    (tmp_path / "b" / "y").write_bytes(b"old")
    atomic.replace_atomic(src, tmp_path / "b" / "y")
    assert not src.exists()
    assert (tmp_path / "b" / "y").read_bytes() == b"payload"


def test_create_exclusive(tmp_path: Path) -> None:
    target = tmp_path / "marker"
    atomic.create_exclusive(target, b"first")
    with pytest.raises(FileExistsError):
        atomic.create_exclusive(target, b"second")
    assert target.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["marker"]


def test_open_exclusive(tmp_path: Path) -> None:
    target = tmp_path / "x"
    fd = atomic.open_exclusive(target)
    os.close(fd)
    with pytest.raises(FileExistsError):
        atomic.open_exclusive(target)


def test_unlink(tmp_path: Path) -> None:
    target = tmp_path / "x"
    target.write_bytes(b"")
    assert atomic.unlink(target) is True
    assert atomic.unlink(target, missing_ok=True) is False
    with pytest.raises(FileNotFoundError):
        atomic.unlink(target)


def test_fsync_dir(tmp_path: Path) -> None:
    atomic.fsync_dir(tmp_path)
    with pytest.raises(NotADirectoryError):
        (tmp_path / "f").write_bytes(b"")
        atomic.fsync_dir(tmp_path / "f")
