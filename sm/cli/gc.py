"""`sm gc`: the garbage collector of an SR (docs/gc.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from sm.cli.output import (
    ApiGroup,
    echo_json,
    fields,
    human,
    json_option,
    pass_manager,
    table,
    when,
)

if TYPE_CHECKING:
    from sm.api import StorageManager


@click.group("gc", cls=ApiGroup)
def gc() -> None:
    """Garbage collection and coalescing of an SR's VHD chains."""


def _when(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "-"
    return when(ts)


@gc.command()
@click.argument("sr", required=False)
@json_option
@pass_manager
def run(sm: StorageManager, sr: str | None, as_json: bool) -> None:
    """Run the collector of SR (default: the default SR) now and wait for it."""
    summary = sm.gc_run(sr)
    if as_json:
        echo_json(summary)
        return
    if summary.get("result") == "busy":
        click.echo("a collector is already running on this SR (see `sm gc status`)")
        return
    for action in summary.get("actions", []):
        extra = f" (paused {action['pause_seconds']} s)" if "pause_seconds" in action else ""
        click.echo(f"done: {action['describe']}{extra}")
    for skip in summary.get("skipped", []):
        click.echo(f"skipped: {skip['reason']}")
    took = (summary.get("finished") or 0) - (summary.get("started") or 0)
    click.echo(f"{summary.get('result')}: {len(summary.get('actions', []))} step(s) "
               f"in {took:.1f} s" + (f" ({summary['message']})" if summary.get("message")
                                     else ""))


@gc.command()
@click.argument("sr", required=False)
@json_option
@pass_manager
def status(sm: StorageManager, sr: str | None, as_json: bool) -> None:
    """Chain depths, pending merges, reclaimable bytes and the collector's state."""
    st = sm.gc_status(sr)
    if as_json:
        echo_json(st)
        return
    col = st.get("collector") or {}
    cur = col.get("current") or {}
    last = col.get("last_run") or {}
    state = "running" if col.get("running") else (
        "interrupted (finished at the next run)" if col.get("interrupted") else "idle")
    rows: list[tuple[str, object]] = [("collector", state)]
    if cur:
        act = cur.get("action") or {}
        done, total = cur.get("done") or 0, cur.get("total") or 0
        pct = f" {100 * done // total}%" if total else ""
        rows += [("current step", f"{act.get('describe', '?')}: {cur.get('step')}{pct}")]
    rows += [("last run", f"{_when(last.get('finished'))} {last.get('result', '-')}, "
                          f"{len(last.get('actions') or [])} step(s), "
                          f"{len(last.get('skipped') or [])} skipped" if last else "never"),
             ("pending merges", len(st["pending"])), ("garbage", len(st["garbage"])),
             ("reclaimable", human(st["reclaimable_bytes"])),
             ("free", human(st["free_bytes"]))]
    fields(rows)
    click.echo()
    table([(v["uuid"], v["depth"], v["depth_after_gc"], v["pending_merges"],
            human(v["reclaimable_bytes"]), "yes" if v["attached"] else "")
           for v in st["vdis"]],
          ["VDI", "DEPTH", "AFTER_GC", "PENDING", "RECLAIMABLE", "ATTACHED"])
    for skip in last.get("skipped") or []:
        click.echo(f"skipped at the last run: {skip['reason']}")
    for w in st["warnings"]:
        click.echo(f"warning: {w}", err=True)
