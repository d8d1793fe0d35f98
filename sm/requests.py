"""Typed SMAPIv1 requests, built and validated once from the request struct.

Every command gets a frozen value class (`sm.struct.Frozen`; a small family: SR-scoped,
VDI-scoped, plus one per command that has arguments). `Request.from_params(command, params)`
checks everything a driver would otherwise have to re-check, so handlers work with clean values
only:

- uuids (`sr_uuid`, `vdi_uuid`, `new_uuid`) are uuids, returned in canonical lowercase form;
- sizes are non-negative integers (given as decimal strings or XML-RPC ints) up to `MAX_SIZE`;
- booleans are `"true"`/`"false"` (any case) or XML-RPC booleans;
- `device_config`, `sr_sm_config`, `vdi_sm_config`, `driver_params` are str -> str maps;
- a `vdi_location` is a plain name that cannot escape its SR: 1-255 characters of
  `[A-Za-z0-9._:+@-]`, starting with a letter or digit (so no `/`, no `..`, no NUL).

Which error for what (one rule):

- **BadRequest (143)**: the SHAPE is wrong — params is not one struct, a required key or
  positional argument is missing, a value has the wrong XML-RPC type (e.g. an int where a map
  of strings is expected, `args` not an array), `command` disagrees with the method name.
- **InvalidArg (1)**: the shape is right but a VALUE is not acceptable — a malformed uuid, a
  negative/huge/non-numeric size, a boolean that is not true/false, a hostile location.

Positional arguments beyond those a command defines are ignored (forward compatibility, as the
original drivers do). Keys that no command uses (`vdi_on_boot`, `local_cache_sr`, ...) are kept
in `Request.extra` untouched.

The validators and the typed reader of the struct live in `sm.params` (`parse_*` and `MAX_SIZE`
are re-exported here).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Self

from sm.errors import BadRequest
from sm.params import (
    EMPTY,
    MAX_SIZE,
    UUID_RE,
    Reader,
    parse_bool,
    parse_location,
    parse_size,
    parse_uuid,
    parse_vdi_size,
)
from sm.struct import Frozen
from sm.xmlrpc import Value

__all__ = [
    "MAX_SIZE",
    "DriverInfoRequest",
    "Request",
    "SRCreateRequest",
    "SRProbeRequest",
    "SRRequest",
    "VDIAttachRequest",
    "VDICreateRequest",
    "VDIIntroduceRequest",
    "VDINamesRequest",
    "VDIRequest",
    "VDIResizeRequest",
    "VDIRevertRequest",
    "VDISnapshotRequest",
    "VdiId",
    "parse_bool",
    "parse_location",
    "parse_size",
    "parse_uuid",
]

# Keys read by some request class; anything else lands in `Request.extra`.
_KNOWN_KEYS = frozenset(
    {
        "command", "args", "device_config", "host_ref", "session_ref", "subtask_of",
        "sr_uuid", "sr_ref", "sr_sm_config", "vdi_uuid", "vdi_ref", "vdi_location",
        "vdi_type", "vdi_sm_config", "new_uuid", "driver_params",
    }
)  # fmt: skip


# -- the request family -----------------------------------------------------------------------


class Request(Frozen, kw_only=True):
    """Keys every request carries (`device_config` includes the toolstack's `SRmaster`)."""

    command: str
    device_config: Mapping[str, str]
    host_ref: str | None = None
    session_ref: str | None = None
    subtask_of: str | None = None
    extra: Mapping[str, Value] = EMPTY
    _hidden = frozenset({"extra"})

    @classmethod
    def from_params(cls, command: str, params: list[Value] | Value) -> Self:
        """Build from the XML-RPC params (a list holding exactly one struct) or the struct."""
        if isinstance(params, list):
            if len(params) != 1:
                raise BadRequest(f"expected exactly one parameter, got {len(params)}")
            params = params[0]
        if not isinstance(params, dict):
            raise BadRequest("the parameter must be a struct")
        if "command" in params and params["command"] != command:
            raise BadRequest(f"command {params['command']!r} does not match method {command!r}")
        reader = Reader(params)
        fields = cls._fields(reader)
        fields["command"] = command
        extra = {k: v for k, v in params.items() if k not in _KNOWN_KEYS}
        fields["extra"] = MappingProxyType(extra)
        return cls(**fields)

    @classmethod
    def _fields(cls, r: Reader) -> dict[str, Any]:
        if "device_config" not in r.params:
            raise BadRequest("missing device_config")
        return {
            "device_config": r.string_map("device_config"),
            "host_ref": r.opt_string("host_ref"),
            "session_ref": r.opt_string("session_ref"),
            "subtask_of": r.opt_string("subtask_of"),
        }


class DriverInfoRequest(Request, kw_only=True):
    """`sr_get_driver_info`: nothing beyond the common keys (device_config may be empty)."""

    @classmethod
    def _fields(cls, r: Reader) -> dict[str, Any]:
        if "device_config" not in r.params:
            return {"device_config": EMPTY}
        return super()._fields(r)


class SRProbeRequest(Request, kw_only=True):
    """`sr_probe`: no SR yet; `sr_sm_config` may narrow the probe."""

    sr_sm_config: Mapping[str, str] = EMPTY

    @classmethod
    def _fields(cls, r: Reader) -> dict[str, Any]:
        return super()._fields(r) | {"sr_sm_config": r.string_map("sr_sm_config")}


class SRRequest(Request, kw_only=True):
    """SR-scoped commands (`sr_delete`, `sr_attach`, `sr_detach`, `sr_scan`, `sr_update`,
    `sr_content_type`)."""

    sr_uuid: str
    sr_ref: str | None = None

    @classmethod
    def _fields(cls, r: Reader) -> dict[str, Any]:
        return super()._fields(r) | {"sr_uuid": r.uuid("sr_uuid"), "sr_ref": r.opt_string("sr_ref")}


class SRCreateRequest(SRRequest, kw_only=True):
    """`sr_create`: args `[size]` (optional, default 0: "as large as the device")."""

    size: int = 0

    @classmethod
    def _fields(cls, r: Reader) -> dict[str, Any]:
        return super()._fields(r) | {"size": parse_size(r.opt_arg(0, "0"), "size")}


class VdiId(Frozen):
    """How a request names a VDI: its uuid, its location in the SR, its toolstack reference."""

    uuid: str
    location: str | None = None
    ref: str | None = None


class VDIRequest(SRRequest, kw_only=True):
    """VDI-scoped commands without arguments (`vdi_delete`, `vdi_update`, `vdi_detach`,
    `vdi_deactivate`, `vdi_generate_config`). `vdi_location` is None when not sent."""

    vdi_uuid: str
    vdi_location: str | None = None
    vdi_ref: str | None = None

    @property
    def vdi(self) -> VdiId:
        return VdiId(self.vdi_uuid, self.vdi_location, self.vdi_ref)

    @classmethod
    def _fields(cls, r: Reader) -> dict[str, Any]:
        return super()._fields(r) | {
            "vdi_uuid": r.uuid("vdi_uuid"),
            "vdi_location": r.opt_location("vdi_location"),
            "vdi_ref": r.opt_string("vdi_ref"),
        }


class VDIAttachRequest(VDIRequest, kw_only=True):
    """`vdi_attach` and `vdi_activate`: args `[writable]` ("true"/"false")."""

    writable: bool

    @classmethod
    def _fields(cls, r: Reader) -> dict[str, Any]:
        return super()._fields(r) | {"writable": parse_bool(r.arg(0, "writable"), "writable")}


class VDISnapshotRequest(VDIRequest, kw_only=True):
    """`vdi_snapshot` and `vdi_clone`: no args; `driver_params` (e.g. `type=single|internal`)."""

    driver_params: Mapping[str, str] = EMPTY

    @classmethod
    def _fields(cls, r: Reader) -> dict[str, Any]:
        return super()._fields(r) | {"driver_params": r.string_map("driver_params")}


class VDIResizeRequest(VDIRequest, kw_only=True):
    """`vdi_resize` and `vdi_resize_online`: args `[new_size]`."""

    new_size: int

    @classmethod
    def _fields(cls, r: Reader) -> dict[str, Any]:
        return super()._fields(r) | {"new_size": parse_vdi_size(r.arg(0, "new_size"), "new_size")}


class VDINamesRequest(VDIRequest, kw_only=True):
    """Extension `sm_vdi_set_names`: args `[name_label, name_description]`, both required (the
    caller sends the current value of the one it does not change)."""

    name_label: str
    name_description: str

    @classmethod
    def _fields(cls, r: Reader) -> dict[str, Any]:
        return super()._fields(r) | {"name_label": r.arg_string(0, "name_label"),
                                     "name_description": r.arg_string(1, "name_description")}


class VDICreateRequest(SRRequest, kw_only=True):
    """`vdi_create`: args `[size, name_label, name_description, metadata_of_pool, is_a_snapshot,
    snapshot_time, snapshot_of, read_only]`; only `size` is required, the others default to
    "", "", "", false, "", "", false. `vdi_uuid` is None unless the caller chose one (the driver
    then generates it). `vdi_type` defaults to "user"."""

    size: int
    name_label: str = ""
    name_description: str = ""
    metadata_of_pool: str = ""
    is_a_snapshot: bool = False
    snapshot_time: str = ""
    snapshot_of: str = ""
    read_only: bool = False
    vdi_uuid: str | None = None
    vdi_type: str = "user"
    sm_config: Mapping[str, str] = EMPTY

    @classmethod
    def _fields(cls, r: Reader) -> dict[str, Any]:
        return super()._fields(r) | {
            "size": parse_vdi_size(r.arg(0, "size"), "size"),
            "name_label": r.arg_string(1, "name_label", ""),
            "name_description": r.arg_string(2, "name_description", ""),
            "metadata_of_pool": r.arg_string(3, "metadata_of_pool", ""),
            "is_a_snapshot": parse_bool(r.opt_arg(4, "false"), "is_a_snapshot"),
            "snapshot_time": r.arg_string(5, "snapshot_time", ""),
            "snapshot_of": r.arg_string(6, "snapshot_of", ""),
            "read_only": parse_bool(r.opt_arg(7, "false"), "read_only"),
            "vdi_uuid": r.opt_uuid("vdi_uuid"),
            "vdi_type": r.opt_string("vdi_type") or "user",
            "sm_config": r.string_map("vdi_sm_config"),
        }


class VDIIntroduceRequest(SRRequest, kw_only=True):
    """`vdi_introduce`: make an existing volume known: `new_uuid` (-> `vdi_uuid`),
    `vdi_location` (required), `vdi_sm_config` (-> `sm_config`)."""

    vdi_uuid: str
    vdi_location: str
    sm_config: Mapping[str, str] = EMPTY

    @classmethod
    def _fields(cls, r: Reader) -> dict[str, Any]:
        if "vdi_location" not in r.params:
            raise BadRequest("missing vdi_location")
        return super()._fields(r) | {
            "vdi_uuid": r.uuid("new_uuid"),
            "vdi_location": parse_location(r.params["vdi_location"], "vdi_location"),
            "sm_config": r.string_map("vdi_sm_config"),
        }


class VDIRevertRequest(SRRequest, kw_only=True):
    """`vdi_revert`: the VDI fields name the `snapshot`; args[0] names the `target` (the VDI the
    snapshot was taken of) by uuid (canonicalised) or location. `target` is None when args[0] is
    absent or empty: the SR then resolves the target itself (the VDI the snapshot is of)."""

    snapshot: VdiId
    target: str | None = None
    driver_params: Mapping[str, str] = EMPTY

    @property
    def target_uuid(self) -> str | None:
        """The target if it is uuid-shaped (a File SR location is its uuid)."""
        return self.target if self.target and UUID_RE.fullmatch(self.target) else None

    @classmethod
    def _fields(cls, r: Reader) -> dict[str, Any]:
        raw = r.arg_string(0, "target", "").strip()
        if not raw:
            target = None
        elif UUID_RE.fullmatch(raw):
            target = raw.lower()
        else:
            target = parse_location(raw, "target")
        snapshot = VdiId(
            r.uuid("vdi_uuid"), r.opt_location("vdi_location"), r.opt_string("vdi_ref")
        )
        return super()._fields(r) | {
            "snapshot": snapshot,
            "target": target,
            "driver_params": r.string_map("driver_params"),
        }
