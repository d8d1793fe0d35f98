"""`sm vm`: VM groups and VM (multi-disk) snapshots (`sm.api.StorageManager` vm_* methods)."""

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
    tree_lines,
    when,
)
from sm.cli.output import table as print_table

if TYPE_CHECKING:
    from sm.api import StorageManager
    from sm.api.vmmodels import VM, VMSnapshotNode, VMSnapshotTree


def print_vm(vm: VM, as_json: bool) -> None:
    if as_json:
        echo_json(vm.to_dict())
        return
    fields([("uuid", vm.uuid), ("name", vm.name), ("description", vm.description),
            ("created", when(vm.created)),
            ("disks", len(vm.disks)), ("snapshots", vm.snapshots),
            ("current", vm.current or "-")])
    if vm.disks:
        click.echo("")
        print_table([(d.position, d.vdi, d.name_label or "-", d.sr_name or d.sr[:8], d.kind,
                      "MISSING" if d.missing else human(d.virtual_size)) for d in vm.disks],
                    ["#", "VDI", "NAME", "SR", "KIND", "SIZE"])


def render_snapshots(tree: VMSnapshotTree) -> list[str]:
    def label(node: VMSnapshotNode) -> str:
        s = node.snapshot
        flags = "".join(f" [{f}]" for f, on in (("backup", s.for_backup),
                                                 ("export", s.for_export)) if on)
        mark = "  <- current" if s.current else ""
        return f"{s.name}  {s.uuid}  {when(s.created)}  {len(s.disks)} disks{flags}{mark}"

    return tree_lines(f"{tree.vm.name} ({tree.vm.uuid})", tree.roots, label)


@click.group("vm", cls=ApiGroup)
def vm() -> None:
    """VMs: named groups of VDIs snapshotted, reverted and deleted together."""


@vm.command()
@click.argument("name")
@click.option("--description", default="", help="Description.")
@json_option
@pass_manager
def create(sm: StorageManager, name: str, description: str, as_json: bool) -> None:
    """Create an (empty) VM called NAME."""
    print_vm(sm.vm_create(name, description), as_json)


@vm.command("add-disk")
@click.argument("ref", metavar="VM")
@click.argument("vdi", metavar="VDI")
@click.option("--cdrom", is_flag=True, help="A CD-ROM / ISO image: never snapshotted.")
@sr_option
@json_option
@pass_manager
def add_disk(sm: StorageManager, ref: str, vdi: str, cdrom: bool, sr: str | None,
             as_json: bool) -> None:
    """Add VDI (uuid, location or name on --sr) to VM."""
    print_vm(sm.vm_add_disk(ref, vdi, sr=sr, cdrom=cdrom), as_json)


@vm.command("remove-disk")
@click.argument("ref", metavar="VM")
@click.argument("vdi", metavar="VDI")
@sr_option
@json_option
@pass_manager
def remove_disk(sm: StorageManager, ref: str, vdi: str, sr: str | None, as_json: bool) -> None:
    """Remove VDI from VM (the VDI stays)."""
    print_vm(sm.vm_remove_disk(ref, vdi, sr=sr), as_json)


@vm.command("list")
@json_option
@pass_manager
def list_(sm: StorageManager, as_json: bool) -> None:
    """List the VMs."""
    found = sm.vms()
    if as_json:
        echo_json([v.to_dict() for v in found])
        return
    print_table([(v.name, v.uuid, len(v.disks), v.snapshots) for v in found],
                ["NAME", "UUID", "DISKS", "SNAPSHOTS"])


@vm.command()
@click.argument("ref", metavar="VM")
@json_option
@pass_manager
def show(sm: StorageManager, ref: str, as_json: bool) -> None:
    """Show a VM and its disks."""
    print_vm(sm.vm(ref), as_json)


@vm.command()
@click.argument("ref", metavar="VM")
@pass_manager
def delete(sm: StorageManager, ref: str) -> None:
    """Forget a VM (its disks stay); refused while it has snapshots."""
    sm.vm_delete(ref)


@vm.command()
@click.argument("ref", metavar="VM")
@click.option("--name", default="", help="Snapshot name (default: the time).")
@click.option("--description", default="", help="Snapshot description.")
@click.option("--for-backup", is_flag=True, help="Mark the snapshot as taken for a backup.")
@click.option("--for-export", is_flag=True,
              help="Attach each disk snapshot read-only and record where to read it.")
@json_option
@pass_manager
def snapshot(sm: StorageManager, ref: str, name: str, description: str, for_backup: bool,
             for_export: bool, as_json: bool) -> None:
    """Snapshot every disk of VM at once (CD-ROMs skipped); all or nothing."""
    snap = sm.vm_snapshot(ref, name, description, for_backup=for_backup, for_export=for_export)
    if as_json:
        echo_json(snap.to_dict())
        return
    click.echo(f"snapshot {snap.name} ({snap.uuid}) of {len(snap.disks)} disks")
    for d in snap.disks:
        click.echo(f"  {d.vdi} -> {d.snapshot}" + (f"  {d.export_path}" if d.export_path else ""))


@vm.command()
@click.argument("ref", metavar="VM")
@click.argument("snap", metavar="SNAPSHOT")
@json_option
@pass_manager
def revert(sm: StorageManager, ref: str, snap: str, as_json: bool) -> None:
    """Revert every disk of VM to SNAPSHOT (name or uuid); disks keep uuid, names, location."""
    result = sm.vm_revert(ref, snap)
    if as_json:
        echo_json(result.to_dict())
        return
    for d in result.disks:
        click.echo(f"reverted {d['vdi']} to {d['snapshot']} [{d['path']}]")


@vm.command("snapshot-delete")
@click.argument("ref", metavar="VM")
@click.argument("snap", metavar="SNAPSHOT")
@click.option("--children", "scope", flag_value="with-children",
              help="Also delete every descendant snapshot.")
@click.option("--children-only", "scope", flag_value="children-only",
              help="Delete only the descendants of the snapshot.")
@click.option("--metadata-only", is_flag=True,
              help="Only remove the VM snapshot record(s); keep the disk snapshots.")
@json_option
@pass_manager
def snapshot_delete(sm: StorageManager, ref: str, snap: str, scope: str | None,
                    metadata_only: bool, as_json: bool) -> None:
    """Delete a VM snapshot (its children get its parent) and its disk snapshots."""
    removed = sm.vm_snapshot_delete(ref, snap, scope=scope or "one",  # type: ignore[arg-type]
                                    metadata_only=metadata_only)
    if as_json:
        echo_json({"deleted": removed, "metadata_only": metadata_only})
        return
    for uuid in removed:
        click.echo(f"{'forgot' if metadata_only else 'deleted'} {uuid}")


@vm.command()
@click.argument("ref", metavar="VM")
@json_option
@pass_manager
def snapshots(sm: StorageManager, ref: str, as_json: bool) -> None:
    """Show the VM's snapshot tree, the current one marked."""
    result = sm.vm_snapshots(ref)
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo("\n".join(render_snapshots(result)))
