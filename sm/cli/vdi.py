"""`sm vdi`: VDIs, snapshots, revert and snapshot trees (`sm.api.StorageManager`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from sm.cli.output import (
    ApiGroup,
    echo_json,
    fields,
    human,
    json_option,
    pass_manager,
    sr_option,
    table,
    tree_lines,
    when,
)
from sm.cli.sizes import DISK_SIZE

if TYPE_CHECKING:
    from sm.api import VDI, SnapshotTree, StorageManager, TreeNode


def print_vdis(vdis: list[VDI], as_json: bool) -> None:
    if as_json:
        echo_json([v.to_dict() for v in vdis])
        return
    table([(v.uuid, v.name_label, human(v.virtual_size), human(v.physical_utilisation),
            ("snapshot of " + v.snapshot_of[:8]) if v.is_a_snapshot else
            ("hidden" if v.hidden else "")) for v in vdis],
          ["UUID", "NAME", "SIZE", "USED", "NOTE"])


def print_vdi(vdi: VDI, as_json: bool) -> None:
    if as_json:
        echo_json(vdi.to_dict())
        return
    fields([("uuid", vdi.uuid), ("name_label", vdi.name_label),
            ("name_description", vdi.name_description), ("location", vdi.location),
            ("virtual_size", f"{vdi.virtual_size} ({human(vdi.virtual_size)})"),
            ("physical_utilisation", human(vdi.physical_utilisation)),
            ("read_only", vdi.read_only), ("is_a_snapshot", vdi.is_a_snapshot),
            *([("snapshot_of", vdi.snapshot_of), ("snapshot_time", vdi.snapshot_time)]
              if vdi.is_a_snapshot else []),
            *([("backing", vdi.backing)] if vdi.backing != vdi.uuid else []),
            ("sr", vdi.sr)])


def render_tree(tree: SnapshotTree) -> list[str]:
    def label(node: TreeNode) -> str:
        mark = "  <- current" if node.current else ""
        return f"{node.name}  {node.uuid}  {when(node.created)}{mark}"

    return tree_lines(f"{tree.vdi.name_label or tree.vdi.uuid} ({tree.vdi.uuid})", tree.roots,
                      label)


@click.group("vdi", cls=ApiGroup)
def vdi() -> None:
    """Virtual disks: create, snapshot, clone, revert, snapshot trees."""


@vdi.command()
@click.argument("name")
@click.option("--size", type=DISK_SIZE, required=True, help="Virtual size, e.g. 64M, 10G.")
@click.option("--description", default="", help="name-description.")
@sr_option
@json_option
@pass_manager
def create(sm: StorageManager, name: str, size: int, description: str, sr: str | None,
           as_json: bool) -> None:
    """Create a VDI called NAME."""
    print_vdi(sm.vdi_create(size, name, description, sr=sr), as_json)


@vdi.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include hidden snapshot bases.")
@sr_option
@json_option
@pass_manager
def list_(sm: StorageManager, show_all: bool, sr: str | None, as_json: bool) -> None:
    """List the VDIs of an SR."""
    print_vdis(sm.vdis(sr, hidden=show_all), as_json)


@vdi.command()
@click.argument("ref", metavar="VDI")
@sr_option
@json_option
@pass_manager
def show(sm: StorageManager, ref: str, sr: str | None, as_json: bool) -> None:
    """Show a VDI (by uuid, location or name)."""
    print_vdi(sm.vdi(ref, sr), as_json)


@vdi.command()
@click.argument("ref", metavar="VDI")
@click.argument("size", type=DISK_SIZE)
@sr_option
@json_option
@pass_manager
def resize(sm: StorageManager, ref: str, size: int, sr: str | None, as_json: bool) -> None:
    """Grow a VDI to SIZE."""
    print_vdi(sm.vdi_resize(ref, size, sr=sr), as_json)


@vdi.command()
@click.argument("ref", metavar="VDI")
@click.option("--children", "scope", flag_value="with-children",
              help="Also delete every descendant snapshot (or, for a VDI, all its snapshots).")
@click.option("--children-only", "scope", flag_value="children-only",
              help="Delete only the descendants of the snapshot.")
@click.option("--metadata-only", is_flag=True,
              help="Only remove the snapshot(s) from the tree; keep the volumes.")
@click.option("--force", is_flag=True,
              help="Delete a disk of a VM too (it is removed from the VM).")
@sr_option
@json_option
@pass_manager
def delete(sm: StorageManager, ref: str, scope: str | None, metadata_only: bool, force: bool,
           sr: str | None, as_json: bool) -> None:
    """Delete a VDI or a snapshot (a snapshot's children get its parent)."""
    removed = sm.vdi_delete(ref, sr=sr, scope=scope or "one",  # type: ignore[arg-type]
                            metadata_only=metadata_only, force=force)
    if as_json:
        echo_json({"deleted": removed, "metadata_only": metadata_only})
    else:
        for uuid in removed:
            click.echo(f"{'forgot' if metadata_only else 'deleted'} {uuid}")


@vdi.command()
@click.argument("ref", metavar="VDI")
@click.option("--name", default="", help="Snapshot name in the tree (default: the time).")
@click.option("--description", default="", help="Snapshot description.")
@sr_option
@json_option
@pass_manager
def snapshot(sm: StorageManager, ref: str, name: str, description: str, sr: str | None,
             as_json: bool) -> None:
    """Snapshot a VDI; the snapshot becomes its current one."""
    print_vdi(sm.vdi_snapshot(ref, name, description, sr=sr), as_json)


@vdi.command()
@click.argument("ref", metavar="VDI")
@click.option("--name", default=None, help="name-label of the clone (default: the source's).")
@click.option("--description", default=None, help="name-description of the clone.")
@sr_option
@json_option
@pass_manager
def clone(sm: StorageManager, ref: str, name: str | None, description: str | None,
          sr: str | None, as_json: bool) -> None:
    """Clone a VDI (or a snapshot) into a new writable VDI."""
    print_vdi(sm.vdi_clone(ref, sr=sr, name=name, description=description), as_json)


@vdi.command()
@click.argument("ref", metavar="VDI")
@click.argument("snap", metavar="SNAPSHOT")
@click.option("--safety", is_flag=True,
              help="Snapshot the VDI first; the safety snapshot is removed on success.")
@sr_option
@json_option
@pass_manager
def revert(sm: StorageManager, ref: str, snap: str, safety: bool, sr: str | None,
           as_json: bool) -> None:
    """Revert VDI to SNAPSHOT (uuid or name); it keeps its uuid, names and location."""
    result = sm.vdi_revert(ref, snap, sr=sr, safety=safety)
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(f"reverted {result.vdi.name_label or result.vdi.uuid} ({result.vdi.uuid}) "
                   f"to {result.snapshot} [{result.path}]")


@vdi.command()
@click.argument("ref", metavar="VDI")
@sr_option
@json_option
@pass_manager
def tree(sm: StorageManager, ref: str, sr: str | None, as_json: bool) -> None:
    """Show the snapshot tree of a VDI, the current snapshot marked."""
    result = sm.vdi_tree(ref, sr=sr)
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo("\n".join(render_tree(result)))


# write, read, export, import: sm.cli.data (registered by sm.cli.main)
