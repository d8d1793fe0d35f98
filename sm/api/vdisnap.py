"""Taking a VDI snapshot: the driver's `vdi_snapshot`, then the snapshot joins the VDI's tree.

Journaled (`vdi-snapshot` in the state journal, crash points `api.vdi.snapshot.*`), because
the two steps commit separately: a process killed after the driver's point of no return (its
own journal finishes the snapshot on the next command) or between the steps would otherwise
leave a snapshot VDI in no tree, which `vdi_revert` by name, `vdi_tree` and the delete scopes
never see.

    begun   intent {vdi, backing, name, description, records of the SR before}
    taken   the driver answered; one transaction adds the tree node and removes the entry

Recovery (`recover`, before the next API operation): every snapshot of that backing the SR
did not have before joins the tree as the interrupted call would have added it; with none
(the driver undid its part), the entry is dropped. The call either happened or did not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sm.faults import crash_point

from . import trees
from .models import VDI

if TYPE_CHECKING:
    from .config import SrConfig
    from .manager import StorageManager
    from .state import JournalEntry

__all__ = ["OP", "recover", "snapshot"]

OP = "vdi-snapshot"


def snapshot(mgr: StorageManager, cfg: SrConfig, vdi: VDI, name: str,
             description: str) -> str:
    """Snapshot `vdi` and add it to its tree; the snapshot's uuid."""
    client = mgr._client(cfg)
    before = [str(r["uuid"]) for r in client.records()]
    entry = mgr.state.journal_begin(OP, cfg.uuid, vdi=vdi.uuid, backing=vdi.ref[0], name=name,
                                    description=description, before=before)
    crash_point("api.vdi.snapshot.begun")
    try:
        uuid, _ = client.vdi_snapshot(vdi.ref)
    except BaseException:
        mgr.state.journal_done(entry)  # a failing driver command undoes itself
        raise
    crash_point("api.vdi.snapshot.taken")
    with mgr.state.transaction():
        trees.add(mgr.state, vdi, (cfg.uuid, uuid), name, description)
        mgr.state.journal_done(entry)
    return uuid


def recover(mgr: StorageManager, entry: JournalEntry) -> None:
    """Finish an interrupted snapshot: its snapshot (if the SR has one) joins the tree."""
    d = entry.data
    cfg = next((c for c in mgr._configs() if c.uuid == entry.sr), None)
    if cfg is None:
        mgr.state.journal_done(entry.id)
        return
    before = set(d["before"])
    taken = [str(r["uuid"]) for r in mgr._client(cfg).records()
             if str(r["uuid"]) not in before and _flag(r, "is_a_snapshot")
             and str(r.get("snapshot_of") or "") in (d["backing"], d["vdi"])]
    owner = VDI(cfg.uuid, d["vdi"], "", "", "", 0, 0)
    with mgr.state.transaction():
        for uuid in taken:
            trees.add(mgr.state, owner, (cfg.uuid, uuid), d["name"], d["description"])
        mgr.state.journal_done(entry.id)


def _flag(rec: dict[str, Any], key: str) -> bool:
    return rec.get(key) is True or str(rec.get(key)).lower() == "true"
