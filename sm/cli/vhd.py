"""`sm vhd`: a thin command line over the VHD engine (`sm.vhd`).

Each command parses its arguments, makes one or two engine calls and prints the result. Engine
errors (`sm.vhd.VhdError`) and OS errors become a one-line `Error: ...` on stderr and exit
status 1; `sm vhd check` exits 1 when it finds problems.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Callable
from typing import IO, Any

import click

from sm import vhd as engine
from sm.cli.output import progress_bar
from sm.cli.sizes import SIZE, SizeType, parse_size  # noqa: F401  (re-exported)

#: Bytes per engine call for `read`/`write`: large enough to amortise per-call overhead.
CHUNK = 8 * 1024 * 1024

Progress = Callable[[int, int], None]


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{n} ({value:.1f} {unit})"
        value /= 1024
    raise AssertionError("unreachable")


def _error_message(err: BaseException) -> str:
    if isinstance(err, engine.VhdError):
        path = getattr(err, "path", None)
        text = str(err)
        return text if not path or str(path) in text else f"{path}: {text}"
    if isinstance(err, OSError) and err.strerror:
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror}"
    return str(err)


class _VhdGroup(click.Group):
    """Turns engine and OS errors into a clean one-line message and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (engine.VhdError, OSError) as err:
            if isinstance(err, BrokenPipeError):
                _quiet_stdout()
                ctx.exit(0)
            raise click.ClickException(_error_message(err)) from err


def _quiet_stdout() -> None:
    # The reader went away (`sm vhd read x | head`): not an error. Point stdout at /dev/null so
    # the interpreter's final flush does not raise again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)




_progress_option = click.option(
    "--progress/--no-progress",
    default=None,
    help="Draw a progress bar on stderr (default: when stderr is a terminal).",
)


def info_dict(info: engine.VhdInfo) -> dict[str, Any]:
    """A VhdInfo as JSON-ready values (enums by lower-case name, UUIDs as strings)."""
    out: dict[str, Any] = {}
    for name, value in info.as_dict().items():
        if name == "disk_type":
            value = engine.DiskType(value).name.lower()
        elif value is not None and not isinstance(value, bool | int | float | str):
            value = str(value)
        out[name] = value
    return out


_SIZE_KEYS = {"virtual_size", "block_size", "physical_size"}


def _print_table(rows: dict[str, Any]) -> None:
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        if value is None:
            value = "-"
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        elif key in _SIZE_KEYS and isinstance(value, int):
            value = human_size(value)
        click.echo(f"{key + ':':<{width + 1}} {value}")


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def _summary(verb: str, info: engine.VhdInfo) -> None:
    kind = engine.DiskType(info.disk_type).name.lower()
    click.echo(f"{verb} {info.path}: {kind}, {human_size(info.virtual_size)}, uuid {info.uuid}")


@click.group(cls=_VhdGroup)
def vhd() -> None:
    """Create, inspect, check and change VHD files and chains."""


@vhd.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--size", type=SIZE, help="Virtual size (bytes or K/M/G/T); default: the parent's.")
@click.option(
    "--type",
    "disk_type",
    type=click.Choice(["dynamic", "fixed"]),
    default="dynamic",
    show_default=True,
)
@click.option("--parent", type=click.Path(exists=True, dir_okay=False), help="Differencing disk.")
@click.option("--block-size", type=SIZE, default=engine.DEFAULT_BLOCK_SIZE, show_default=True)
@click.option("--max-size", type=SIZE, help="Reserve BAT room to grow to this size.")
@click.option("--hidden", is_flag=True, help="Mark the new image hidden.")
def create(
    path: str,
    size: int | None,
    disk_type: str,
    parent: str | None,
    block_size: int,
    max_size: int | None,
    hidden: bool,
) -> None:
    """Create a VHD at PATH (dynamic, fixed, or differencing with --parent)."""
    if parent is None and size is None:
        raise click.UsageError("--size is required unless --parent is given")
    if parent is not None and disk_type == "fixed":
        raise click.UsageError("--parent makes a differencing disk; it cannot be --type fixed")
    kind = engine.DiskType.FIXED if disk_type == "fixed" else engine.DiskType.DYNAMIC
    info = engine.create(
        path,
        size or 0,  # 0 with --parent: the parent's size
        disk_type=kind,
        parent=parent,
        block_size=block_size,
        max_size=max_size,
        hidden=hidden,
    )
    _summary("created", info)


@vhd.command()
@click.argument("parent", type=click.Path(exists=True, dir_okay=False))
@click.argument("child", type=click.Path(dir_okay=False))
@click.option("--max-size", type=SIZE, help="Reserve BAT room to grow to this size.")
def snapshot(parent: str, child: str, max_size: int | None) -> None:
    """Create CHILD, an empty differencing disk over PARENT."""
    _summary("created", engine.snapshot(parent, child, max_size=max_size))


@vhd.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--chain", is_flag=True, help="Every image of the chain, leaf first.")
def info(path: str, as_json: bool, chain: bool) -> None:
    """Show the header fields of a VHD (or of its whole chain)."""
    infos = engine.chain(path) if chain else [engine.info(path)]
    if as_json:
        dicts = [info_dict(i) for i in infos]
        _echo_json(dicts if chain else dicts[0])
        return
    for n, item in enumerate(infos):
        if n:
            click.echo()
        _print_table(info_dict(item))


@vhd.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--bitmaps", is_flag=True, help="Also check every sector bitmap.")
@click.option("--no-parents", is_flag=True, help="Check this image only, not its parents.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def check(ctx: click.Context, path: str, bitmaps: bool, no_parents: bool, as_json: bool) -> None:
    """Verify a VHD; exit status 1 and the reasons when anything is wrong."""
    problems = engine.check(path, bitmaps=bitmaps, parents=not no_parents)
    if as_json:
        _echo_json({"path": path, "ok": not problems, "problems": problems})
    elif problems:
        click.echo(f"{path}: {len(problems)} problem(s)", err=True)
        for problem in problems:
            click.echo(f"  {problem}", err=True)
    else:
        click.echo(f"{path}: ok")
    if problems:
        ctx.exit(1)


@vhd.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def repair(path: str) -> None:
    """Fix what a crash leaves (a bad footer or footer copy, a stale batmap); refuse the rest."""
    done = engine.repair(path)
    for what in done:
        click.echo(f"{path}: {what}")
    if not done:
        click.echo(f"{path}: nothing to repair")


@vhd.command()
@click.argument("child", type=click.Path(exists=True, dir_okay=False))
@_progress_option
def coalesce(child: str, progress: bool | None) -> None:
    """Copy CHILD's sectors into its parent (CHILD itself is left as it was)."""
    parent = engine.info(child).parent_path
    with progress_bar("coalescing", progress) as callback:
        engine.coalesce(child, progress=callback)
    click.echo(f"coalesced {child} into {parent}")


@vhd.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--size", type=SIZE, required=True, help="New virtual size (grow only).")
def resize(path: str, size: int) -> None:
    """Grow the virtual size of a VHD."""
    engine.resize(path, size)
    click.echo(f"resized {path} to {human_size(size)}")


@vhd.command("set-hidden")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--off", is_flag=True, help="Clear the hidden flag instead.")
def set_hidden(path: str, off: bool) -> None:
    """Set (or with --off clear) the blktap hidden flag."""
    engine.set_hidden(path, not off)
    click.echo(f"{path}: hidden={'no' if off else 'yes'}")


@vhd.command()
@click.argument("child", type=click.Path(exists=True, dir_okay=False))
@click.argument("new_parent", type=click.Path(exists=True, dir_okay=False))
def reparent(child: str, new_parent: str) -> None:
    """Point CHILD at NEW_PARENT (uuid, name and relative locators)."""
    engine.reparent(child, new_parent)
    click.echo(f"{child}: parent is now {new_parent}")


@vhd.command("map")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def map_(path: str, as_json: bool) -> None:
    """Show which blocks and byte ranges each image of the chain holds, leaf first."""
    amap = engine.allocation_map(path)
    if as_json:
        _echo_json(amap.to_dict())
        return
    click.echo(f"virtual_size: {human_size(amap.virtual_size)}")
    for image in amap.images:
        click.echo(
            f"{image.path}: {len(image.blocks)} block(s) of {human_size(image.block_size)}, "
            f"{len(image.full_blocks)} full"
        )
        for sector, count in image.runs:
            start, length = sector * 512, count * 512
            click.echo(f"  {start:>14} +{length:<12} ({human_size(length)})")


def _is_regular_file(f: IO[bytes]) -> bool:
    try:
        return f.seekable() and stat.S_ISREG(os.fstat(f.fileno()).st_mode)
    except (OSError, ValueError):  # io.UnsupportedOperation: an in-memory stream
        return False


def copy_out(
    disk: engine.Disk, out: IO[bytes], offset: int, length: int, progress: Progress | None = None
) -> None:
    """Copy `length` bytes of the disk from `offset` to `out`; zero chunks become holes in a
    seekable regular file."""
    sparse = _is_regular_file(out)
    zeros = bytes(CHUNK)
    buf = bytearray(CHUNK)  # one buffer for all chunks: no per-chunk allocation or join
    done = 0
    while done < length:
        n = min(CHUNK, length - done)
        if n == CHUNK and (offset + done) % 512 == 0:
            disk.readinto(offset + done, buf)
            data: bytes | bytearray = buf
        else:
            data = disk.read(offset + done, n)
        if sparse and data == zeros[:n]:
            out.seek(n, os.SEEK_CUR)
        else:
            out.write(data)
        done += n
        if progress is not None:
            progress(done, length)
    if sparse:
        out.truncate()


def copy_in(
    disk: engine.Disk, src: IO[bytes], offset: int, total: int, progress: Progress | None = None
) -> int:
    """Write everything `src` holds into the disk from `offset`; returns the byte count."""
    done = 0
    while True:
        data = src.read(CHUNK)
        if not data:
            break
        disk.write(offset + done, data)
        done += len(data)
        if progress is not None:
            progress(done, max(total, done))
    disk.flush()
    return done


@vhd.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Default: stdout.")
@click.option("--offset", type=SIZE, default=0, help="Start at this byte offset.")
@click.option("--length", type=SIZE, help="Bytes to read (default: to the end).")
@_progress_option
def read(
    path: str, output: str | None, offset: int, length: int | None, progress: bool | None
) -> None:
    """Write the content of the chain ending at PATH as raw bytes."""
    with engine.open_chain(path) as disk:
        if offset > disk.size:
            raise click.BadParameter(f"past the end ({disk.size})", param_hint="--offset")
        count = disk.size - offset if length is None else min(length, disk.size - offset)
        with progress_bar("reading", progress) as callback:
            if output is None:
                copy_out(disk, sys.stdout.buffer, offset, count, callback)
                sys.stdout.buffer.flush()
            else:
                with open(output, "wb") as out:
                    copy_out(disk, out, offset, count, callback)


@vhd.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--offset", type=SIZE, required=True, help="Byte offset to write at.")
@click.option("--input", "-i", "input_", type=click.Path(exists=True, dir_okay=False))
@_progress_option
def write(path: str, offset: int, input_: str | None, progress: bool | None) -> None:
    """Write raw data from --input (default: stdin) into the VHD at --offset."""
    with engine.open_chain(path, writable=True) as disk:
        with progress_bar("writing", progress) as callback:
            if input_ is None:
                done = copy_in(disk, sys.stdin.buffer, offset, 0, callback)
            else:
                with open(input_, "rb") as src:
                    done = copy_in(disk, src, offset, os.fstat(src.fileno()).st_size, callback)
    click.echo(f"wrote {done} bytes at offset {offset} into {path}", err=True)
