"""`sm sr`, `sm vdi`, `sm settings`: click's runner, and the installed `sm` command end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sm.cli.main import _register, cli
from tests.api.conftest import PLUGINS, env, plugins, run_sm  # noqa: F401

_register()


@pytest.fixture
def sm(env: dict[str, str]):  # noqa: F811
    runner = CliRunner()

    def invoke(*args: str, input: bytes | str | None = None, ok: bool = True) -> Result:
        result = runner.invoke(cli, list(args), env=env, input=input, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke


def test_newcomer_flow_on_the_embedded_default(sm) -> None:  # type: ignore[no-untyped-def]
    out = sm("vdi", "create", "disk1", "--size", "16M", "--description", "first disk").output
    assert "disk1" in out and "16.0 MiB" in out
    sm("vdi", "write", "disk1", "hello")
    snap = json.loads(sm("vdi", "snapshot", "disk1", "--name", "clean", "--json").output)
    assert snap["is_a_snapshot"] is True
    sm("vdi", "write", "disk1", "HELLO", "--offset", "0")
    assert sm("vdi", "read", "disk1", "--length", "5").stdout_bytes == b"HELLO"
    out = sm("vdi", "revert", "disk1", "clean").output
    assert "[in-place]" in out
    assert sm("vdi", "read", "disk1", "--length", "5").stdout_bytes == b"hello"
    tree = sm("vdi", "tree", "disk1").output
    assert "└── clean" in tree and "<- current" in tree
    tree_json = json.loads(sm("vdi", "tree", "disk1", "--json").output)
    assert tree_json["current"] == snap["uuid"]
    listed = json.loads(sm("vdi", "list", "--json").output)
    assert {v["name_label"] for v in listed} == {"disk1"}
    assert len(listed) == 2
    assert "disk1" in sm("vdi", "list").output
    shown = json.loads(sm("vdi", "show", "disk1", "--json").output)
    assert shown["name_description"] == "first disk"
    resized = json.loads(sm("vdi", "resize", "disk1", "32M", "--json").output)
    assert resized["virtual_size"] == 32 * 1024 * 1024
    clone = json.loads(sm("vdi", "clone", "disk1", "--json").stdout)  # + a warning on stderr
    assert clone["uuid"] != shown["uuid"]
    deleted = json.loads(sm("vdi", "delete", clone["uuid"], "--json").output)
    assert deleted["deleted"] == [clone["uuid"]]
    out = sm("vdi", "delete", "clean", "--metadata-only").output  # by its name in the tree
    assert out == f"forgot {snap['uuid']}\n"


def test_sr_commands(sm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    location = tmp_path / "sr1"
    location.mkdir()
    created = json.loads(sm("sr", "create", "sr1", "-d", f"location={location}",
                            "--json").output)
    assert created["type"] == "file" and created["device_config"]["location"] == str(location)
    names = [s["name"] for s in json.loads(sm("sr", "list", "--json").output)]
    assert names == ["sr1", "default"]
    assert "default *" in sm("sr", "list").output
    info = json.loads(sm("sr", "show", "sr1", "--json").output)
    assert "VDI_REVERT" in info["driver"]["capabilities"] and info["vdis"] == 0
    assert "capabilities" in sm("sr", "show", "sr1").output
    sm("vdi", "create", "d", "--size", "1M", "--sr", "sr1")
    scanned = json.loads(sm("sr", "scan", "sr1", "--json").output)
    assert [v["name_label"] for v in scanned] == ["d"]
    sm("sr", "detach", "sr1")
    assert [s["name"] for s in json.loads(sm("sr", "list", "--json").output)] == ["default"]
    sm("sr", "attach", "again", "-d", f"location={location}", "--uuid", created["uuid"])
    assert [v["name_label"] for v in json.loads(
        sm("vdi", "list", "--sr", "again", "--json").output)] == ["d"]
    failed = sm("sr", "delete", "again", ok=False)
    assert failed.exit_code == 1 and "SRNotEmpty (39)" in failed.output
    sm("vdi", "delete", "d", "--sr", "again")
    sm("sr", "delete", "again")
    assert not [s for s in json.loads(sm("sr", "list", "--json").output) if s["name"] == "again"]


def test_config_option_and_settings(sm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "elsewhere.yaml"
    location = tmp_path / "sr2"
    location.mkdir()
    sm("--config", str(cfg), "sr", "create", "two", "-d", f"location={location}")
    assert "two" in cfg.read_text()
    sm("settings", "set", "revert", "clone")
    assert json.loads(sm("settings", "--json").output)["revert"] == "clone"
    assert "revert" in sm("settings", "show").output
    sm("vdi", "create", "x", "--size", "1M")
    sm("vdi", "snapshot", "x", "--name", "s")
    assert "[clone-fallback]" in sm("vdi", "revert", "x", "s").output
    sm("settings", "unset", "revert")
    assert "[in-place]" in sm("vdi", "revert", "x", "s").output
    bad = sm("settings", "set", "transport", "nope", ok=False)
    assert bad.exit_code == 1 and "InvalidArg (1)" in bad.output


def test_snapshot_delete_scopes(sm) -> None:  # type: ignore[no-untyped-def]
    sm("vdi", "create", "d", "--size", "1M")
    uuids = {}
    for name in ("a", "b", "c"):
        uuids[name] = json.loads(sm("vdi", "snapshot", "d", "--name", name, "--json").output)["uuid"]
    sm("vdi", "revert", "d", "a")
    uuids["e"] = json.loads(sm("vdi", "snapshot", "d", "--name", "e", "--json").output)["uuid"]
    # a -> b -> c, a -> e (current)
    out = json.loads(sm("vdi", "delete", uuids["a"], "--children-only", "--json").output)
    assert out["deleted"] == [uuids["c"], uuids["b"], uuids["e"]]
    tree = json.loads(sm("vdi", "tree", "d", "--json").output)
    assert [r["name"] for r in tree["roots"]] == ["a"] and tree["current"] == uuids["a"]
    sm("vdi", "delete", uuids["a"], "--metadata-only")
    assert "(no snapshots)" in sm("vdi", "tree", "d").output
    assert uuids["a"] in sm("vdi", "list").output      # the volume is still there
    missing = sm("vdi", "show", "nope", ok=False)
    assert missing.exit_code == 1 and "VDIMissing (144)" in missing.output


# -- the installed command ---------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["inproc", "exec"])
def test_installed_sm_end_to_end(env: dict[str, str], tmp_path: Path,  # noqa: F811
                                 transport: str) -> None:
    extra = {"SM_TRANSPORT": transport}

    def sm(*args: str, stdin: bytes | None = None) -> bytes:
        proc = run_sm(env, *args, extra=extra, stdin=stdin)
        assert proc.returncode == 0, proc.stderr.decode()
        return proc.stdout

    location = tmp_path / "nr"
    location.mkdir()
    sm("sr", "create", "nr", "--type", "norevert", "-d", f"location={location}")
    disk = json.loads(sm("vdi", "create", "disk", "--size", "8M", "--sr", "nr", "--json"))
    sm("vdi", "write", "disk", "--sr", "nr", stdin=b"before")
    sm("vdi", "snapshot", "disk", "--sr", "nr", "--name", "s1")
    sm("vdi", "write", "disk", "--sr", "nr", stdin=b"AFTER!")
    result = json.loads(sm("vdi", "revert", "disk", "s1", "--sr", "nr", "--json"))
    assert result["path"] == "clone-fallback"
    assert result["vdi"]["uuid"] == disk["uuid"]
    assert sm("vdi", "read", "disk", "--sr", "nr", "--length", "6") == b"before"
    assert b"<- current" in sm("vdi", "tree", "disk", "--sr", "nr")
    assert b"sm vdi" not in sm("--help") and b"vdi" in sm("--help")
