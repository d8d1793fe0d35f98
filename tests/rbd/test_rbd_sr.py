"""The RBD SR against a real single-node Ceph cluster: configuration errors, probe, the lease
lock, crash recovery, two hosts at once, and a dead cluster."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.contract.harness import SRHarness
from tests.rbd.cluster import Cluster
from tests.rbd.support import Rados, contract_config, export, images

MiB = 1 << 20
SR = "5a1e0000-0000-4000-8000-00000000c0de"


def harness(tmp: Path, *, process: bool = False) -> SRHarness:
    return SRHarness.make(contract_config(), tmp, process=process)


def consistent(sr: SRHarness) -> None:
    """Records and the cluster agree one for one; no pending intent; the lock is free."""
    sr.assert_consistent()
    with Rados(sr.device_config) as r:
        with r.rados.ReadOpCtx() as op:
            it, _ = r.ioctx.get_omap_vals(op, "", "", 100000)
            r.ioctx.operate_read_op(op, "sm.sr")
            omap = dict(it)
    assert not [k for k in omap if k.startswith("intent.")], omap.keys()
    assert omap["lock"] in (b"", None), omap["lock"]


@pytest.mark.parametrize(("drop", "code"), [("conf", 102), ("pool", 115)])
def test_config_missing(rbd_namespace: str, tmp_path: Path, drop: str, code: int) -> None:
    sr = harness(tmp_path)
    sr.device_config.pop(drop)
    assert sr.fault("sr_create", ["0"]).code == code
    assert sr.fault("sr_attach").code == code


def test_monitors_and_keyring(ceph_cluster: Cluster, rbd_namespace: str, tmp_path: Path) -> None:
    """Without a ceph.conf: monitors + keyring; a keyring is required then (115)."""
    sr = harness(tmp_path)
    sr.device_config = {"monitors": ceph_cluster.monitors, "pool": "rbd",
                        "namespace": rbd_namespace}
    assert sr.fault("sr_create", ["0"]).code == 115
    sr.device_config["keyring"] = ceph_cluster.keyring
    sr.create()
    vdi = sr.vdi_create(MiB)
    sr.write(vdi, [(0, b"no conf file")])
    sr.device_config["conf"] = ceph_cluster.conf  # the test's reader finds the cluster by conf
    sr.assert_content(vdi)


def test_probe_lists_srs_of_the_pool(ceph_cluster: Cluster, rbd_namespace: str,
                                     tmp_path: Path) -> None:
    a = harness(tmp_path / "a").create()
    b = harness(tmp_path / "b")
    b.sr_uuid = "5a1e0000-0000-4000-8000-0000000000bb"
    b.device_config["namespace"] = rbd_namespace + "b"
    b.create()
    probe = a.transport.call(
        {**a.struct("sr_probe"), "device_config": {"conf": ceph_cluster.conf, "pool": "rbd"}})
    assert a.sr_uuid in probe and b.sr_uuid in probe and "<SRlist>" in probe
    only = a.call("sr_probe")
    assert a.sr_uuid in only and b.sr_uuid not in only
    b.call("sr_delete")
    assert b.sr_uuid not in a.transport.call(
        {**a.struct("sr_probe"), "device_config": {"conf": ceph_cluster.conf, "pool": "rbd"}})


def _set_lock(sr: SRHarness, value: dict[str, object]) -> None:
    with Rados(sr.device_config) as r:
        with r.rados.WriteOpCtx() as op:
            r.ioctx.set_omap(op, ("lock",), (json.dumps(value).encode(),))
            r.ioctx.operate_write_op(op, "sm.sr")


def test_lease_broken_when_expired_or_owner_dead(rbd_namespace: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sr = harness(tmp_path).create()
    host = (tmp_path / "state" / "rbd" / "host-id").read_text().strip()
    monkeypatch.setenv("SM_RBD_LOCK_WAIT", "1")
    # a live owner on another host with a valid lease: refused after the wait, nothing done
    _set_lock(sr, {"host": "other", "pid": 1, "start": "1", "token": "t",
                   "expires": time.time() + 600})
    before = sr.tree()
    t0 = time.monotonic()
    assert sr.fault("vdi_create", [str(MiB)]).code == 37
    assert time.monotonic() - t0 < 10
    assert sr.tree() == before
    # the same owner stops renewing: broken once the waiter saw it unchanged for a lease
    # (its own clock; the owner's "expires" is not trusted)
    monkeypatch.setenv("SM_RBD_LEASE", "1")
    monkeypatch.setenv("SM_RBD_LOCK_WAIT", "10")
    t0 = time.monotonic()
    sr.vdi_create(MiB)
    assert 1 <= time.monotonic() - t0 < 8
    monkeypatch.setenv("SM_RBD_LEASE", "60")
    # a dead process of this host, lease still valid: broken
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _set_lock(sr, {"host": host, "pid": dead.pid, "start": "0", "token": "t",
                   "expires": time.time() + 600})
    sr.vdi_create(MiB)
    consistent(sr)


def test_lease_renewed_while_held(rbd_namespace: str, tmp_path: Path) -> None:
    """A holder renews its lease in the background: a waiter with a short lease does not
    break it while the holder works, and gets it once released."""
    from srtypes.rbd.config import RbdConfig
    from srtypes.rbd.conn import Connection
    from srtypes.rbd.lease import Lease
    from srtypes.rbd.store import Store

    sr = harness(tmp_path).create()
    cfg = RbdConfig.parse(sr.device_config)
    with Connection(cfg) as c1, Connection(cfg) as c2:
        # renewals every 0.4 s; the waiter would break a value left unchanged for 1.6 s
        holder = Lease(Store(c1), "host-a", lease=1.6, wait=5)
        waiter = Lease(Store(c2), "host-b", lease=1.6, wait=4)
        holder.acquire("long step")
        first = holder.value
        with pytest.raises(Exception) as err:
            waiter.acquire("must wait")
        assert getattr(err.value, "code", None) == 37
        assert holder.value != first  # renewed meanwhile
        holder.store.commit()  # still fenced by a valid lease
        holder.release()
        waiter.acquire("now")
        waiter.release()
    consistent(sr)


@pytest.mark.parametrize("point", ["vdi_clone:snap", "vdi_clone:clone",
                                   "vdi_snapshot:snap", "vdi_revert:rollback",
                                   "vdi_delete:storage"])
def test_crash_recovered_by_next_command(rbd_namespace: str, tmp_path: Path,
                                         point: str) -> None:
    """A driver SIGKILLed mid-operation: the next command (on any host) breaks its lock
    (dead owner here; an expired lease elsewhere) and rolls the intent back or forward."""
    sr = harness(tmp_path).create()
    vdi = sr.vdi_create(2 * MiB)
    sr.write(vdi, [(0, random.Random(1).randbytes(MiB))])
    snap = sr.snapshot(vdi)
    sr.write(vdi, [(0, b"newer")])
    cmd = point.split(":")[0]
    env = {"SM_TEST_FAULTS": "1", "SM_CRASH_AT": point}
    if cmd == "vdi_revert":
        struct = sr.struct("vdi_revert", [vdi], vdi=snap)
    elif cmd == "vdi_delete":
        struct = sr.struct("vdi_delete", vdi=snap)
    else:
        struct = sr.struct(cmd, vdi=vdi, driver_params={})
    from tests.smapi import dumps

    outcome = sr.with_transport(process=True).transport.send(dumps(struct), env=env)
    assert outcome.signal == 9, outcome
    sr.call("sr_scan")  # recovers
    if cmd == "vdi_revert":
        sr.model[vdi] = bytearray(sr.model[snap])  # rolled forward
    if cmd == "vdi_delete":
        sr.model.pop(snap)
    consistent(sr)
    sr.assert_all_content()


HOST_SCRIPT = r"""
import json, random, sys
from pathlib import Path
from tests.contract.harness import SRHarness
from tests.rbd.support import contract_config
work, seed, rounds = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
sr = SRHarness.make(contract_config(), work)
sr.call("sr_attach")
rng = random.Random(seed)
mine = []
for i in range(rounds):
    data = bytes([seed]) * 4096
    v = sr.vdi_create(1 << 20, f"h{seed}-{i}")
    sr.write(v, [(i * 4096, data)])
    s = sr.snapshot(v)
    c = sr.clone(s)
    sr.write(v, [(0, b"later")])
    sr.revert(s, v)
    sr.write(c, [(8192, b"clone")])
    if rng.random() < 0.5:
        sr.delete(s)   # deferred: c depends on it
    mine.append(v)
    if rng.random() < 0.3:
        sr.delete(mine.pop(0))
json.dump({u: sr.model[u].hex() for u in sr.model}, open(work / "model.json", "w"))
"""


def test_two_hosts_at_once(rbd_namespace: str, tmp_path: Path) -> None:
    """Two 'hosts' (processes with their own state and run directories) change one SR at
    the same time: every VDI reads what its host wrote, records match the cluster, the lock
    is free, nothing pending."""
    sr = harness(tmp_path / "admin").create()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [subprocess.Popen([sys.executable, "-c", HOST_SCRIPT, str(tmp_path / f"h{i}"),
                               str(i + 1), "3"], env=env) for i in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0
    for i in range(2):
        for uuid, hexdata in json.loads((tmp_path / f"h{i}" / "model.json").read_text()).items():
            sr.model[uuid] = bytearray.fromhex(hexdata)
            sr.locations[uuid] = uuid
    assert set(sr.visible()) == set(sr.model)
    sr.assert_all_content()
    consistent(sr)
    for uuid in list(sr.model):
        assert export(sr.device_config, sr.record(uuid)["sm_config"].get("rbd-image", uuid)
                      + (f"@{uuid}" if sr.record(uuid)["sm_config"].get("rbd-snap") else "")
                      ) == bytes(sr.model[uuid])


def test_deferred_delete_keeps_dependants(rbd_namespace: str, tmp_path: Path) -> None:
    sr = harness(tmp_path).create()
    vdi = sr.vdi_create(4 * MiB)
    sr.write(vdi, [(0, b"A" * MiB)])
    snap = sr.snapshot(vdi)
    clone = sr.clone(snap)
    sr.delete(vdi)
    sr.delete(snap)
    recs = sr.records()
    assert recs[vdi]["hidden"] and recs[snap]["hidden"]  # kept for the clone
    sr.assert_all_content()
    sr.delete(clone)
    assert sr.records() == {} and images(sr.device_config) == {}


def test_cluster_down_bounded_and_nothing_half_done(tmp_path: Path,
                                                   rbd_namespace: str) -> None:
    """A cluster of its own whose monitor is killed, then its OSD: every command answers
    SRUnavailable (47) within its bound; when the daemon returns the SR is exactly as before
    (records, content, no pending intent, lock free)."""
    from tests.rbd.cluster import start_cluster

    cluster = start_cluster(Path(str(tmp_path)[:40] + "-down"))
    try:
        sr = harness(tmp_path)
        sr.device_config = {"conf": cluster.conf, "pool": "rbd", "namespace": "down",
                            "timeout": "1"}
        sr.create()
        vdi = sr.vdi_create(2 * MiB)
        sr.write(vdi, [(0, b"before the outage")])
        snap = sr.snapshot(vdi)
        before = sr.records()
        cluster.stop_daemon("mon")
        calls = [("sr_attach", []), ("sr_scan", []), ("vdi_create", [str(MiB)]),
                 ("vdi_snapshot", []), ("vdi_clone", []), ("vdi_revert", [vdi]),
                 ("vdi_resize", [str(4 * MiB)]), ("vdi_delete", []),
                 ("vdi_attach", ["false"]), ("sm_vdi_list", []), ("sr_delete", [])]
        for command, args in calls:
            target = {"vdi_revert": snap}.get(command, vdi)
            t0 = time.monotonic()
            err = sr.fault(command, args, vdi=None if command.startswith("sr_") or
                           command in ("vdi_create", "sm_vdi_list") else target)
            took = time.monotonic() - t0
            assert err.code == 47, (command, err)
            assert took < 5, (command, took)
        cluster.start_mon()
        assert sr.records() == before
        sr.model = {vdi: bytearray(b"before the outage".ljust(2 * MiB, b"\0"))}
        sr.model[snap] = sr.model[vdi]
        sr.assert_all_content()
        consistent(sr)
        # the OSD gone, the monitor up: connecting works, object operations time out
        cluster.stop_daemon("osd")
        for command, args in calls[:2] + calls[3:8:2] + calls[9:10]:
            target = {"vdi_revert": snap}.get(command, vdi)
            t0 = time.monotonic()
            err = sr.fault(command, args, vdi=None if command.startswith("sr_") or
                           command in ("vdi_create", "sm_vdi_list") else target)
            assert err.code == 47, (command, err)
            assert time.monotonic() - t0 < 8, command
        cluster.start_osd()
        cluster.wait_osd_up()
        assert sr.records() == before
        sr.assert_all_content()
        consistent(sr)
    finally:
        cluster.stop()


def test_sr_create_and_delete_own_the_namespace(rbd_namespace: str, tmp_path: Path) -> None:
    """sr_create makes the namespace and refuses one with foreign images; sr_delete refuses
    images without records and removes the namespace it made."""
    sr = harness(tmp_path)
    with Rados({**sr.device_config, "namespace": ""}) as r:
        assert not r.rbd.RBD().namespace_exists(r.ioctx, rbd_namespace)
        r.rbd.RBD().namespace_create(r.ioctx, rbd_namespace)
    with Rados(sr.device_config) as r:
        r.rbd.RBD().create(r.ioctx, "foreign", MiB)
    err = sr.fault("sr_create", ["0"])
    assert err.code == 202 and "no SR" in err.string, err
    with Rados(sr.device_config) as r:
        r.rbd.RBD().remove(r.ioctx, "foreign")
        r.ioctx.set_namespace("")
        r.rbd.RBD().namespace_remove(r.ioctx, rbd_namespace)
    sr.create()
    assert sr.fault("sr_create", ["0"]).code == 42
    from tests.rbd.support import adopt

    stray = adopt(sr.device_config, MiB, [])
    assert sr.fault("sr_delete").code == 39  # sr_scan would adopt it
    from tests.rbd.support import remove

    remove(sr.device_config, stray)
    sr.call("sr_delete")
    with Rados({**sr.device_config, "namespace": ""}) as r:
        assert not r.rbd.RBD().namespace_exists(r.ioctx, rbd_namespace)
    sr.call("sr_delete")  # nothing there: a no-op


def test_revert_to_a_snapshot_of_another_image(rbd_namespace: str, tmp_path: Path) -> None:
    """A snapshot that is not on the target's image (another VDI's, or one left on the image a
    revert replaced): the target's image is replaced by a clone of it; the target keeps its
    identity, the old image stays (hidden) while snapshots of it remain."""
    sr = harness(tmp_path).create()
    x = sr.vdi_create(4 * MiB, "x", "keep me")
    sr.write(x, [(0, b"X" * 5000)])
    s = sr.snapshot(x)
    y = sr.vdi_create(2 * MiB, "y")
    sr.write(y, [(100, b"Y" * 300)])
    t = sr.snapshot(y)
    sr.write(x, [(0, b"x-later")])
    before = sr.record(x)
    sr.revert(t, x)
    after = sr.record(x)
    assert {k: after[k] for k in ("uuid", "location", "name_label", "name_description")} == \
        {k: before[k] for k in ("uuid", "location", "name_label", "name_description")}
    assert int(after["virtual_size"]) == 2 * MiB
    assert after["parent"] == t
    sr.assert_all_content()
    hidden = [u for u, r in sr.records().items() if r["hidden"]]
    assert len(hidden) == 1 and sr.record(s)["parent"] == hidden[0]  # x's old image
    sr.assert_consistent()
    sr.revert(s, x)  # s lives on the old image now: replaced once more
    sr.assert_all_content()
    sr.write(x, [(10, b"independent")])
    sr.assert_all_content()
    sr.assert_consistent()
    for v in (s, t, y, x):
        sr.delete(v)
        sr.assert_all_content()
        sr.assert_consistent()
    assert sr.records() == {} and images(sr.device_config) == {}
    consistent(sr)


def test_scan_flattens_clones_of_deleted_images(rbd_namespace: str, tmp_path: Path) -> None:
    """Deleting a VDI that was cloned keeps its image for the clone (deferred); sr_scan
    flattens the clone, and the deleted image and its base snapshot are removed."""
    sr = harness(tmp_path).create()
    gold = sr.vdi_create(4 * MiB, "golden")
    sr.write(gold, [(0, random.Random(3).randbytes(3 * MiB))])
    clone = sr.clone(gold)
    sr.write(clone, [(MiB, b"mine")])
    sr.delete(gold)
    assert len(images(sr.device_config)) == 3  # gold kept (hidden), its base snapshot, clone
    sr.call("sr_scan")
    left = images(sr.device_config)
    assert set(left) == {clone} and left[clone].parent is None, left
    assert sr.record(clone)["parent"] == ""
    sr.assert_all_content()
    consistent(sr)


def test_flatten_interrupted_is_rolled_forward(rbd_namespace: str, tmp_path: Path) -> None:
    from tests.smapi import dumps

    sr = harness(tmp_path).create()
    gold = sr.vdi_create(2 * MiB)
    sr.write(gold, [(0, b"G" * 70000)])
    clone = sr.clone(gold)
    sr.delete(gold)
    outcome = sr.with_transport(process=True).transport.send(
        dumps(sr.struct("sr_scan")), env={"SM_TEST_FAULTS": "1", "SM_CRASH_AT": "flatten:image"})
    assert outcome.signal == 9, outcome
    sr.call("sr_scan")
    assert set(images(sr.device_config)) == {clone}
    sr.assert_all_content()
    consistent(sr)
