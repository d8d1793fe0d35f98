"""Recovery after the driver process is killed mid-operation (a few points per command; the
exhaustive version is test_crash.py)."""

from __future__ import annotations

import os
import subprocess
import xmlrpc.client
from pathlib import Path

import pytest

from sm import vhd
from sm.faults import crash_env
from srtypes.file import FileSR

from .conftest import FileSRClient

ROOT = Path(__file__).resolve().parents[3]


def _killed(sr: FileSRClient, command: str, point: str, args: list[str] | None = None,
            vdi: str | None = None) -> None:
    xml = xmlrpc.client.dumps((sr.struct(command, args, vdi=vdi),), methodname=command)
    env = {**os.environ, **sr.environ, **crash_env(point)}
    proc = subprocess.run([str(ROOT / "bin" / "FileSR"), xml], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert proc.stdout == ""


def _consistent(sr: FileSRClient) -> dict[str, dict]:
    records = sr.records()
    for uuid, record in records.items():
        path = sr.location / f"{uuid}.{record['vdi_type']}"
        assert path.exists(), f"record {uuid} without image"
        if record["vdi_type"] == "vhd":
            assert vhd.check(str(path)) == []
            info = vhd.info(str(path))
            assert info.hidden == record["hidden"]
            parent = info.parent_path and os.path.basename(info.parent_path)[:-4]
            assert (parent or "") == record["parent"]
    images = {n.split(".")[0] for n in os.listdir(sr.location) if n[0] != "."}
    assert images == set(records)
    assert not os.listdir(sr.location / ".sm" / "journal") or all(
        not n.endswith(".json") for n in os.listdir(sr.location / ".sm" / "journal"))
    return records


@pytest.mark.parametrize("step", ["journaled", "renamed", "leaf", "records"])
@pytest.mark.parametrize("command", ["vdi_snapshot", "vdi_clone"])
def test_snapshot_crash(sr: FileSRClient, command: str, step: str) -> None:
    x = sr.create_vdi()
    sr.write(x, 0, b"content")
    _killed(sr, command, f"{command}:{step}", vdi=x)
    sr.call("sr_attach")
    records = _consistent(sr)
    assert sr.read(x, 0, 7) == b"content"
    others = [u for u, r in records.items() if u != x and not r["hidden"]]
    for other in others:  # rolled forward: the new VDI reads the old content
        assert sr.read(other, 0, 7) == b"content"
    assert (len(others) == 1) == (step != "journaled")


@pytest.mark.parametrize("step", ["journaled", "renamed", "leaf", "switched", "records"])
def test_revert_crash(sr: FileSRClient, step: str) -> None:
    x = sr.create_vdi()
    sr.write(x, 0, b"old")
    s = sr.clone(x)  # a clone (snapshots never change) with data of its own:
    sr.write(s, 0, b"snp")  # forces the in-place snapshot of s (all steps taken)
    sr.write(x, 0, b"new")
    _killed(sr, "vdi_revert", f"vdi_revert:{step}", [x], vdi=s)
    sr.snapshot(sr.create_vdi())  # the next chain-changing operation recovers
    _consistent(sr)
    assert sr.read(x, 0, 3) in (b"new", b"snp")
    assert sr.read(s, 0, 3) == b"snp"
    sr.revert(s, x)
    assert sr.read(x, 0, 3) == b"snp"


@pytest.mark.parametrize("step", ["journaled", "file"])
def test_delete_and_resize_crash(sr: FileSRClient, step: str) -> None:
    x = sr.create_vdi()
    y = sr.create_vdi(2 << 20)
    _killed(sr, "vdi_delete", f"vdi_delete:{step}", vdi=x)
    _killed(sr, "vdi_resize", f"vdi_resize:{step}", [str(6 << 20)], vdi=y)
    sr.call("sr_attach")
    records = _consistent(sr)
    assert x not in records  # rolled forward
    assert records[y]["virtual_size"] == str(6 << 20)


def test_crash_points_declared() -> None:
    assert set(FileSR.CRASH_POINTS) == {"vdi_snapshot", "vdi_clone", "vdi_revert",
                                        "vdi_delete", "vdi_resize"}
