"""Start a collector in the background: a detached grandchild (own session, stdin /dev/null,
output appended to a log), so the command that kicked it returns at once and the collector
outlives it. `SM_GC_AUTO=0` switches background runs off (the test suite does, except in the
collector's own tests)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["auto_enabled", "start_background"]

ROOT = str(Path(__file__).resolve().parent.parent.parent)


def auto_enabled(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("SM_GC_AUTO", "1") not in ("0", "no", "false", "off")


def start_background(argv: Sequence[str], log_path: Path,
                     environ: Mapping[str, str] | None = None) -> int:
    """Fork-exec `argv` detached; returns the pid of the intermediate child (reaped)."""
    env = dict(os.environ if environ is None else environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
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
