"""`sm sr repair`: show and resolve journal entries set aside by a failed replay.

A replay that cannot make progress sets its journal entry aside (docs/design.md "Failure
containment", `sm.journal`); the VDIs it names are unusable (VDIUnavailable 46) until the
entry is resolved here. Three actions, on one entry or on all of them:

- ``show`` (default): each set-aside entry (id, op, VDIs, the steps it reached, the error, when
  it was set aside) with a check of each affected VDI's image, and the unusable VDIs;
- ``retry``: put the entry back and replay it under the SR lock; recovered, its VDIs are
  usable again; failing again, it is set aside again with the new error;
- ``discard``: check the images of the affected VDIs (``sm.vhd.check``) and forget the entry,
  which makes its VDIs usable as they are; refused when an image is missing or damaged,
  unless ``force``.

The report says exactly what was done (``done``: one sentence per action).

Two halves: the driver side (:class:`SRRepairRequest`, the extension command ``sm_sr_repair``
an SR type adds to its table, and :func:`run`, given the SR type's :class:`RepairBackend`), and
the API side (:func:`repair`, which ``StorageManager.sr_repair`` and the CLI call). This module
is imported by drivers at start-up: standard library and ``sm.requests`` only at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from sm.errors import InvalidArg, VDIUnavailable
from sm.requests import SRRequest, parse_bool

if TYPE_CHECKING:
    from sm.api import StorageManager
    from sm.journal import SetAside

__all__ = ["ACTIONS", "RepairBackend", "SRRepairRequest", "repair", "run"]

ACTIONS = ("show", "retry", "discard")
COMMAND = "sm_sr_repair"


class SRRepairRequest(SRRequest, kw_only=True):
    """Extension `sm_sr_repair`: args `[action, entry, force]`, all optional: action "show"
    (default), "retry" or "discard"; entry: a set-aside entry's id, or "all" / empty for every
    one; force "true": discard even where an image is missing or damaged."""

    action: str = "show"
    entry: str = ""
    force: bool = False

    @classmethod
    def _fields(cls, r: Any) -> dict[str, Any]:
        action = r.arg_string(0, "action", "show") or "show"
        if action not in ACTIONS:
            raise InvalidArg(f"repair action must be one of {', '.join(ACTIONS)}, not "
                             f"{action[:40]!r}")
        entry = r.arg_string(1, "entry", "")
        if len(entry) > 80 or not all(c.isalnum() or c == "-" for c in entry):
            raise InvalidArg(f"not a journal entry id: {entry[:80]!r}")
        return super()._fields(r) | {
            "action": action, "entry": "" if entry == "all" else entry,
            "force": parse_bool(r.opt_arg(2, "false"), "force")}


class RepairBackend(Protocol):
    """What an SR type supplies to :func:`run` (the driver side)."""

    def set_aside(self) -> list[SetAside]:
        """The set-aside entries, oldest first."""

    def retry(self, entry_id: str) -> bool:
        """Replay one set-aside entry under the SR lock: True if recovered, False if it failed
        again (set aside again with the new error)."""

    def discard(self, entry_id: str) -> SetAside:
        """Forget one set-aside entry; returns it."""

    def check_image(self, uuid: str) -> tuple[str, list[str]] | None:
        """(the image's name, its problems: [] if clean) for a VDI, None if it has no image."""

    def has_record(self, uuid: str) -> bool:
        """Whether the SR has a record for the VDI."""


def _images(backend: RepairBackend, aside: SetAside) -> dict[str, str]:
    out = {}
    for uuid in aside.affected:
        try:
            found = backend.check_image(uuid)
        except Exception as err:  # a check that cannot even read the image
            out[uuid] = f"damaged: {err}"
            continue
        record = "" if backend.has_record(uuid) else " (no record)"
        if found is None:
            out[uuid] = "no image" + record
        elif found[1]:
            out[uuid] = f"damaged{record}: {found[0]}: " + "; ".join(found[1][:5])
        else:
            out[uuid] = f"ok{record}: {found[0]}"
    return out


def _show(backend: RepairBackend) -> dict[str, Any]:
    entries = []
    unusable: dict[str, str] = {}
    for aside in backend.set_aside():
        entries.append({**aside.to_dict(), "images": _images(backend, aside)})
        for uuid in aside.affected:
            unusable.setdefault(uuid, aside.id)
    return {"entries": entries, "unusable": unusable}


def run(backend: RepairBackend, request: SRRepairRequest) -> dict[str, Any]:
    """The driver side of ``sm_sr_repair``: do the request's action and report (JSON-able:
    ``done``, then the state after it: ``entries``, ``unusable``)."""
    done: list[str] = []
    if request.action != "show":
        targets = [a for a in backend.set_aside() if request.entry in ("", a.id)]
        if request.entry and not targets:
            raise InvalidArg(f"no set-aside journal entry {request.entry} (see `sm sr repair`)")
        for aside in targets:
            vdis = ", ".join(aside.affected) or "none"
            if request.action == "retry":
                if backend.retry(aside.id):
                    done.append(f"retried entry {aside.id} ({aside.op}): replayed to the end; "
                                f"VDIs {vdis} are usable again")
                else:
                    now = next((a for a in backend.set_aside() if a.id == aside.id), aside)
                    done.append(f"retried entry {aside.id} ({aside.op}): failed again "
                                f"({now.error}); still set aside, VDIs {vdis} still unusable")
                continue
            images = _images(backend, aside)
            bad = {u: s for u, s in images.items() if not s.startswith("ok")}
            if bad and not request.force:
                first = next(iter(bad.items()))
                raise VDIUnavailable(
                    f"entry {aside.id} ({aside.op}) not discarded: VDI {first[0]}: {first[1]}; "
                    "retry it, or discard it with --force to accept the images as they are",
                    details={"entry": aside.id})
            backend.discard(aside.id)
            checked = "; ".join(f"{u}: {s}" for u, s in images.items()) or "no images"
            done.append(f"discarded entry {aside.id} ({aside.op}) after checking the images "
                        f"({checked}); VDIs {vdis} are usable as they are"
                        + (" (forced)" if bad else ""))
    return {"done": done, **_show(backend)}


def repair(sm: StorageManager, sr: str | None = None, *, action: str = "show",
           entry: str = "", force: bool = False) -> dict[str, Any]:
    """The API side: run ``sm_sr_repair`` on the SR ``sr`` (the default SR if None) and return
    its report: ``done`` (what was done, one sentence each), ``entries`` (the set-aside entries
    left, each with ``id``, ``op``, ``data``, ``steps``, ``error``, ``error_type``,
    ``set_aside`` (a Unix time), ``affected`` and ``images``: the check of each affected VDI's
    image) and ``unusable`` (VDI uuid -> the entry that holds it)."""
    import json

    if action not in ACTIONS:
        raise InvalidArg(f"repair action must be one of {', '.join(ACTIONS)}, not {action!r}")
    client = sm._client(sm._config(sr))
    raw = client.call(COMMAND, [action, entry, "true" if force else "false"])
    return dict(json.loads(raw))
