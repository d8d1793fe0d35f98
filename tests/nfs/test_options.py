"""Versions, mount option strings, rpcinfo/showmount argv and parsing (no server needed)."""

from __future__ import annotations

import itertools

import defusedxml.ElementTree as ET
import pytest

from sm import errors
from sm.executor import CommandTimeout, RecordingExecutor
from srtypes.nfs import server as nfs


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, "3"), ("", "3"), ("3", "3"), ("4", "4"), ("4.0", "4.0"), ("4.1", "4.1"), (" 4 ", "4")],
)
def test_validate_version(given, expected):
    assert nfs.validate_version(given) == expected


@pytest.mark.parametrize("bad", ["2", "4.2", "5", "v3", "3.0", "four"])
def test_validate_version_rejects(bad):
    with pytest.raises(errors.NFSVersion) as info:
        nfs.validate_version(bad)
    assert info.value.code == 72


def test_default_mount_options():
    assert nfs.mount_options(nfs.MountConfig()) == (
        "soft,proto=tcp,vers=3,timeo=200,retrans=4,acdirmin=0,acdirmax=0"
    )


@pytest.mark.parametrize(
    ("version", "hard", "timeo", "retrans", "extra"),
    list(itertools.product(["3", "4", "4.0", "4.1"], [False, True], ["", "600"], ["", "0"],
                           ["", "nconnect=4,noatime"])),
)
def test_mount_options_combinations(version, hard, timeo, retrans, extra):
    dc = {"server": "s", "nfsversion": version, "hard": "true" if hard else "false"}
    if timeo:
        dc["nfs-timeout"] = timeo
    if retrans:
        dc["nfs-retrans"] = retrans
    if extra:
        dc["options"] = extra
    opts = nfs.mount_options(nfs.MountConfig.from_device_config(dc)).split(",")
    assert opts[0] == ("hard" if hard else "soft")
    assert opts[1:7] == [
        "proto=tcp",
        f"vers={version}",
        f"timeo={timeo or 200}",
        f"retrans={retrans or 4}",
        "acdirmin=0",
        "acdirmax=0",
    ]
    assert opts[7:] == (extra.split(",") if extra else [])


@pytest.mark.parametrize(
    "dc",
    [{"nfs-timeout": "0"}, {"nfs-timeout": "x"}, {"nfs-retrans": "-1"}, {"hard": "maybe"}],
)
def test_mount_config_rejects(dc):
    with pytest.raises(errors.InvalidArg):
        nfs.MountConfig.from_device_config(dc)


def test_mount_config_bad_version():
    with pytest.raises(errors.NFSVersion):
        nfs.MountConfig.from_device_config({"nfsversion": "2"})


def test_check_reachable_argv():
    rec = RecordingExecutor().on(["rpcinfo"])
    nfs.check_reachable("filer", timeout=7, executor=rec)
    nfs.check_reachable("127.0.0.1", version="4.1", timeout=7, executor=rec)
    nfs.check_reachable("::1", version="3", port=12049, timeout=7, executor=rec)
    assert rec.argvs == [
        ("rpcinfo", "-T", "tcp", "filer", "100003", "3"),
        ("rpcinfo", "-a", "127.0.0.1.8.1", "-T", "tcp", "100003", "4"),
        ("rpcinfo", "-a", "::1.47.17", "-T", "tcp6", "100003", "3"),
    ]
    assert {c.timeout for c in rec.calls} == {7}


def test_check_reachable_timeout_is_nfs_target():
    rec = RecordingExecutor().on(["rpcinfo"], raises=CommandTimeout(["rpcinfo"], 3))
    with pytest.raises(errors.NFSTarget, match="within 3 s"):
        nfs.check_reachable("filer", timeout=3, executor=rec)


def test_check_reachable_bad_version_first():
    with pytest.raises(errors.NFSVersion):
        nfs.check_reachable("filer", version="2", executor=RecordingExecutor())


def test_list_exports_parsing():
    out = "/srv/a  *\n/srv/b 10.0.0.0/8,host1\n/srv/c\n\n/srv/d (everyone)\n"
    rec = RecordingExecutor().on(["showmount"], stdout=out)
    assert nfs.list_exports("filer", executor=rec) == [
        ("/srv/a", ["*"]),
        ("/srv/b", ["10.0.0.0/8", "host1"]),
        ("/srv/c", ["*"]),
        ("/srv/d", ["(everyone)"]),
    ]
    assert rec.argvs == [("showmount", "--no-headers", "-e", "filer")]


def test_exports_xml_format():
    text = nfs.exports_xml("filer", [nfs.Export("/srv/a", ["*"]), nfs.Export("/b", ["h1", "h2"])])
    assert text.startswith('<?xml version="1.0" ?>\n<nfs-exports>')
    root = ET.fromstring(text)
    assert [[(c.tag, c.text) for c in e] for e in root] == [
        [("Target", "filer"), ("Path", "/srv/a"), ("Accesslist", "*")],
        [("Target", "filer"), ("Path", "/b"), ("Accesslist", "h1,h2")],
    ]


def test_srlist_xml_format():
    root = ET.fromstring(nfs.srlist_xml(["u1", "u2"]))
    assert root.tag == "SRlist"
    assert [[(c.tag, c.text) for c in sr] for sr in root] == [[("UUID", "u1")], [("UUID", "u2")]]
    assert ET.fromstring(nfs.srlist_xml([])).tag == "SRlist"


def test_supported_versions_parsing(monkeypatch):
    out = (
        "   program vers proto   port  service\n"
        "    100000    4   tcp    111  portmapper\n"
        "    100003    3   udp   2049  nfs\n"
        "    100003    3   tcp   2049  nfs\n"
        "    100003    4   tcp   3049  nfs\n"
    )
    asked = []

    def probe(host, minor, *, port, timeout):
        asked.append((minor, port))
        return minor == 0

    monkeypatch.setattr(nfs.rpc, "nfs4_minor_version_supported", probe)
    rec = RecordingExecutor().on(["rpcinfo", "-p"], stdout=out)
    assert nfs.supported_versions("filer", executor=rec) == ["3", "4"]
    assert asked == [(0, 3049), (1, 3049)]
