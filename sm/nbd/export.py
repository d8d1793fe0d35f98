"""One served chain behind a pause gate (standard library only: runs inside nbdkit).

Every NBD request enters the gate, which counts it as in flight and hands it the currently open
`Disk`. `pause` closes the gate to new requests (they block, they are not failed), waits for
the in-flight ones to drain, flushes and closes the chain. `resume` reopens the chain, possibly
at a new path, and releases the blocked requests. `shutdown` pauses and then fails every blocked
and future request, so the server can exit.

The virtual size a client saw at its handshake cannot change on its connection (nbdkit keeps
it per connection and bounds that connection's requests by it); a connection made after a
resume on a grown chain (`vdi_resize` of a served VDI) is offered the new size (`size`).
`status` reports both: `size` (what the first connection saw) and `chain_size`.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

__all__ = ["DiskLike", "Export", "ExportClosed", "ExportError", "Opener", "State"]

ZERO_CHUNK = 2 * 1024 * 1024
_ZEROS = bytes(ZERO_CHUNK)


class DiskLike(Protocol):
    """What the export needs from `sm.vhd.Disk`."""

    size: int

    def read(self, offset: int, length: int) -> bytes: ...
    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


Opener = Callable[[str, bool], DiskLike]
"""(path, writable) -> an open disk."""


class ExportError(Exception):
    """A control operation that cannot be done in the current state."""


class ExportClosed(ExportError):
    """The export was shut down; requests fail."""


class State(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    CLOSED = "closed"


class Export:
    """The chain at `path`, opened with `opener(path, writable)` by `start`."""

    def __init__(self, opener: Opener, path: str, *, writable: bool) -> None:
        self._opener = opener
        self._path = path
        self._writable = writable
        self._cond = threading.Condition()
        self._admin = threading.Lock()  # serializes pause / resume / shutdown
        self._state = State.PAUSED  # until start() opens the chain
        self._disk: DiskLike | None = None
        self._inflight = 0
        self._size = -1
        self._chain_size = -1
        self._paused_by: str | None = None  # who paused a running export (resume clears it)
        self._generation = 0
        self._requests = 0
        self._pauses = 0

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Open the chain for the first time (errors propagate: the server must not start)."""
        disk = self._opener(self._path, self._writable)
        with self._cond:
            self._disk = disk
            self._size = self._chain_size = disk.size
            self._state = State.RUNNING
            self._cond.notify_all()

    @property
    def size(self) -> int:
        """The size a new connection is offered: the open chain's."""
        return self._chain_size

    @property
    def writable(self) -> bool:
        return self._writable

    @property
    def path(self) -> str:
        return self._path

    @contextmanager
    def use(self) -> Iterator[DiskLike]:
        """Admit one request: block while paused, count it in flight, yield the disk."""
        with self._cond:
            while self._state is State.PAUSED:
                self._cond.wait()
            if self._state is State.CLOSED or self._disk is None:
                raise ExportClosed("the export is shut down")
            self._inflight += 1
            self._requests += 1
            disk = self._disk
        try:
            yield disk
        finally:
            with self._cond:
                self._inflight -= 1
                if self._inflight == 0:
                    self._cond.notify_all()

    # -- I/O (called by the nbdkit callbacks) ----------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        with self.use() as disk:
            return disk.read(offset, length)

    def readinto(self, offset: int, buf: bytearray) -> None:
        """Fill `buf` from `offset`: straight into nbdkit's buffer when the disk can (the
        engine's `Disk.readinto` for sector-aligned requests), else through `read`."""
        with self.use() as disk:
            into = getattr(disk, "readinto", None)
            if into is not None and not (offset | len(buf)) % 512:
                into(offset, buf)
            else:
                buf[:] = disk.read(offset, len(buf))

    def write(self, offset: int, data: bytes | bytearray | memoryview, *,
              fua: bool = False) -> None:
        with self.use() as disk:
            disk.write(offset, data)
            if fua:
                disk.flush()

    def flush(self) -> None:
        with self.use() as disk:
            disk.flush()

    def zero(self, offset: int, length: int, *, fua: bool = False) -> None:
        """Make the range read as zeros. The engine has no zero/discard operation, so write
        zeros, but only where the range does not already read as zeros: a chunk that is
        unallocated throughout the chain then allocates nothing."""
        with self.use() as disk:
            end = offset + length
            pos = offset
            while pos < end:
                n = min(ZERO_CHUNK - pos % ZERO_CHUNK, end - pos)
                zeros = _ZEROS[:n]
                if disk.read(pos, n) != zeros:
                    disk.write(pos, zeros)
                pos += n
            if fua:
                disk.flush()

    # -- control -------------------------------------------------------------------------

    def pause(self, timeout: float | None = None, owner: str | None = None) -> dict[str, Any]:
        """Stop admitting requests, drain in-flight ones, flush and close the chain.
        Idempotent. On a drain timeout the export keeps running and ExportError is raised.
        `owner` (reported as `paused_by`) is kept from the pause that stopped a running export;
        pausing a paused export keeps the first owner."""
        with self._admin:
            with self._cond:
                if self._state is State.CLOSED:
                    raise ExportClosed("the export is shut down")
                if self._state is State.PAUSED:
                    return self._status_locked()
                self._state = State.PAUSED
                self._paused_by = owner
                deadline = None if timeout is None else time.monotonic() + timeout
                while self._inflight:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        self._state = State.RUNNING
                        self._paused_by = None
                        self._cond.notify_all()
                        raise ExportError(f"{self._inflight} requests still in flight after "
                                          f"{timeout} s; not paused")
                    self._cond.wait(left)
                disk, self._disk = self._disk, None
                self._pauses += 1
            if disk is not None:
                try:
                    disk.flush()
                finally:
                    disk.close()
            with self._cond:
                return self._status_locked()

    def resume(self, path: str | None = None) -> dict[str, Any]:
        """Reopen the chain (at `path` if given) and release blocked requests. Idempotent:
        resuming a running export on its own path is a no-op. A failed reopen leaves the
        export paused."""
        with self._admin:
            with self._cond:
                state = self._state
                if state is State.CLOSED:
                    raise ExportClosed("the export is shut down")
                if state is State.RUNNING:
                    if path is None or path == self._path:
                        return self._status_locked()
                    raise ExportError(f"running on {self._path}; pause before resuming on {path}")
            new_path = self._path if path is None else path
            disk = self._opener(new_path, self._writable)
            with self._cond:
                self._disk = disk
                self._path = new_path
                self._chain_size = disk.size
                self._generation += 1
                self._state = State.RUNNING
                self._paused_by = None
                self._cond.notify_all()
                return self._status_locked()

    def shutdown(self) -> dict[str, Any]:
        """Pause (flush, close), then fail all blocked and future requests. Idempotent."""
        with self._cond:
            if self._state is State.CLOSED:
                return self._status_locked()
        self.pause()
        with self._admin, self._cond:
            self._state = State.CLOSED
            self._cond.notify_all()
            return self._status_locked()

    def status(self) -> dict[str, Any]:
        with self._cond:
            return self._status_locked()

    def _status_locked(self) -> dict[str, Any]:
        return {
            "state": self._state.value,
            "path": self._path,
            "writable": self._writable,
            "size": self._size,
            "chain_size": self._chain_size,
            "inflight": self._inflight,
            "generation": self._generation,
            "requests": self._requests,
            "pauses": self._pauses,
            "paused_by": self._paused_by,
        }
