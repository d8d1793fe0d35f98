"""Start a collector in the background: a detached grandchild (own session, stdin /dev/null,
output appended to a log), so the command that kicked it returns at once and the collector
outlives it. `SM_GC_AUTO=0` switches background runs off (the test suite does, except in the
collector's own tests)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from sm.settings import Settings

__all__ = ["abort", "auto_enabled", "kick", "start_background"]

log = logging.getLogger(__name__)

def auto_enabled(environ: Mapping[str, str] | None = None) -> bool:
    return Settings.from_environ(environ).gc_auto


def start_background(argv: Sequence[str], log_path: Path,
                     environ: Mapping[str, str] | None = None) -> int:
    """Fork-exec `python argv...` detached; returns the pid of the intermediate child (reaped).
    The child imports what this process imports: this process's `sys.path` goes first on its
    PYTHONPATH (a driver started by a bare python3 from a checkout, or an installed one)."""
    env = dict(os.environ if environ is None else environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (*sys.path, env.get("PYTHONPATH", "")) if p)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, *argv]
    pid = os.fork()
    if pid == 0:  # child: new session, fork again, exit
        try:
            os.setsid()
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDONLY)
                log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(null, 0)
                os.dup2(log, 1)
                os.dup2(log, 2)
                os.chdir("/")
                os.closerange(3, 1 << 16)
                os.execve(args[0], args, env)
        except BaseException:
            os._exit(127)
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def kick(gc_dir: Path, argv: Sequence[str]) -> None:
    """Start a background run (`python argv...`) unless one runs or `SM_GC_AUTO=0`; a
    running collector is asked to run once more. Never fails the caller."""
    from . import state

    try:
        if not auto_enabled():
            return
        state.request_rerun(gc_dir)  # first: a collector about to exit sees it
        if state.GCLock(gc_dir).busy():
            return
        start_background(argv, gc_dir / "gc.log")
    except Exception as err:
        log.warning("could not start the garbage collector: %s", err)


@contextlib.contextmanager
def abort(gc_dir: Path, *, vdi: str | None = None, reason: str = "",
          timeout: float = 30.0) -> Iterator[None]:
    """Stop a running collector (all of it; with `vdi`, only if its current step touches
    that VDI) and keep new ones out for the `with` block."""
    from . import state

    if not gc_dir.is_dir():
        yield
        return
    if vdi is not None:
        current = (state.read_status(gc_dir).get("current") or {}).get("action") or {}
        if vdi not in (current.get("base"), current.get("child")):
            yield
            return
    with state.request_abort(gc_dir, timeout=timeout, reason=reason) as got:
        if not got:
            log.warning("the garbage collector did not stop within %s s", timeout)
        yield
