"""The collector's files in its SR directory (`<gc_dir>`, e.g. `<sr>/.sm/gc`):

    gc.lock       flock'ed by the one running collector of the SR (across processes)
    status.json   current step and progress, last run (rewritten atomically)
    abort         present: the running collector stops at its next check (seconds at most)
    gc.log        log of background runs
    rerun         present: work was added while a collector ran; it runs once more

`request_abort` is what a detach or SR delete calls: it writes `abort`, waits until the
running collector let go of `gc.lock` (it rolls back or leaves its journal entry for
recovery), removes `abort` again and returns the lock to the caller.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sm import atomic

__all__ = ["GCLock", "read_status", "request_abort", "write_status"]


class GCLock:
    """The per-SR collector lock (non-blocking by default)."""

    def __init__(self, gc_dir: Path) -> None:
        self.path = gc_dir / "gc.lock"
        self.fd: int | None = None

    def acquire(self, timeout: float = 0.0) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.02)
                continue
            self.fd = fd
            return True

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def busy(self) -> bool:
        """Whether some collector holds the lock now (a probe; racy by nature)."""
        if self.fd is not None:
            return True
        if not self.path.exists():
            return False
        if self.acquire(0.0):
            self.release()
            return False
        return True


def status_path(gc_dir: Path) -> Path:
    return gc_dir / "status.json"


def read_status(gc_dir: Path) -> dict[str, Any]:
    try:
        raw = json.loads(status_path(gc_dir).read_bytes())
    except (FileNotFoundError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def write_status(gc_dir: Path, status: Mapping[str, Any]) -> None:
    gc_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_atomic(status_path(gc_dir), json.dumps(dict(status), sort_keys=True).encode(),
                        sync=False)


def rerun_path(gc_dir: Path) -> Path:
    return gc_dir / "rerun"


def request_rerun(gc_dir: Path) -> None:
    """New work appeared: the running collector (if any) runs once more before it exits."""
    gc_dir.mkdir(parents=True, exist_ok=True)
    rerun_path(gc_dir).touch()


def take_rerun(gc_dir: Path) -> bool:
    """Whether a rerun was requested (and clear the request)."""
    try:
        rerun_path(gc_dir).unlink()
    except FileNotFoundError:
        return False
    return True


def abort_path(gc_dir: Path) -> Path:
    return gc_dir / "abort"


def abort_requested(gc_dir: Path) -> bool:
    return abort_path(gc_dir).exists()


@contextlib.contextmanager
def request_abort(gc_dir: Path, *, timeout: float = 30.0, reason: str = "") -> Iterator[bool]:
    """Stop a running collector and keep others out for the `with` block; yields whether the
    lock was obtained (False: a collector did not stop within `timeout`)."""
    if not gc_dir.parent.is_dir():
        yield True
        return
    lock = GCLock(gc_dir)
    got = lock.acquire(0.0)
    if not got:
        gc_dir.mkdir(parents=True, exist_ok=True)
        abort_path(gc_dir).write_text(f"{os.getpid()} {reason}\n")
        got = lock.acquire(timeout)
    with contextlib.suppress(FileNotFoundError):
        abort_path(gc_dir).unlink()
    try:
        yield got
    finally:
        lock.release()
