"""Fixtures for the File SR tests: a client that drives FileSR through the dispatcher."""

from __future__ import annotations

import uuid as uuidlib
import xmlrpc.client
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from sm import dispatch
from srtypes.file import FileSR

MiB = 1024 * 1024


class SMFault(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class FileSRClient:
    """Sends SMAPIv1 requests to FileSR in-process (`sm.dispatch.run`) and decodes replies."""

    def __init__(self, location: Path, run_dir: Path, sr_uuid: str | None = None) -> None:
        self.location = location
        self.run_dir = run_dir
        self.sr_uuid = sr_uuid or str(uuidlib.uuid4())
        self.environ = {"SM_RUN_DIR": str(run_dir), "SM_STATE_DIR": str(run_dir / "state")}

    def struct(
        self, command: str, args: list[Any] | None = None, *, vdi: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "command": command,
            "args": args or [],
            "host_ref": "OpaqueRef:host",
            "session_ref": "OpaqueRef:session",
            "device_config": {"location": str(self.location), "SRmaster": "true"},
            "sr_uuid": self.sr_uuid,
            "sr_ref": "OpaqueRef:sr",
        }
        if vdi is not None:
            params.update(vdi_uuid=vdi, vdi_location=vdi, vdi_ref="OpaqueRef:vdi")
        params.update(extra)
        return params

    def raw(self, command: str, params: Mapping[str, Any]) -> str:
        xml = xmlrpc.client.dumps((dict(params),), methodname=command)
        return dispatch.run(FileSR, xml, environ=self.environ)

    def call(
        self, command: str, args: list[Any] | None = None, *, vdi: str | None = None, **extra: Any
    ) -> Any:
        response = self.raw(command, self.struct(command, args, vdi=vdi, **extra))
        try:
            (value,), _ = xmlrpc.client.loads(response)
        except xmlrpc.client.Fault as fault:
            raise SMFault(fault.faultCode, fault.faultString) from None
        return value

    def fault(self, command: str, args: list[Any] | None = None, **kw: Any) -> int:
        with pytest.raises(SMFault) as info:
            self.call(command, args, **kw)
        return info.value.code

    # conveniences
    def create_vdi(self, size: int = 8 * MiB, name: str = "disk", **extra: Any) -> str:
        ref = self.call("vdi_create", [str(size), name, f"{name} description"], **extra)
        return str(ref["uuid"])

    def snapshot(self, vdi: str, **extra: Any) -> str:
        return str(self.call("vdi_snapshot", vdi=vdi, **extra)["uuid"])

    def clone(self, vdi: str, **extra: Any) -> str:
        return str(self.call("vdi_clone", vdi=vdi, **extra)["uuid"])

    def revert(self, snapshot: str, target: str | None) -> None:
        self.call("vdi_revert", [target or ""], vdi=snapshot)

    def records(self) -> dict[str, dict[str, Any]]:
        return {r["uuid"]: r for r in self.call("sm_vdi_list")}

    def record(self, vdi: str) -> dict[str, Any]:
        return dict(self.call("sm_vdi_get", vdi=vdi))

    def path(self, vdi: str) -> str:
        path = str(self.call("vdi_attach", ["false"], vdi=vdi)["params"])
        self.call("vdi_detach", vdi=vdi)
        return path

    def write(self, vdi: str, offset: int, data: bytes) -> None:
        from sm import vhd

        path = str(self.call("vdi_attach", ["true"], vdi=vdi)["params"])
        try:
            with vhd.open_chain(path, writable=True) as disk:
                disk.write(offset, data)
                disk.flush()
        finally:
            self.call("vdi_detach", vdi=vdi)

    def read(self, vdi: str, offset: int = 0, length: int | None = None) -> bytes:
        from sm import vhd

        with vhd.open_chain(self.path(vdi)) as disk:
            return disk.read(offset, disk.size - offset if length is None else length)


@pytest.fixture
def sr(tmp_path: Path) -> FileSRClient:
    """A created and attached File SR in a temporary directory."""
    client = FileSRClient(tmp_path / "sr", tmp_path / "run")
    client.call("sr_create", ["0"])
    client.call("sr_attach")
    return client


@pytest.fixture
def client(tmp_path: Path) -> FileSRClient:
    """A client for a File SR that does not exist yet."""
    return FileSRClient(tmp_path / "sr", tmp_path / "run")
