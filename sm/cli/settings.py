"""`sm settings`: settings kept in the state database (see `sm.api.config`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from sm.cli.output import ApiGroup, echo_json, json_option, pass_manager, table

if TYPE_CHECKING:
    from sm.api import StorageManager


@click.group("settings", cls=ApiGroup, invoke_without_command=True)
@json_option
@click.pass_context
def settings(ctx: click.Context, as_json: bool) -> None:
    """Show the effective settings (env SM_<KEY> > stored > registry file > default)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(show, as_json=as_json)


@settings.command()
@json_option
@pass_manager
def show(sm: StorageManager, as_json: bool) -> None:
    """Show the effective settings."""
    values = sm.settings()
    if as_json:
        echo_json(values)
    else:
        table(sorted(values.items()), ["KEY", "VALUE"])


@settings.command("set")
@click.argument("key")
@click.argument("value")
@pass_manager
def set_(sm: StorageManager, key: str, value: str) -> None:
    """Store KEY=VALUE (transport: inproc|exec, revert: auto|clone, default_sr: NAME)."""
    sm.set_setting(key, value)


@settings.command()
@click.argument("key")
@pass_manager
def unset(sm: StorageManager, key: str) -> None:
    """Remove a stored setting."""
    sm.set_setting(key, None)
