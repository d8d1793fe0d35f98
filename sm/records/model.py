"""VDI and SR records: the fields, their validation, their JSON form (standard library only).

See `sm.records` for the store that keeps them on the SR.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from sm.errors import MetadataError
from sm.struct import Frozen

StrPath = str | os.PathLike[str]

VERSION = 1
VDI_TYPES = frozenset({"user", "system", "suspend", "crashdump", "ephemeral", "ha_statefile",
                       "metadata", "redo_log", "rrd", "pvs_cache", "cbt_metadata"})
IMAGE_TYPES = frozenset({"vhd", "raw"})
#: `sm_config` key: the id of the last in-place revert of this VDI (`VdiRecord.reverted`).
REVERT_ID = "revert-id"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


class RecordError(MetadataError):
    """A record field is missing or invalid (SM error 181); ``field`` names it."""

    def __init__(self, message: str, *, field: str, path: str = "") -> None:
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{message}", details={"field": field, "path": path})
        self.field = field


def _check_str(obj: object, name: str, *, empty: bool = True) -> None:
    value = getattr(obj, name)
    if not isinstance(value, str) or (not empty and not value):
        raise RecordError(f"field {name!r} must be a {'non-empty ' if not empty else ''}string",
                          field=name)


def _check_uuid(obj: object, name: str, *, empty: bool) -> None:
    value = getattr(obj, name)
    if not (isinstance(value, str) and ((empty and value == "") or _UUID.match(value))):
        raise RecordError(f"field {name!r} must be a lower-case uuid, got {value!r}", field=name)


def _check_bool(obj: object, name: str) -> None:
    if not isinstance(getattr(obj, name), bool):
        raise RecordError(f"field {name!r} must be a boolean", field=name)


def _check_size(obj: object, name: str) -> None:
    value = getattr(obj, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RecordError(f"field {name!r} must be a non-negative integer", field=name)


def _check_time(obj: object, name: str) -> None:
    value = getattr(obj, name)
    _check_str(obj, name)
    if value:
        from datetime import datetime  # lazy: a driver process rarely validates times

        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise RecordError(f"field {name!r} is not ISO-8601: {value!r}", field=name) from None


def _freeze_map(obj: object, name: str) -> None:
    value = getattr(obj, name)
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise RecordError(f"field {name!r} must map strings to strings", field=name)
    object.__setattr__(obj, name, MappingProxyType(dict(value)))


_NO_MAP: Mapping[str, str] = MappingProxyType({})


def _from_dict(cls: type[Any], raw: Any, path: str) -> Any:
    if not isinstance(raw, Mapping):
        raise RecordError("record is not an object", field="", path=path)
    names = set(cls._names)
    unknown = sorted(set(raw) - names)
    if unknown:
        raise RecordError(f"unknown field {unknown[0]!r}", field=unknown[0], path=path)
    try:
        return cls(**raw)
    except RecordError as err:
        raise RecordError(str(err.message), field=err.field, path=path) from None
    except TypeError as err:  # a required field is missing
        raise RecordError(str(err), field="", path=path) from None


class VdiRecord(Frozen):
    """One VDI as the SR describes it. ``sm_config``/``other_config`` are read-only maps."""

    uuid: str
    location: str
    name_label: str = ""
    name_description: str = ""
    type: str = "user"
    vdi_type: str = "vhd"
    read_only: bool = False
    hidden: bool = False
    managed: bool = True
    is_a_snapshot: bool = False
    snapshot_of: str = ""
    snapshot_time: str = ""
    virtual_size: int = 0
    physical_utilisation: int = 0
    parent: str = ""
    sm_config: Mapping[str, str] = _NO_MAP
    other_config: Mapping[str, str] = _NO_MAP

    def __post_init__(self) -> None:
        _check_uuid(self, "uuid", empty=False)
        _check_str(self, "location", empty=False)
        _check_str(self, "name_label")
        _check_str(self, "name_description")
        if self.type not in VDI_TYPES:
            raise RecordError(f"field 'type' must be one of {sorted(VDI_TYPES)}", field="type")
        if self.vdi_type not in IMAGE_TYPES:
            raise RecordError(f"field 'vdi_type' must be one of {sorted(IMAGE_TYPES)}",
                              field="vdi_type")
        for name in ("read_only", "hidden", "managed", "is_a_snapshot"):
            _check_bool(self, name)
        for name in ("snapshot_of", "parent"):
            _check_uuid(self, name, empty=True)
            if getattr(self, name) == self.uuid:
                raise RecordError(f"field {name!r} names the VDI itself", field=name)
        _check_time(self, "snapshot_time")
        _check_size(self, "virtual_size")
        _check_size(self, "physical_utilisation")
        _freeze_map(self, "sm_config")
        _freeze_map(self, "other_config")

    def reverted(self, revert_id: str) -> VdiRecord:
        """This record after the in-place revert `revert_id` (a unique id the revert's plan
        carries, so a replay sets the same value): `sm_config["revert-id"]`. The layer above
        reads it through `sm_vdi_get` to learn whether a revert it lost track of (killed
        after the driver's point of no return) happened (docs/api.md)."""
        if not revert_id:
            return self
        return self.replace(sm_config={**self.sm_config, REVERT_ID: revert_id})

    def to_dict(self) -> dict[str, Any]:
        out = self.as_dict()
        out["sm_config"] = dict(self.sm_config)
        out["other_config"] = dict(self.other_config)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, path: str = "") -> VdiRecord:
        """Validate and build; ``RecordError`` (181) names the field (and ``path``)."""
        record: VdiRecord = _from_dict(cls, raw, path)
        return record


class SrRecord(Frozen):
    uuid: str
    name_label: str = ""
    name_description: str = ""
    type: str = ""
    sm_config: Mapping[str, str] = _NO_MAP
    created: str = ""

    def __post_init__(self) -> None:
        _check_uuid(self, "uuid", empty=False)
        _check_str(self, "name_label")
        _check_str(self, "name_description")
        _check_str(self, "type", empty=False)
        _check_time(self, "created")
        _freeze_map(self, "sm_config")

    def to_dict(self) -> dict[str, Any]:
        out = self.as_dict()
        out["sm_config"] = dict(self.sm_config)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, path: str = "") -> SrRecord:
        record: SrRecord = _from_dict(cls, raw, path)
        return record
