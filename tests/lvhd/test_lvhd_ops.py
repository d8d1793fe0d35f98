"""LVHD SR: crash safety of every journaled step, full-VG refusals, a move to another loop
device, and LV sizes against the LVM report (real lvm2 on loop devices, root).

One SR per module and allocation (thin/thick) keeps the cost down: every test makes its own
VDIs and deletes them; the crash tests SIGKILL a driver process at a named step
(``SM_CRASH_AT``), re-attach the SR and check every VDI and the records against the LVs.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sm import vhd
from sm.chain.vdiops import DeleteSteps
from srtypes.lvhd.lvio import open_lv
from srtypes.lvhd.mgt import MgtStore
from srtypes.lvhd.repo import full_vhd_size, metadata_size
from tests.smapi import ROOT, Process, SMFault, dumps, request

from .conftest import LvmSandbox, MiB
from .test_lvhd_sr import Sr, _read, _transport, _write

pytestmark = pytest.mark.root


def _extent_round(n: int, extent: int = 4 * MiB) -> int:
    return -(-n // extent) * extent


@contextlib.contextmanager
def _make_sr(sandbox: LvmSandbox, base: Path, allocation: str, size: int) -> Iterator[Sr]:
    dev, _ = sandbox.loop_device(size)
    sr = Sr(dev, str(uuidlib.uuid4()), _transport(base / "host"), base, allocation)
    sr.call("sr_create", ["0"])
    sr.call("sr_attach")
    try:
        yield sr
    finally:
        lvm = sr.lvm()
        if lvm.vg_exists(sr.vg):
            lvm.vgremove(sr.vg)
            lvm.pvremove([sr.device])
        sandbox.detach(sr.device)  # the test may have moved it to another loop device


@pytest.fixture(scope="module")
def shared(lvm_sandbox: LvmSandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sr]:
    """One thin SR (256 MiB) for the module; tests leave it as empty as they found it."""
    with _make_sr(lvm_sandbox, tmp_path_factory.mktemp("lvhd-shared"), "thin", 256 * MiB) as sr:
        yield sr


@pytest.fixture
def sr(shared: Sr) -> Iterator[Sr]:
    shared.call("sr_attach")
    before = set(shared.records())
    yield shared
    run_dir = Path(shared.transport.env["SM_RUN_DIR"])
    for path in run_dir.glob(f"lvhd/{shared.uuid}/attached-vdi-*"):
        shared.call("vdi_detach", vdi_uuid=path.name[len("attached-vdi-"):])
    # delete leaves first; hidden bases go with their last child
    for _ in range(10):
        left = {u: r for u, r in shared.records().items() if u not in before}
        leaves = [u for u, r in left.items() if not r["hidden"]
                  and not any(o["parent"] == u for o in left.values())]
        if not leaves:
            break
        for u in leaves:
            shared.call("vdi_delete", vdi_uuid=u)
    assert set(shared.records()) == before


def _crash(sr: Sr, point: str, command: str, args: list[Any], vdi: str, **extra: Any) -> None:
    proc = Process(env={**sr.transport.env, "SM_TEST_FAULTS": "1", "SM_CRASH_AT": point},
                   executable=ROOT / "bin" / "LVHDSR")
    out = proc.send(dumps(request(command, args, device_config=sr.dconf(), sr_uuid=sr.uuid,
                                  vdi_uuid=vdi, **extra)))
    assert out.signal == 9, (point, out.stdout, out.stderr)


def _journal(sr: Sr) -> dict[str, Any]:
    lvm = sr.lvm()
    backing = open_lv(lvm, sr.vg, "MGT", writable=False)
    try:
        return MgtStore(backing).read().journal
    finally:
        backing.close()


def _check_sr(sr: Sr) -> dict[str, dict[str, Any]]:
    """Records match the LVs one for one (sizes, parents, hidden), images check clean, the
    journal is empty; returns the records."""
    records = sr.records()
    lvs = {lv.name: lv for lv in sr.lvm().lvs(sr.vg)}
    names = {f"{'LV' if r['vdi_type'] == 'raw' else 'VHD'}-{u}": u for u, r in records.items()}
    assert set(lvs) == {"MGT", *names}, (sorted(lvs), sorted(names))
    storage = sr.storage()
    for name, uuid in names.items():
        rec = records[uuid]
        assert int(rec["physical_utilisation"]) == lvs[name].size, (name, rec)
        if rec["vdi_type"] == "vhd":
            path = storage.path(name)
            assert vhd.check(path, storage=storage) == [], name
            info = vhd.info(path, storage=storage)
            assert info.virtual_size == int(rec["virtual_size"]), name
            assert (str(info.parent_uuid) if info.parent_uuid else "") == rec["parent"], name
            assert info.hidden == rec["hidden"], name
            assert ("sm_ro" in lvs[name].tags) == rec["hidden"], name
            assert info.physical_size <= lvs[name].size
    assert _journal(sr) == {}
    return records


A, B, C = b"A" * 8192, b"B" * 8192, b"C" * 8192


def _put(sr: Sr, vdi: str, offset: int, data: bytes) -> None:
    """Write through a writable attach (the leaf is inflated for it)."""
    sr.call("vdi_attach", [True], vdi_uuid=vdi)
    try:
        _write(sr, vdi, offset, data)
    finally:
        sr.call("vdi_detach", vdi_uuid=vdi)


@pytest.mark.parametrize("step", ["journaled", "deflated", "renamed", "hidden", "leaf", "snap",
                                  "records"])
def test_clone_crash_then_attach(sr: Sr, step: str) -> None:
    vdi = sr.create_vdi(8 * MiB)
    _write(sr, vdi, 0, A)
    _crash(sr, f"vdi_clone:{step}", "vdi_clone", [], vdi)
    sr.call("sr_attach")
    records = _check_sr(sr)
    clones = [u for u, r in records.items() if u != vdi and not r["hidden"]]
    assert _read(sr, vdi, 0, len(A)) == A
    if step in ("journaled", "deflated"):
        assert clones == [] and list(records) == [vdi]
    else:
        (clone,) = clones
        assert not records[clone]["is_a_snapshot"] and _read(sr, clone, 0, len(A)) == A


REVERT_STEPS = ["journaled", "renamed", "hidden", "snapleaf", "leaf", "switched", "records",
                "pruned"]


@pytest.mark.parametrize("step", REVERT_STEPS)
def test_revert_crash_then_attach(sr: Sr, step: str) -> None:
    """Revert X to a clone holding data of its own (the longest plan: the clone is first
    moved onto a new base B2)."""
    x = sr.create_vdi(8 * MiB)
    _write(sr, x, 0, A)
    source = sr.call("vdi_clone", vdi_uuid=x)["uuid"]
    _write(sr, source, 0, C)
    _write(sr, x, 4096, B)
    x_before = _read(sr, x, 0, 16384)
    wanted = _read(sr, source, 0, 16384)
    assert wanted != x_before
    _crash(sr, f"vdi_revert:{step}", "vdi_revert", [x], source)
    sr.call("sr_attach")
    _check_sr(sr)
    assert _read(sr, source, 0, 8192) == C
    got = _read(sr, x, 0, 16384)
    if step == "journaled":  # nothing changed yet: dropped
        assert got == x_before
    else:
        assert got == wanted  # exactly the source's content
    # idempotent: reverting again after the recovery gives the same
    sr.call("vdi_revert", [x], vdi_uuid=source)
    assert _read(sr, x, 0, 16384) == wanted
    rec = sr.records()[x]
    assert rec["name_label"] == "disk" and rec["location"] == x
    _check_sr(sr)


@pytest.mark.parametrize("step", ["switched", "records", "pruned"])
def test_revert_crash_leaves_no_orphan_base(sr: Sr, step: str) -> None:
    """X -> s1, write, s2, delete s2: X's parent b2 has X as its only child; reverting X to s1
    leaves b2 without children, and it is removed even when the revert is killed."""
    x = sr.create_vdi(8 * MiB)
    _write(sr, x, 0, A)
    s1 = sr.call("vdi_snapshot", vdi_uuid=x)["uuid"]
    _write(sr, x, 0, B)
    s2 = sr.call("vdi_snapshot", vdi_uuid=x)["uuid"]
    sr.call("vdi_delete", vdi_uuid=s2)
    old_parent = sr.records()[x]["parent"]
    _crash(sr, f"vdi_revert:{step}", "vdi_revert", [x], s1)
    sr.call("sr_attach")
    records = _check_sr(sr)
    assert old_parent not in records and _read(sr, x, 0, len(A)) == A
    assert records[x]["parent"] == records[s1]["parent"]
    hidden = [u for u, r in records.items() if r["hidden"]]
    assert all(any(r["parent"] == h for r in records.values()) for h in hidden), records


@pytest.mark.parametrize("step", ["journaled", "resized", "records"])
def test_inflate_crash_then_attach(sr: Sr, step: str) -> None:
    vdi = sr.create_vdi(12 * MiB)
    _write(sr, vdi, 5 * MiB, A)
    _crash(sr, f"inflate:{step}", "vdi_attach", [True], vdi)
    sr.call("sr_attach")
    _check_sr(sr)
    assert _read(sr, vdi, 5 * MiB, len(A)) == A
    # the replayed inflate completed: the LV is at the full size
    assert sr.lv_sizes()[f"VHD-{vdi}"] >= _extent_round(full_vhd_size(12 * MiB))


@pytest.mark.parametrize("step", ["journaled", "resized", "records"])
def test_deflate_crash_then_attach(sr: Sr, step: str) -> None:
    vdi = sr.create_vdi(12 * MiB)
    sr.call("vdi_attach", [True], vdi_uuid=vdi)
    _write(sr, vdi, 7 * MiB, B)
    _crash(sr, f"deflate:{step}", "vdi_detach", [], vdi)
    sr.call("sr_attach")
    _check_sr(sr)
    physical = vhd.physical_size(f"/dev/{sr.vg}/VHD-{vdi}", storage=sr.storage())
    assert sr.lv_sizes()[f"VHD-{vdi}"] == _extent_round(physical)  # the deflate finished
    assert _read(sr, vdi, 7 * MiB, len(B)) == B
    sr.call("vdi_detach", vdi_uuid=vdi)


@pytest.mark.parametrize("step", ["journaled", "grown", "resized", "deflated", "records"])
def test_resize_crash_then_attach(sr: Sr, step: str) -> None:
    vdi = sr.create_vdi(4 * MiB)
    _write(sr, vdi, 4 * MiB - len(A), A)
    _crash(sr, f"vdi_resize:{step}", "vdi_resize", [str(100 * MiB)], vdi)
    sr.call("sr_attach")
    records = _check_sr(sr)
    assert int(records[vdi]["virtual_size"]) == 100 * MiB  # rolled forward
    assert _read(sr, vdi, 4 * MiB - len(A), len(A)) == A
    _put(sr, vdi, 99 * MiB, B)
    assert _read(sr, vdi, 99 * MiB, len(B)) == B


@pytest.mark.parametrize("step", DeleteSteps.names())
def test_delete_crash_then_attach(sr: Sr, step: str) -> None:
    """vdi_delete is journaled: killed at any step it is rolled forward, the hidden base the
    deleted leaf leaves without children going with it."""
    x = sr.create_vdi(8 * MiB)
    _write(sr, x, 0, A)
    s = sr.call("vdi_snapshot", vdi_uuid=x)["uuid"]
    base = sr.records()[x]["parent"]
    sr.call("vdi_delete", vdi_uuid=s)
    _crash(sr, f"vdi_delete:{step}", "vdi_delete", [], x)
    sr.call("sr_attach")
    records = _check_sr(sr)
    assert x not in records and base not in records


def _state(sr: Sr) -> dict[str, str]:
    """Every LV's size, tags and bytes (MGT included): 'nothing changed'."""
    storage = sr.storage()
    out = {}
    for lv in sr.lvm().lvs(sr.vg):
        image = storage.open(storage.path(lv.name), False)
        try:
            out[lv.name] = f"{lv.size}:{lv.tags}:" + hashlib.sha256(
                image.pread(lv.size, 0)).hexdigest()
        finally:
            image.close()
    return out


def test_full_vg_refusals_change_nothing(lvm_sandbox: LvmSandbox, tmp_path: Path) -> None:
    with _make_sr(lvm_sandbox, tmp_path, "thin", 64 * MiB) as sr:  # small: hashed often
        _full_vg_refusals(sr)


def _full_vg_refusals(sr: Sr) -> None:
    vdi = sr.create_vdi(8 * MiB)
    _write(sr, vdi, 0, A)
    snap = sr.call("vdi_snapshot", vdi_uuid=vdi)["uuid"]
    free = sr.lvm().vgs(sr.vg).free
    filler = sr.create_vdi(free - 4 * MiB, type="raw")  # one extent left
    vg_free = sr.lvm().vgs(sr.vg).free
    assert vg_free == 4 * MiB
    other = sr.create_vdi(8 * MiB)  # metadata only: takes the last extent
    before = _state(sr)
    refusals: list[tuple[str, list[Any], str | None, dict[str, Any]]] = [
        ("vdi_create", [str(MiB), "x"], None, {}),
        ("vdi_create", [str(MiB), "x"], None, {"vdi_sm_config": {"type": "raw"}}),
        ("vdi_snapshot", [], vdi, {}),
        ("vdi_clone", [], vdi, {}),
        ("vdi_resize", [str(free - 3 * MiB)], filler, {}),
        ("vdi_attach", ["true"], other, {}),
    ]
    for command, args, target, extra in refusals:
        with pytest.raises(SMFault) as err:
            sr.call(command, args, vdi_uuid=target, **extra)
        assert err.value.code == 44, (command, err.value)
        assert _state(sr) == before, f"{command} refused but the VG changed"
    # revert needs a new leaf too: refused alike
    with pytest.raises(SMFault) as err:
        sr.call("vdi_revert", [vdi], vdi_uuid=snap)
    assert err.value.code == 44
    assert _state(sr) == before
    sr.call("vdi_delete", vdi_uuid=filler)
    sr.call("vdi_revert", [vdi], vdi_uuid=snap)
    assert _read(sr, vdi, 0, len(A)) == A
    _check_sr(sr)


def test_shrink_is_79_and_resize_keeps_data(sr: Sr) -> None:
    vdi = sr.create_vdi(8 * MiB)
    _write(sr, vdi, 8 * MiB - 4, b"tail")
    before = _state(sr)
    with pytest.raises(SMFault) as err:
        sr.call("vdi_resize", [str(4 * MiB)], vdi_uuid=vdi)
    assert err.value.code == 79
    assert _state(sr) == before
    raw = sr.create_vdi(6 * MiB, type="raw")
    result = sr.call("vdi_resize", [str(10 * MiB)], vdi_uuid=raw)
    assert result["uuid"] == raw and sr.lv_sizes()[f"LV-{raw}"] == 12 * MiB
    assert sr.records()[raw]["virtual_size"] == str(12 * MiB)
    sr.call("vdi_resize", [str(20 * MiB)], vdi_uuid=vdi)
    assert _read(sr, vdi, 8 * MiB - 4, 4) == b"tail"
    sr.call("vdi_update", vdi_uuid=vdi)
    _check_sr(sr)


def test_introduce_an_lv_written_elsewhere(sr: Sr) -> None:
    new = str(uuidlib.uuid4())
    lvm, storage = sr.lvm(), sr.storage()
    lvm.lvcreate(sr.vg, f"VHD-{new}", full_vhd_size(4 * MiB))
    vhd.create(storage.path(f"VHD-{new}"), 4 * MiB, uuid=uuidlib.UUID(new), storage=storage)
    result = sr.call("vdi_introduce", vdi_uuid=new, new_uuid=new, vdi_location=new,
                     vdi_sm_config={"origin": "admin"})
    assert result["uuid"] == new
    rec = sr.records()[new]
    assert rec["virtual_size"] == str(4 * MiB) and rec["sm_config"]["origin"] == "admin"
    with pytest.raises(SMFault) as err:
        sr.call("vdi_introduce", vdi_uuid=new, new_uuid=new, vdi_location=new,
                vdi_sm_config={})
    assert err.value.code == 43
    missing = str(uuidlib.uuid4())
    with pytest.raises(SMFault) as err:
        sr.call("vdi_introduce", vdi_uuid=missing, new_uuid=missing, vdi_location=missing,
                vdi_sm_config={})
    assert err.value.code == 144
    _check_sr(sr)


@pytest.mark.parametrize("allocation", ["thin", "thick"])
def test_lv_sizes_follow_the_lvm_report(lvm_sandbox: LvmSandbox, tmp_path: Path,
                                        allocation: str) -> None:
    """After create, attach, detach, snapshot and resize: every LV's size (from lvs) is what
    the provisioning rules say, and the records carry the same size."""
    with _make_sr(lvm_sandbox, tmp_path, allocation, 128 * MiB) as sr:
        thick = allocation == "thick"
        sr.allocation = ""  # from here on the SR record's sm_config decides
        size = 10 * MiB

        def lv(uuid: str) -> int:
            sizes = sr.lv_sizes()
            assert sr.records()[uuid]["physical_utilisation"] == str(sizes[f"VHD-{uuid}"])
            return sizes[f"VHD-{uuid}"]

        def physical(uuid: str) -> int:
            return _extent_round(vhd.physical_size(f"/dev/{sr.vg}/VHD-{uuid}",
                                                   storage=sr.storage()))

        vdi = sr.create_vdi(size)
        full = _extent_round(full_vhd_size(size))
        assert lv(vdi) == (full if thick else _extent_round(metadata_size(size)))
        sr.call("vdi_attach", [True], vdi_uuid=vdi)
        assert lv(vdi) == full
        _write(sr, vdi, 0, b"x" * (5 * MiB))
        sr.call("vdi_detach", vdi_uuid=vdi)
        assert lv(vdi) == (full if thick else physical(vdi))
        snap = sr.call("vdi_snapshot", vdi_uuid=vdi)["uuid"]
        base = sr.records()[vdi]["parent"]
        assert lv(base) == physical(base)  # a base is always deflated
        new_leaf = full if thick else _extent_round(metadata_size(size))
        assert lv(vdi) == new_leaf and lv(snap) == new_leaf
        sr.call("vdi_resize", [str(30 * MiB)], vdi_uuid=vdi)
        full = _extent_round(full_vhd_size(30 * MiB))
        if thick:  # room for every block of the new size (plus a BAT moved to the end)
            assert full <= lv(vdi) <= full + 4 * MiB
        else:
            assert lv(vdi) == physical(vdi)
        sr.call("vdi_attach", [True], vdi_uuid=vdi)
        assert full <= lv(vdi) <= full + 4 * MiB
        _write(sr, vdi, 29 * MiB, b"end")
        inflated = lv(vdi)
        sr.call("vdi_detach", vdi_uuid=vdi)
        assert lv(vdi) == (inflated if thick else physical(vdi))
        assert _read(sr, vdi, 29 * MiB, 3) == b"end" and _read(sr, snap, 0, 1) == b"x"
        _check_sr(sr)


def test_moved_to_another_loop_device(lvm_sandbox: LvmSandbox, tmp_path: Path) -> None:
    """Detach, re-attach the backing file under another loop device name on a "new host"
    (fresh run/state dirs): every VDI, name, snapshot relation and byte is back."""
    with _make_sr(lvm_sandbox, tmp_path / "a", "thin", 64 * MiB) as sr:
        vdi = str(sr.call("vdi_create", [str(4 * MiB), "moved disk", "its description"],
                          vdi_sm_config={})["uuid"])
        _write(sr, vdi, 0, A)
        snap = sr.call("vdi_snapshot", vdi_uuid=vdi)["uuid"]
        _write(sr, vdi, 0, B)
        clone = sr.call("vdi_clone", vdi_uuid=snap)["uuid"]
        raw = sr.create_vdi(2 * MiB, type="raw")
        before = sr.records()
        sr.call("sr_detach")
        backing = next(p for d, p in lvm_sandbox.loops if d == sr.device)
        new_dev = subprocess.run(["losetup", "-f", "--show", str(backing)], check=True,
                                 capture_output=True, text=True).stdout.strip()
        subprocess.run(["losetup", "-d", sr.device], check=True)
        lvm_sandbox.loops = [(new_dev if d == sr.device else d, p)
                             for d, p in lvm_sandbox.loops]
        assert new_dev != sr.device
        sr.device = new_dev
        sr.transport = _transport(tmp_path / "b")
        (tmp_path / "b").mkdir()
        sr.base = tmp_path / "b"
        sr.call("sr_attach")
        after = sr.records()
        assert after == before
        assert after[vdi]["name_label"] == "moved disk"
        assert after[snap]["snapshot_of"] == vdi and after[snap]["is_a_snapshot"]
        assert after[clone]["parent"] == after[snap]["parent"]  # snap became a base too
        assert after[after[snap]["parent"]]["parent"] == after[vdi]["parent"]
        assert after[raw]["vdi_type"] == "raw"
        assert _read(sr, vdi, 0, len(B)) == B
        assert _read(sr, snap, 0, len(A)) == A and _read(sr, clone, 0, len(A)) == A
        _check_sr(sr)
