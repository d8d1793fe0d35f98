"""Failure containment on an LVHD SR (issue 15 §1), real lvm2 on a loop device (root).

Sizes past the format or the VG answer VDISize (79) before anything is written; an operation
failing in its own process (injected through SM_FAIL_AT) leaves no journal entry in MGT and
the SR as it was; a replay that keeps failing is set aside, its VDI answers 46 while the
others work, and `sm_sr_repair` shows and resolves it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.smapi import SMFault

from . import test_lvhd_ops as ops
from .test_lvhd_ops import A, B, _check_sr, _crash, _journal, _put
from .test_lvhd_sr import Sr, _read

shared, sr = ops.shared, ops.sr  # the module's one SR (fixtures)

pytestmark = pytest.mark.root
MiB = 1024 * 1024
TiB = 1024**4


def _fault(sr: Sr, command: str, args: list[Any] | None = None, **kw: Any) -> SMFault:
    with pytest.raises(SMFault) as info:
        sr.call(command, args, **kw)
    return info.value


def _still_works(sr: Sr) -> None:
    v = sr.call("vdi_create", [str(8 * MiB)])["uuid"]
    sr.call("sr_scan")
    _put(sr, v, 0, A)
    s = sr.call("vdi_snapshot", vdi_uuid=v)["uuid"]
    _put(sr, v, 0, B)
    sr.call("vdi_revert", [v], vdi_uuid=s)
    assert _read(sr, v, 0, len(A)) == A
    sr.call("vdi_resize", [str(12 * MiB)], vdi_uuid=v)
    sr.call("vdi_delete", vdi_uuid=v)
    sr.call("vdi_delete", vdi_uuid=s)
    assert _journal(sr) == {}


def test_sizes_past_format_or_vg_answer_79(sr: Sr) -> None:
    x = sr.call("vdi_create", [str(8 * MiB)])["uuid"]
    before = sr.records()
    for size in (17 * TiB, 2**63 - 1, 2040 * 1024**3 + 512, 512 * MiB):  # 512 MiB: > the VG
        assert _fault(sr, "vdi_resize", [str(size)], vdi_uuid=x).code == 79, size
        assert _fault(sr, "vdi_create", [str(size)]).code == 79, size
        assert _fault(sr, "vdi_create", [str(size)], vdi_sm_config={"type": "raw"}).code == 79
    assert sr.records() == before and _journal(sr) == {}
    _still_works(sr)


@pytest.mark.parametrize("point", ["vdi_snapshot:leaf", "vdi_resize:grown",
                                   "vdi_revert:leaf"])
def test_failure_in_process_leaves_the_sr_unchanged(sr: Sr, fail_at: Any, point: str) -> None:
    x = sr.call("vdi_create", [str(8 * MiB)])["uuid"]
    _put(sr, x, 0, A)
    snap = sr.call("vdi_snapshot", vdi_uuid=x)["uuid"]
    _put(sr, x, 0, B)
    before = sr.records()
    fail_at(point)
    command = point.split(":")[0]
    args, vdi = {"vdi_resize": ([str(16 * MiB)], x), "vdi_revert": ([x], snap)}.get(
        command, ([], x))
    assert "injected failure" in _fault(sr, command, args, vdi_uuid=vdi).string
    fail_at(None)
    assert _journal(sr) == {}
    after = _check_sr(sr)

    def ident(records: dict[str, Any]) -> dict[str, Any]:
        return {u: {k: v for k, v in r.items() if k != "physical_utilisation"}
                for u, r in records.items()}

    assert ident(after) == ident(before)
    assert _read(sr, x, 0, len(B)) == B and _read(sr, snap, 0, len(A)) == A
    s = sr.call("vdi_snapshot", vdi_uuid=x)["uuid"]  # the SR is not blocked
    sr.call("vdi_delete", vdi_uuid=s)
    sr.call("vdi_delete", vdi_uuid=snap)


@pytest.mark.parametrize("point", ["vdi_delete:journaled", "vdi_delete:lv"])
def test_failed_delete_is_undone_or_completed(sr: Sr, fail_at: Any, point: str) -> None:
    """A delete failing before its image is removed changes nothing; failing after, it is
    completed (its base pruned with it); no journal entry either way."""
    x = sr.call("vdi_create", [str(8 * MiB)])["uuid"]
    _put(sr, x, 0, A)
    s = sr.call("vdi_snapshot", vdi_uuid=x)["uuid"]
    base = sr.records()[x]["parent"]
    sr.call("vdi_delete", vdi_uuid=s)
    before = sr.records()
    fail_at(point)
    assert "injected failure" in _fault(sr, "vdi_delete", vdi_uuid=x).string
    fail_at(None)
    assert _journal(sr) == {}
    after = _check_sr(sr)
    if point.endswith("journaled"):
        assert after == before and _read(sr, x, 0, len(A)) == A
    else:
        assert x not in after and base not in after
    _still_works(sr)


@pytest.fixture
def set_aside(sr: Sr, fail_at: Any) -> Iterator[tuple[str, str, str]]:
    """x's snapshot killed after `renamed`; its replay fails at `hidden` every time: set aside
    by the next chain command (a vdi_create, which succeeds)."""
    x = sr.call("vdi_create", [str(8 * MiB)])["uuid"]
    _put(sr, x, 0, A)
    other = sr.call("vdi_create", [str(8 * MiB)])["uuid"]
    _crash(sr, "vdi_snapshot:renamed", "vdi_snapshot", [], x)
    assert len(_journal(sr)) == 1
    fail_at("vdi_snapshot:hidden:1+")
    third = sr.call("vdi_create", [str(8 * MiB)])["uuid"]
    fail_at(None)
    assert _journal(sr) == {}
    report = json.loads(sr.call("sm_sr_repair"))
    (entry,) = report["entries"]
    assert entry["op"] == "vdi_snapshot" and "injected failure" in entry["error"]
    assert report["unusable"][x] == entry["id"]
    yield x, other, entry["id"]
    sr.call("vdi_delete", vdi_uuid=third)


def test_set_aside_vdi_refuses_use_others_work(sr: Sr, set_aside: tuple[str, str, str]) -> None:
    x, other, entry = set_aside
    for command, args in (("vdi_attach", [False]), ("vdi_snapshot", []),
                          ("vdi_resize", [str(16 * MiB)]), ("vdi_delete", [])):
        err = _fault(sr, command, args, vdi_uuid=x)
        assert err.code == 46 and entry in err.string and "sm sr repair" in err.string, command
    _put(sr, other, 0, B)
    s = sr.call("vdi_snapshot", vdi_uuid=other)["uuid"]
    sr.call("vdi_delete", vdi_uuid=s)
    sr.call("sr_scan")
    assert x in sr.records()
    sr.call("sm_gc_run")
    _still_works(sr)
    report = json.loads(sr.call("sm_sr_repair", ["retry", entry]))
    assert "replayed to the end" in report["done"][0] and report["unusable"] == {}
    assert _read(sr, x, 0, len(A)) == A
    snaps = [u for u, r in sr.records().items() if r["snapshot_of"] == x]
    assert len(snaps) == 1 and _read(sr, snaps[0], 0, len(A)) == A
    _check_sr(sr)


def test_repair_discard_refuses_then_forces(sr: Sr, set_aside: tuple[str, str, str]) -> None:
    x, _other, entry = set_aside
    err = _fault(sr, "sm_sr_repair", ["discard", entry])
    assert err.code == 46 and "no image" in err.string
    report = json.loads(sr.call("sm_sr_repair", ["discard", entry, "true"]))
    assert "forced" in report["done"][0] and report["entries"] == []
    # what the operator accepted: x's record has no LV; a scan drops it and adopts the base
    sr.call("sr_scan")
    records = sr.records()
    assert x not in records
    bases = [u for u, r in records.items()
             if r["hidden"] and not any(o["parent"] == u for o in records.values())]
    assert bases  # the base, adopted by the scan, has no children: garbage
    sr.call("sm_gc_run")
    assert not set(bases) & set(sr.records())
