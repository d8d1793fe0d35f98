"""What a driver process loads: a `vdi_snapshot` stays clear of the costly modules (start-up is
most of a short command; benchmarks/bench_filesr.py measures the whole process)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xmlrpc.client
from pathlib import Path

from tests.srtypes.file.conftest import FileSRClient

ROOT = Path(__file__).resolve().parent.parent

# module -> why it stays out
AVOIDED = {
    "dataclasses": "sm.struct.Frozen instead (dataclasses compiles ~6 functions per class)",
    "inspect": "imported by dataclasses",
    "logging": "sm.log imports it only when a record is due",
    "tempfile": "sm.atomic and sm.vhd.backing name their temporary files themselves",
    "shutil": "imported only where a tree is removed or copied",
    "random": "sm.locking imports it only when a lock is contended",
}


def test_snapshot_process_avoids_costly_modules(tmp_path: Path) -> None:
    sr = FileSRClient(tmp_path / "sr", tmp_path / "run")
    sr.call("sr_create", ["0"])
    sr.call("sr_attach")
    vdi = sr.create_vdi()
    doc = xmlrpc.client.dumps((sr.struct("vdi_snapshot", vdi=vdi, driver_params={}),),
                              methodname="vdi_snapshot")
    proc = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "bin" / "FileSR"), doc],
                          capture_output=True, text=True, check=True,
                          env={**os.environ, **sr.environ, "SM_DATA_PATH": "none"})
    xmlrpc.client.loads(proc.stdout)  # a response, not a Fault
    loaded = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", proc.stderr, re.M))
    assert "sm.dispatch" in loaded  # the trace is read right
    assert sorted(set(AVOIDED) & loaded) == []
