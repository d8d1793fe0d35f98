"""Records from a driver, presented with their public identities (see `sm.api.revert`).

A record whose uuid is a live backing of a public VDI shows that VDI's uuid, location and
names; a retired backing is left out; `snapshot_of` and `parent` naming any backing show the
public uuid.
"""

from __future__ import annotations

from typing import Any

from .models import VDI
from .state import State

__all__ = ["present"]


def _bool(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def present(state: State, sr: str, records: list[dict[str, Any]]) -> list[VDI]:
    backings = state.backings(sr)
    out = []
    for rec in records:
        uuid, location = str(rec["uuid"]), str(rec["location"])
        name, desc = str(rec.get("name_label", "")), str(rec.get("name_description", ""))
        b = backings.get(uuid)
        if b is not None:
            if not b.live:
                continue  # an old backing waiting for deletion (see revert)
            ident = state.identity(sr, b.public)
            if ident is not None:
                uuid, location = ident.uuid, ident.location
                name, desc = ident.name_label, ident.name_description

        def public(ref: Any) -> str:
            known = backings.get(str(ref or ""))
            return known.public if known else str(ref or "")

        out.append(VDI(
            sr=sr, uuid=uuid, location=location, name_label=name, name_description=desc,
            virtual_size=int(rec.get("virtual_size") or 0),
            physical_utilisation=int(rec.get("physical_utilisation") or 0),
            type=str(rec.get("type", "user")), read_only=_bool(rec.get("read_only")),
            hidden=_bool(rec.get("hidden")) or not _bool(rec.get("managed", True)),
            is_a_snapshot=_bool(rec.get("is_a_snapshot")),
            snapshot_of=public(rec.get("snapshot_of")),
            snapshot_time=str(rec.get("snapshot_time", "")),
            parent=public(rec.get("parent")), backing=str(rec["uuid"]),
            backing_location=str(rec["location"]),
            sm_config=dict(rec.get("sm_config") or {})))
    return out
