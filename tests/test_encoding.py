"""Answers in any environment (issue 15, section 5): a driver executable's answer, the server's
answers and the CLI's output do not depend on PYTHONIOENCODING. Real `bin/FileSR` processes,
a real `sm serve`, the installed `sm` command; answers parsed with defusedxml."""

from __future__ import annotations

import subprocess
import sys
import uuid as uuidlib
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from defusedxml.ElementTree import fromstring

from tests.api.conftest import env, run_sm  # noqa: F401  (the isolated environment fixture)
from tests.server.conftest import Served, serve  # noqa: F401
from tests.smapi import request
from tests.smtest import ROOT, env_for

NAME = "disque é € 😀"
BAD_REF = "nope-ü-€"
MiB = 1024 * 1024
ENCODINGS = ["ascii", "latin-1"]


def _answer(stdout: bytes) -> Any:
    """A driver's or server's answer: ASCII, well-formed XML, an XML-RPC response."""
    stdout.decode("ascii")  # other characters travel as character references
    root = fromstring(stdout)
    assert root.tag == "methodResponse"
    (value,), _ = xmlrpc.client.loads(stdout, use_builtin_types=True)
    return value


def _fault(stdout: bytes) -> xmlrpc.client.Fault:
    with pytest.raises(xmlrpc.client.Fault) as err:
        _answer(stdout)
    return err.value


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_driver_answers_do_not_depend_on_the_environment(tmp_path: Path,
                                                         encoding: str) -> None:
    sr_uuid = str(uuidlib.uuid4())
    dconf = {"location": str(tmp_path / "sr")}

    def run(command: str, args: list[Any] | None = None, **extra: Any) -> bytes:
        struct = request(command, args or [], device_config=dconf, sr_uuid=sr_uuid, **extra)
        document = xmlrpc.client.dumps((struct,), methodname=command, allow_none=True)
        proc = subprocess.run([sys.executable, str(ROOT / "bin" / "FileSR"), document],
                              capture_output=True, timeout=60, check=False,
                              env=env_for(tmp_path, PYTHONIOENCODING=encoding))
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        assert b"Traceback" not in proc.stderr and b"Logging error" not in proc.stderr
        return proc.stdout

    _answer(run("sr_create", ["0"]))
    created = _answer(run("vdi_create", [str(MiB), NAME, f"{NAME} description"]))
    listed = {r["uuid"]: r for r in _answer(run("sm_vdi_list"))}
    assert listed[created["uuid"]]["name_label"] == NAME
    assert listed[created["uuid"]]["name_description"] == f"{NAME} description"
    fault = _fault(run("vdi_delete", vdi_uuid=BAD_REF))  # a fault that echoes the value
    assert fault.faultCode != 0 and BAD_REF in fault.faultString


def test_cli_prints_non_ascii_names_in_any_environment(env: dict[str, str]  # noqa: F811
                                                       ) -> None:
    """(The driver executables under these encodings: the test above.)"""
    for encoding in ENCODINGS:
        extra = {"PYTHONIOENCODING": encoding}
        created = run_sm(env, "vdi", "create", "--size", "1M", NAME, "--sr", "default",
                         extra=extra)  # prints the VDI, its name included
        assert created.returncode == 0, created.stderr
        assert b"disque" in created.stdout and b"Traceback" not in created.stderr
        missing = run_sm(env, "vdi", "show", BAD_REF, extra=extra)
        assert missing.returncode == 1
        assert missing.stdout == b"" and missing.stderr.count(b"\n") == 1
        assert b"VDIMissing (144)" in missing.stderr and b"nope-" in missing.stderr


def test_server_answers_are_ascii_xml(serve: Callable[..., Served]) -> None:  # noqa: F811
    server = serve("--listen", "127.0.0.1:0")
    import http.client
    import urllib.parse

    url = urllib.parse.urlparse(server.address)

    def post(method: str, *params: Any) -> bytes:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        conn.request("POST", "/", body=xmlrpc.client.dumps(params, methodname=method).encode(),
                     headers={"Authorization": f"Bearer {server.token}"})
        data = conn.getresponse().read()
        conn.close()
        return data

    assert _answer(post("vdi.create", "1048576", NAME))["name_label"] == NAME
    assert BAD_REF in _fault(post("vdi.get", BAD_REF)).faultString
