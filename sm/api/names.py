"""Names of VDIs and snapshots: set them, and say when a name stops naming one thing.

Where a name lives:
- a VDI's name-label and name-description are in its SR's own record (`sm_vdi_set_names`,
  an extension every built-in SR type answers); after a revert by clone the public identity in
  this layer's state (`identities`) wins, so both are updated;
- a snapshot's name and description in its VDI's tree are in the state (`snapshots`); a
  rename sets the tree entry and the snapshot's record, so `sm vdi list` and `sm vdi tree`
  agree.

Names follow `sm.api.checks` (no `/`, no control characters, at most 255 characters), and a
name that names more than one VDI of an SR no longer resolves (`StorageManager.vdi` refuses
it, listing the uuids): creating, cloning or renaming into such a name warns (`DuplicateName`,
a `UserWarning`; the CLI prints it as `Warning: ...`). Snapshot names in one VDI's tree must
stay unique (revert resolves them): a rename that would repeat one is refused.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sm.errors import InvalidArg, Unimplemented

from . import checks
from .models import VDI

if TYPE_CHECKING:
    from .client import SRClient
    from .state import State

__all__ = ["DuplicateName", "set_names", "warn_duplicates"]


class DuplicateName(UserWarning):
    """A name-label given to a VDI that another VDI of the same SR already has."""


def warn_duplicates(vdis: Iterable[VDI], name: str, uuid: str, sr_name: str) -> None:
    """Warn if `name` is also the name-label of another visible VDI (not a snapshot)."""
    if not name:
        return
    others = sorted(v.uuid for v in vdis if v.name_label == name and v.uuid != uuid
                    and not v.hidden and not v.is_a_snapshot)
    if others:
        warnings.warn(DuplicateName(
            f"{len(others) + 1} VDIs of SR {sr_name} are now called {name!r} "
            f"({', '.join([uuid, *others])}); refer to them by uuid"), stacklevel=3)


def set_names(state: State, client: SRClient, vdi: VDI, siblings: list[VDI], *,
              name: str | None, description: str | None) -> None:
    """Give `vdi` (a VDI or a snapshot) a new name and/or description (None: unchanged)."""
    if name is None and description is None:
        raise InvalidArg("nothing to change: give a name and/or a description")
    node = state.snapshot((vdi.sr, vdi.uuid))
    kind = "snapshot" if node is not None or vdi.is_a_snapshot else "VDI"
    if name is not None:  # the rules of sm.api.checks, as at creation
        checks.name(kind, name, empty=kind == "VDI")
    if description is not None:
        checks.description(kind, description)
    if node is not None and name is not None:
        nodes, _ = state.tree((node.vdi_sr, node.vdi))
        clash = [n.uuid for n in nodes if n.name == name and n.uuid != vdi.uuid]
        if clash:
            raise InvalidArg(f"snapshot {clash[0]} of {node.vdi} is already called {name!r}: "
                             "snapshot names of one VDI must be unique")
    label = vdi.name_label if name is None else name
    desc = vdi.name_description if description is None else description
    if (label, desc) != (vdi.name_label, vdi.name_description):
        try:
            client.call("sm_vdi_set_names", [label, desc], vdi=vdi.ref)
        except Unimplemented as err:
            raise Unimplemented(f"SR type {client.sr.type} cannot rename VDIs "
                                "(no sm_vdi_set_names)") from err
    with state.transaction() as db:
        db.execute("UPDATE identities SET name_label=?, name_description=? "
                   "WHERE sr=? AND uuid=?", (label, desc, vdi.sr, vdi.uuid))
        if node is not None:
            db.execute("UPDATE snapshots SET name=?, description=? WHERE sr=? AND uuid=?",
                       (node.name if name is None else name,
                        node.description if description is None else description,
                        vdi.sr, vdi.uuid))
    if name is not None and not vdi.is_a_snapshot:
        warn_duplicates(siblings, name, vdi.uuid, client.sr.name)
