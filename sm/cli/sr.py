"""`sm sr`: the SRs of the registry (`sm.api.StorageManager`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from sm.cli.output import ApiGroup, echo_json, fields, human, json_option, pass_manager, table

if TYPE_CHECKING:
    from sm.api import SR, StorageManager


def _dconf(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


_type = click.option("--type", "type_", default="file", show_default=True, help="SR type.")
_dc = click.option("-d", "--device-config", "dconf", multiple=True, metavar="KEY=VALUE",
                   help="device_config entry (repeatable), e.g. location=/srv/sr1.")


def _show_sr(sr: SR, as_json: bool) -> None:
    if as_json:
        echo_json(sr.to_dict())
    else:
        fields([("name", sr.name), ("type", sr.type), ("uuid", sr.uuid),
                *[(f"device_config.{k}", v) for k, v in sr.device_config.items()]])


@click.group("sr", cls=ApiGroup)
def sr() -> None:
    """Storage repositories: declared in the registry file, driven over SMAPIv1."""


@sr.command("list")
@json_option
@pass_manager
def list_(sm: StorageManager, as_json: bool) -> None:
    """List the SRs (the embedded default included)."""
    srs = sm.srs()
    if as_json:
        echo_json([s.to_dict() for s in srs])
        return
    table([(s.name + (" *" if s.embedded else ""), s.type, s.uuid,
            " ".join(f"{k}={v}" for k, v in s.device_config.items())) for s in srs],
          ["NAME", "TYPE", "UUID", "DEVICE_CONFIG"])


@sr.command()
@click.argument("name", required=False)
@json_option
@pass_manager
def show(sm: StorageManager, name: str | None, as_json: bool) -> None:
    """Show an SR, its driver and its usage."""
    info = sm.sr_info(name)
    if as_json:
        echo_json(info)
        return
    drv = info["driver"]
    fields([("name", info["name"]), ("type", info["type"]), ("uuid", info["uuid"]),
            *[(f"device_config.{k}", v) for k, v in info["device_config"].items()],
            ("driver", f"{drv.get('name')} {drv.get('driver_version')}"),
            ("capabilities", " ".join(drv.get("capabilities", []))),
            ("vdis", info["vdis"]), ("virtual_size", human(info["virtual_size"])),
            ("physical_utilisation", human(info["physical_utilisation"])),
            *[(label, human(info["stats"][key])) for key, label in
              (("physical_size", "physical_size"), ("physical_utilisation", "physical_used"),
               ("free_space", "free")) if key in info.get("stats", {})]])


@sr.command()
@click.argument("name")
@_type
@_dc
@click.option("--uuid", default=None, help="SR uuid (default: a new one).")
@click.option("--size", default=0, type=int, help="Physical size for the driver (0: all).")
@json_option
@pass_manager
def create(sm: StorageManager, name: str, type_: str, dconf: tuple[str, ...],
           uuid: str | None, size: int, as_json: bool) -> None:
    """Create a new SR NAME and add it to the registry."""
    _show_sr(sm.sr_create(name, type_, _dconf(dconf), uuid=uuid, size=size), as_json)


@sr.command()
@click.argument("name")
@_type
@_dc
@click.option("--uuid", required=True, help="The existing SR's uuid.")
@json_option
@pass_manager
def attach(sm: StorageManager, name: str, type_: str, dconf: tuple[str, ...], uuid: str,
           as_json: bool) -> None:
    """Add an existing SR to the registry as NAME and attach it."""
    _show_sr(sm.sr_attach(name, type_, _dconf(dconf), uuid=uuid), as_json)


@sr.command()
@click.argument("name")
@pass_manager
def detach(sm: StorageManager, name: str) -> None:
    """Detach an SR and remove it from the registry (its contents stay)."""
    sm.sr_detach(name)


@sr.command()
@click.argument("name")
@pass_manager
def delete(sm: StorageManager, name: str) -> None:
    """Destroy an empty SR and remove it from the registry."""
    sm.sr_delete(name)


@sr.command()
@click.argument("name", required=False)
@json_option
@pass_manager
def scan(sm: StorageManager, name: str | None, as_json: bool) -> None:
    """Reconcile an SR with its storage; list its VDIs."""
    from sm.cli.vdi import print_vdis

    print_vdis(sm.sr_scan(name), as_json)


@sr.command()
@click.argument("name", required=False)
@click.option("--retry", "retry", metavar="ENTRY",
              help="Replay a set-aside journal entry again (an entry id, or 'all').")
@click.option("--discard", "discard", metavar="ENTRY",
              help="Forget a set-aside entry after checking its images (an id, or 'all').")
@click.option("--force", is_flag=True,
              help="With --discard: discard even where an image is missing or damaged.")
@json_option
@pass_manager
def repair(sm: StorageManager, name: str | None, retry: str | None, discard: str | None,
           force: bool, as_json: bool) -> None:
    """Show journal entries a failed replay set aside and the VDIs they make unusable;
    resolve one with --retry or --discard (docs/cli.md)."""
    if retry and discard:
        raise click.UsageError("give --retry or --discard, not both")
    entry = retry or discard or ""
    report = sm.sr_repair(name, action="retry" if retry else "discard" if discard else "show",
                          entry="" if entry == "all" else entry, force=force)
    if as_json:
        echo_json(report)
        return
    for line in report["done"]:
        click.echo(line)
    if not report["entries"]:
        click.echo("no set-aside journal entries; every VDI is usable")
        return
    for e in report["entries"]:
        from datetime import UTC, datetime

        when = datetime.fromtimestamp(e["set_aside"], UTC).isoformat(timespec="seconds")
        fields([("entry", e["id"]), ("op", e["op"]), ("set aside", when),
                ("error", e["error"]), ("steps", " ".join(e["steps"]) or "-"),
                *[(f"vdi {u}", state) for u, state in e["images"].items()]])
        click.echo("")
    click.echo(f"unusable VDIs: {' '.join(sorted(report['unusable']))}")
    click.echo("resolve: sm sr repair [NAME] --retry ENTRY | --discard ENTRY [--force]")
