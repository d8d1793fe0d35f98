"""A copy of the packages with no checkout around it (as a non-editable install has them)
serves a VDI and starts a background collector: nbdkit's Python (the system's, which has no
`sm`) loads `sm` from the copy (`package=sm:<dir>`), never from the checkout, and the
collector's process imports the copy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.nbd.conftest import nbd_tools, short_dir

pytestmark = pytest.mark.nbd
ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, os, sys
from pathlib import Path
import sm, sm.vhd
from sm.gc import spawn
from sm.nbd import server
from sm.nbd.client import NbdClient

site, run = sys.argv[1], sys.argv[2]
assert sm.__file__.startswith(site), sm.__file__
leaf = os.path.join(run, "d.vhd")
sm.vhd.create(leaf, 1 << 20)
info = server.start("00000000-0000-4000-8000-0000000000c0", leaf, writable=True, run_dir=run)
try:
    with open(f"/proc/{info.pid}/cmdline", "rb") as f:
        argv = [a.decode() for a in f.read().split(b"\\0") if a]
    with NbdClient.from_url(info.params_nbd) as client:
        client.write(0, b"x" * 512)
        client.flush()
        assert client.read(0, 512) == b"x" * 512
finally:
    server.stop(info)
spawn.start_background(["-c", "import sm; print(sm.__file__)"], Path(run) / "gc.log")
print(json.dumps(argv))
"""


def test_a_copy_of_the_packages_works_without_the_checkout() -> None:
    nbd_tools()
    base = Path(short_dir("smcp-"))
    try:
        site, run = base / "site", base / "run"
        for package in ("sm", "srtypes"):
            shutil.copytree(ROOT / package, site / package,
                            ignore=shutil.ignore_patterns("__pycache__"))
        run.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
        env.update(PYTHONPATH=str(site), SM_GC_AUTO="1")
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(site), str(run)], cwd=base,
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        argv = json.loads(proc.stdout.strip().splitlines()[-1])
        assert f"package=sm:{site / 'sm'}" in argv, argv
        assert not [a for a in argv if str(ROOT) in a], argv  # nothing of the checkout
        log = run / "gc.log"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (log.exists() and log.read_text().strip()):
            time.sleep(0.05)
        assert log.read_text().strip() == str(site / "sm" / "__init__.py")
    finally:
        shutil.rmtree(base, ignore_errors=True)
