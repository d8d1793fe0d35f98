"""Contract: vdi_revert keeps the target's identity and gives it exactly the snapshot's content."""

from __future__ import annotations

import random
from typing import Any

from sm.records import REVERT_ID
from tests.contract.harness import SRHarness

MiB = 1 << 20
UNKNOWN = "0badc0de-0000-4000-8000-000000000000"
IDENTITY = ("uuid", "location", "name_label", "name_description", "type")
STABLE = (
    "uuid",
    "location",
    "name_label",
    "name_description",
    "is_a_snapshot",
    "snapshot_of",
    "snapshot_time",
    "virtual_size",
    "read_only",
    "type",
    "sm_config",
    "other_config",
)


def rand(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _setup(sr: SRHarness) -> tuple[str, str, str] | None:
    """A VDI with content A, snapshot s1, content B, snapshot s2, content C; or None if the type
    cannot revert (the refusal has then been checked)."""
    vdi = sr.vdi_create(6 * MiB, "target disk", "keep my name")
    sr.write(vdi, [(0, rand(1, 2 * MiB)), (6 * MiB - 100, b"A" * 100)])
    s1 = sr.snapshot(vdi)
    if not sr.require("VDI_REVERT", "vdi_revert", [vdi], vdi=s1):
        return None
    sr.write(vdi, [(MiB, rand(2, 2 * MiB)), (6 * MiB - 100, b"B" * 100)])
    s2 = sr.snapshot(vdi)
    sr.write(vdi, [(4000, rand(3, 3 * MiB)), (6 * MiB - 100, b"C" * 100)])
    return vdi, s1, s2


def _stable(rec: dict[str, Any]) -> dict[str, Any]:
    """The fields a repeated revert keeps; `sm_config` `revert-id` names each revert (the layer
    above learns from it whether a revert it lost track of happened), so it is left out."""
    out = {k: rec.get(k) for k in STABLE}
    if isinstance(out["sm_config"], dict):
        out["sm_config"] = {k: v for k, v in out["sm_config"].items() if k != REVERT_ID}
    return out


def test_revert_identity_and_content(sr: SRHarness) -> None:
    setup = _setup(sr)
    if setup is None:
        return
    vdi, s1, s2 = setup
    before = sr.record(vdi)
    params_before = sr.attach_result(vdi).get("params")
    snaps_before = {s: _stable(sr.record(s)) for s in (s1, s2)}
    sr.revert(s2, vdi)
    after = sr.record(vdi)
    for key in IDENTITY:
        assert after[key] == before[key], key
    assert after["is_a_snapshot"] in (False, "false")
    assert sr.attach_result(vdi).get("params") == params_before
    assert sr.model[vdi] == sr.model[s2]
    sr.assert_all_content()
    assert {s: _stable(sr.record(s)) for s in (s1, s2)} == snaps_before
    # the reverted VDI is independent of the snapshot afterwards
    sr.write(vdi, [(0, b"after revert")])
    sr.assert_all_content()


def test_revert_to_older_snapshot(sr: SRHarness) -> None:
    setup = _setup(sr)
    if setup is None:
        return
    vdi, s1, s2 = setup
    sr.revert(s1, vdi)
    sr.assert_all_content()
    sr.revert(s2, vdi)
    sr.assert_all_content()
    sr.revert(s1, vdi)
    sr.assert_all_content()
    # and a new snapshot of the reverted VDI holds s1's content
    s3 = sr.snapshot(vdi)
    sr.write(vdi, [(0, b"D" * 10)])
    sr.assert_all_content()
    assert sr.model[s3] == sr.model[s1]


def test_revert_repeated_changes_nothing(sr: SRHarness) -> None:
    setup = _setup(sr)
    if setup is None:
        return
    vdi, s1, _ = setup
    sr.revert(s1, vdi)
    records = {u: _stable(r) for u, r in sr.visible().items()}
    images = len(sr.config.images(sr.device_config))
    ids = {sr.record(vdi)["sm_config"].get(REVERT_ID)}
    for _ in range(3):
        sr.revert(s1, vdi)
        sr.assert_all_content()
        assert {u: _stable(r) for u, r in sr.visible().items()} == records
        ids.add(sr.record(vdi)["sm_config"].get(REVERT_ID))
        assert len(sr.config.images(sr.device_config)) <= images, "repeated reverts pile up images"
    assert None not in ids and len(ids) == 4, f"each revert has its own revert-id: {ids}"


def test_revert_target_from_snapshot_of(sr: SRHarness) -> None:
    """args[0] empty or naming no VDI: the target is the snapshot's snapshot-of."""
    setup = _setup(sr)
    if setup is None:
        return
    vdi, s1, s2 = setup
    other = sr.vdi_create(MiB, "bystander")
    sr.write(other, [(0, b"untouched")])
    sr.revert(s1, None)
    sr.assert_all_content()
    assert sr.model[vdi] == sr.model[s1]
    sr.revert(s2, UNKNOWN)
    sr.assert_all_content()
    assert sr.model[vdi] == sr.model[s2]
    assert sr.record(vdi)["name_label"] == "target disk"


def test_revert_after_target_resized(sr: SRHarness) -> None:
    """The target reads EXACTLY the snapshot's content: its size too."""
    setup = _setup(sr)
    if setup is None or "VDI_RESIZE" not in sr.capabilities:
        return
    vdi, s1, _ = setup
    sr.resize(vdi, 10 * MiB)
    sr.write(vdi, [(9 * MiB, b"in the grown part")])
    sr.revert(s1, vdi)
    assert int(sr.record(vdi)["virtual_size"]) == len(sr.model[s1])
    sr.assert_all_content()


def test_revert_then_snapshot_clone_delete(sr: SRHarness) -> None:
    setup = _setup(sr)
    if setup is None:
        return
    vdi, s1, s2 = setup
    sr.revert(s1, vdi)
    c = sr.clone(vdi)
    sr.write(c, [(0, b"clone of reverted")])
    sr.delete(s1)  # the snapshot reverted to can go; the target keeps its content
    sr.assert_all_content()
    sr.revert(s2, vdi)
    sr.assert_all_content()
    sr.assert_consistent()


def test_revert_snapshot_of_deleted_vdi_missing(sr: SRHarness) -> None:
    setup = _setup(sr)
    if setup is None:
        return
    vdi, s1, _ = setup
    sr.delete(vdi)
    before = sr.tree()
    err = sr.fault("vdi_revert", [""], vdi=s1)
    assert err.code == 144, err
    assert sr.tree() == before
    sr.assert_all_content()
