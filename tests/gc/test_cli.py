"""`sm gc run` / `sm gc status` over `StorageManager.gc_run` / `gc_status` on the embedded
default File SR."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result

from sm.cli.main import _register, cli
from tests.api.conftest import env  # noqa: F401

_register()


@pytest.fixture
def sm(env: dict[str, str]):  # type: ignore[no-untyped-def]  # noqa: F811
    runner = CliRunner()
    env = {**env, "SM_GC_AUTO": "0"}

    def invoke(*args: str, ok: bool = True) -> Result:
        result = runner.invoke(cli, list(args), env=env, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke


def test_gc_status_and_run(sm) -> None:  # type: ignore[no-untyped-def]
    sm("vdi", "create", "disk1", "--size", "8M")
    sm("vdi", "write", "disk1", "hello")
    sm("vdi", "snapshot", "disk1", "--name", "s1")
    sm("vdi", "write", "disk1", "HELLO", "--offset", "0")
    sm("vdi", "delete", "s1")
    st = json.loads(sm("gc", "status", "--json").output)
    [vdi] = st["vdis"]
    assert vdi["depth"] == 2 and vdi["depth_after_gc"] == 1 and vdi["pending_merges"] == 1
    assert [p["kind"] for p in st["pending"]] == ["leaf-merge"]
    out = sm("gc", "status").output
    assert "pending merges" in out and "DEPTH" in out and "collector" in out and "never" in out
    out = sm("gc", "run").output
    assert "done: leaf-merge" in out and "done: 1 step(s)" in out
    st = json.loads(sm("gc", "status", "--json").output)
    assert st["vdis"][0]["depth"] == 1 and st["pending"] == []
    assert st["collector"]["last_run"]["result"] == "done"
    assert "1 step(s)" in sm("gc", "status").output
    assert sm("vdi", "read", "disk1", "--length", "5").stdout_bytes == b"HELLO"
    summary = json.loads(sm("gc", "run", "--json").output)
    assert summary["result"] == "done" and summary["actions"] == []
