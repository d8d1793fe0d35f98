"""A file system of a given type on a loop device, mounted for one test (root only)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_root, require_tool

MKFS = {"ext4": ["mkfs.ext4", "-q", "-F"], "xfs": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
        "btrfs": ["mkfs.btrfs", "-q", "-f"]}


@contextlib.contextmanager
def loop_mount(tmp: Path, fstype: str, size: int) -> Iterator[Path]:
    require_root()
    require_tool(MKFS[fstype][0], "losetup", "mount")
    image, mnt = tmp / f"{fstype}.img", tmp / f"mnt-{fstype}"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(size)
    subprocess.run([*MKFS[fstype], str(image)], check=True, capture_output=True)
    proc = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True,
                          text=True)
    if proc.returncode:
        pytest.skip(f"cannot loop-mount {fstype}: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        with contextlib.suppress(OSError):
            os.unlink(image)
