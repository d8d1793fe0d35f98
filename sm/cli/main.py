"""Entry point of the `sm` command: a click group that sub-command modules attach to."""

from __future__ import annotations

import io
import logging
import sys

import click

from sm import __version__


@click.group()
@click.version_option(__version__, prog_name="sm")
@click.option("-v", "--verbose", count=True, help="More log output on stderr.")
@click.option("--config", type=click.Path(dir_okay=False), envvar="SM_CONFIG",
              help="SR registry file (default: ~/.config/sm/srs.yaml or /etc/sm/srs.yaml).")
@click.pass_context
def cli(ctx: click.Context, verbose: int, config: str | None) -> None:
    """sm: a storage manager for VHD-based storage repositories."""
    ctx.obj = {"config": config}
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s"
    )


def _register() -> None:
    # Sub-command groups live in their own modules; imported here so `sm --help` lists them.
    from sm.cli import vhd

    cli.add_command(vhd.vhd)
    from sm.cli import driver

    cli.add_command(driver.driver)
    from sm.cli import settings, sr, vdi

    cli.add_command(sr.sr)
    cli.add_command(vdi.vdi)
    from sm.cli import workflows

    workflows.register(vdi.vdi, sr.sr)
    cli.add_command(settings.settings)
    from sm.cli import gc

    cli.add_command(gc.gc)
    from sm.cli import serve, vm

    cli.add_command(vm.vm)
    cli.add_command(serve.serve)


def main() -> None:
    # A name the terminal's encoding cannot show is printed escaped, not a crash.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    _register()
    cli()
