"""The NFS SR (srtypes.nfs.sr) against the real nfs-ganesha test server, data path through the
test-only BindMounter (tests/nfs/conftest.py, docs/nfs-sr.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import defusedxml.ElementTree as ET
import pytest

from srtypes.nfs import server as nfs
from srtypes.nfs.mounter import mount_points
from tests.contract.conftest import NFS
from tests.contract.harness import SRHarness
from tests.nfs.sr_support import SR_UUID, bind_env, nfs_device_config, sr_dir
from tests.smapi import Process, SMFault, request

MiB = 1 << 20


@pytest.fixture
def env(ganesha, monkeypatch, tmp_path) -> Iterator[None]:
    yield from bind_env(ganesha, monkeypatch, tmp_path)


def harness(tmp_path: Path, dconf: dict[str, str], *, host: str = "a",
            process: bool = False) -> SRHarness:
    workdir = tmp_path / host
    workdir.mkdir(exist_ok=True)
    sr = SRHarness.make(NFS, workdir, process=process)
    sr.device_config = dconf
    return sr


@pytest.fixture
def blank(ganesha, env, tmp_path) -> SRHarness:
    return harness(tmp_path, nfs_device_config(ganesha, "sr"))


def mountpoint(sr: SRHarness) -> str:
    return str(sr.workdir / "run" / "sr-mount" / sr.sr_uuid)


def on_server(ganesha, dconf: dict[str, str]) -> set[str]:
    return {e.name for e in nfs.list_dir(ganesha.host, dconf["serverpath"])}


# -- configuration errors -----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["sr_create", "sr_attach", "sr_delete", "sr_probe",
                                     "vdi_create"])
def test_missing_server_is_102(blank: SRHarness, command: str) -> None:
    dconf = {k: v for k, v in blank.device_config.items() if k != "server"}
    args = [str(MiB)] if command == "vdi_create" else []
    assert blank.fault(command, args, device_config=dconf).code == 102


@pytest.mark.parametrize("command", ["sr_create", "sr_attach", "sr_delete", "vdi_create"])
def test_missing_serverpath_is_101(blank: SRHarness, command: str) -> None:
    dconf = {k: v for k, v in blank.device_config.items() if k != "serverpath"}
    args = [str(MiB)] if command == "vdi_create" else []
    assert blank.fault(command, args, device_config=dconf).code == 101


@pytest.mark.parametrize("version", ["2", "5", "4.2x", "v3"])
def test_bad_version_is_72(blank: SRHarness, version: str) -> None:
    dconf = {**blank.device_config, "nfsversion": version}
    for command in ("sr_create", "sr_attach", "sr_probe"):
        assert blank.fault(command, device_config=dconf).code == 72


@pytest.mark.parametrize(("server", "version"), [("127.0.0.2", "4"),
                                                 ("nfs-server.invalid", "3")])
def test_unreachable_server_is_108_fast(blank: SRHarness, server: str, version: str) -> None:
    dconf = {**blank.device_config, "server": server, "nfsversion": version}
    for command in ("sr_create", "sr_attach"):
        start = time.monotonic()
        assert blank.fault(command, device_config=dconf).code == 108
        # bounded by the reachability timeout, not by an NFS mount's retries
        assert time.monotonic() - start < nfs.DEFAULT_TIMEOUT + 5


# -- SR lifecycle -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["3", "4", "4.1"])
def test_create_attach_detach_delete(ganesha, blank: SRHarness, version: str) -> None:
    sr = blank
    sr.device_config = {**sr.device_config, "nfsversion": version, "hard": "true"}
    assert sr.call("sr_create", ["0"]) in (None, "")
    assert SR_UUID in on_server(ganesha, sr.device_config)
    assert (sr_dir(sr.device_config) / ".sm" / "sr.json").is_file()
    assert mountpoint(sr) not in mount_points()  # create leaves nothing mounted
    sr.call("sr_attach")
    assert mountpoint(sr) in mount_points()
    sr.call("sr_attach")  # idempotent: not mounted twice
    assert sum(1 for _ in [m for m in mount_points() if m == mountpoint(sr)]) == 1
    vdi = sr.vdi_create(MiB)
    assert (sr_dir(sr.device_config) / f"{vdi}.vhd").is_file()  # on the export
    sr.call("sr_detach")
    assert mountpoint(sr) not in mount_points()
    assert sr.fault("vdi_create", [str(MiB)]).code == 47  # not attached here
    assert sr.fault("sr_delete").code == 39  # File SR rules: VDIs exist
    assert mountpoint(sr) not in mount_points()
    sr.call("sr_attach")
    sr.delete(vdi)
    assert sr.call("sr_delete") in (None, "")
    assert mountpoint(sr) not in mount_points()
    assert SR_UUID not in on_server(ganesha, sr.device_config)
    assert sr.call("sr_delete") in (None, "")  # nothing left: nothing to do


def test_create_refuses_non_empty_directory(ganesha, blank: SRHarness) -> None:
    sr = blank
    target = sr_dir(sr.device_config)
    target.mkdir()
    (target / "precious").write_bytes(b"keep")
    err = sr.fault("sr_create", ["0"])
    assert err.code == 42, err
    assert (target / "precious").read_bytes() == b"keep"
    assert not (target / ".sm").exists()
    assert mountpoint(sr) not in mount_points()


def test_create_in_existing_empty_directory(blank: SRHarness) -> None:
    sr_dir(blank.device_config).mkdir()
    blank.create()
    assert blank.records() == {}


def test_create_twice_refused(blank: SRHarness) -> None:
    sr = blank.create()
    assert sr.fault("sr_create", ["0"]).code == 42


def test_attach_missing_sr_directory(blank: SRHarness) -> None:
    err = blank.fault("sr_attach")
    assert err.code in (47, 73), err
    assert mountpoint(blank) not in mount_points()


def test_mount_options_reach_the_mounter(blank: SRHarness) -> None:
    from srtypes.nfs.sr import NFSConfig

    cfg = NFSConfig.from_device_config({**blank.device_config, "nfsversion": "4.1",
                                        "hard": "true", "options": "nconnect=2"})
    assert nfs.mount_options(cfg.mount).startswith("hard,proto=tcp,vers=4.1,")
    assert nfs.mount_options(cfg.mount).endswith(",nconnect=2")


# -- probe --------------------------------------------------------------------------------------


def test_probe_without_serverpath_lists_exports(ganesha, blank: SRHarness) -> None:
    dconf = {"server": ganesha.host}
    for transport in (blank.transport, Process(env=dict(blank.transport.env),
                                               executable=NFS.executable)):
        outcome = transport.send(_dumps(request("sr_probe", device_config=dconf)))
        with pytest.raises(SMFault) as info:
            outcome.value("sr_probe")
        assert info.value.code == 101
        doc = info.value.string[info.value.string.index("<?xml"):]
        if "]" in doc:  # opterr=...] wrapper
            doc = doc[: doc.rindex(">") + 1]
        root = ET.fromstring(doc)
        assert root.tag == "nfs-exports"
        paths = [e.findtext("Path") for e in root.findall("Export")]
        assert ganesha.export in paths
        assert {e.findtext("Target") for e in root.findall("Export")} == {ganesha.host}
        if isinstance(transport, Process):
            assert "<nfs-exports>" in outcome.stderr


def _dumps(struct):
    from tests.smapi import dumps

    return dumps(struct)


def test_probe_with_serverpath_lists_srs(ganesha, blank: SRHarness) -> None:
    blank.create()
    (Path(blank.device_config["serverpath"]) / "not-an-sr").mkdir()
    xml = blank.transport.call(request("sr_probe", device_config=blank.device_config))
    root = ET.fromstring(xml)
    assert root.tag == "SRlist"
    assert [e.findtext("UUID") for e in root.findall("SR")] == [SR_UUID]
    versions = [v.text for v in root.findall("SupportedVersions/Version")]
    assert "3" in versions and "4" in versions


def test_probe_missing_serverpath_directory(ganesha, blank: SRHarness) -> None:
    dconf = {**blank.device_config, "serverpath": blank.device_config["serverpath"] + "/none"}
    with pytest.raises(SMFault) as info:
        blank.transport.call(request("sr_probe", device_config=dconf))
    assert info.value.code == 73


# -- VDIs over the wire, in process and through bin/NFSSR ---------------------------------------


@pytest.mark.parametrize("process", [False, True], ids=["in-process", "bin-NFSSR"])
def test_vdi_create_snapshot_revert(ganesha, env, tmp_path, process: bool) -> None:
    sr = harness(tmp_path, nfs_device_config(ganesha, "v"), process=process).create()
    vdi = sr.vdi_create(4 * MiB, "disk")
    sr.write(vdi, [(0, b"A" * 4096), (3 * MiB, b"B" * 512)])
    snap = sr.snapshot(vdi)
    sr.write(vdi, [(0, b"C" * 4096)])
    clone = sr.clone(vdi)
    sr.assert_all_content()
    sr.revert(snap, vdi)
    sr.assert_content(vdi)
    assert bytes(sr.model[vdi][:4096]) == b"A" * 4096
    sr.assert_consistent()
    for v in (clone, snap, vdi):
        sr.delete(v)
    sr.call("sr_detach")
    assert sr.call("sr_delete") in (None, "")
    assert SR_UUID not in on_server(ganesha, sr.device_config)


# -- two hosts on one SR ------------------------------------------------------------------------


def test_two_hosts_share_the_sr(ganesha, env, tmp_path) -> None:
    """Two hosts (own SM_RUN_DIR/SM_STATE_DIR, own mount point) attached to the same export,
    snapshotting and cloning the same VDIs at once: the locks and journals on the export keep
    the chains and the records consistent."""
    dconf = nfs_device_config(ganesha, "two")
    a = harness(tmp_path, dconf, host="a", process=True).create()
    b = harness(tmp_path, dconf, host="b", process=True)
    b.locations, b.model = a.locations, a.model  # one SR, one model
    b.call("sr_attach")
    assert mountpoint(a) != mountpoint(b)
    assert {mountpoint(a), mountpoint(b)} <= mount_points()
    v1 = a.vdi_create(2 * MiB, "one")
    v2 = b.vdi_create(2 * MiB, "two")
    a.write(v1, [(0, b"1" * 4096)])
    b.write(v2, [(MiB, b"2" * 4096)])

    def work(host: SRHarness, op: str, vdi: str) -> str:
        return host.snapshot(vdi) if op == "snapshot" else host.clone(vdi)

    jobs = [(h, op, v) for h in (a, b) for op in ("snapshot", "clone") for v in (v1, v2)] * 2
    with ThreadPoolExecutor(max_workers=8) as pool:
        made = list(pool.map(lambda j: work(*j), jobs))
    assert len(set(made)) == len(jobs)
    # the SR's locks and journal are on the export, nothing of them per host
    meta = sr_dir(dconf) / ".sm"
    assert (meta / "locks").is_dir() and (meta / "journal").is_dir()
    for host in (a, b):
        run = host.workdir / "run"
        assert not [p for p in run.rglob("*.lock") if "sr-mount" not in p.parts]
    # both hosts see the same, consistent SR
    assert a.records() == b.records()
    a.assert_consistent()
    b.assert_consistent()
    assert set(a.visible()) == {v1, v2, *made}
    for vdi in (v1, v2, made[0], made[-1]):
        (a if vdi != v2 else b).assert_content(vdi)
    b.call("sr_detach")
    a.call("sr_detach")
