"""File locks shared by driver processes (and, over NFS, by hosts), over ``fcntl.flock``.

Why flock: the kernel drops the lock when the last descriptor of the holder goes away, so a
driver killed with SIGKILL never leaves a stale lock behind. Locks are never deleted: removing
a lock file while another process waits on it would let two processes "hold" two different
files of the same name.

Within one process a lock is re-entrant and thread-safe: each path has one process-wide state
(the module's lazily filled registry) with a counted owner. The thread holding a lock
exclusively may take it again (shared or exclusive); threads holding it shared may take it
shared again; a different thread waits as another process would. Upgrading shared to exclusive
is refused (it deadlocks two upgraders). Descriptors are close-on-exec and are closed in a
forked child, so neither a spawned helper nor a fork keeps a lock alive.

The exclusive holder writes one JSON line ``{"pid", "host", "cmd", "purpose", "since"}`` into
the lock file itself and empties it on release; a waiter that times out names it in its
``LockErr`` (37). A holder killed with SIGKILL leaves its line behind, which is harmless: the
next holder overwrites it, and a waiter only reports it while the lock is actually held.

SR locks live in ``<sr>/.sm/locks/``: ``sr.lock`` for operations that rearrange chains (take it
first) and ``vdi-<uuid>.lock`` per VDI. That directory is made only by ``sr_create`` (or the
upgrade of an existing SR, :func:`init_sr_locks`); an SR lock asked for where it is missing is
SRUnavailable (47), so no lock request turns an arbitrary directory into something SR-like.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sm.errors import LockErr, SRUnavailable
from sm.struct import Frozen

StrPath = str | os.PathLike[str]

DEFAULT_TIMEOUT = 60.0
LOCK_DIR = Path(".sm") / "locks"
_POLL_MIN = 0.001
_POLL_MAX = 0.1
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


class Holder(Frozen):
    """Who holds a lock exclusively, as recorded in the lock file (best effort)."""

    pid: int
    host: str
    cmd: str
    purpose: str
    since: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.since))
        what = f"{self.cmd} {self.purpose}".strip()
        return f"pid {self.pid} ({what}) on {self.host} since {when}"


def _holder_line(purpose: str) -> bytes:
    cmd = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    info = {
        "pid": os.getpid(),
        "host": os.uname().nodename,  # socket.gethostname(), without importing socket
        "cmd": cmd[:100],
        "purpose": purpose[:200],
        "since": time.time(),
    }
    return json.dumps(info).encode() + b"\n"


def read_holder(path: StrPath) -> Holder | None:
    """The holder recorded in a lock file, or None (no record, or unreadable)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(4096)
        info = json.loads(raw)
        return Holder(
            pid=int(info["pid"]),
            host=str(info["host"]),
            cmd=str(info["cmd"]),
            purpose=str(info.get("purpose", "")),
            since=float(info["since"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


class _ProcessLock:
    """The process-wide state of one lock file: a counted owner over one descriptor."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.cond = threading.Condition(threading.Lock())
        self.fd: int | None = None
        self.owner: int | None = None  # thread id holding it exclusively
        self.depth = 0
        self.readers: dict[int, int] = {}  # thread id -> count, while held shared
        self.busy = False  # a thread is acquiring the flock

    def acquire(self, shared: bool, timeout: float | None, purpose: str) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        me = threading.get_ident()
        with self.cond:
            if self.owner == me:
                self.depth += 1
                return
            if me in self.readers:
                if not shared:
                    raise LockErr(f"lock {self.path}: cannot upgrade a shared hold to exclusive")
                self.readers[me] += 1
                return
            while self.busy or self.owner is not None or (not shared and self.readers):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise LockErr(
                        f"lock {self.path}: timed out after {timeout}s; held by another "
                        f"thread of this process (pid {os.getpid()})"
                    )
                self.cond.wait(left)
            if shared and self.readers:
                self.readers[me] = 1
                return
            self.busy = True
        try:
            self._flock(shared, deadline, timeout, purpose)
        except BaseException:
            with self.cond:
                self.busy = False
                self.cond.notify_all()
            raise
        with self.cond:
            self.busy = False
            if shared:
                self.readers[me] = 1
            else:
                self.owner, self.depth = me, 1

    def _flock(self, shared: bool, deadline: float | None, timeout: float | None,
               purpose: str) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        delay = _POLL_MIN
        try:
            while True:
                try:
                    fcntl.flock(fd, op | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    pass
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise self._busy_error(fd, timeout)
                import random  # only when contended: not on every driver start

                pause = delay * random.uniform(0.5, 1.0)
                if deadline is not None:
                    pause = min(pause, deadline - now)
                time.sleep(pause)
                delay = min(delay * 2, _POLL_MAX)
            if not shared:
                # The holder line only informs waiters: a full (or quota-bound) file system
                # must not stop the command that would free space.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, _holder_line(purpose), 0)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def _busy_error(self, fd: int, timeout: float | None) -> LockErr:
        message = f"lock {self.path}: timed out after {timeout}s"
        try:  # if a shared lock can be had, the holders are shared ones
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            holder = "other processes (shared)"
        except BlockingIOError:
            found = read_holder(self.path)
            holder = "unknown" if found is None else found.describe()
        return LockErr(f"{message}; held by {holder}",
                       details={"lock": self.path, "holder": holder})

    def release(self) -> None:
        me = threading.get_ident()
        with self.cond:
            if self.owner == me:
                self.depth -= 1
                if self.depth:
                    return
                self.owner = None
                self._unlock(truncate=True)
            elif me in self.readers:
                self.readers[me] -= 1
                if self.readers[me]:
                    return
                del self.readers[me]
                if self.readers:
                    return
                self._unlock(truncate=False)
            else:
                raise RuntimeError(f"lock {self.path} is not held by this thread")
            self.cond.notify_all()

    def _unlock(self, truncate: bool) -> None:
        fd, self.fd = self.fd, None
        assert fd is not None
        try:
            if truncate:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def held(self) -> bool:
        with self.cond:
            me = threading.get_ident()
            return self.owner == me or me in self.readers


_registry: dict[str, _ProcessLock] = {}
_registry_lock = threading.Lock()


def _process_lock(path: StrPath) -> _ProcessLock:
    key = os.path.abspath(path)
    with _registry_lock:
        state = _registry.get(key)
        if state is None:
            state = _registry[key] = _ProcessLock(key)
        return state


def _forget_locks_in_child() -> None:
    # The child shares the parent's open file descriptions: closing them in the child does not
    # release the parent's locks, but keeping them would make the child a silent co-holder.
    global _registry_lock
    for state in _registry.values():
        if state.fd is not None:
            with contextlib.suppress(OSError):
                os.close(state.fd)
    _registry.clear()
    _registry_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_locks_in_child)


class FileLock:
    """A lock file, acquired and released explicitly (see :func:`lock` for the usual form)."""

    def __init__(self, path: StrPath) -> None:
        self.path = os.path.abspath(path)

    def acquire(self, *, shared: bool = False, timeout: float | None = DEFAULT_TIMEOUT,
                purpose: str = "") -> None:
        """Take the lock, waiting at most ``timeout`` seconds (None: forever); ``LockErr``."""
        _process_lock(self.path).acquire(shared, timeout, purpose)

    def release(self) -> None:
        _process_lock(self.path).release()

    def held(self) -> bool:
        """Whether the calling thread holds this lock (shared or exclusive)."""
        return _process_lock(self.path).held()

    def holder(self) -> Holder | None:
        return read_holder(self.path)

    def __repr__(self) -> str:
        return f"FileLock({self.path!r})"


@contextlib.contextmanager
def lock(path: StrPath, *, shared: bool = False, timeout: float | None = DEFAULT_TIMEOUT,
         purpose: str = "") -> Iterator[FileLock]:
    """Hold the lock file ``path`` (created if missing) for the ``with`` block.

    ``timeout`` bounds the wait (None waits forever, 0 tries once); on expiry ``LockErr`` (37)
    names the lock and its holder if known. ``purpose`` is recorded for such messages.
    """
    handle = FileLock(path)
    handle.acquire(shared=shared, timeout=timeout, purpose=purpose)
    try:
        yield handle
    finally:
        handle.release()


def sr_lock_dir(sr_path: StrPath) -> Path:
    """``<sr>/.sm/locks``. Never created here: a lock request on a directory that holds no
    SR must not make it look like one (:func:`init_sr_locks` is for ``sr_create``)."""
    return Path(sr_path) / LOCK_DIR


def init_sr_locks(sr_path: StrPath) -> Path:
    """Create ``<sr>/.sm/locks`` (and ``.sm``) in the existing directory ``sr_path``: for
    ``sr_create`` and the upgrade of an existing SR, never for any other command."""
    directory = sr_lock_dir(sr_path)
    directory.parent.mkdir(exist_ok=True)  # never sr_path itself, nor its parents
    directory.mkdir(exist_ok=True)
    return directory


def sr_lock_path(sr_path: StrPath) -> Path:
    return sr_lock_dir(sr_path) / "sr.lock"


def vdi_lock_path(sr_path: StrPath, vdi_uuid: str) -> Path:
    if not _SAFE_NAME.match(vdi_uuid):
        raise ValueError(f"unsafe VDI uuid for a lock name: {vdi_uuid!r}")
    return sr_lock_dir(sr_path) / f"vdi-{vdi_uuid}.lock"


@contextlib.contextmanager
def _sr_file_lock(path: Path, shared: bool, timeout: float | None,
                  purpose: str) -> Iterator[FileLock]:
    handle = FileLock(path)
    try:
        handle.acquire(shared=shared, timeout=timeout, purpose=purpose)
    except FileNotFoundError as err:  # no .sm/locks: not an SR (or deleted meanwhile)
        raise SRUnavailable(f"{path.parent.parent.parent} holds no SR (no {path.parent})"
                            ) from err
    try:
        yield handle
    finally:
        handle.release()


def sr_lock(sr_path: StrPath, *, shared: bool = False, timeout: float | None = DEFAULT_TIMEOUT,
            purpose: str = "") -> contextlib.AbstractContextManager[FileLock]:
    """The SR-wide lock: exclusive for operations that rearrange chains (snapshot, clone,
    delete, coalesce, journal replay); shared for operations that must not see that happen.
    SRUnavailable (47) if ``<sr>/.sm/locks`` does not exist."""
    return _sr_file_lock(sr_lock_path(sr_path), shared, timeout, purpose)


def vdi_lock(sr_path: StrPath, vdi_uuid: str, *, shared: bool = False,
             timeout: float | None = DEFAULT_TIMEOUT,
             purpose: str = "") -> contextlib.AbstractContextManager[FileLock]:
    """The lock of one VDI. Lock order: the SR lock (if needed) first, then VDI locks in uuid
    order. SRUnavailable (47) if ``<sr>/.sm/locks`` does not exist."""
    return _sr_file_lock(vdi_lock_path(sr_path, vdi_uuid), shared, timeout, purpose)
