"""The extension commands `sm_vdi_pause` and `sm_vdi_resume`: how the layer above (`sm.api`)
holds a VDI's data path on this host still, without knowing how the SR type serves it.

    sm_vdi_pause   args [owner]  ->  "paused" | "held" | "none"
    sm_vdi_resume  args [owner]  ->  "resumed" | "running" | "held" | "none"

A pause has an owner: the process that holds it (`sm.owner`: `<pid>:<start time>`), recorded
by the data path (`paused_by`). While the owner lives, neither the SR's own chain changes nor
its recovery resume the pause; once the owner is gone the pause is *orphaned*, and the SR's
recovery (`resume_orphans`, run by its next chain-changing command) resumes it.

`sm_vdi_pause`: "paused" - this call paused a running data path (new requests wait, requests in
flight drained, the chain flushed and closed; clients stay connected): the owner must resume
it; "held" - it was paused already (by `vdi_deactivate`, a chain change or another owner): left
as it is, and not the caller's to resume; "none" - the VDI has no data path on this host (not
attached here, or attached without NBD): nothing to pause. A VDI the SR does not have: VDIMissing
(144).

`sm_vdi_resume`: "resumed" - the owner's pause (or an orphaned one) of an active attachment is
lifted, the chain reopened on the VDI's current leaf; "running" - nothing was paused; "held" -
paused by a live process other than the owner, or the attachment is deactivated (it stays
paused until `vdi_activate`): left paused; "none" - no data path here. A VDI made unusable by
a set-aside journal entry answers VDIUnavailable (46) and stays paused until `sm sr repair`.

The File, NFS, LVHD and RBD SR types answer both, each through its own data path
(`sm.nbd.serving.Servers.hold` / `release`). Imported by drivers at start-up: standard library,
`sm.errors` and `sm.requests` only.
"""

from __future__ import annotations

from typing import Any

from sm.errors import InvalidArg
from sm.owner import is_owner
from sm.requests import VDIRequest

__all__ = ["HELD", "NONE", "PAUSE", "PAUSED", "RESUME", "RESUMED", "RUNNING", "VDIPauseRequest"]

PAUSE = "sm_vdi_pause"
RESUME = "sm_vdi_resume"

PAUSED = "paused"
RESUMED = "resumed"
RUNNING = "running"
HELD = "held"
NONE = "none"


class VDIPauseRequest(VDIRequest, kw_only=True):
    """`sm_vdi_pause` and `sm_vdi_resume`: args `[owner]` (required): the process that holds
    the pause, `<pid>:<start time>` (`sm.owner.this_process()`); InvalidArg (1) otherwise."""

    owner: str

    @classmethod
    def _fields(cls, r: Any) -> dict[str, Any]:
        owner = r.arg_string(0, "owner")
        if not is_owner(owner):
            raise InvalidArg(f"owner must be <pid>:<start time>, not {owner[:40]!r}")
        return super()._fields(r) | {"owner": owner}
