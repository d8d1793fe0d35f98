"""`sm vhd` through click's CliRunner (every command) and once as the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sm import vhd as engine
from sm.cli.main import cli
from sm.cli.vhd import parse_size, vhd
from tests.conftest import ROOT
from tests.vhd.oracle import flip

MiB = 1024 * 1024


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def sm(runner: CliRunner, *args: str, input: bytes | None = None, code: int = 0) -> str:
    result = runner.invoke(vhd, list(args), input=input, catch_exceptions=False)
    assert result.exit_code == code, (args, result.output, result.stderr)
    return result.stdout


def test_parse_size() -> None:
    assert parse_size("512") == 512
    assert parse_size("64M") == 64 * MiB
    assert parse_size("2g") == 2 * 1024 * MiB
    assert parse_size("3KiB") == 3072
    assert parse_size("1T") == 1024**4
    with pytest.raises(ValueError):
        parse_size("1.5G")


def test_create_info_json_and_human(runner: CliRunner, tmp_path: Path) -> None:
    path = str(tmp_path / "a.vhd")
    out = sm(runner, "create", path, "--size", "64M")
    assert path in out
    data = json.loads(sm(runner, "info", path, "--json"))
    assert data["disk_type"] == "dynamic"
    assert data["virtual_size"] == 64 * MiB
    assert data["block_size"] == 2 * MiB
    assert data["hidden"] is False
    assert data["parent_uuid"] is None
    assert data["allocated_blocks"] == 0
    assert data["uuid"] == str(engine.info(path).uuid)
    human = sm(runner, "info", path)
    lines = dict(line.split(":", 1) for line in human.splitlines())
    assert lines["virtual_size"].strip() == "67108864 (64.0 MiB)"
    assert lines["disk_type"].strip() == "dynamic"
    # aligned: every value starts in the same column
    assert len({line.index(":") + len(line.split(":", 1)[1]) - len(line.split(":", 1)[1].lstrip())
                for line in human.splitlines()}) == 1


def test_create_fixed_and_block_size(runner: CliRunner, tmp_path: Path) -> None:
    fixed = str(tmp_path / "f.vhd")
    sm(runner, "create", fixed, "--size", "3M", "--type", "fixed")
    assert engine.info(fixed).disk_type == engine.DiskType.FIXED
    assert os.path.getsize(fixed) == 3 * MiB + 512
    small = str(tmp_path / "s.vhd")
    sm(runner, "create", small, "--size", "1M", "--block-size", "64K")
    assert engine.info(small).block_size == 64 * 1024


def test_create_usage_errors(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(vhd, ["create", str(tmp_path / "x.vhd")])
    assert result.exit_code == 2 and "--size" in result.output
    result = runner.invoke(vhd, ["create", str(tmp_path / "x.vhd"), "--size", "lots"])
    assert result.exit_code == 2 and "not a size" in result.output


def test_create_with_parent_and_snapshot(runner: CliRunner, tmp_path: Path) -> None:
    base, diff, snap = (str(tmp_path / n) for n in ("base.vhd", "diff.vhd", "snap.vhd"))
    sm(runner, "create", base, "--size", "8M")
    sm(runner, "create", diff, "--parent", base)
    sm(runner, "snapshot", base, snap)
    for child in (diff, snap):
        data = json.loads(sm(runner, "info", child, "--json"))
        assert data["disk_type"] == "differencing"
        assert data["virtual_size"] == 8 * MiB
        assert data["parent_uuid"] == str(engine.info(base).uuid)
        assert Path(data["parent_path"]).resolve() == Path(base).resolve()
    chain = json.loads(sm(runner, "info", snap, "--json", "--chain"))
    assert [Path(i["path"]).name for i in chain] == ["snap.vhd", "base.vhd"]


def test_write_read_roundtrip(runner: CliRunner, tmp_path: Path) -> None:
    base, leaf = str(tmp_path / "base.vhd"), str(tmp_path / "leaf.vhd")
    sm(runner, "create", base, "--size", "4M")
    sm(runner, "write", base, "--offset", "0", input=b"hello base")
    sm(runner, "snapshot", base, leaf)
    payload = os.urandom(3 * MiB + 100)
    src = tmp_path / "in.raw"
    src.write_bytes(payload)
    sm(runner, "write", leaf, "--offset", "1000", "--input", str(src))
    expected = bytearray(4 * MiB)
    expected[0:10] = b"hello base"
    expected[1000 : 1000 + len(payload)] = payload
    raw = sm_bytes(runner, "read", leaf)
    assert raw == bytes(expected)
    out = tmp_path / "out.raw"
    sm(runner, "read", leaf, "--output", str(out))
    assert out.read_bytes() == bytes(expected)
    assert sm_bytes(runner, "read", leaf, "--offset", "1000", "--length", "5") == payload[:5]
    # into a file: sector-aligned ranges (readinto) and unaligned ones, at an offset
    for off, n in ((512, 2 * MiB), (1000, 3 * MiB + 7)):
        sm(runner, "read", leaf, "--offset", str(off), "--length", str(n), "-o", str(out))
        assert out.read_bytes() == bytes(expected[off:off + n])


def sm_bytes(runner: CliRunner, *args: str) -> bytes:
    result = runner.invoke(vhd, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


def test_write_past_end_is_a_clean_error(runner: CliRunner, tmp_path: Path) -> None:
    path = str(tmp_path / "a.vhd")
    sm(runner, "create", path, "--size", "1M")
    result = runner.invoke(vhd, ["write", path, "--offset", "1M"], input=b"x" * 512)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ")
    assert "Traceback" not in result.output


def test_check_clean_and_damaged(runner: CliRunner, tmp_path: Path) -> None:
    path = str(tmp_path / "a.vhd")
    sm(runner, "create", path, "--size", "4M")
    sm(runner, "write", path, "--offset", "0", input=b"x" * 4096)
    assert "ok" in sm(runner, "check", path, "--bitmaps")
    assert json.loads(sm(runner, "check", path, "--json")) == {"path": path, "ok": True, "problems": []}
    flip(path, os.path.getsize(path) - 512 + 70)  # trailing footer checksum
    result = runner.invoke(vhd, ["check", path])
    assert result.exit_code == 1
    assert "footer" in result.stderr.lower()
    result = runner.invoke(vhd, ["check", path, "--json"])
    assert result.exit_code == 1 and json.loads(result.stdout)["ok"] is False


def test_repair(runner: CliRunner, tmp_path: Path) -> None:
    path = str(tmp_path / "a.vhd")
    sm(runner, "create", path, "--size", "4M")
    sm(runner, "write", path, "--offset", "0", input=b"x" * 4096)
    assert "nothing to repair" in sm(runner, "repair", path)
    flip(path, os.path.getsize(path) - 512 + 70)  # trailing footer checksum
    refused = runner.invoke(vhd, ["write", path, "--offset", "0"], input=b"y" * 512)
    assert refused.exit_code == 1 and "footer" in refused.stderr
    assert "rewrote the trailing footer" in sm(runner, "repair", path)
    assert "ok" in sm(runner, "check", path, "--bitmaps")
    flip(path, 512 + 100)  # dynamic header checksum: not repairable
    result = runner.invoke(vhd, ["repair", path])
    assert result.exit_code == 1 and result.stderr.startswith("Error: ")
    assert "header" in result.stderr


def test_engine_error_is_one_line(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.vhd"
    bad.write_bytes(b"not a vhd" * 100)
    result = runner.invoke(vhd, ["info", str(bad)])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
    assert str(bad) in result.stderr
    assert not isinstance(result.exception, engine.VhdError)  # handled, not escaped


def test_coalesce(runner: CliRunner, tmp_path: Path) -> None:
    base, leaf = str(tmp_path / "base.vhd"), str(tmp_path / "leaf.vhd")
    sm(runner, "create", base, "--size", "4M")
    sm(runner, "snapshot", base, leaf)
    sm(runner, "write", leaf, "--offset", "2M", input=b"z" * 8192)
    out = sm(runner, "coalesce", leaf, "--no-progress")
    assert "coalesced" in out
    assert sm_bytes(runner, "read", base, "--offset", "2M", "--length", "8192") == b"z" * 8192
    # The progress bar goes to stderr, stdout stays clean.
    sm(runner, "write", leaf, "--offset", "0", input=b"q" * 512)
    result = runner.invoke(vhd, ["coalesce", leaf, "--progress"])
    assert result.exit_code == 0
    assert "coalescing" in result.stderr


def test_resize_set_hidden_reparent(runner: CliRunner, tmp_path: Path) -> None:
    a, b, leaf = (str(tmp_path / n) for n in ("a.vhd", "b.vhd", "leaf.vhd"))
    sm(runner, "create", a, "--size", "2M")
    sm(runner, "resize", a, "--size", "6M")
    assert engine.info(a).virtual_size == 6 * MiB
    sm(runner, "set-hidden", a)
    assert json.loads(sm(runner, "info", a, "--json"))["hidden"] is True
    sm(runner, "set-hidden", a, "--off")
    assert engine.info(a).hidden is False
    sm(runner, "snapshot", a, leaf)
    sm(runner, "create", b, "--size", "6M")
    sm(runner, "reparent", leaf, b)
    assert engine.info(leaf).parent_uuid == engine.info(b).uuid
    assert "ok" in sm(runner, "check", leaf)


def test_map(runner: CliRunner, tmp_path: Path) -> None:
    base, leaf = str(tmp_path / "base.vhd"), str(tmp_path / "leaf.vhd")
    sm(runner, "create", base, "--size", "8M")
    sm(runner, "write", base, "--offset", "0", input=b"a" * 4096)
    sm(runner, "snapshot", base, leaf)
    sm(runner, "write", leaf, "--offset", "6M", input=b"b" * 4096)
    data = json.loads(sm(runner, "map", leaf, "--json"))
    assert data  # one entry per image of the chain
    text = json.dumps(data)
    assert "leaf.vhd" in text and "base.vhd" in text
    human = sm(runner, "map", leaf)
    assert "leaf.vhd" in human and "base.vhd" in human


def test_sm_group_lists_vhd(runner: CliRunner) -> None:
    from sm.cli import main

    main._register()
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0 and "vhd" in result.output


def test_console_script_end_to_end(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "sm"
    if not exe.exists():
        pytest.skip(f"{exe} not installed (pip install -e .)")
    base, leaf = str(tmp_path / "base.vhd"), str(tmp_path / "leaf.vhd")

    def run(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str(exe), "vhd", *args], input=data, capture_output=True, cwd=ROOT)

    assert run("create", base, "--size", "16M").returncode == 0
    assert run("write", base, "--offset", "0", data=b"hello").returncode == 0
    assert run("snapshot", base, leaf).returncode == 0
    assert run("write", leaf, "--offset", "4096", data=b"world").returncode == 0
    assert run("check", leaf, "--bitmaps").returncode == 0
    proc = run("read", leaf, "--length", "4101")
    assert proc.returncode == 0 and proc.stdout == b"hello" + bytes(4091) + b"world"
    info = json.loads(run("info", leaf, "--json").stdout)
    assert info["disk_type"] == "differencing"
    assert run("coalesce", leaf).returncode == 0
    assert run("read", base, "--length", "4101").stdout == proc.stdout
    # `read | head` under pipefail: the reader going away is not an error.
    pipe = subprocess.run(
        f"set -o pipefail; {exe} vhd read {leaf} | head -c 10 >/dev/null",
        shell=True, executable="/bin/bash", capture_output=True,
    )
    assert pipe.returncode == 0, pipe.stderr
    bad = run("info", str(tmp_path / "missing.vhd"))
    assert bad.returncode == 2  # click: path does not exist
    flip(base, 512 + 100)  # dynamic header checksum
    broken = run("write", base, "--offset", "0", data=b"x")
    assert broken.returncode == 1 and b"Traceback" not in broken.stderr
    assert broken.stderr.startswith(b"Error: ")
