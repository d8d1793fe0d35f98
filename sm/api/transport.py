"""How this layer talks to drivers: SMAPIv1 XML-RPC documents, nothing else.

- `InProcess` (the default): builds the `methodCall`, hands it to `sm.dispatch.run` in this
  process and parses the response.
- `Exec`: runs the driver executable `<Type>SR '<methodCall>'` exactly as a toolstack does and
  parses its stdout. Executables are looked up (case-insensitively, `file` -> `FileSR`) in
  `SM_DRIVER_PATH` (colon-separated), the Python environment's scripts directory (where an
  installed `sm` puts its `[project.scripts]` `FileSR`, `NFSSR`, ...), then `PATH`; a checkout's
  `bin/` is found only through one of these (e.g. `SM_DRIVER_PATH=<checkout>/bin`).

Both turn a Fault back into the typed `SMError` of its code (`sm.errors.error_by_code`; an
unknown code gets a subclass carrying that code), with the `opterr` part as the message.
"""

from __future__ import annotations

import os
import re
import subprocess
import sysconfig
import xmlrpc.client
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from sm import xmlrpc as smxml
from sm.errors import SMError, error_by_code
from sm.settings import Settings

__all__ = ["Exec", "InProcess", "Transport", "fault_to_error", "find_executable", "make"]

_OPTERR = re.compile(r"\[opterr=(.*)\]\s*\Z", re.DOTALL)


class Transport(Protocol):
    name: str

    def call(self, srtype: str, method: str, struct: Mapping[str, Any]) -> Any:
        """Send one request struct; the response value, or a typed SMError."""
        ...


def fault_to_error(code: int, text: str) -> SMError:
    """The typed error for a Fault (`desc [opterr=msg]` -> message `msg`)."""
    match = _OPTERR.search(text)
    message = match.group(1) if match else text
    try:
        cls = error_by_code(code)
    except KeyError:
        cls = type(f"SMError{code}", (SMError,), {"code": code, "name": f"SMError{code}",
                                                 "description": text})
    return cls(message)


def parse_response(document: str, method: str) -> Any:
    try:
        (value,), _ = xmlrpc.client.loads(document, use_builtin_types=True)
    except xmlrpc.client.Fault as fault:
        raise fault_to_error(int(fault.faultCode), str(fault.faultString)) from None
    except Exception as err:
        raise SMError(f"{method}: unparsable driver response: {err}") from err
    return value


class InProcess:
    name = "inproc"

    def call(self, srtype: str, method: str, struct: Mapping[str, Any]) -> Any:
        from sm import dispatch, registry

        document = smxml.dumps_call(method, [dict(struct)])
        return parse_response(dispatch.run(registry.get(srtype), document), method)


def find_executable(srtype: str, environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    dirs = [Path(d) for d in Settings.from_environ(env).driver_path]
    dirs += [Path(sysconfig.get_path("scripts"))]
    dirs += [Path(d) for d in env.get("PATH", "").split(os.pathsep) if d]
    wanted = f"{srtype.lower()}sr"
    for directory in dirs:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in sorted(names):
            path = directory / name
            if name.lower() == wanted and os.access(path, os.X_OK) and path.is_file():
                return path
    from sm import registry
    from sm.errors import SRUnknownType

    raise SRUnknownType(f"no driver executable for SR type {srtype!r} (looked for {wanted} in "
                        "SM_DRIVER_PATH, the scripts directory and PATH; installed types: "
                        f"{', '.join(registry.names()) or 'none'})")


class Exec:
    name = "exec"

    def __init__(self, environ: Mapping[str, str] | None = None, timeout: float = 3600) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self.timeout = timeout

    def call(self, srtype: str, method: str, struct: Mapping[str, Any]) -> Any:
        program = find_executable(srtype, self.environ)
        document = smxml.dumps_call(method, [dict(struct)])
        proc = subprocess.run([str(program), document], capture_output=True, text=True,
                              env=self.environ, timeout=self.timeout, check=False)
        if proc.returncode != 0:
            raise SMError(f"{program.name} {method} exited with status {proc.returncode}: "
                          f"{proc.stderr.strip()[-2000:]}")
        return parse_response(proc.stdout, method)


def make(name: str, environ: Mapping[str, str] | None = None) -> Transport:
    if name == "exec":
        return Exec(environ)
    if name == "inproc":
        return InProcess()
    raise ValueError(f"unknown transport {name!r}")
