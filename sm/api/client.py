"""One SR seen through SMAPIv1: builds the request structs a toolstack would send.

`SRClient` knows nothing about identities or trees; it speaks in SR volumes ("backings").
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid as uuidlib
from collections.abc import Iterator, Mapping
from typing import Any

from sm import vdipause
from sm.capabilities import Capability
from sm.errors import SMError, Unimplemented
from sm.owner import this_process

from . import checks
from .config import SrConfig
from .transport import Transport

__all__ = ["SRClient"]

log = logging.getLogger(__name__)

_HOST_REF = "OpaqueRef:sm-api-host"
_SESSION_REF = "OpaqueRef:sm-api-session"


class SRClient:
    def __init__(self, sr: SrConfig, transport: Transport) -> None:
        self.sr = sr
        self.transport = transport

    def _struct(self, command: str, args: list[str] | None = None, *,
                vdi: tuple[str, str] | None = None, **extra: Any) -> dict[str, Any]:
        struct: dict[str, Any] = {
            "command": command,
            "args": list(args or []),
            "device_config": {"SRmaster": "true", **self.sr.device_config},
            "host_ref": _HOST_REF,
            "session_ref": _SESSION_REF,
            "sr_uuid": self.sr.uuid,
            "sr_ref": f"OpaqueRef:{self.sr.uuid}",
        }
        if vdi is not None:
            struct |= {"vdi_uuid": vdi[0], "vdi_location": vdi[1],
                       "vdi_ref": f"OpaqueRef:{vdi[0]}"}
        return struct | extra

    def call(self, command: str, args: list[str] | None = None, *,
             vdi: tuple[str, str] | None = None, **extra: Any) -> Any:
        return self.transport.call(self.sr.type, command,
                                   self._struct(command, args, vdi=vdi, **extra))

    # -- SR -----------------------------------------------------------------------------------

    @functools.cached_property
    def driver_info(self) -> dict[str, Any]:
        info: dict[str, Any] = self.transport.call(
            self.sr.type, "sr_get_driver_info",
            {"command": "sr_get_driver_info", "args": [], "device_config": {},
             "host_ref": _HOST_REF})
        return info

    def has(self, capability: Capability) -> bool:
        return capability.value in self.driver_info.get("capabilities", [])

    def sr_create(self, size: int = 0) -> None:
        self.call("sr_create", [str(size)])

    def sr_attach(self) -> None:
        self.call("sr_attach")

    def sr_detach(self) -> None:
        self.call("sr_detach")

    def sr_delete(self) -> None:
        self.call("sr_delete")

    def sr_scan(self) -> None:
        self.call("sr_scan")

    # -- VDIs (backings) ----------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """Every VDI record of the SR (extension `sm_vdi_list`)."""
        value = self.call("sm_vdi_list")
        if not isinstance(value, list):
            raise SMError(f"sm_vdi_list of SR {self.sr.name} returned {type(value).__name__}")
        return [dict(r) for r in value]

    def record(self, uuid: str, location: str) -> dict[str, Any]:
        return dict(self.call("sm_vdi_get", vdi=(uuid, location)))

    def vdi_create(self, size: int, name_label: str, name_description: str,
                   vdi_uuid: str | None = None) -> tuple[str, str]:
        checks.count("size", size)
        checks.name("VDI", name_label, empty=True)
        checks.description("VDI", name_description)
        extra: dict[str, Any] = {"vdi_type": "user", "vdi_sm_config": {}}
        if vdi_uuid:
            extra["vdi_uuid"] = vdi_uuid
        args = [str(size), name_label, name_description, "", "false", "", "", "false"]
        return self._ref(self.call("vdi_create", args, **extra))

    def vdi_delete(self, vdi: tuple[str, str]) -> None:
        self.call("vdi_delete", vdi=vdi)

    def vdi_snapshot(self, vdi: tuple[str, str]) -> tuple[str, str]:
        return self._ref(self.call("vdi_snapshot", vdi=vdi, driver_params={}))

    def vdi_clone(self, vdi: tuple[str, str]) -> tuple[str, str]:
        return self._ref(self.call("vdi_clone", vdi=vdi, driver_params={}))

    def vdi_resize(self, vdi: tuple[str, str], size: int) -> tuple[str, str]:
        return self._ref(self.call("vdi_resize", [str(size)], vdi=vdi))

    def vdi_revert(self, snapshot: tuple[str, str], target: str) -> None:
        self.call("vdi_revert", [target], vdi=snapshot, driver_params={})

    def vdi_attach(self, vdi: tuple[str, str], writable: bool) -> Mapping[str, Any]:
        result: Mapping[str, Any] = self.call("vdi_attach", [str(writable).lower()], vdi=vdi)
        if self.has(Capability.VDI_ACTIVATE):
            self.call("vdi_activate", [str(writable).lower()], vdi=vdi)
        return result

    def vdi_update(self, vdi: tuple[str, str]) -> None:
        """Refresh the record from the storage (sizes); nothing if the SR type cannot."""
        if self.has(Capability.VDI_UPDATE):
            self.call("vdi_update", vdi=vdi)

    def vdi_detach(self, vdi: tuple[str, str]) -> None:
        if self.has(Capability.VDI_DEACTIVATE):
            self.call("vdi_deactivate", vdi=vdi)
        self.call("vdi_detach", vdi=vdi)

    # -- data paths on this host (sm.vdipause) -------------------------------------------------

    def vdi_pause(self, vdi: tuple[str, str], owner: str) -> str | None:
        """`sm_vdi_pause` for `owner`: "paused", "held" or "none"; None if the SR type does not
        answer it (Unimplemented)."""
        try:
            return str(self.call(vdipause.PAUSE, [owner], vdi=vdi))
        except Unimplemented:
            return None

    def vdi_resume(self, vdi: tuple[str, str], owner: str) -> str:
        """`sm_vdi_resume` for `owner`: "resumed", "running", "held" or "none"."""
        return str(self.call(vdipause.RESUME, [owner], vdi=vdi))

    @contextlib.contextmanager
    def paused(self, vdi: tuple[str, str]) -> Iterator[str | None]:
        """The VDI's data path on this host held still for the block, by this process: yields
        the pause's answer (None: the SR type cannot pause); what this call paused is resumed
        after, even on error (a failed resume is logged: the SR's recovery resumes a pause
        whose owner is gone)."""
        owner = this_process()
        answer = self.vdi_pause(vdi, owner)
        try:
            yield answer
        finally:
            if answer == vdipause.PAUSED:
                try:
                    self.vdi_resume(vdi, owner)
                except Exception as err:
                    log.error("VDI %s: resume of the data path failed (%s)", vdi[0], err)

    @staticmethod
    def _ref(value: Any) -> tuple[str, str]:
        if not isinstance(value, dict) or "uuid" not in value:
            raise SMError(f"driver answered {value!r} where {{uuid, location}} was expected")
        return str(value["uuid"]), str(value.get("location") or value["uuid"])


def new_uuid() -> str:
    return str(uuidlib.uuid4())
