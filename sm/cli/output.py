"""Output and error handling shared by `sm sr`, `sm vdi` and `sm settings`."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import click

if TYPE_CHECKING:
    from sm.api import StorageManager

json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
sr_option = click.option("--sr", "sr", metavar="SR", default=None,
                         help="SR name or uuid (default: the default_sr setting).")


class ApiGroup(click.Group):
    """Turns `SMError`s into `Error: Name (code): message` on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        import warnings

        from sm.errors import SMError

        def show(message: Warning | str, *_: object) -> None:
            click.echo(f"Warning: {message}", err=True)

        try:
            with warnings.catch_warnings():
                warnings.showwarning = show  # type: ignore[assignment]
                return super().invoke(ctx)
        except SMError as err:
            raise click.ClickException(f"{err.name} ({err.code}): "
                                       f"{err.message or err.description}") from err


@contextmanager
def manager(ctx: click.Context) -> Iterator[StorageManager]:
    from sm.api import StorageManager

    root = ctx.find_root()
    config = (root.obj or {}).get("config") if isinstance(root.obj, dict) else None
    with StorageManager(config) as sm:
        yield sm


def pass_manager(func: Callable[..., None]) -> Callable[..., None]:
    """Decorate a command: it receives the StorageManager as its first argument."""

    @click.pass_context
    def wrapper(ctx: click.Context, /, *args: Any, **kwargs: Any) -> None:
        with manager(ctx) as sm:
            func(sm, *args, **kwargs)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> None:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def fields(pairs: Sequence[tuple[str, object]]) -> None:
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        click.echo(f"{key.ljust(width)}  {value}")


def human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class _TreeNode(Protocol):
    @property
    def children(self) -> Sequence[Any]: ...


def tree_lines(title: str, roots: Sequence[_TreeNode],
               label: Callable[[Any], str]) -> list[str]:
    """`title`, then `roots` and their `children` drawn as a tree, one `label(node)` a line;
    "(no snapshots)" for an empty forest."""
    lines = [title]

    def walk(nodes: Sequence[_TreeNode], prefix: str) -> None:
        for i, node in enumerate(nodes):
            last = i == len(nodes) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}{label(node)}")
            walk(node.children, prefix + ("    " if last else "│   "))

    walk(roots, "")
    if not roots:
        lines.append("(no snapshots)")
    return lines


def when(seconds: float) -> str:
    """A timestamp as the tree and table views print it (local time)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


@contextmanager
def progress_bar(label: str, show: bool | None = None,
                 stream: TextIO | None = None) -> Iterator[Callable[[int, int], None] | None]:
    """A `(done, total)` callback drawing a progress bar on `stream` (stderr), or None when
    it is not a terminal (and `show` is not True)."""
    out = stream or sys.stderr
    if show is None:
        show = out.isatty()
    if not show:
        yield None
        return
    state: dict[str, Any] = {"bar": None, "done": 0}

    def callback(done: int, total: int) -> None:
        if state["bar"] is None:
            state["bar"] = click.progressbar(length=max(total, 1), label=label, file=out,
                                             show_pos=False).__enter__()
        bar = state["bar"]
        if total != bar.length:
            bar.length = max(total, 1)
        if done == state["done"]:
            bar.render_progress()  # only the total changed (a stream's end)
        else:
            bar.update(done - state["done"])
        state["done"] = done

    try:
        yield callback
    finally:
        if state["bar"] is not None:
            state["bar"].__exit__(None, None, None)
