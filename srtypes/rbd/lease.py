"""The cluster-wide chain lock of an RBD SR: a lease in the `lock` omap key of `sm.sr`.

Value: JSON `{host, pid, start, token, purpose, hostname, expires}`; "" when free. Taking and
giving back are compare-and-swap write ops (`omap_cmp` + `set_omap`, atomic on the OSD), so
exactly one host wins. A held lock is broken (by the same CAS, so only one breaker wins) when
its lease has expired (`expires` in the past: its owner stalled or died on any host) or when
its owner is a process of THIS host (same host id) that no longer runs. Clocks of the hosts
are assumed synchronised to well under the lease (NTP); the lease is renewed between steps.
Every records commit under the lock is fenced by `omap_cmp(lock == our value)`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

from sm.errors import LockErr

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

    def _make(self) -> str:
        pid = os.getpid()
        return json.dumps({
            "host": self.host, "pid": pid, "start": _start_time(pid), "hostname":
            socket.gethostname(), "token": uuidlib.uuid4().hex, "purpose": self.purpose,
            "expires": round(time.time() + self.lease, 3),
        }, sort_keys=True)

    def breakable(self, value: str) -> str | None:
        """Why the lock `value` may be broken, or None if its owner holds it."""
        try:
            owner: dict[str, Any] = json.loads(value)
            expires = float(owner["expires"])
        except (ValueError, KeyError, TypeError):
            return "unreadable lock value"
        if time.time() > expires:
            return f"lease expired {time.time() - expires:.1f} s ago"
        if owner.get("host") == self.host:
            pid = int(owner.get("pid", 0))
            if pid == os.getpid():
                return None  # this process: never ours to break (no re-entry)
            if _start_time(pid) != owner.get("start"):
                return f"owner process {pid} on this host is gone"
        return None

    def acquire(self, purpose: str) -> None:
        self.purpose = purpose
        deadline = time.monotonic() + self.wait
        delay = 0.01
        while True:
            current = self.store.lock_value()
            reason = None if current == "" else self.breakable(current)
            if current == "" or reason is not None:
                mine = self._make()
                if self.store.cas_lock(current, mine):
                    if reason is not None:
                        log.warning("broke the SR lock (%s): %s", reason, current)
                    self.value = mine
                    self.store.lease_value = mine
                    return
                continue
            if time.monotonic() > deadline:
                raise LockErr(f"{purpose}: the SR lock is held by {current} (waited "
                              f"{self.wait:.0f} s)")
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.2)

    def renew(self) -> None:
        """Extend the lease (between steps of a long operation); LockErr if it was lost."""
        if self.value is None:
            return
        mine = self._make()
        if not self.store.cas_lock(self.value, mine):
            raise LockErr(f"{self.purpose}: the SR lock was broken while held")
        self.value = mine
        self.store.lease_value = mine

    def release(self) -> None:
        if self.value is None:
            return
        value, self.value = self.value, None
        self.store.lease_value = None
        if not self.store.cas_lock(value, ""):
            log.warning("%s: the SR lock had been broken before release", self.purpose)
