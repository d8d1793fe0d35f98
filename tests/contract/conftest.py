"""The contract suite's registry of SR types: each type adds only its own configuration.

To add a type: write an `SRTypeConfig` (see `tests/contract/harness.py` for each field) and
append it to `SR_TYPES`. Every test in `tests/contract/` then runs against it, driven by the
capabilities it advertises. A type that cannot run on this machine skips with its reason (and
CI=true turns that skip into a failure, see `tests/conftest.py`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.contract.harness import DataHandle, ImageFacts, SRHarness, SRTypeConfig
from tests.nfs.conftest import ganesha  # noqa: F401  (the NFS entry's server)
from tests.rbd.conftest import ceph_cluster, rbd_namespace  # noqa: F401  (the RBD entry's)
from tests.rbd.support import contract_config as _rbd_config
from tests.smapi import ROOT

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


# -- File SR -----------------------------------------------------------------------------------


class RawHandle:
    """A raw image file as a DataHandle."""

    def __init__(self, path: str, writable: bool) -> None:
        self._f = open(path, "r+b" if writable else "rb")  # noqa: SIM115
        self.size = os.fstat(self._f.fileno()).st_size

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._f.fileno(), length, offset)

    def write(self, offset: int, data: bytes) -> None:
        assert offset + len(data) <= self.size
        os.pwrite(self._f.fileno(), data, offset)

    def flush(self) -> None:
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


def _file_open_data(attached: Mapping[str, Any], writable: bool) -> DataHandle:
    from sm import vhd

    path = str(attached["params"])
    assert os.path.isabs(path), attached
    if path.endswith(".raw"):
        return RawHandle(path, writable)
    disk: DataHandle = vhd.open_chain(path, writable=writable)
    return disk


def file_images(device_config: Mapping[str, str]) -> dict[str, ImageFacts]:
    from sm import vhd

    root = Path(device_config["location"])
    out: dict[str, ImageFacts] = {}
    if not root.is_dir():
        return out
    for path in sorted(root.iterdir()):
        stem, ext = path.stem, path.suffix
        if ext not in (".vhd", ".raw") or not _UUID.match(stem) or not path.is_file():
            continue
        if ext == ".raw":
            out[stem] = ImageFacts(stem, str(path), "raw", path.stat().st_size)
            continue
        info = vhd.info(str(path))
        parent = str(info.parent_uuid) if info.parent_uuid else None
        out[stem] = ImageFacts(stem, str(path), "vhd", info.virtual_size, parent, info.hidden)
    return out


def _file_check(facts: ImageFacts) -> list[str]:
    from sm import vhd

    if facts.format == "raw":
        return []
    return [str(p) for p in vhd.check(facts.path)]


def _file_chain_paths(attached: Mapping[str, Any]) -> list[str]:
    from sm import vhd

    return [str(i.path) for i in vhd.chain(str(attached["params"]))]


def file_adopt(device_config: Mapping[str, str], size: int, writes: list[tuple[int, bytes]]) -> str:
    """An administrator copies a VHD into the SR directory (built elsewhere, then renamed in)."""
    import uuid as uuidlib

    from sm import vhd

    new = str(uuidlib.uuid4())
    root = Path(device_config["location"])
    staging = root.parent / f"staging-{new}.vhd"
    vhd.create(str(staging), size)
    with vhd.open_chain(str(staging), writable=True) as disk:
        for offset, data in writes:
            disk.write(offset, data)
        disk.flush()
    os.rename(staging, root / f"{new}.vhd")
    return new


def _file_remove(device_config: Mapping[str, str], uuid: str) -> None:
    root = Path(device_config["location"])
    for ext in (".vhd", ".raw"):
        if (root / f"{uuid}{ext}").exists():
            (root / f"{uuid}{ext}").unlink()


def _file_unavailable() -> str | None:
    try:
        import srtypes.file.sr  # noqa: F401
    except ImportError as err:
        return f"the File SR cannot be imported: {err}"
    return None


FILE = SRTypeConfig(
    name="file",
    driver="srtypes.file:FileSR",
    executable=ROOT / "bin" / "FileSR",
    make_device_config=lambda tmp: {"location": str(tmp / "sr")},
    open_data=_file_open_data,
    images=file_images,
    check_image=_file_check,
    storage_root=lambda dconf: Path(dconf["location"]),
    chain_paths=_file_chain_paths,
    adopt=file_adopt,
    remove=_file_remove,
    unavailable=_file_unavailable,
    # flock files: empty, created on first use (test_bad_input checks they do not pile up)
    volatile=lambda rel: rel == ".sm/locks" or rel.startswith(".sm/locks/"),
)

# -- NFS SR: a File SR on the shared nfs-ganesha test export, mounted by the test-only
# BindMounter; every test gets a unique directory of the export as its serverpath ------------


def _nfs_device_config(tmp: Path) -> dict[str, str]:
    from tests.nfs.sr_support import nfs_device_config

    return nfs_device_config()


def _nfs_as_file(dconf: Mapping[str, str]) -> dict[str, str]:
    from tests.nfs.sr_support import sr_dir

    return {"location": str(sr_dir(dconf))}


def _nfs_unavailable() -> str | None:
    try:
        import srtypes.nfs.sr  # noqa: F401
    except ImportError as err:
        return f"the NFS SR cannot be imported: {err}"
    return None


@pytest.fixture
def nfs_server(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    from tests.nfs.sr_support import bind_env

    yield from bind_env(request.getfixturevalue("ganesha"), monkeypatch, tmp_path)


NFS = SRTypeConfig(
    name="nfs",
    driver="srtypes.nfs:NFSSR",
    executable=ROOT / "bin" / "NFSSR",
    make_device_config=_nfs_device_config,
    open_data=_file_open_data,  # the attach result is a path below the mount point
    images=lambda dconf: file_images(_nfs_as_file(dconf)),
    check_image=_file_check,
    storage_root=lambda dconf: Path(_nfs_as_file(dconf)["location"]),
    chain_paths=_file_chain_paths,
    adopt=lambda dconf, size, writes: file_adopt(_nfs_as_file(dconf), size, writes),
    remove=lambda dconf, uuid: _file_remove(_nfs_as_file(dconf), uuid),
    unavailable=_nfs_unavailable,
    volatile=FILE.volatile,
    fixture="nfs_server",
)

# -- LVHD SR: VHD in LVs on real lvm2; a loop device per test (tests/lvhd/contract_support.py)


@pytest.fixture
def lvhd_device(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    from tests.lvhd import contract_support

    yield from contract_support.lvhd_device(monkeypatch, tmp_path)


def _lvhd() -> SRTypeConfig:
    from tests.lvhd import contract_support as lv

    return SRTypeConfig(
        name="lvhd",
        driver="srtypes.lvhd:LVHDSR",
        executable=ROOT / "bin" / "LVHDSR",
        **lv.CONFIG,
        fixture="lvhd_device",
    )


LVHD = _lvhd()

SR_TYPES: list[SRTypeConfig] = [FILE, NFS, LVHD, _rbd_config()]
"""Every SR type the contract suite runs against (LVM and NFS add theirs here)."""


# -- fixtures ----------------------------------------------------------------------------------


def use_srtype(request: pytest.FixtureRequest) -> SRTypeConfig:
    """The SR type of a parametrized `srtype` fixture, its own fixture set up (or skipped)."""
    config: SRTypeConfig = request.param
    reason = config.unavailable()
    if reason:
        pytest.skip(f"SR type {config.name}: {reason}")
    if config.fixture:
        request.getfixturevalue(config.fixture)
    return config


@pytest.fixture(params=SR_TYPES, ids=[c.name for c in SR_TYPES])
def srtype(request: pytest.FixtureRequest) -> SRTypeConfig:
    return use_srtype(request)


@pytest.fixture
def blank_sr(srtype: SRTypeConfig, tmp_path: Path) -> SRHarness:
    """An SR harness whose SR is not created yet (in-process transport)."""
    return SRHarness.make(srtype, tmp_path)


@pytest.fixture
def sr(blank_sr: SRHarness) -> Iterator[SRHarness]:
    """A created, attached, empty SR; after the test every image must check clean and the
    records must match the images."""
    blank_sr.create()
    yield blank_sr
    blank_sr.assert_consistent()
