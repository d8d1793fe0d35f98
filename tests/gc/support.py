"""Helpers of the collector tests: run it (in process or as the background command does),
and check an SR after it against a model of what every VDI reads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sm import vhd
from tests.conftest import ROOT
from tests.srtypes.file.conftest import FileSRClient

MiB = 1 << 20


def gc_run(sr: FileSRClient) -> dict[str, Any]:
    return dict(json.loads(sr.call("sm_gc_run")))


def gc_status(sr: FileSRClient) -> dict[str, Any]:
    return dict(json.loads(sr.call("sm_gc_status")))


def gc_argv(sr: FileSRClient) -> list[str]:
    """`python -m srtypes.file.gc LOCATION SR_UUID RUN_DIR`: what a background run executes."""
    return [sys.executable, "-m", "srtypes.file.gc", str(sr.location), sr.sr_uuid,
            str(sr.run_dir)]


def gc_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}


def gc_process(sr: FileSRClient, env: Mapping[str, str] | None = None, *,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """One collector run in a process of its own, to its end (or its crash)."""
    return subprocess.run(gc_argv(sr), env=gc_env(env), capture_output=True, text=True,
                          timeout=timeout)


def copy_sr(template: FileSRClient, tmp: Path) -> FileSRClient:
    """A copy of a (detached, idle) SR under `tmp`, attached: scenarios are built once."""
    shutil.copytree(template.location, tmp / "sr", symlinks=True)
    sr = FileSRClient(tmp / "sr", tmp / "run", template.sr_uuid)
    sr.call("sr_attach")
    return sr


def image_files(sr: FileSRClient) -> set[str]:
    return {n.split(".")[0] for n in os.listdir(sr.location)
            if n.endswith((".vhd", ".raw")) and not n.startswith(".")}


def check_sr(sr: FileSRClient, model: Mapping[str, bytes], *, collected: bool = True) -> None:
    """Every VDI of the model reads its content, records and files agree, every image checks
    clean; `collected`: no garbage and no hidden base with a single child is left."""
    records = sr.records()
    visible = {u for u, r in records.items() if not r["hidden"]}
    assert visible == set(model), (visible ^ set(model))
    assert image_files(sr) == set(records)
    children: dict[str, list[str]] = {}
    for u, r in records.items():
        if r["parent"]:
            children.setdefault(r["parent"], []).append(u)
            assert r["parent"] in records, f"{u}: parent {r['parent']} has no record"
    for u, r in records.items():
        path = str(sr.location / f"{u}.{r['vdi_type']}")
        if r["vdi_type"] == "vhd":
            info = vhd.info(path)
            assert str(info.uuid) == u and info.hidden == r["hidden"], u
            assert info.virtual_size == int(r["virtual_size"]), u
            want_parent = str(sr.location / f"{r['parent']}.vhd") if r["parent"] else None
            assert info.parent_path == want_parent, u
            assert vhd.check(path, bitmaps=True) == [], u
        if collected and r["hidden"]:
            assert len(children.get(u, [])) >= 2, f"hidden {u} has children {children.get(u)}"
    for u, content in model.items():
        with vhd.open_chain(str(sr.location / f"{u}.vhd")) as disk:
            assert disk.read(0, disk.size) == content, f"VDI {u} reads different data"


def depth(sr: FileSRClient, uuid: str) -> int:
    return len(vhd.chain(str(sr.location / f"{uuid}.vhd")))


def make_sr(tmp: Path) -> FileSRClient:
    sr = FileSRClient(tmp / "sr", tmp / "run")
    sr.call("sr_create", ["0"])
    sr.call("sr_attach")
    return sr
