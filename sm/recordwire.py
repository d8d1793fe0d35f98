"""The SR's own VDI records on the wire: the results of the extension commands `sm_vdi_list`
and `sm_vdi_get` (docs/smapiv1.md), shared by every SR type that keeps `sm.records` records."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sm.struct import Frozen

if TYPE_CHECKING:
    from sm.records import VdiRecord
    from sm.xmlrpc import Value

__all__ = ["RecordList", "RecordResult", "record_to_wire"]


def record_to_wire(record: VdiRecord) -> Value:
    """A VDI record as an XML-RPC struct (sizes as decimal strings: XML-RPC ints are 32-bit)."""
    return {
        "uuid": record.uuid, "location": record.location, "name_label": record.name_label,
        "name_description": record.name_description, "type": record.type,
        "vdi_type": record.vdi_type, "read_only": record.read_only, "hidden": record.hidden,
        "managed": record.managed, "is_a_snapshot": record.is_a_snapshot,
        "snapshot_of": record.snapshot_of, "snapshot_time": record.snapshot_time,
        "virtual_size": str(record.virtual_size),
        "physical_utilisation": str(record.physical_utilisation), "parent": record.parent,
        "sm_config": dict(record.sm_config), "other_config": dict(record.other_config),
    }


class RecordList(Frozen):
    """`sm_vdi_list` result: an array of VDI record structs, by uuid."""

    records: tuple[VdiRecord, ...]

    def to_wire(self) -> Value:
        return [record_to_wire(r) for r in sorted(self.records, key=lambda r: r.uuid)]


class RecordResult(Frozen):
    """`sm_vdi_get` result: one VDI record struct, plus `attached` ("ro" or "rw") when the VDI
    is attached on this host (the layer above refuses to revert it; docs/api.md)."""

    record: VdiRecord
    attached: str = ""

    def to_wire(self) -> Value:
        out = record_to_wire(self.record)
        if self.attached and isinstance(out, dict):
            out["attached"] = self.attached
        return out
