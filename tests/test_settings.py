"""`sm.settings`: one typed, checked settings object for every `SM_*` variable, the only module
that names them, and one table in docs/settings.md."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import xmlrpc.client
from pathlib import Path

import pytest

from sm import dispatch, settings
from sm.driver import DriverContext, SRDriver
from sm.errors import InvalidArg
from sm.requests import SRRequest
from sm.settings import DEFAULT_RUN_DIR, DEFAULT_STATE_DIR, Settings, env_name

ROOT = Path(__file__).resolve().parent.parent
VAR = re.compile(r"SM_[A-Z0-9_]*")
SR_UUID = "0d8a2d0c-4a8c-4a4e-9a57-6b5e1f1c2a3b"

READERS_OF_THEIR_OWN = {"sm/faults.py"}
"""Modules that read `SM_*` variables themselves (named by `env_name`), documented in
docs/settings.md: fault injection stays a one-lookup no-op in production."""


def _sources() -> list[Path]:
    files = [p for d in ("sm", "srtypes") for p in (ROOT / d).rglob("*.py")]
    return files + [p for p in (ROOT / "bin").iterdir() if p.is_file()]


def _named_variables(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants that are a variable name (`"SM_X"`) or start an f-string (`f"SM_{k}"`)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                VAR.fullmatch(node.value):
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if isinstance(first, ast.Constant) and str(first.value).startswith("SM_"):
                found.append((node.lineno, f"f{first.value!r}..."))
    return found


def _computed_environ_reads(tree: ast.AST) -> list[int]:
    """`<...environ/env>.get(key)` or `[key]` with a key that is not a plain string: a variable
    name kept in a constant would slip past the literal scan."""
    lines = []
    for node in ast.walk(tree):
        target = key = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr == "get" and node.args:
            target, key = node.func.value, node.args[0]
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            target, key = node.value, node.slice
        if target is None or key is None:
            continue
        name = ast.unparse(target)
        if (name.endswith("environ") or name in ("env", "environ")) and not (
                isinstance(key, ast.Constant) and isinstance(key.value, str)):
            lines.append(node.lineno)
    return lines


def test_only_sm_settings_names_the_variables() -> None:
    offenders = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        if rel == "sm/settings.py":
            continue
        try:
            tree = ast.parse(path.read_text(), rel)
        except (SyntaxError, UnicodeDecodeError):
            continue  # not Python
        offenders += [f"{rel}:{line}: {text}" for line, text in _named_variables(tree)]
        if rel not in READERS_OF_THEIR_OWN:
            offenders += [f"{rel}:{line}: environment read by a computed key"
                          for line in _computed_environ_reads(tree)]
    assert offenders == [], "read SM_* variables through sm.settings.Settings:\n" + \
        "\n".join(offenders)


def test_the_scan_sees_the_old_ways() -> None:
    old = ('import os\nos.environ.get("SM_GC_RATE", 0)\nenv.get(f"SM_{key.upper()}")\n'
           'VAR = "SM_CRASH_AT"\nos.environ[VAR]\n')
    tree = ast.parse(old)
    assert sorted({line for line, _ in _named_variables(tree)}) == [2, 3, 4]
    assert _computed_environ_reads(tree) == [3, 5]


def test_every_setting_is_in_the_one_table() -> None:
    doc = (ROOT / "docs" / "settings.md").read_text()
    rows = re.findall(r"^\| `(SM_[A-Z0-9_]+)` \|", doc, re.M)
    assert sorted(rows) == sorted(env_name(f) for f in Settings._names)
    assert len(rows) == len(set(rows))
    assert list(settings._PARSERS) == list(Settings._names)  # one parser per field, in order


# -- parsing and validation -------------------------------------------------------------------


def test_defaults_and_empty_values() -> None:
    assert Settings.from_environ({}) == Settings()
    assert Settings.from_environ({"SM_GC_RATE": "", "SM_RUN_DIR": "", "OTHER": "x"}) == Settings()
    s = Settings()
    assert (s.state_dir, s.run_dir, s.log_level, s.data_path) == (None, None, "WARNING", "nbd")
    assert (s.gc_auto, s.gc_final_bytes, s.gc_rate) == (True, 8 * 1024 * 1024, 0.0)
    assert (s.rbd_lease, s.rbd_lock_wait, s.driver_path, s.transport) == (60.0, 120.0, (), None)
    assert s.nbd_enabled and not s.test_faults
    with pytest.raises(AttributeError):
        s.gc_rate = 1.0  # type: ignore[misc]


def test_values_parse_to_their_types(tmp_path: Path) -> None:
    s = Settings.from_environ({
        "SM_STATE_DIR": str(tmp_path), "SM_RUN_DIR": "/r", "SM_LOG_LEVEL": " info ",
        "SM_LOG_FILE": "/l.log", "SM_DATA_PATH": "none", "SM_GC_AUTO": "Off",
        "SM_GC_FINAL_BYTES": "2097152", "SM_GC_RATE": "1.5e6", "SM_RBD_LEASE": "0.5",
        "SM_RBD_LOCK_WAIT": "0", "SM_HOME": "/h", "SM_CONFIG": "/c.yaml",
        "SM_DEFAULT_SR_DIR": "/d", "SM_DRIVER_PATH": f"/a{os.pathsep}{os.pathsep}/b",
        "SM_TRANSPORT": "exec", "SM_REVERT": "clone", "SM_DEFAULT_SR": "fast",
        "SM_TEST_FAULTS": "1", "SM_CRASH_AT": "x:2", "SM_FAIL_AT": "y:1+",
        "SM_TEST_NFS_BIND_EXPORTS": '{"/e": "/srv/e"}',
    })
    assert s.state_dir == tmp_path and s.run_dir == Path("/r") and s.log_level == "INFO"
    assert (s.log_file, s.data_path, s.nbd_enabled, s.gc_auto) == ("/l.log", "none", False, False)
    assert (s.gc_final_bytes, s.gc_rate, s.rbd_lease, s.rbd_lock_wait) == (2097152, 1.5e6, 0.5, 0)
    assert (s.home, s.config, s.default_sr_dir) == (Path("/h"), Path("/c.yaml"), Path("/d"))
    assert (s.driver_path, s.transport, s.revert, s.default_sr) == (("/a", "/b"), "exec",
                                                                    "clone", "fast")
    assert (s.test_faults, s.crash_at, s.fail_at) == (True, "x:2", "y:1+")
    assert s.test_nfs_bind_exports == (("/e", "/srv/e"),)
    assert hash(s) == hash(s.replace()) and s != Settings()  # a hashable value


@pytest.mark.parametrize(("name", "raw", "expects"), [
    ("SM_LOG_LEVEL", "loud", "one of CRITICAL, ERROR"),
    ("SM_DATA_PATH", "nfs", "one of nbd, none"),
    ("SM_GC_AUTO", "maybe", "1/yes/true/on or 0/no/false/off"),
    ("SM_GC_FINAL_BYTES", "8M", "whole number of bytes"),
    ("SM_GC_FINAL_BYTES", "-1", "whole number of bytes"),
    ("SM_GC_RATE", "fast", "bytes per second (>= 0)"),
    ("SM_GC_RATE", "nan", "bytes per second (>= 0)"),
    ("SM_RBD_LEASE", "0", "seconds (> 0)"),
    ("SM_RBD_LOCK_WAIT", "inf", "seconds (>= 0)"),
    ("SM_TRANSPORT", "ssh", "one of inproc, exec"),
    ("SM_REVERT", "later", "one of auto, clone"),
    ("SM_TEST_FAULTS", "2", "1/yes/true/on"),
    ("SM_TEST_NFS_BIND_EXPORTS", "not json", "is not JSON"),
    ("SM_TEST_NFS_BIND_EXPORTS", "[1]", "must map export paths"),
])
def test_a_bad_value_names_the_variable(name: str, raw: str, expects: str) -> None:
    with pytest.raises(InvalidArg) as err:
        Settings.from_environ({name: raw})
    assert err.value.code == InvalidArg.code
    assert name in str(err.value) and expects in str(err.value)


def test_env_name() -> None:
    assert env_name("run_dir") == "SM_RUN_DIR"
    with pytest.raises(KeyError):
        env_name("nope")


# -- carried by the context --------------------------------------------------------------------


class _Shows(SRDriver):
    TYPE = "shows"

    def sr_content_type(self, request: SRRequest) -> str:
        s = self.context.settings
        return f"{s.gc_rate} {s.data_path} {self.context.run_dir}"


def _call() -> str:
    return xmlrpc.client.dumps(({"command": "sr_content_type", "args": [], "sr_uuid": SR_UUID,
                                  "device_config": {}, "session_ref": "s", "sr_ref": "r",
                                  "host_ref": "h"},), methodname="sr_content_type")


def test_driver_context_carries_the_settings(tmp_path: Path) -> None:
    ctx = DriverContext(environ={})
    assert ctx.settings == Settings() and str(ctx.run_dir) == DEFAULT_RUN_DIR
    assert str(ctx.state_dir) == DEFAULT_STATE_DIR
    given = Settings(state_dir=tmp_path, gc_rate=5.0)
    ctx = DriverContext(settings=given, run_dir="/x")
    assert ctx.settings is given and ctx.state_dir == tmp_path and str(ctx.run_dir) == "/x"
    # the dispatcher reads them once, `environ` laid over the process environment
    out = dispatch.respond(_Shows, _call(), environ={"SM_GC_RATE": "7", "SM_RUN_DIR": "/q"})
    (value,), _ = xmlrpc.client.loads(out)
    assert value == f"7.0 {Settings.from_environ().data_path} /q"
    given = Settings(gc_rate=3.0, data_path="none")
    (value,), _ = xmlrpc.client.loads(dispatch.respond(_Shows, _call(), settings=given))
    assert value.startswith("3.0 none ")


def test_a_driver_answers_a_bad_value_with_a_fault() -> None:
    out = dispatch.respond(_Shows, _call(), environ={"SM_GC_RATE": "fast"})
    with pytest.raises(xmlrpc.client.Fault) as err:
        xmlrpc.client.loads(out)
    assert err.value.faultCode == InvalidArg.code
    assert "SM_GC_RATE='fast'" in err.value.faultString


def test_a_driver_executable_answers_a_bad_value_with_a_fault(tmp_path: Path) -> None:
    env = {**os.environ, "SM_LOG_LEVEL": "loud", "SM_RUN_DIR": str(tmp_path),
           "SM_STATE_DIR": str(tmp_path)}
    call = xmlrpc.client.dumps(({"command": "sr_get_driver_info", "args": []},),
                               methodname="sr_get_driver_info")
    proc = subprocess.run([sys.executable, str(ROOT / "bin" / "FileSR"), call], env=env,
                          capture_output=True, text=True, check=True)
    with pytest.raises(xmlrpc.client.Fault) as err:
        xmlrpc.client.loads(proc.stdout)
    assert err.value.faultCode == InvalidArg.code
    assert "SM_LOG_LEVEL='loud'" in err.value.faultString
    assert "SM_LOG_LEVEL" in proc.stderr  # logged too, with the default set-up


def test_the_api_reads_its_environ_once(tmp_path: Path) -> None:
    from sm.api import StorageManager

    env = {"SM_HOME": str(tmp_path / "h"), "SM_REVERT": "clone", "PATH": ""}
    with StorageManager(environ=env) as sm:
        assert sm.env_settings.revert == "clone" and sm.setting("revert") == "clone"
        assert sm.paths.state_dir == tmp_path / "h" / "state"
        assert sm.driver_environ["SM_STATE_DIR"] == str(tmp_path / "h" / "state")
    with pytest.raises(InvalidArg, match="SM_TRANSPORT='ssh'"):
        StorageManager(environ={**env, "SM_TRANSPORT": "ssh"})
