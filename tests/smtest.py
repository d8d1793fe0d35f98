"""Helpers shared by the SMAPIv1 framework tests (the test SR type lives in tests/testdist)."""

from __future__ import annotations

import os
import subprocess
import sys
import xmlrpc.client
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TESTDIST = Path(__file__).resolve().parent / "testdist"
SMTEST_EXE = TESTDIST / "bin" / "SmtestSR"

SR_UUID = "5a1e0000-0000-4000-8000-000000000001"
VDI_UUID = "7d100000-0000-4000-8000-000000000002"


def call(command: str, args: list[Any] | None = None, **fields: Any) -> str:
    """A methodCall as the toolstack sends it (typed values from xmlrpc.client)."""
    struct: dict[str, Any] = {"command": command, "args": args or [], "device_config": {}}
    struct.update(fields)
    return xmlrpc.client.dumps((struct,), methodname=command, allow_none=True)


def vdi_call(command: str, args: list[Any] | None = None, **fields: Any) -> str:
    base = {"sr_uuid": SR_UUID, "vdi_uuid": VDI_UUID, "vdi_location": VDI_UUID}
    base.update(fields)
    return call(command, args, **base)


def result(response: str) -> Any:
    """The value of a success response; raises xmlrpc.client.Fault for a Fault."""
    (value,), _ = xmlrpc.client.loads(response)
    return value


def fault(response: str) -> xmlrpc.client.Fault:
    try:
        value = result(response)
    except xmlrpc.client.Fault as err:
        return err
    raise AssertionError(f"expected a Fault, got {value!r}")


def env_for(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTDIST), str(ROOT), env.get("PYTHONPATH", "")])
    env["SM_STATE_DIR"] = str(tmp / "state")
    env["SM_RUN_DIR"] = str(tmp / "run")
    env.update(extra)
    return env


def run_exe(exe: Path, *args: str, tmp: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(exe), *args],
        capture_output=True,
        text=True,
        env=env_for(tmp, **extra),
        timeout=60,
        check=False,
    )
