"""The collector loop, independent of the SR type: lock, recover, plan, run one action, plan
again, until nothing is left; progress and results in the status file (`sm.gc.state`)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from sm.settings import Settings

from . import state
from .plan import Action, Graph, chain_report, plan

__all__ = ["FINAL_BYTES", "Aborted", "Backend", "Collector", "Skip", "StepContext",
           "final_bytes", "report"]

log = logging.getLogger(__name__)

FINAL_BYTES: int = Settings.gc_final_bytes
"""Default bound of a leaf's final copy (its data path is paused meanwhile)."""


def final_bytes() -> int:
    """The bound backends use: `SM_GC_FINAL_BYTES` (`sm.settings`), else `FINAL_BYTES`."""
    return Settings.from_environ().gc_final_bytes


MAX_LEAF_SNAPSHOTS = 3
"""Per leaf and run: a writer faster than the copy would otherwise keep the collector busy
forever; the leaf is tried again at the next run."""


class Aborted(Exception):
    """A detach or SR delete asked the collector to stop."""


class Skip(Exception):
    """The backend cannot run this action now (the message says why); the images involved
    are left alone until the next run."""


class StepContext:
    """Handed to the backend for one action: step names, progress, abort checks."""

    def __init__(self, collector: Collector, action: Action) -> None:
        self.collector = collector
        self.action = action
        self._last = 0.0
        self._t0 = 0.0
        self.rate = Settings.from_environ().gc_rate
        """Copy rate limit in bytes/s (`SM_GC_RATE`; 0: none), so merges leave I/O for VMs."""

    def check(self) -> None:
        if state.abort_requested(self.collector.backend.gc_dir):
            raise Aborted(f"abort requested during {self.action.describe()}")

    def step(self, name: str) -> None:
        self._t0 = time.monotonic()
        self.collector._current.update(step=name, done=0, total=0)
        self.collector._save()
        self.check()

    def progress(self, done: int, total: int) -> None:
        cur = self.collector._current
        cur.update(done=done, total=total)
        now = time.monotonic()
        if now - self._last >= 0.25 or done >= total:
            self._last = now
            self.collector._save()
            self.check()
        if self.rate > 0:
            ahead = self._t0 + done / self.rate - now
            while ahead > 0:  # throttled, still abortable
                time.sleep(min(ahead, 0.05))
                self.check()
                ahead -= 0.05


class Backend(Protocol):
    """What an SR type supplies (docs/gc.md)."""

    gc_dir: Path
    """Directory of the collector's lock, status and abort files (on the SR)."""
    final_bytes: int
    """The most a leaf-merge copies while the leaf's data path is paused."""
    # optional: `allow_down = False` when the backend only merges children into bases

    def graph(self) -> Graph:
        """A consistent snapshot of the SR's images (taken under the SR lock)."""
        ...

    def recover(self) -> None:
        """Finish or undo collector steps a crash interrupted (journal replay)."""
        ...

    def free_bytes(self) -> int:
        ...

    def execute(self, action: Action, ctx: StepContext) -> Mapping[str, Any] | None:
        """Run one action, journaled; raise `Skip` if it cannot run now, `Aborted` (from
        `ctx`) when asked to stop. Every step re-checks the graph under the SR lock. Returns
        facts for the run summary (e.g. `pause_seconds` of a leaf's final step)."""
        ...


class Collector:
    def __init__(self, backend: Backend, *, on_action: Callable[[Action], None] | None = None
                 ) -> None:
        self.backend = backend
        self.on_action = on_action
        self._status: dict[str, Any] = {}
        self._current: dict[str, Any] = {}

    def _save(self) -> None:
        self._status["current"] = dict(self._current) if self._current else None
        self._status["updated"] = time.time()
        state.write_status(self.backend.gc_dir, self._status)

    def run(self, *, max_actions: int = 10_000) -> dict[str, Any]:
        """One collector run; returns its summary (also saved as `last_run`)."""
        gc_dir = self.backend.gc_dir
        lock = state.GCLock(gc_dir)
        summary: dict[str, Any] = {"result": "busy",
                                   "message": "another collector runs on this SR"}
        # a kick that found this collector running asked for one more run (`rerun`); checked
        # after the lock is released too, so a request is never lost between the two
        while lock.acquire(0.0):
            try:
                state.take_rerun(gc_dir)
                summary = self._run(max_actions)
            finally:
                lock.release()
            if summary["result"] != "done" or not state.take_rerun(gc_dir):
                break
        return summary

    def _run(self, max_actions: int) -> dict[str, Any]:
        gc_dir = self.backend.gc_dir
        previous = state.read_status(gc_dir)
        started = time.time()
        summary: dict[str, Any] = {"started": started, "pid": os.getpid(), "actions": [],
                                   "skipped": [], "result": "running"}
        self._status = {"state": "running", "pid": os.getpid(), "started": started,
                        "run": summary, "last_run": previous.get("last_run")}
        self._save()
        exclude: set[str] = set()
        leaf_rounds: dict[str, int] = {}
        try:
            self.backend.recover()
            for _ in range(max_actions):
                if state.abort_requested(gc_dir):
                    raise Aborted("abort requested")
                actions = plan(self.backend.graph(), final_bytes=self.backend.final_bytes,
                               exclude=exclude,
                               allow_down=getattr(self.backend, "allow_down", True))
                if not actions:
                    break
                action = actions[0]
                if action.kind == "leaf-snapshot":
                    leaf_rounds[action.child] = leaf_rounds.get(action.child, 0) + 1
                    if leaf_rounds[action.child] > MAX_LEAF_SNAPSHOTS:
                        self._skip(summary, exclude, action, "the leaf is written faster "
                                   "than it can be merged; trying again at the next run")
                        continue
                free = self.backend.free_bytes()
                if action.space_bytes and free < action.space_bytes:
                    self._skip(summary, exclude, action,
                               f"needs {action.space_bytes} bytes of free space, "
                               f"{free} available")
                    continue
                self._current = {"action": action.to_dict(), "step": "start", "done": 0,
                                 "total": action.copy_bytes, "since": time.time()}
                self._save()
                try:
                    facts = self.backend.execute(action, StepContext(self, action))
                except Skip as err:
                    self._skip(summary, exclude, action, str(err))
                    continue
                finally:
                    self._current = {}
                summary["actions"].append({**action.to_dict(), **(facts or {})})
                if self.on_action is not None:
                    self.on_action(action)
                log.info("gc: %s", action.describe())
            summary["result"] = "done"
        except Aborted as err:
            summary["result"] = "aborted"
            summary["message"] = str(err)
            log.warning("gc: %s", err)
        except Exception as err:
            summary["result"] = "failed"
            summary["message"] = f"{type(err).__name__}: {err}"
            log.exception("gc: run failed")
            raise
        finally:
            summary["finished"] = time.time()
            self._current = {}
            self._status = {"state": "idle", "pid": None, "last_run": summary}
            self._save()
        return summary

    def _skip(self, summary: dict[str, Any], exclude: set[str], action: Action,
              why: str) -> None:
        message = f"skipping {action.describe()}: {why}"
        log.warning("gc: %s", message)
        summary["skipped"].append({**action.to_dict(), "reason": message})
        exclude.update(action.vdis)


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def report(backend: Backend) -> dict[str, Any]:
    """`sm gc status`: chains, pending work, and the collector's state."""
    g = backend.graph()
    actions = plan(g, final_bytes=backend.final_bytes,
                   allow_down=getattr(backend, "allow_down", True))
    out = chain_report(g, actions)
    st = state.read_status(backend.gc_dir)
    running = st.get("state") == "running" and _alive(st.get("pid"))
    out["collector"] = {
        "running": running,
        "pid": st.get("pid") if running else None,
        "current": st.get("current") if running else None,
        "run": st.get("run") if running else None,
        "last_run": st.get("last_run") if running else (
            st.get("last_run") or (st.get("run") if st.get("state") == "running" else None)),
        "interrupted": st.get("state") == "running" and not running,
    }
    out["free_bytes"] = backend.free_bytes()
    return out
