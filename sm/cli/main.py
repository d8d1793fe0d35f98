"""Entry point of the `sm` command: a click group that sub-command modules attach to.

The one error edge of the CLI is `SmGroup.main`: every failure (an `SMError` with its SM error
number, an `OSError`, a usage error, anything unexpected) is one line on stderr,
`Error: ...`, and exit status 1 (2 for usage errors); `sm --debug` adds the traceback. Log
records of a driver's failure (the in-process driver logs what it answers) are not shown
unless asked for with `-v` or `--debug`: the error line says it once.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from sm import __version__

# A group called without a command shows its help (click >= 8.2 raises this for it).
_NO_ARGS_IS_HELP: type[click.ClickException] = getattr(
    click.exceptions, "NoArgsIsHelpError", type("_NeverRaised", (click.ClickException,), {}))
# Loggers whose failure records repeat the error the CLI prints.
_ECHO_LOGGERS = ("sm.dispatch",)


def error_line(err: BaseException) -> str:
    """The one line a failure prints (after `Error: `)."""
    from sm.errors import SMError

    cause = err
    if isinstance(err, click.ClickException) and isinstance(err.__cause__, SMError):
        cause = err.__cause__
    if isinstance(cause, SMError):
        text = cause.message or cause.description
        return f"{cause.name} ({cause.code}): {_one_line(text)}"
    if isinstance(err, click.UsageError):
        where = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
        return _one_line(err.format_message()) + where
    if isinstance(err, click.ClickException):
        return _one_line(err.format_message())
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        text = err.strerror or str(err)
        return _one_line(f"{where}{text}" + (f" (errno {err.errno})" if err.errno else ""))
    return _one_line(f"internal error: {type(err).__name__}: {err} (run with --debug for "
                     "the trace)")


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return "; ".join(lines) if lines else "failed"


def _quiet_stdout() -> None:
    # The reader went away (`sm vdi read x | head`): point stdout at /dev/null so the final
    # flush of the interpreter does not fail again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


class SmGroup(click.Group):
    """The root group: its `main` is the CLI's one error edge (module docstring)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in argv[:_first_command(argv)]
        try:
            code = super().main(argv, prog_name, complete_var, False, **extra)
        except click.exceptions.Exit as err:
            code = err.exit_code
        except click.Abort:
            click.echo("Aborted!", err=True)
            code = 1
        except KeyboardInterrupt:
            click.echo("\nAborted!", err=True)
            code = 130
        except BrokenPipeError:
            _quiet_stdout()
            code = 0
        except _NO_ARGS_IS_HELP as err:  # `sm`, `sm vdi`: the help, as click shows it
            err.show()
            code = err.exit_code
        except Exception as err:  # the one edge: every failure is one line
            self._report(err, debug)
            code = err.exit_code if isinstance(err, click.ClickException) else 1
        sys.exit(code if isinstance(code, int) else 0)

    @staticmethod
    def _report(err: BaseException, debug: bool) -> None:
        if debug:
            traceback.print_exception(err, file=sys.stderr)
        if isinstance(err, OSError) and err.errno == errno.EPIPE:
            return
        click.echo(f"Error: {error_line(err)}", err=True)


def _first_command(argv: list[str]) -> int:
    """Index of the first word that is not a global option (where the sub-command starts)."""
    takes_value = {"--config"}
    i = 0
    while i < len(argv):
        word = argv[i]
        if not word.startswith("-"):
            return i
        i += 2 if word in takes_value else 1
    return len(argv)


@click.group(cls=SmGroup)
@click.version_option(__version__, prog_name="sm")
@click.option("-v", "--verbose", count=True, help="More log output on stderr.")
@click.option("--debug", is_flag=True, help="Debug log output, and the traceback of a failure.")
@click.option("--config", type=click.Path(dir_okay=False),
              help="SR registry file (default: $SM_CONFIG, else ~/.config/sm/srs.yaml or "
                   "/etc/sm/srs.yaml).")
@click.pass_context
def cli(ctx: click.Context, verbose: int, debug: bool, config: str | None) -> None:
    """sm: a storage manager for VHD-based storage repositories."""
    ctx.obj = {"config": config, "debug": debug}
    level = logging.DEBUG if debug else max(logging.WARNING - 10 * verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not debug and not verbose:
        # The driver's failure lines would repeat the one error line; quiet them for this
        # command only (the CLI also runs inside other programs and tests).
        quiet = [logging.getLogger(name) for name in _ECHO_LOGGERS]
        saved = [logger.level for logger in quiet]
        for logger in quiet:
            logger.setLevel(logging.CRITICAL)

        def restore() -> None:
            for logger, level in zip(quiet, saved):
                logger.setLevel(level)

        ctx.call_on_close(restore)


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
    from sm.cli import data

    data.register(vdi.vdi)
    cli.add_command(settings.settings)
    from sm.cli import gc

    cli.add_command(gc.gc)
    from sm.cli import serve, vm

    cli.add_command(vm.vm)
    cli.add_command(serve.serve)


def main() -> NoReturn:
    # A name the terminal's encoding cannot show is printed escaped, not a crash.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    _register()
    cli()
    raise SystemExit(0)
