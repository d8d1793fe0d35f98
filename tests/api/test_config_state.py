"""Registry file, paths, settings precedence, SQLite state and the transports' error mapping."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml

from sm.api import StorageManager
from sm.api.config import Paths, Registry, SrConfig
from sm.api.state import SnapshotNode, State
from sm.api.transport import Exec, InProcess, fault_to_error, find_executable
from sm.errors import InvalidArg, MetadataError, SMError, SRUnknownType, VDIMissing

from .conftest import PLUGINS, ROOT

UUID = "6f1c1f5e-8a57-4a4c-9d4b-1f7c7d0b7a11"


def test_paths_defaults_and_overrides(tmp_path: Path) -> None:
    p = Paths.from_env(None, {"HOME": str(tmp_path), "SM_HOME": str(tmp_path / "h")})
    assert p.config == tmp_path / "h" / "srs.yaml"
    assert p.state_dir == tmp_path / "h" / "state"
    assert p.default_sr_dir == tmp_path / "h" / "default-sr"
    p = Paths.from_env(tmp_path / "x.yaml", {"SM_CONFIG": "/nope", "SM_STATE_DIR": "/s"})
    assert p.config == tmp_path / "x.yaml" and p.read == (tmp_path / "x.yaml",)
    assert p.state_dir == Path("/s")
    p = Paths.from_env(None, {"SM_CONFIG": str(tmp_path / "c.yaml"), "HOME": str(tmp_path)})
    assert p.config == tmp_path / "c.yaml"


def test_registry_roundtrip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "srs.yaml"
    reg = Registry(Paths(path, (path,), tmp_path, tmp_path / "d"))
    reg.add(SrConfig("one", "file", UUID, {"location": "/srv/one"}))
    with pytest.raises(InvalidArg):
        reg.add(SrConfig("one", "file", UUID, {}))
    again = Registry(reg.paths)
    assert again.find("one") == SrConfig("one", "file", UUID, {"location": "/srv/one"})
    assert again.find(UUID.upper()) is not None
    again.remove(again.srs()[0])
    assert yaml.safe_load(path.read_text())["srs"] == []
    # Damaged entries and files are reported and skipped (issue 15), never rewritten.
    path.write_text("srs: [{name: x, type: file, uuid: not-a-uuid}]")
    damaged = Registry(reg.paths)
    assert damaged.srs() == [] and "valid uuid" in damaged.problems[0]
    path.write_text(": : :")
    damaged = Registry(reg.paths)
    assert damaged.srs() == [] and "YAML" in damaged.problems[0]
    with pytest.raises(MetadataError, match="YAML"):
        damaged.add(SrConfig("two", "file", UUID, {}))
    assert path.read_text() == ": : :"


def test_layered_files(tmp_path: Path) -> None:
    system, user = tmp_path / "system.yaml", tmp_path / "user.yaml"
    system.write_text(yaml.safe_dump({"srs": [{"name": "shared", "type": "file", "uuid": UUID,
                                               "device_config": {"location": "/a"}}],
                                      "settings": {"transport": "exec"}}))
    reg = Registry(Paths(user, (system, user), tmp_path, tmp_path / "d"))
    assert [s.name for s in reg.srs()] == ["shared"]
    assert reg.file_setting("transport") == "exec"


def test_settings_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "srs.yaml"
    cfg.write_text("settings: {revert: clone}\n")
    env = {"SM_HOME": str(tmp_path / "h")}
    with StorageManager(cfg, environ=env) as sm:
        assert sm.setting("revert") == "clone"           # registry file
        sm.set_setting("revert", "auto")
        assert sm.setting("revert") == "auto"            # SQLite over the file
        assert sm.setting("transport") == "inproc"       # default
        with pytest.raises(InvalidArg):
            sm.set_setting("transport", "carrier-pigeon")
        with pytest.raises(InvalidArg):
            sm.set_setting("nope", "x")
    with StorageManager(cfg, environ={**env, "SM_REVERT": "clone"}) as sm:
        assert sm.setting("revert") == "clone"           # environment over everything
        assert isinstance(sm.transport, InProcess)
    with StorageManager(cfg, environ={**env, "SM_TRANSPORT": "exec"}) as sm:
        assert isinstance(sm.transport, Exec)


def test_state_tree_operations(tmp_path: Path) -> None:
    state = State(tmp_path)
    vdi = ("sr", "v")

    def add(uuid: str) -> None:
        state.add_snapshot(SnapshotNode("sr", uuid, *vdi, state.current(vdi), uuid, "", 0.0))

    add("a"), add("b"), add("c")
    state.set_current(vdi, ("sr", "b"))
    add("d")                                      # a <- b <- {c, d}
    state.remove_snapshot(("sr", "b"))            # c, d move up to a
    nodes, current = state.tree(vdi)
    assert {n.uuid: n.parent for n in nodes} == {"a": None, "c": ("sr", "a"), "d": ("sr", "a")}
    assert current == ("sr", "d")
    state.remove_snapshot(("sr", "d"))
    assert state.current(vdi) == ("sr", "a")
    with pytest.raises(RuntimeError), state.transaction():
        state.set_setting("k", "v")
        raise RuntimeError
    assert state.setting("k") is None               # rolled back
    state.close()


def test_fault_to_error() -> None:
    err = fault_to_error(144, "VDI could not be found [opterr=no VDI x]")
    assert isinstance(err, VDIMissing) and err.message == "no VDI x"
    odd = fault_to_error(9999, "strange")
    assert isinstance(odd, SMError) and odd.code == 9999 and odd.message == "strange"


def test_find_executable(tmp_path: Path) -> None:
    checkout = {"SM_DRIVER_PATH": str(ROOT / "bin"), "PATH": ""}
    assert find_executable("file", checkout) == ROOT / "bin" / "FileSR"
    # never the checkout around the package on its own: an installed sm finds its console
    # scripts ([project.scripts]) in the environment's scripts directory
    with contextlib.suppress(SRUnknownType):
        assert find_executable("file", {"PATH": ""}).parent != ROOT / "bin"
    env = {"SM_DRIVER_PATH": str(PLUGINS / "bin"), "PATH": ""}
    assert find_executable("NOREVERT", env).name == "NorevertSR"
    with pytest.raises(SRUnknownType):
        find_executable("nosuchtype", {"PATH": str(tmp_path)})


def test_exec_transport_reports_a_dying_driver(tmp_path: Path) -> None:
    script = tmp_path / "BrokenSR"
    script.write_text("#!/bin/sh\necho oops >&2\nexit 3\n")
    script.chmod(0o755)
    transport = Exec({"SM_DRIVER_PATH": str(tmp_path), "PATH": ""})
    with pytest.raises(SMError, match="status 3: oops"):
        transport.call("broken", "sr_scan", {})
    script.write_text("#!/bin/sh\necho not-xml\n")
    with pytest.raises(SMError, match="unparsable"):
        transport.call("broken", "sr_scan", {})


@pytest.mark.parametrize("transport", ["inproc", "exec"])
def test_faults_come_back_typed(env: dict[str, str], transport: str) -> None:
    with StorageManager(environ={**env, "SM_TRANSPORT": transport}) as sm:
        sm.vdi_create(1 << 20, "x")
        client = sm._client(sm._config(None))
        with pytest.raises(VDIMissing):
            client.vdi_delete(("00000000-0000-0000-0000-000000000001", "nope"))


def test_embedded_default_sr(env: dict[str, str]) -> None:
    with StorageManager(environ=env) as sm:
        [sr] = sm.srs()
        assert sr.embedded and sr.name == "default" and sr.type == "file"
        assert sm.vdis() == []                              # created on first use
        assert Path(sr.device_config["location"]).is_dir()
    with StorageManager(environ=env) as sm:
        assert sm.srs()[0].uuid == sr.uuid                  # stable
