"""`sm sr repair` (issue 15 §1): shows an entry a failed replay set aside, refuses to discard
it while an image is missing, retries it; through click's runner and the in-process API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sm import faults
from tests.api.conftest import PLUGINS, env, plugins, run_sm  # noqa: F401
from tests.srtypes.file.conftest import FileSRClient
from tests.srtypes.file.test_failure_containment import _killed

from .test_sr_vdi_cli import sm  # noqa: F401


def test_sm_sr_repair(sm, env: dict[str, str], tmp_path: Path,  # type: ignore[no-untyped-def]  # noqa: F811
                      monkeypatch: pytest.MonkeyPatch) -> None:
    loc = tmp_path / "sr-r"
    loc.mkdir()
    sm("sr", "create", "r", "--type", "file", "-d", f"location={loc}")
    uuid = json.loads(sm("sr", "show", "r", "--json").output)["uuid"]
    assert "no set-aside journal entries" in sm("sr", "repair", "r").output
    client = FileSRClient(loc, Path(env["SM_RUN_DIR"]), uuid)
    x = client.create_vdi(name="x")
    _killed(client, "vdi_snapshot", "vdi_snapshot:renamed", x)
    monkeypatch.setattr(faults, "_ARMED", True)
    monkeypatch.setattr(faults, "_hits", {})
    monkeypatch.setenv(faults.FAIL_VAR, "vdi_snapshot:hidden:1+")
    client.create_vdi(name="y")  # the replay fails: set aside; the create goes on
    monkeypatch.delenv(faults.FAIL_VAR)

    out = sm("sr", "repair", "r").output
    (entry,) = [line.split()[1] for line in out.splitlines() if line.startswith("entry ")]
    assert "vdi_snapshot" in out and f"vdi {x}" in out and "unusable VDIs:" in out
    refused = sm("sr", "repair", "r", "--discard", entry, ok=False)
    assert refused.exit_code != 0
    assert "VDIUnavailable (46)" in refused.output and "no image" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    report = json.loads(sm("sr", "repair", "r", "--retry", "all", "--json").output)
    assert "replayed to the end" in report["done"][0]
    assert report["entries"] == [] and report["unusable"] == {}
    assert "no set-aside journal entries" in sm("sr", "repair", "r").output
    client.snapshot(x)  # usable again
