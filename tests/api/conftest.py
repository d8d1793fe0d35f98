"""Fixtures for the sm.api tests: an isolated SM_HOME, the test SR types of tests/plugins."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.errors import InvalidArgument

from sm import registry
from sm.api import StorageManager
from tests.lvhd.conftest import lvm_sandbox  # noqa: F401  (fixture: loop devices for lvhd SRs)
from tests.nfs.conftest import ganesha  # noqa: F401  (fixture: the nfs-ganesha test server)
from tests.rbd.conftest import ceph_cluster, rbd_namespace  # noqa: F401  (fixtures: Ceph)

# `--hypothesis-profile=long` (tests/api/test_stateful.py chooses its long settings from the
# option); registered unless tests/conftest.py did, before the plugin loads it.
try:
    settings.get_profile("long")
except InvalidArgument:
    settings.register_profile("long", deadline=None)

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "tests" / "plugins"
SM = ROOT / ".venv" / "bin" / "sm"


@pytest.fixture(scope="session", autouse=True)
def plugins() -> Iterator[None]:
    """The test SR types, found through the real `sm.srtypes` entry-point group."""
    if str(PLUGINS) not in sys.path:
        sys.path.insert(0, str(PLUGINS))
    registry.reload()
    yield


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment isolating config, state and the default SR under tmp_path."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    out.update({
        "SM_HOME": str(tmp_path / "home"),
        "SM_RUN_DIR": str(tmp_path / "run"),
        "SM_GC_AUTO": "0",  # no background collector runs (tests/gc tests those)
        # the checkout's driver executables (an installed sm has them in its scripts directory)
        "SM_DRIVER_PATH": os.pathsep.join([str(PLUGINS / "bin"), str(ROOT / "bin")]),
        "PYTHONPATH": os.pathsep.join([str(PLUGINS), str(ROOT)]),
        "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    return out


@pytest.fixture
def manager(env: dict[str, str]) -> Iterator[StorageManager]:
    with StorageManager(environ=env) as sm:
        yield sm


def new_sr(sm: StorageManager, srtype: str, tmp_path: Path, name: str | None = None) -> str:
    name = name or srtype
    location = tmp_path / f"sr-{name}"
    location.mkdir()
    sm.sr_create(name, srtype, {"location": str(location)})
    return name


def run_sm(env: dict[str, str], *args: str, extra: dict[str, str] | None = None,
           stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """The installed `sm` command, as a user runs it."""
    return subprocess.run([str(SM), *args], env={**env, **(extra or {})}, input=stdin,
                          capture_output=True, timeout=120, check=False)
