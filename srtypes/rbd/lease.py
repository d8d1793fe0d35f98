"""The cluster-wide chain lock of an RBD SR: a lease in the `lock` omap key of `sm.sr`.

Value: JSON `{host, pid, start, token, purpose, hostname, expires, lease}`; "" when free.
Taking, renewing and giving back are compare-and-swap write ops (`omap_cmp` + `set_omap`, one
atomic op on the OSD), so exactly one host wins. Every records commit under the lock carries
`omap_cmp(lock == our value)` too (fencing: a holder whose lock was broken writes nothing).

While held, a thread renews the lease every `lease / 4` seconds (a new token each time), so a
long step (rolling back a large image) keeps it. A waiter breaks a held lock (with the same
CAS, so only one breaker wins) when

- its owner is a process of THIS host (same host id) that no longer runs: at once; or
- the value has not changed for a whole lease as measured by the waiter's own monotonic clock
  (the owner stopped renewing: it died, or its host did, or it is cut off from the cluster).
  No host's wall clock is trusted, so clock skew cannot break a live lock; `expires` is
  informational only.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

from sm.errors import LockErr, SMError

from .store import Store

__all__ = ["DEFAULT_LEASE", "DEFAULT_WAIT", "Lease", "host_id"]

log = logging.getLogger(__name__)

DEFAULT_LEASE = 60.0
DEFAULT_WAIT = 120.0


def host_id(state_dir: Path) -> str:
    """This host's identity: a uuid kept in `<state_dir>/rbd/host-id` (made once)."""
    path = state_dir / "rbd" / "host-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".host-id.{os.getpid()}")
    tmp.write_text(str(uuidlib.uuid4()) + "\n")
    try:
        os.link(tmp, path)  # first writer wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == b"Z":
        return None
    return fields[19].decode()


class Lease:
    def __init__(self, store: Store, host: str, *, lease: float = DEFAULT_LEASE,
                 wait: float = DEFAULT_WAIT) -> None:
        self.store = store
        self.host = host
        self.lease = lease
        self.wait = wait
        self.value: str | None = None
        self.purpose = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None

    def _make(self) -> str:
        pid = os.getpid()
        return json.dumps({
            "host": self.host, "pid": pid, "start": _start_time(pid), "hostname":
            socket.gethostname(), "token": uuidlib.uuid4().hex, "purpose": self.purpose,
            "expires": round(time.time() + self.lease, 3), "lease": self.lease,
        }, sort_keys=True)

    def dead_owner(self, value: str) -> str | None:
        """Why the owner of lock `value` is certainly gone (a process of this host), or None."""
        try:
            owner: dict[str, Any] = json.loads(value)
        except ValueError:
            return None
        if not isinstance(owner, dict) or owner.get("host") != self.host:
            return None
        pid = int(owner.get("pid", 0))
        if pid == os.getpid():
            return None
        if _start_time(pid) != owner.get("start"):
            return f"owner process {pid} on this host is gone"
        return None

    def acquire(self, purpose: str) -> None:
        self.purpose = purpose
        start = time.monotonic()
        deadline = start + self.wait
        delay = 0.01
        seen, seen_at = None, start
        while True:
            current = self.store.lock_value()
            now = time.monotonic()
            if current != seen:
                seen, seen_at = current, now
            reason = None
            if current:
                reason = self.dead_owner(current)
                if reason is None and now - seen_at >= self.lease:
                    reason = f"not renewed for {now - seen_at:.1f} s (lease {self.lease:.0f} s)"
            if not current or reason is not None:
                mine = self._make()
                if self.store.cas_lock(current, mine):
                    if reason is not None:
                        log.warning("broke the SR lock (%s): %s", reason, current)
                    self._held(mine)
                    return
                continue
            if now > deadline:
                raise LockErr(f"{purpose}: the SR lock is held by {current} (waited "
                              f"{self.wait:.0f} s)")
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.2)

    def _held(self, value: str) -> None:
        self.value = value
        self.store.lease_value = value
        self.lost = None
        self._stop.clear()
        self._thread = threading.Thread(target=self._renewer, name="sm-rbd-lease",
                                        daemon=True)
        self._thread.start()

    def _renewer(self) -> None:
        while not self._stop.wait(self.lease / 4):
            try:
                self.renew()
            except SMError as err:  # lost or unreachable: the next fenced commit fails
                self.lost = str(err)
                log.error("%s: renewing the SR lock failed: %s", self.purpose, err)
                return

    def renew(self) -> None:
        """Extend the lease; LockErr if it was lost (broken by another host)."""
        with self.store.fence:
            if self.value is None:
                return
            mine = self._make()
            if not self.store.cas_lock(self.value, mine):
                raise LockErr(f"{self.purpose}: the SR lock was broken while held")
            self.value = mine
            self.store.lease_value = mine

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self.store.fence:
            if self.value is None:
                return
            value, self.value = self.value, None
            self.store.lease_value = None
        if not self.store.cas_lock(value, ""):
            log.warning("%s: the SR lock had been broken before release", self.purpose)
