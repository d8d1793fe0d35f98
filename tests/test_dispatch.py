from __future__ import annotations

import json
import subprocess
import sys
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path

import pytest

from sm import registry
from sm.capabilities import COMMAND_CAPABILITY, Capability
from sm.dispatch import COMMANDS, main, respond, type_from_program
from sm.driver import DriverContext, SRDriver
from sm.errors import SMError
from sm.requests import SRProbeRequest, SRRequest
from tests.smtest import (
    ROOT,
    SMTEST_EXE,
    SR_UUID,
    TESTDIST,
    VDI_UUID,
    call,
    env_for,
    fault,
    result,
    run_exe,
    vdi_call,
)


@pytest.fixture
def smtest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The test SR type registered through its entry point; yields the state directory."""
    monkeypatch.syspath_prepend(str(TESTDIST))
    monkeypatch.setenv("SM_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SM_RUN_DIR", str(tmp_path / "run"))
    registry.reload()
    yield tmp_path / "state"
    registry.reload()


def constructed(state: Path) -> bool:
    return (state / "constructed").exists()


# -- the table --------------------------------------------------------------------------------


def test_table_covers_the_protocol() -> None:
    assert set(COMMANDS) == set(COMMAND_CAPABILITY)
    for name, command in COMMANDS.items():
        assert command.handler == name
        assert command.capability == COMMAND_CAPABILITY[name]
        assert callable(getattr(SRDriver, name))
    assert COMMANDS["vdi_revert"].capability is Capability.VDI_REVERT
    assert COMMANDS["vdi_snapshot"].capability is Capability.VDI_SNAPSHOT
    assert COMMANDS["sr_probe"].capability is Capability.SR_PROBE
    assert COMMANDS["sr_attach"].capability is None


def test_capability_wire_strings() -> None:
    assert Capability.VDI_RESET_ON_BOOT.value == "VDI_RESET_ON_BOOT/2"
    assert str(Capability.VDI_RESET_ON_BOOT) == "VDI_RESET_ON_BOOT/2"
    assert Capability.from_wire("VDI_RESET_ON_BOOT/2") is Capability.VDI_RESET_ON_BOOT
    assert Capability.SR_PROBE == "SR_PROBE"


def test_bad_capability_declaration() -> None:
    with pytest.raises(TypeError):

        class Bad(SRDriver):
            CAPABILITIES = frozenset({"VDI_CREATE"})  # type: ignore[arg-type]


# -- sr_get_driver_info -----------------------------------------------------------------------


def test_driver_info_shape(smtest: Path) -> None:
    info = result(respond("smtest", call("sr_get_driver_info")))
    assert set(info) == {
        "name", "description", "vendor", "copyright", "driver_version",
        "required_api_version", "capabilities", "configuration",
    }  # fmt: skip
    assert info["name"] == "Test SR" and info["required_api_version"] == "1.0"
    assert info["driver_version"] == "0.1"
    assert all(isinstance(info[k], str) for k in ("name", "description", "vendor", "copyright"))
    assert info["capabilities"] == sorted(info["capabilities"])
    assert "VDI_RESET_ON_BOOT/2" in info["capabilities"] and "VDI_CREATE" in info["capabilities"]
    assert info["configuration"] == [
        {"key": "location", "description": "where the SR lives"},
        {"key": "probe", "description": "what sr_probe answers"},
    ]
    assert not constructed(smtest)


def test_driver_info_untyped_minimal_request(smtest: Path) -> None:
    doc = (
        "<methodCall><methodName>sr_get_driver_info</methodName><params><param><value><struct>"
        "<member><name>command</name><value>sr_get_driver_info</value></member>"
        "<member><name>args</name><value><array><data/></array></value></member>"
        "</struct></value></param></params></methodCall>"
    )
    assert result(respond("smtest", doc))["vendor"] == "sm project"


# -- refusals without touching storage --------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "code"),
    [
        (vdi_call("vdi_snapshot"), 38),  # capability not advertised
        (vdi_call("vdi_revert", [VDI_UUID]), 38),
        (vdi_call("vdi_snapshot", sr_uuid="garbage"), 38),  # refused before validation
        (vdi_call("vdi_clone"), 38),  # advertised, not implemented
        (call("sr_scan", sr_uuid=SR_UUID), 38),  # no capability needed, not implemented
        (vdi_call("vdi_compose"), 38),  # unknown command
        (call("no_such_command"), 38),
        ("<methodCall><methodName>sr_attach", 143),
        (call("sr_attach"), 143),  # no sr_uuid
        (call("sr_attach", sr_uuid="../../etc"), 1),
        (call("vdi_create", ["-1"], sr_uuid=SR_UUID), 79),  # VDISize
        (call("vdi_create", [], sr_uuid=SR_UUID), 143),
        (vdi_call("vdi_delete", vdi_location="../../etc/passwd"), 1),
        (vdi_call("vdi_attach", ["maybe"]), 1),
        (call("sr_attach", sr_uuid=SR_UUID, device_config={"x": 1}), 143),
        (xmlrpc.client.dumps(({}, {}), methodname="sr_attach"), 143),
    ],
)
def test_refused_without_constructing(smtest: Path, doc: str, code: int) -> None:
    assert fault(respond("smtest", doc)).faultCode == code
    assert not constructed(smtest)


def test_unimplemented_message_names_capability(smtest: Path) -> None:
    err = fault(respond("smtest", vdi_call("vdi_revert", [VDI_UUID])))
    assert "VDI_REVERT" in err.faultString and "smtest" in err.faultString


# -- results and errors -----------------------------------------------------------------------


def test_success_results(smtest: Path, tmp_path: Path) -> None:
    assert result(respond("smtest", call("sr_attach", sr_uuid=SR_UUID))) is None
    assert (smtest / "constructed").read_text() == f"{SR_UUID}\n"

    created = result(respond("smtest", call("vdi_create", ["1024", "x"], sr_uuid=SR_UUID)))
    assert set(created) == {"uuid", "location"} and created["uuid"] == created["location"]

    attached = result(respond("smtest", vdi_call("vdi_attach", ["true"])))
    sock = tmp_path / "run" / "nbd" / f"{VDI_UUID}.sock"
    assert attached == {
        "params_nbd": f"nbd:unix:{sock}:exportname={VDI_UUID}",
        "o_direct": True,
        "xenstore_data": {"storage-type": "smtest"},
    }
    probed = result(respond("smtest", call("sr_probe", device_config={"probe": "<SRlist/>"})))
    assert probed == "<SRlist/>"


def test_extension_command(smtest: Path) -> None:
    echoed = result(
        respond("smtest", call("smtest_echo", sr_uuid=SR_UUID, device_config={"a": "b"}))
    )
    assert echoed == {"sr_uuid": SR_UUID, "device_config": {"a": "b"}}


@pytest.mark.parametrize(
    ("location", "code", "text"),
    [("busy-1", 24, "is attached"), ("gone-1", 144, VDI_UUID)],
)
def test_smerror_becomes_fault(smtest: Path, location: str, code: int, text: str) -> None:
    err = fault(respond("smtest", vdi_call("vdi_delete", vdi_location=location)))
    assert err.faultCode == code
    assert "[opterr=" in err.faultString and text in err.faultString


def test_unexpected_exception_is_1200(smtest: Path, caplog: pytest.LogCaptureFixture) -> None:
    err = fault(respond("smtest", vdi_call("vdi_delete", vdi_location="crash-1")))
    assert err.faultCode == 1200
    assert "RuntimeError" in err.faultString and "crashed" in err.faultString
    assert "Traceback" not in err.faultString
    assert any(r.exc_info for r in caplog.records)


def test_unknown_and_broken_types(smtest: Path) -> None:
    for name in ("nosuchtype", "smbroken", "smmissing"):
        assert fault(respond(name, call("sr_get_driver_info"))).faultCode == 48
    assert "smtest" in registry.names()
    assert registry.get("SMTEST").TYPE == "smtest"


def test_registry_fast_scan_agrees_with_importlib_metadata(smtest: Path) -> None:
    fast = dict(registry._fast_table())
    full = {name: ep.value for name, ep in registry._metadata_table().items()}
    assert fast == full
    assert fast["smtest"] == "smtest_srtype:SmtestSR"


class _Odd(SRDriver):
    TYPE = "odd"
    CAPABILITIES = frozenset({Capability.SR_PROBE})

    def sr_probe(self, request: SRProbeRequest) -> str:
        return "bad \x00 char" if "nul" in request.device_config else 42  # type: ignore[return-value]

    def sr_attach(self, request: SRRequest) -> None:
        raise SMError("plain root error")


def test_driver_class_directly() -> None:
    assert fault(respond(_Odd, call("sr_probe", device_config={"nul": "1"}))).faultCode == 447
    assert fault(respond(_Odd, call("sr_probe"))).faultCode == 1200  # no wire form
    assert fault(respond(_Odd, call("sr_attach", sr_uuid=SR_UUID))).faultCode == 202
    info = result(respond(_Odd, call("sr_get_driver_info")))
    assert info["capabilities"] == ["SR_PROBE"] and info["configuration"] == []


def test_context_environment(tmp_path: Path) -> None:
    ctx = DriverContext(sr_uuid=SR_UUID, environ={})
    assert (str(ctx.state_dir), str(ctx.run_dir)) == ("/var/lib/sm", "/run/sm")
    ctx = DriverContext(environ={"SM_STATE_DIR": str(tmp_path), "SM_RUN_DIR": "/r"})
    assert ctx.state_dir == tmp_path and str(ctx.run_dir) == "/r"
    recorder = object()
    assert DriverContext(executor=recorder).executor is recorder  # type: ignore[arg-type]
    assert hasattr(DriverContext(environ={}).executor, "run")


def test_type_from_program() -> None:
    assert type_from_program("/opt/sm/bin/NFSSR") == "nfs"
    assert type_from_program("FileSR") == "file"
    assert type_from_program("LVHDSR") == "lvhd"


# -- main (in process) ------------------------------------------------------------------------


def test_main_prints_exactly_the_response(smtest: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main("smtest", [vdi_call("vdi_delete", vdi_location="busy-2")])
    assert exit_info.value.code == 0
    out, err = capfd.readouterr()
    assert fault(out).faultCode == 24
    assert out.startswith("<?xml") and out.endswith("</methodResponse>\n")
    assert "stray print" in err and "stray print" not in out


@pytest.mark.parametrize("argv", [[], ["a", "b"]])
def test_main_argument_count(argv: list[str], capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main("smtest", argv)
    assert exit_info.value.code == 0
    assert fault(capfd.readouterr().out).faultCode == 143


# -- executables (subprocess) -----------------------------------------------------------------


def test_executable_crash_traceback_on_stderr_only(tmp_path: Path) -> None:
    proc = run_exe(SMTEST_EXE, vdi_call("vdi_delete", vdi_location="crash-2"), tmp=tmp_path)
    assert proc.returncode == 0
    assert fault(proc.stdout).faultCode == 1200
    assert proc.stdout.count("<methodResponse>") == 1
    assert "Traceback" not in proc.stdout and "stray print" not in proc.stdout
    assert "Traceback" in proc.stderr and "RuntimeError" in proc.stderr
    assert "stray print" in proc.stderr


def test_executable_success_and_bad_xml(tmp_path: Path) -> None:
    proc = run_exe(SMTEST_EXE, call("sr_get_driver_info"), tmp=tmp_path)
    assert proc.returncode == 0 and result(proc.stdout)["name"] == "Test SR"
    proc = run_exe(SMTEST_EXE, "<<<", tmp=tmp_path)
    assert proc.returncode == 0 and fault(proc.stdout).faultCode == 143
    proc = run_exe(SMTEST_EXE, tmp=tmp_path)
    assert proc.returncode == 0 and fault(proc.stdout).faultCode == 143


def test_file_sr_executable_answers(tmp_path: Path) -> None:
    # Before the File SR type is registered this is Fault 48; afterwards its driver info.
    proc = run_exe(ROOT / "bin" / "FileSR", call("sr_get_driver_info"), tmp=tmp_path)
    assert proc.returncode == 0
    try:
        assert "capabilities" in result(proc.stdout)
    except xmlrpc.client.Fault as err:
        assert err.faultCode == 48


def test_cli_driver_command(tmp_path: Path) -> None:
    cli = [sys.executable, "-c", "from sm.cli.main import main; main()", "driver", "smtest"]
    proc = subprocess.run(
        [*cli, vdi_call("vdi_delete", vdi_location="gone-3")],
        capture_output=True, text=True, env=env_for(tmp_path), check=False,
    )  # fmt: skip
    assert proc.returncode == 0 and fault(proc.stdout).faultCode == 144
    proc = subprocess.run(
        [*cli, "-"], input=call("sr_get_driver_info"),
        capture_output=True, text=True, env=env_for(tmp_path), check=False,
    )  # fmt: skip
    assert proc.returncode == 0 and result(proc.stdout)["name"] == "Test SR"


HEAVY = ("click", "sm.vhd", "sm.cli", "sm.executor", "yaml", "hypothesis", "importlib.metadata")


def test_dispatch_path_stays_light(tmp_path: Path) -> None:
    # The executable's import set for a simple request: no CLI, no engine, no subprocess layer.
    code = (
        "import atexit, json, sys\n"
        f"heavy = {HEAVY!r}\n"
        "atexit.register(lambda: sys.stderr.write('MODULES=' + json.dumps(sorted(m for m in "
        "sys.modules if m.startswith(heavy))) + '\\n'))\n"
        "from sm.dispatch import main\n"
        "main('smtest')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, call("sr_get_driver_info")],
        capture_output=True, text=True, env=env_for(tmp_path), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert result(proc.stdout)["name"] == "Test SR"
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES="))
    assert json.loads(line.removeprefix("MODULES=")) == []
