"""A toolstack's side of the SMAPIv1 wire, for tests of real SR types.

`request()` builds the struct a toolstack sends (every key xapi adds: `host_ref`,
`session_ref`, `sr_ref`, `vdi_ref`, `device_config` with `SRmaster`, ...), `dumps()` turns it
into a `methodCall` (typed, as `xmlrpc.client` writes it, or untyped `<value>text</value>` as the
OCaml toolstack writes it), and a `Transport` delivers it:

- `InProcess(driver_cls)`: `sm.dispatch.run` in this process (fast; crash points never fire);
- `Process(executable)`: `bin/<Type>SR '<xml>'` as a child process, exactly as xapi runs it.

`Transport.call()` parses the one response with `xmlrpc.client.loads` and returns its value, or
raises `SMFault` carrying the fault code. `Transport.send()` returns the raw `Outcome` (stdout,
stderr, exit status, signal) for tests that look at the process itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xmlrpc.client
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

__all__ = [
    "ROOT",
    "InProcess",
    "Outcome",
    "Process",
    "SMFault",
    "Transport",
    "dumps",
    "parse",
    "request",
    "untyped",
]

NO_SESSION = frozenset({"sr_get_driver_info"})
SR_SCOPED_WITHOUT_SR = frozenset({"sr_get_driver_info", "sr_probe"})


class SMFault(Exception):
    """The driver answered with a Fault."""

    def __init__(self, code: int, string: str, command: str = "?") -> None:
        super().__init__(f"{command}: Fault {code}: {string}")
        self.code = code
        self.string = string
        self.command = command


def request(
    command: str,
    args: list[Any] | tuple[Any, ...] = (),
    *,
    device_config: Mapping[str, str] | None = None,
    sr_uuid: str | None = None,
    vdi_uuid: str | None = None,
    vdi_location: str | None = None,
    master: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """The request struct, with every key a toolstack sends for `command`. `extra` adds or
    overrides keys (`driver_params`, `vdi_sm_config`, `new_uuid`, ...); an `extra` value of None
    removes the key (to test a missing key)."""
    dconf = {"SRmaster": "true" if master else "false"}
    dconf.update(device_config or {})
    struct: dict[str, Any] = {
        "host_ref": "OpaqueRef:6f5d2a0e-host",
        "command": command,
        "args": [str(a) if isinstance(a, int) and not isinstance(a, bool) else a for a in args],
        "device_config": dconf,
    }
    if command not in NO_SESSION:
        struct["session_ref"] = "OpaqueRef:9a1c-session"
    if sr_uuid is not None and command not in SR_SCOPED_WITHOUT_SR:
        struct["sr_uuid"] = sr_uuid
        struct["sr_ref"] = f"OpaqueRef:sr-{sr_uuid[:8]}"
    if command == "sr_probe":
        struct["sr_sm_config"] = {}
    if vdi_uuid is not None:
        struct["vdi_uuid"] = vdi_uuid
        struct["vdi_ref"] = f"OpaqueRef:vdi-{vdi_uuid[:8]}"
        struct["vdi_location"] = vdi_location if vdi_location is not None else vdi_uuid
    if command == "vdi_create":
        struct.setdefault("vdi_type", "user")
        struct.setdefault("vdi_sm_config", {})
    if command in ("vdi_snapshot", "vdi_clone", "vdi_revert"):
        struct.setdefault("driver_params", {})
    if command.startswith("vdi_") and command not in ("vdi_create", "vdi_introduce"):
        struct["vdi_allow_caching"] = "false"
        struct["vdi_on_boot"] = "persist"
    for key, value in extra.items():
        if value is None:
            struct.pop(key, None)
        else:
            struct[key] = value
    return struct


_TYPED_STRING = re.compile(r"<value><string>([^<]*)</string></value>")


def untyped(document: str) -> str:
    """Rewrite `<value><string>x</string></value>` as `<value>x</value>` (the OCaml style)."""
    return _TYPED_STRING.sub(r"<value>\1</value>", document)


def dumps(struct: Mapping[str, Any], *, typed: bool = True, method: str | None = None) -> str:
    """A methodCall document for `struct` (method name from its `command` unless given)."""
    name = method or str(struct["command"])
    text = xmlrpc.client.dumps((dict(struct),), methodname=name, allow_none=True)
    return text if typed else untyped(text)


def parse(stdout: str, command: str = "?") -> Any:
    """The value of a methodResponse; raises SMFault for a Fault."""
    try:
        (value,), _ = xmlrpc.client.loads(stdout)
    except xmlrpc.client.Fault as fault:
        raise SMFault(int(fault.faultCode), str(fault.faultString), command) from None
    return value


@dataclass
class Outcome:
    """What one delivery produced."""

    stdout: str
    stderr: str = ""
    returncode: int = 0

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode < 0 else None

    def responses(self) -> int:
        return self.stdout.count("<methodResponse>")

    def value(self, command: str = "?") -> Any:
        if self.returncode != 0:
            raise AssertionError(
                f"{command}: exit status {self.returncode}; stderr:\n{self.stderr}"
            )
        if self.responses() != 1:
            raise AssertionError(f"{command}: not exactly one response:\n{self.stdout}")
        return parse(self.stdout, command)


@dataclass
class Transport:
    """Delivers request documents to one SR type; `env` holds SM_STATE_DIR/SM_RUN_DIR."""

    env: dict[str, str] = field(default_factory=dict)
    typed: bool = True

    name = "?"

    def send(self, document: str, *, env: Mapping[str, str] | None = None) -> Outcome:
        raise NotImplementedError

    def call(self, struct: Mapping[str, Any], *, env: Mapping[str, str] | None = None) -> Any:
        command = str(struct["command"])
        return self.send(dumps(struct, typed=self.typed), env=env).value(command)


@dataclass
class InProcess(Transport):
    driver: Any = None
    name = "inproc"

    def send(self, document: str, *, env: Mapping[str, str] | None = None) -> Outcome:
        from sm.dispatch import run

        environ = {**os.environ, **self.env, **(env or {})}
        return Outcome(run(self.driver, document, environ=environ))


@dataclass
class Process(Transport):
    executable: Path = ROOT / "bin" / "FileSR"
    timeout: float = 120
    name = "process"

    def send(self, document: str, *, env: Mapping[str, str] | None = None) -> Outcome:
        proc = self.popen(document, env=env)
        stdout, stderr = proc.communicate(timeout=self.timeout)
        return Outcome(stdout, stderr, proc.returncode)

    def popen(
        self, document: str, *, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[str]:
        full = {**os.environ, **self.env, **(env or {})}
        return subprocess.Popen(
            [sys.executable, str(self.executable), document],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full,
        )
