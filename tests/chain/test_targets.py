"""sm.chain.targets: vdi_revert's target resolution and shared refusals (every SR type), and
sm.chain.records.orphans (what an SR that prunes at once removes). Pure functions."""

from __future__ import annotations

import pytest

from sm.chain.records import orphans
from sm.chain.targets import check_chain, revert_target
from sm.errors import InvalidArg, VDIInUse, VDIMissing, VDIType
from sm.records import VdiRecord

X, S, B, B0, OTHER = (f"{n}0000000-0000-4000-8000-000000000000" for n in "12345")


def rec(uuid: str, **kw: object) -> VdiRecord:
    return VdiRecord(uuid=uuid, location=f"loc-{uuid[:1]}", **kw)  # type: ignore[arg-type]


def table(*records: VdiRecord) -> dict[str, VdiRecord]:
    return {r.uuid: r for r in records}


def lookup(records: dict[str, VdiRecord]):  # type: ignore[no-untyped-def]
    by_loc = {r.location: r for r in records.values()}
    return lambda ref: records.get(ref) or by_loc.get(ref)


def test_target_named_by_uuid_location_or_snapshot_of() -> None:
    x, other = rec(X), rec(OTHER)
    s = rec(S, is_a_snapshot=True, snapshot_of=X)
    find = lookup(table(x, other, s))
    assert revert_target(s, X, find) == x
    assert revert_target(s, "loc-5", find) == other  # by location
    assert revert_target(s, "", find) == x  # args[0] empty: snapshot_of
    assert revert_target(s, "no-such-vdi", find) == x  # unresolvable: snapshot_of too


def test_no_target_is_144() -> None:
    a = rec(S)  # no snapshot_of
    with pytest.raises(VDIMissing):
        revert_target(a, "", lookup(table(a)))
    gone = rec(X, hidden=True)  # deleted, its image kept as a base
    s = rec(S, snapshot_of=X)
    with pytest.raises(VDIMissing):
        revert_target(s, None, lookup(table(gone, s)))


def test_shared_refusals() -> None:
    s = rec(S, snapshot_of=X)
    base = rec(B, hidden=True)
    find = lookup(table(s, base))
    with pytest.raises(InvalidArg, match="both the snapshot and the target"):
        revert_target(s, S, find)
    with pytest.raises(InvalidArg, match="hidden base"):
        revert_target(s, B, find)


def test_chain_refusals() -> None:
    x, s = rec(X), rec(S)
    check_chain(s, x, [])
    with pytest.raises(VDIType):
        check_chain(rec(S, vdi_type="raw"), x, [])
    with pytest.raises(VDIType):
        check_chain(s, rec(X, vdi_type="raw"), [])
    with pytest.raises(VDIInUse):
        check_chain(s, x, [OTHER])


def test_orphans_walk_up_while_childless() -> None:
    b0 = rec(B0, hidden=True)
    b = rec(B, hidden=True, parent=B0)
    x = rec(X, parent=B0)  # X left B: B has no child; B0 keeps X
    assert orphans(table(b0, b, x), B) == [b]
    y = rec(X, parent=B)  # B still has a child: nothing
    assert orphans(table(b0, b, y), B) == []
    assert orphans(table(b0, b), B) == [b, b0]  # B0 loses its last child with B
    assert orphans(table(rec(B)), B) == []  # a visible VDI is never an orphan base
