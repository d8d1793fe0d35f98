"""Crash points for crash-consistency tests (standard library only).

Code that performs a multi-step on-disk change calls ``crash_point("area.step")`` between
steps. In production it is a no-op: one lookup in ``os.environ``. A test runs the code in a
subprocess with::

    SM_TEST_FAULTS=1 SM_CRASH_AT=records.txn.committed      # first hit
    SM_TEST_FAULTS=1 SM_CRASH_AT=records.txn.moved:3         # third hit

(``SM_TEST_FAULTS`` is read once, at import; ``SM_CRASH_AT`` at each hit) and the process
SIGKILLs itself at that point: no ``finally`` blocks, no flushing, no atexit,
exactly like a power cut as far as the process' own state is concerned.

The per-name hit counter is the module's one lazily filled registry; it is only touched when
faults are enabled.
"""

from __future__ import annotations

import os
import signal

ENABLE_VAR = "SM_TEST_FAULTS"
CRASH_VAR = "SM_CRASH_AT"

_ARMED = os.environ.get(ENABLE_VAR) == "1"
_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process if ``SM_CRASH_AT`` names this point (and faults are enabled)."""
    if not _ARMED:
        return
    target = os.environ.get(CRASH_VAR)
    if target is None:
        return
    # "name" or "name:N"; names may contain ":" themselves ("vdi_snapshot:renamed").
    wanted, _, nth = target.rpartition(":")
    if not nth.isdigit():
        wanted, nth = target, ""
    if wanted != name:
        return
    count = _hits.get(name, 0) + 1
    _hits[name] = count
    if count != (int(nth) if nth else 1):
        return
    try:
        os.write(2, f"sm.faults: crashing at {name} (hit {count})\n".encode())
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def crash_env(name: str, nth: int | None = None) -> dict[str, str]:
    """Environment variables that arm ``crash_point(name)`` (on its ``nth`` hit) in a child."""
    return {ENABLE_VAR: "1", CRASH_VAR: name if nth is None else f"{name}:{nth}"}
