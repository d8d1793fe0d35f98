"""Crash points for crash-consistency tests.

Code that performs a multi-step on-disk change calls ``crash_point("area.step")`` between
steps. In production it is a no-op: one lookup in ``os.environ``. A test runs the code in a
subprocess with::

    SM_TEST_FAULTS=1 SM_CRASH_AT=records.txn.committed      # first hit
    SM_TEST_FAULTS=1 SM_CRASH_AT=records.txn.moved:3         # third hit

(``SM_TEST_FAULTS`` is read once, at import; ``SM_CRASH_AT`` at each hit) and the process
SIGKILLs itself at that point: no ``finally`` blocks, no flushing, no atexit,
exactly like a power cut as far as the process' own state is concerned.

``SM_FAIL_AT`` (same syntax) makes the point raise :class:`InjectedFailure` (an ``OSError``,
EIO) instead: the operation fails in its own process, as a write refused by the disk would,
and its failure path runs. ``SM_FAIL_AT=name:N+`` fails every hit from the N-th on (a replay
that keeps failing).

The per-name hit counter is the module's one lazily filled registry; it is only touched when
faults are enabled.

The variables are named in `sm.settings` (docs/settings.md) but read here, not through
`Settings`: a test hook kept to one lookup at import in production.
"""

from __future__ import annotations

import os
import signal

from sm.settings import TRUE, env_name

ENABLE_VAR = env_name("test_faults")
CRASH_VAR = env_name("crash_at")
FAIL_VAR = env_name("fail_at")

_ARMED = os.environ.get(ENABLE_VAR, "").strip().lower() in TRUE
_hits: dict[str, int] = {}


class InjectedFailure(OSError):
    """The failure ``SM_FAIL_AT`` injects at a point (errno EIO)."""


def _due(target: str, name: str) -> int | None:
    """The hit count if ``target`` ("name", "name:N" or "name:N+") selects this hit of
    ``name``, else None. Counts the hit when ``target`` names the point."""
    # names may contain ":" themselves ("vdi_snapshot:renamed")
    wanted, _, nth = target.rpartition(":")
    onwards = nth.endswith("+")
    nth = nth.removesuffix("+")
    if not nth.isdigit():
        wanted, nth, onwards = target, "", False
    if wanted != name:
        return None
    count = _hits.get(name, 0) + 1
    _hits[name] = count
    first = int(nth) if nth else 1
    return count if count == first or (onwards and count > first) else None


def crash_point(name: str) -> None:
    """SIGKILL this process if ``SM_CRASH_AT`` names this point, raise InjectedFailure if
    ``SM_FAIL_AT`` does (and faults are enabled)."""
    if not _ARMED:
        return
    fail = os.environ.get(FAIL_VAR)
    if fail is not None and (count := _due(fail, name)) is not None:
        raise InjectedFailure(5, f"injected failure at {name} (hit {count})")
    target = os.environ.get(CRASH_VAR)
    if target is None:
        return
    count = _due(target, name)
    if count is None:
        return
    try:
        os.write(2, f"sm.faults: crashing at {name} (hit {count})\n".encode())
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def crash_env(name: str, nth: int | None = None) -> dict[str, str]:
    """Environment variables that arm ``crash_point(name)`` (on its ``nth`` hit) in a child."""
    return {ENABLE_VAR: "1", CRASH_VAR: name if nth is None else f"{name}:{nth}"}


def fail_env(name: str, nth: int | None = None, *, onwards: bool = False) -> dict[str, str]:
    """Environment variables that make ``crash_point(name)`` raise InjectedFailure (on its
    ``nth`` hit; with ``onwards`` on every later hit too)."""
    spec = name if nth is None and not onwards else f"{name}:{nth or 1}{'+' if onwards else ''}"
    return {ENABLE_VAR: "1", FAIL_VAR: spec}
