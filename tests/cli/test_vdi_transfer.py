"""`sm vdi export` / `sm vdi import`: raw and VHD round trips (the File SR serving over NBD,
so in-process access pauses its server), checked with qemu-img."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sm.cli.main import _register, cli
from sm.vhd import check as vhd_check
from tests.api.conftest import PLUGINS, env, plugins  # noqa: F401
from tests.conftest import require_tool

_register()
pytestmark = pytest.mark.nbd
MiB = 1 << 20
Invoke = Callable[..., Result]


@pytest.fixture
def sm(env: dict[str, str]) -> Invoke:  # noqa: F811
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        result = runner.invoke(cli, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    return invoke


def test_export_import_round_trips(sm: Invoke, env: dict[str, str],  # noqa: F811
                                   tmp_path: Path) -> None:
    require_tool("qemu-img")
    sm("vdi", "create", "disk", "--size", "8M")
    sm("vdi", "write", "disk", "head", "--offset", "0")
    sm("vdi", "write", "disk", "tail", "--offset", str(7 * MiB + 5))
    want = bytearray(8 * MiB)
    want[0:4] = b"head"
    want[7 * MiB + 5:7 * MiB + 9] = b"tail"

    raw, vhd = tmp_path / "d.raw", tmp_path / "d.vhd"
    sm("vdi", "export", "disk", "--output", str(raw))
    assert raw.read_bytes() == want
    sm("vdi", "export", "disk", "--output", str(vhd), "--format", "vhd")
    assert vhd_check(str(vhd)) == []
    assert vhd.stat().st_size < 5 * MiB  # dynamic: two 2 MiB blocks of 8 MiB allocated
    back = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vpc", "-O", "raw", str(vhd), str(back)],
                   check=True)
    assert back.read_bytes()[:8 * MiB] == want

    sm("vdi", "create", "copy", "--size", "8M")
    sm("vdi", "import", "copy", "--input", str(vhd), "--format", "vhd")
    out = CliRunner().invoke(cli, ["vdi", "read", "copy"], env=env)
    assert out.stdout_bytes == want
    new = bytes(range(256)) * (MiB // 256)
    src = tmp_path / "in.raw"
    src.write_bytes(new)
    sm("vdi", "import", "copy", "--input", str(src))
    out = CliRunner().invoke(cli, ["vdi", "read", "copy", "--length", str(MiB)], env=env)
    assert out.stdout_bytes == new
    assert os.path.exists(vhd)

