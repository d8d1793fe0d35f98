"""`sm vdi write|read|export|import`: a VDI's data to and from files and pipes (docs/cli.md).

`-` is stdin (`--input -`, `vdi write`) or stdout (`--output -`, `vdi read`). Data moves in
chunks (`sm.api.transfer`), so memory stays bounded whatever the size; a progress bar is drawn
on stderr when it is a terminal (`--progress/--no-progress` to choose). `register()` adds the
commands to the `sm vdi` group.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO

import click

from sm.cli.output import pass_manager, progress_bar, sr_option
from sm.cli.sizes import DISK_SIZE, SIZE
from sm.options import DataFormat, allowed

if TYPE_CHECKING:
    from sm.api import StorageManager

__all__ = ["register"]

Progress = Callable[[int, int], None]

progress_option = click.option(
    "--progress/--no-progress", "show", default=None,
    help="Progress bar on stderr (default: when stderr is a terminal).")




def _stdin() -> BinaryIO:
    return sys.stdin.buffer


def _stdout() -> BinaryIO:
    return sys.stdout.buffer


FORMAT = click.option("--format", "fmt", type=click.Choice(allowed(DataFormat)), default="raw",
                      show_default=True, help="raw bytes or a standalone dynamic VHD.")
IN_FORMAT = click.option("--format", "fmt", type=click.Choice(["auto", *allowed(DataFormat)]),
                         default="auto", show_default=True,
                         help="auto: detect VHD or raw (qcow2, vmdk, vdi, vhdx are refused).")


@click.command()
@click.argument("ref", metavar="VDI")
@click.argument("data", required=False)
@click.option("--offset", type=SIZE, default=0, help="Byte offset.")
@click.option("--input", "source", default=None, metavar="FILE",
              help="Read the data from FILE ('-': stdin, the default without DATA).")
@progress_option
@sr_option
@pass_manager
def write(sm: StorageManager, ref: str, data: str | None, offset: int, source: str | None,
          show: bool | None, sr: str | None) -> None:
    """Write DATA, or stdin / --input FILE until its end, into the VDI at --offset."""
    if data is not None and source is not None:
        raise click.UsageError("give DATA or --input, not both")
    if data is not None and data != "-":
        sm.vdi_write(ref, offset, data.encode(), sr=sr)
        return
    with progress_bar("write", show) as progress:
        if source in (None, "-"):
            sm.vdi_write_from(ref, offset, _stdin(), sr=sr, progress=progress)
            return
        assert source is not None
        with _open(source, "rb") as f:
            sm.vdi_write_from(ref, offset, f, sr=sr, progress=progress)


@click.command()
@click.argument("ref", metavar="VDI")
@click.option("--offset", type=SIZE, default=0, help="Byte offset.")
@click.option("--length", type=SIZE, default=None, help="Bytes (default: to the end).")
@click.option("--output", default="-", show_default=True, metavar="FILE",
              help="Where to write ('-': stdout).")
@sr_option
@pass_manager
def read(sm: StorageManager, ref: str, offset: int, length: int | None, output: str,
         sr: str | None) -> None:
    """Write the VDI's bytes (from --offset, --length of them) to stdout or --output."""
    if output == "-":
        sm.vdi_read_to(ref, _stdout(), offset, length, sr=sr)
        return
    with _open(output, "wb") as f:
        sm.vdi_read_to(ref, f, offset, length, sr=sr)


@click.command("export")
@click.argument("ref", metavar="VDI")
@click.option("--output", required=True, metavar="FILE",
              help="File to write ('-': stdout).")
@FORMAT
@progress_option
@sr_option
@pass_manager
def export_(sm: StorageManager, ref: str, output: str, fmt: str, show: bool | None,
            sr: str | None) -> None:
    """Export the VDI's content to a raw file or a VHD (or stdout), with a progress bar."""
    target: str | BinaryIO = _stdout() if output == "-" else output
    with progress_bar("export", show) as progress:
        sm.vdi_export(ref, target, fmt, sr=sr, progress=progress)  # type: ignore[arg-type]


@click.command("import")
@click.argument("ref", metavar="VDI")
@click.option("--input", "source", required=True, metavar="FILE",
              help="Raw file or VHD to read ('-': stdin).")
@IN_FORMAT
@click.option("--size", type=DISK_SIZE, default=None,
              help="Size of a new VDI (default: the image's virtual size).")
@progress_option
@sr_option
@pass_manager
def import_(sm: StorageManager, ref: str, source: str, fmt: str, size: int | None,
            show: bool | None, sr: str | None) -> None:
    """Import a raw image or a VHD (or stdin) into VDI, creating VDI (called so) if it does
    not exist; with a progress bar."""
    origin: str | BinaryIO = _stdin() if source == "-" else source
    with progress_bar("import", show) as progress:
        vdi = sm.vdi_import(ref, origin, fmt, sr=sr,  # type: ignore[arg-type]
                            progress=progress, create=True, size=size)
    click.echo(f"imported into {vdi.name_label or vdi.uuid} ({vdi.uuid})", err=True)


@contextmanager
def _open(path: str, mode: str) -> Iterator[BinaryIO]:
    """`path` opened in binary `mode` ("rb"/"wb"); InvalidArg naming it when it cannot be."""
    from sm.errors import InvalidArg

    try:
        f = open(path, mode)  # noqa: SIM115
    except OSError as err:
        verb = "read" if mode.startswith("r") else "write"
        raise InvalidArg(f"cannot {verb} {path}: {err.strerror}") from err
    with f:
        yield f  # type: ignore[misc]


def register(group: click.Group) -> None:
    for command in (write, read, export_, import_):
        group.add_command(command)
