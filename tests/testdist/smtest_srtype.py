"""A tiny SR type for the dispatcher tests, registered through a real entry point.

`tests/testdist` holds this module and its `.dist-info`; putting the directory on sys.path (or
PYTHONPATH) makes importlib.metadata see the `sm.srtypes` entry points, exactly as an installed
vendor package. Storage is a state file: every construction of the driver appends a line to
`<state_dir>/constructed`, so tests can prove a refusal touched nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sm.capabilities import Capability
from sm.driver import AttachResult, Command, SRDriver, VdiRef
from sm.errors import VDIInUse, VDIMissing
from sm.requests import (
    SRProbeRequest,
    SRRequest,
    VDIAttachRequest,
    VDICreateRequest,
    VDIRequest,
)

FIXED_UUID = "0f0f0f0f-1111-2222-3333-444455556666"
NOT_A_DRIVER = object()


class SmtestSR(SRDriver):
    TYPE = "smtest"
    NAME = "Test SR"
    DESCRIPTION = "SR type used by the sm test suite"
    VENDOR = "sm project"
    COPYRIGHT = "(C) the sm authors"
    DRIVER_VERSION = "0.1"
    CAPABILITIES = frozenset(
        {
            Capability.SR_PROBE,
            Capability.VDI_CREATE,
            Capability.VDI_DELETE,
            Capability.VDI_ATTACH,
            Capability.VDI_CLONE,  # advertised but not implemented: still 38
            Capability.VDI_RESET_ON_BOOT,
        }
    )
    CONFIGURATION = (("location", "where the SR lives"), ("probe", "what sr_probe answers"))
    EXTRA_COMMANDS = {"smtest_echo": Command(SRRequest, "echo")}

    def __init__(self, context):
        super().__init__(context)
        self.context.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.context.state_dir / "constructed", "a") as f:
            f.write(f"{context.sr_uuid}\n")

    def _touch(self, what: str) -> None:
        with open(Path(self.context.state_dir) / "calls", "a") as f:
            f.write(what + "\n")

    def sr_attach(self, request: SRRequest) -> None:
        self._touch("sr_attach")

    def sr_probe(self, request: SRProbeRequest) -> str:
        self._touch("sr_probe")
        return self.context.device_config.get("probe", "<SRlist/>")

    def vdi_create(self, request: VDICreateRequest) -> VdiRef:
        self._touch("vdi_create")
        import uuid

        new = request.vdi_uuid or str(uuid.uuid4())
        return VdiRef(new, new)

    def vdi_delete(self, request: VDIRequest) -> None:
        self._touch("vdi_delete")
        location = request.vdi_location or ""
        print("stray print from a driver")  # must not reach the response on stdout
        sys.stdout.flush()
        if location.startswith("busy"):
            raise VDIInUse(f"{request.vdi_uuid} is attached", details={"holder": "test"})
        if location.startswith("gone"):
            raise VDIMissing(request.vdi_uuid)
        if location.startswith("crash"):
            raise RuntimeError("the test driver crashed")

    def vdi_attach(self, request: VDIAttachRequest) -> AttachResult:
        self._touch("vdi_attach")
        sock = self.context.run_dir / "nbd" / f"{request.vdi_uuid}.sock"
        return AttachResult(
            params_nbd=f"nbd:unix:{sock}:exportname={request.vdi_uuid}",
            o_direct=request.writable,
            xenstore_data={"storage-type": "smtest"},
        )

    def echo(self, request: SRRequest) -> _Echo:
        self._touch("echo")
        return _Echo(request)


class _Echo:
    def __init__(self, request: SRRequest) -> None:
        self.request = request

    def to_wire(self):
        return {"sr_uuid": self.request.sr_uuid, "device_config": dict(self.request.device_config)}
