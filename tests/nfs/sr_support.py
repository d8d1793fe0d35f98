"""Helpers shared by the NFS SR tests and the contract suite's `nfs` entry."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from srtypes.nfs.mounter import BIND_EXPORTS_ENV, mount_points
from tests.nfs.conftest import Ganesha


def unmount_below(root: Path) -> None:
    """Unmount every mount point below `root` (the SR mounts a test left behind), deepest first."""
    prefix = os.path.realpath(root) + "/"
    for mp in sorted((m for m in mount_points() if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", mp], check=False, capture_output=True)


def bind_env(ganesha: Ganesha, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Select the test-only BindMounter for every transport; unmount leftovers afterwards."""
    monkeypatch.setenv(BIND_EXPORTS_ENV, ganesha.bind_exports_env[BIND_EXPORTS_ENV])
    try:
        yield
    finally:
        unmount_below(tmp_path)


SR_UUID = "5a1e0000-0000-4000-8000-00000000c0de"  # the contract harness's default sr_uuid


def nfs_device_config(ganesha: Ganesha | None = None, prefix: str = "c") -> dict[str, str]:
    """device_config of an SR in a fresh unique directory of the shared export."""
    from tests.nfs.conftest import HOST, STATE_DIR

    host, export = (ganesha.host, ganesha.export) if ganesha else (HOST, str(STATE_DIR / "export"))
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    (Path(export) / name).mkdir()
    return {"server": host, "serverpath": f"{export}/{name}"}


def sr_dir(dconf: Mapping[str, str], sr_uuid: str = SR_UUID) -> Path:
    """The local directory that ganesha serves as `<serverpath>/<sr_uuid>` (its export path
    is its local path)."""
    return Path(dconf["serverpath"]) / sr_uuid
