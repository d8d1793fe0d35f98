"""`sm vdi rename|set|copy|move|attach|detach|attachments` and `sm sr probe`: everyday
workflows over `sm.api.StorageManager` (docs/cli.md). `register()` adds them to the `sm vdi`
and `sm sr` groups."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from sm.cli.output import (
    echo_json,
    human,
    json_option,
    pass_manager,
    progress_bar,
    sr_option,
    table,
)

if TYPE_CHECKING:
    from sm.api import StorageManager
    from sm.api.copy import CopyResult
    from sm.api.exports import Export

__all__ = ["register"]


def _print_vdi(vdi: object, as_json: bool) -> None:
    from sm.cli.vdi import print_vdi

    print_vdi(vdi, as_json)  # type: ignore[arg-type]


@click.command()
@click.argument("ref", metavar="VDI")
@click.argument("name")
@sr_option
@json_option
@pass_manager
def rename(sm: StorageManager, ref: str, name: str, sr: str | None, as_json: bool) -> None:
    """Give a VDI a new name-label (a snapshot: a new name in its tree)."""
    _print_vdi(sm.vdi_rename(ref, name, sr=sr), as_json)


@click.command("set")
@click.argument("ref", metavar="VDI")
@click.option("--name", default=None, help="New name-label (snapshot: tree name).")
@click.option("--description", default=None, help="New name-description.")
@sr_option
@json_option
@pass_manager
def set_(sm: StorageManager, ref: str, name: str | None, description: str | None,
         sr: str | None, as_json: bool) -> None:
    """Set the name and/or description of a VDI or a snapshot."""
    _print_vdi(sm.vdi_set(ref, name=name, description=description, sr=sr), as_json)


def _copy_options(func: click.decorators.FC) -> click.decorators.FC:
    for option in reversed([
        click.argument("ref", metavar="VDI"),
        click.option("--to", "dest", required=True, metavar="SR",
                     help="Destination SR (name or uuid)."),
        click.option("--snapshots", is_flag=True,
                     help="Rebuild the VDI's snapshot tree at the destination too."),
        sr_option, json_option]):
        func = option(func)
    return func


def _run_copy(sm: StorageManager, move: bool, ref: str, dest: str, snapshots: bool,
              sr: str | None, name: str | None, as_json: bool) -> None:
    with progress_bar("move" if move else "copy", False if as_json else None) as progress:
        if move:
            result = sm.vdi_move(ref, dest, sr=sr, snapshots=snapshots, progress=progress)
        else:
            result = sm.vdi_copy(ref, dest, sr=sr, snapshots=snapshots, name=name,
                                 progress=progress)
    _print_copy(result, as_json)


def _print_copy(result: CopyResult, as_json: bool) -> None:
    if as_json:
        echo_json(result.to_dict())
        return
    verb = "moved" if result.moved else "copied"
    click.echo(f"{verb} {result.source} (SR {result.source_sr}) to {result.vdi.uuid} "
               f"(SR {result.dest_sr}), {human(result.copied)} transferred")
    for old, new in result.snapshots:
        click.echo(f"  snapshot {old} -> {new}")


@click.command("copy")
@_copy_options
@click.option("--name", default=None, help="name-label of the copy (default: the source's).")
@pass_manager
def copy_(sm: StorageManager, ref: str, dest: str, snapshots: bool, sr: str | None,
          as_json: bool, name: str | None) -> None:
    """Copy a VDI to another SR (any type); only allocated data travels."""
    _run_copy(sm, False, ref, dest, snapshots, sr, name, as_json)


@click.command()
@_copy_options
@pass_manager
def move(sm: StorageManager, ref: str, dest: str, snapshots: bool, sr: str | None,
         as_json: bool) -> None:
    """Move a VDI to another SR: copy, then delete the source (undone on failure)."""
    _run_copy(sm, True, ref, dest, snapshots, sr, None, as_json)


def _print_export(export: Export, as_json: bool) -> None:
    if as_json:
        echo_json(export.to_dict())
    else:
        click.echo(export.url)


@click.command()
@click.argument("ref", metavar="VDI")
@click.option("--writable", is_flag=True, help="Serve read-write (default: read-only).")
@sr_option
@json_option
@pass_manager
def attach(sm: StorageManager, ref: str, writable: bool, sr: str | None,
           as_json: bool) -> None:
    """Serve a VDI over NBD until `sm vdi detach`; prints its nbd+unix:// URL."""
    _print_export(sm.vdi_attach(ref, writable=writable, sr=sr), as_json)


@click.command()
@click.argument("ref", metavar="VDI")
@sr_option
@json_option
@pass_manager
def detach(sm: StorageManager, ref: str, sr: str | None, as_json: bool) -> None:
    """Stop serving a VDI that `sm vdi attach` serves."""
    export = sm.vdi_detach(ref, sr=sr)
    if as_json:
        echo_json(export.to_dict())
    else:
        click.echo(f"detached {export.uuid}")


@click.command()
@json_option
@pass_manager
def attachments(sm: StorageManager, as_json: bool) -> None:
    """List the VDIs `sm vdi attach` serves."""
    found = sm.vdi_attachments()
    if as_json:
        echo_json([e.to_dict() for e in found])
        return
    table([(e.uuid, "rw" if e.writable else "ro", e.url) for e in found],
          ["UUID", "MODE", "URL"])


@click.command()
@click.option("--type", "type_", default="file", show_default=True, help="SR type.")
@click.option("-d", "--device-config", "dconf", multiple=True, metavar="KEY=VALUE",
              help="device_config entry (repeatable), e.g. device=/dev/sdb.")
@json_option
@pass_manager
def probe(sm: StorageManager, type_: str, dconf: tuple[str, ...], as_json: bool) -> None:
    """Which SRs exist at a device_config (the driver's sr_probe)."""
    from sm.cli.sr import _dconf

    result = sm.sr_probe(type_, _dconf(dconf))
    if as_json:
        echo_json(result)
        return
    if not result["srs"]:
        click.echo("no SR found")
        return
    extra = sorted({k for s in result["srs"] for k in s} - {"uuid", "name"})
    table([(s.get("uuid", ""), s["name"] or "-", *[s.get(k, "") for k in extra])
           for s in result["srs"]], ["UUID", "REGISTERED AS", *[k.upper() for k in extra]])


def register(vdi: click.Group, sr: click.Group) -> None:
    for command in (rename, set_, copy_, move, attach, detach, attachments):
        vdi.add_command(command)
    sr.add_command(probe)
