"""`sm vdi import|export|write|read` through pipes (`-`), format detection, import creating the
VDI at the image's size, USED kept current, the size parser, and one-line errors: the installed
`sm` command run as a user runs it (issue 16, defects 6 to 9)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from sm.cli.main import _register, cli
from sm.vhd import check as vhd_check
from tests.api.conftest import PLUGINS, SM, env, plugins, run_sm  # noqa: F401
from tests.conftest import ROOT, require_root, require_tool

MiB = 1 << 20


_register()


class _Done:
    def __init__(self, stdout: bytes, stderr: bytes) -> None:
        self.stdout, self.stderr = stdout, stderr


def ok(env: dict[str, str], *args: str, stdin: bytes | None = None,  # noqa: F811
       cwd: Path | None = None, real: bool = False) -> _Done:
    """Run `sm ARGS` and check it succeeds: the installed command in a process with real
    pipes if `real` (or a `cwd`), else in this process through click's runner (faster)."""
    if not real and cwd is None:
        result = CliRunner().invoke(cli, list(args), env=env, input=stdin,
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return _Done(result.stdout_bytes, result.stderr_bytes or b"")
    proc = subprocess.run([str(SM), *args], env=env, input=stdin, capture_output=True,
                          timeout=300, check=False, cwd=cwd)
    assert proc.returncode == 0, proc.stderr.decode()
    return _Done(proc.stdout, proc.stderr)


def fails(env: dict[str, str], *args: str, stdin: bytes | None = None,  # noqa: F811
          code: int = 1) -> str:
    """The one line a failing command prints (asserted to be exactly one, no traceback)."""
    proc = run_sm(env, *args, stdin=stdin)
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    return lines[0]


def pattern(n: int, seed: int = 1) -> bytes:
    return (bytes(range(seed, 256)) + bytes(range(seed)))[:256] * (n // 256)


def content(env: dict[str, str], ref: str, length: int | None = None) -> bytes:  # noqa: F811
    args = ["vdi", "read", ref] + (["--length", str(length)] if length is not None else [])
    return ok(env, *args).stdout


def vdi_json(env: dict[str, str], ref: str) -> dict[str, object]:  # noqa: F811
    return dict(json.loads(ok(env, "vdi", "show", ref, "--json").stdout))


def test_import_and_export_through_pipes(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    require_tool("qemu-img")
    data = pattern(3 * MiB + 512)
    ok(env, "vdi", "create", "disk", "--size", "8M")
    ok(env, "vdi", "import", "disk", "--input", "-", stdin=data, real=True)
    assert content(env, "disk", len(data)) == data
    ok(env, "vdi", "import", "disk", "--input", "/dev/stdin", stdin=data[::-1], real=True)
    assert content(env, "disk", len(data)) == data[::-1]
    whole = data[::-1] + bytes(8 * MiB - len(data))

    # export to stdout: raw, and a dynamic VHD qemu-img reads; no file called "-"
    raw = ok(env, "vdi", "export", "disk", "--output", "-", cwd=tmp_path).stdout
    assert raw == whole and not (tmp_path / "-").exists()
    vhd_bytes = ok(env, "vdi", "export", "disk", "--output", "-", "--format", "vhd",
                   real=True).stdout
    vhd = tmp_path / "d.vhd"
    vhd.write_bytes(vhd_bytes)
    assert vhd_check(str(vhd)) == []
    assert len(vhd_bytes) < 6 * MiB  # the two all-zero 2 MiB blocks are absent
    back = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vpc", "-O", "raw", str(vhd), str(back)],
                   check=True)
    assert back.read_bytes()[:8 * MiB] == whole

    # import from a pipe into a VDI that does not exist yet: created at the VHD's size
    ok(env, "vdi", "import", "copy", "--input", "-", stdin=vhd_bytes, real=True)
    assert vdi_json(env, "copy")["virtual_size"] == 8 * MiB
    assert content(env, "copy") == whole
    # a VHD made by qemu-img (its own layout), from a pipe and from a file, format detected
    qvhd = tmp_path / "q.vhd"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", str(back), str(qvhd)],
                   check=True)
    ok(env, "vdi", "import", "disk", "--input", "-", stdin=qvhd.read_bytes())
    assert content(env, "disk") == whole
    ok(env, "vdi", "import", "fromfile", "--input", str(qvhd))
    assert content(env, "fromfile", 8 * MiB) == whole

    # a raw file gives its length; a raw pipe has none: --size
    src = tmp_path / "in.raw"
    src.write_bytes(data)
    ok(env, "vdi", "import", "rawfile", "--input", str(src))
    assert vdi_json(env, "rawfile")["virtual_size"] == len(data)
    line = fails(env, "vdi", "import", "rawpipe", "--input", "-", stdin=data)
    assert "InvalidArg (1)" in line and "size" in line
    ok(env, "vdi", "import", "rawpipe", "--input", "-", "--size", "4M", stdin=data)
    assert content(env, "rawpipe") == data + bytes(4 * MiB - len(data))
    line = fails(env, "vdi", "import", "disk", "--input", "-", "--size", "4M", stdin=data)
    assert "exists" in line
    # a failed import leaves no VDI it created
    line = fails(env, "vdi", "import", "small", "--input", "-", "--size", "1M", stdin=data)
    assert "past the VDI's 1048576 bytes" in line
    assert "small" not in ok(env, "vdi", "list").stdout.decode()

    # write and read through pipes and files
    ok(env, "vdi", "write", "disk", "-", "--offset", "1M", stdin=b"piped")
    ok(env, "vdi", "read", "disk", "--offset", "1M", "--length", "5", "--output",
       str(tmp_path / "five"))
    assert (tmp_path / "five").read_bytes() == b"piped"


def test_formats_we_do_not_read_are_refused(env: dict[str, str], tmp_path: Path  # noqa: F811
                                            ) -> None:
    require_tool("qemu-img")
    ok(env, "vdi", "create", "disk", "--size", "8M")
    ok(env, "vdi", "write", "disk", "keep")
    for fmt in ("qcow2", "vmdk", "vdi", "vhdx"):
        image = tmp_path / f"image.{fmt}"
        subprocess.run(["qemu-img", "create", "-f", fmt, str(image), "4M"], check=True,
                       capture_output=True)
        source, stdin = (str(image), None) if fmt != "qcow2" else ("-", image.read_bytes())
        line = fails(env, "vdi", "import", "disk", "--input", source, stdin=stdin)
        assert f"is a {fmt} image" in line and "qemu-img convert" in line, line
    assert content(env, "disk", 4) == b"keep"
    fails(env, "vdi", "import", "other", "--input", str(tmp_path / "image.vmdk"))
    assert "other" not in ok(env, "vdi", "list").stdout.decode()


def test_used_is_current_after_writes_and_imports(env: dict[str, str]) -> None:  # noqa: F811
    ok(env, "vdi", "create", "disk", "--size", "64M")
    before = vdi_json(env, "disk")["physical_utilisation"]
    assert isinstance(before, int) and before < MiB
    ok(env, "vdi", "write", "disk", "--offset", "8M", stdin=pattern(16 * MiB))
    used = vdi_json(env, "disk")["physical_utilisation"]
    assert isinstance(used, int) and used >= 16 * MiB
    ok(env, "vdi", "import", "disk", "--input", "-", stdin=pattern(40 * MiB))
    used = vdi_json(env, "disk")["physical_utilisation"]
    assert isinstance(used, int) and used >= 40 * MiB
    listed = json.loads(ok(env, "vdi", "list", "--json").stdout)
    assert listed[0]["physical_utilisation"] == used


def test_one_size_parser(env: dict[str, str]) -> None:  # noqa: F811
    line = fails(env, "vdi", "create", "d", "--size", "0", code=2)
    assert "--size" in line and "at least 1 byte" in line
    line = fails(env, "vdi", "create", "d", "--size", "9999999T", code=2)
    assert "too large (VHD maximum 2040 GiB" in line
    line = fails(env, "vdi", "create", "d", "--size", "3000G")
    assert "VDISize (79)" in line and "2040 GiB" in line
    line = fails(env, "vdi", "create", "d", "--size", "ten", code=2)
    assert "not a size" in line
    ok(env, "vdi", "create", "d", "--size", "1M")
    assert "at least 1 byte" in fails(env, "vdi", "resize", "d", "0", code=2)
    assert ok(env, "vdi", "list").stdout.decode().count("\n") == 2  # header + d


def test_failures_are_one_line(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    ok(env, "vdi", "create", "disk", "--size", "1M")
    line = fails(env, "vdi", "export", "disk", "--output", str(tmp_path / "missing" / "x"))
    assert "InvalidArg (1)" in line and "missing" in line
    line = fails(env, "vdi", "import", "disk", "--input", str(tmp_path / "nothing"))
    assert "InvalidArg (1)" in line and "No such file" in line
    assert "is a directory" in fails(env, "vdi", "import", "disk", "--input", str(tmp_path))
    assert "VDIMissing (144)" in fails(env, "vdi", "show", "nosuch")
    # a group without a command shows its help, as click does
    proc = run_sm(env, "vdi")
    assert proc.returncode == 2 and b"Commands:" in proc.stderr and b"Error" not in proc.stderr
    # --debug adds the trace
    proc = run_sm(env, "--debug", "vdi", "show", "nosuch")
    assert proc.returncode == 1 and b"Traceback" in proc.stderr
    assert proc.stderr.decode().splitlines()[-1].startswith("Error: VDIMissing (144)")


def test_failures_on_a_read_only_file_system_are_one_line(env: dict[str, str],  # noqa: F811
                                                          tmp_path: Path) -> None:
    require_root()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mnt)], check=True)
    try:
        (mnt / "sr").mkdir()
        ok(env, "sr", "create", "ro", "-d", f"location={mnt / 'sr'}")
        ok(env, "vdi", "create", "a", "--size", "1M", "--sr", "ro")
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        for args in (["vdi", "list"], ["vdi", "write", "a", "x"], ["vdi", "snapshot", "a"],
                     ["vdi", "create", "b", "--size", "1M"], ["sr", "scan", "ro"]):
            line = fails(env, *args, "--sr", "ro") if args[0] == "vdi" else fails(env, *args)
            assert "Read-only file system" in line, line
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_streaming_memory_is_bounded(tmp_path: Path) -> None:
    """256 MiB through `sm vdi write` and `sm vdi import --input -` (benchmarks/bench_stream.py
    runs 1 GiB): every child's peak RSS stays under 64 MiB (it read all of stdin before)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_stream.py"), "--size-mib", "256",
         "--dir", str(tmp_path)], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(" MiB  x") == 4, proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_progress_bar_on_a_terminal_only(env: dict[str, str]) -> None:  # noqa: F811
    ok(env, "vdi", "create", "disk", "--size", "8M")
    data = pattern(6 * MiB)
    # stderr a pipe: no bar
    for args in (["write", "disk"], ["import", "disk", "--input", "-"]):
        proc = ok(env, "vdi", *args, stdin=data, real=True)
        assert b"%" not in proc.stderr and proc.stdout == b"", proc.stderr
    out = ok(env, "vdi", "export", "disk", "--output", "-", real=True).stdout
    assert out[:len(data)] == data  # stdout carries only the data
    # stderr a terminal: a bar for write, import and export
    for args in (["write", "disk"], ["import", "disk", "--input", "-"],
                 ["export", "disk", "--output", os.devnull]):
        master, slave = pty.openpty()
        try:
            proc = subprocess.run([str(SM), "vdi", *args], env=env, input=data,
                                  stdout=subprocess.PIPE, stderr=slave, timeout=300,
                                  check=False)
            os.close(slave)
            shown = b""
            while select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                shown += chunk
        finally:
            os.close(master)
        assert proc.returncode == 0, shown
        assert b"100%" in shown and args[0].encode() in shown, shown
