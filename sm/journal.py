"""Intent journal for multi-step SR operations (standard library only).

An operation that changes several things (snapshot: rename, create two children, update
records) first writes an intent entry, records each step as it completes, and removes the entry
when it is finished. After a crash the SR type replays what is left: :meth:`Journal.recover`
calls the handler registered for each entry's ``op``, which looks at ``entry.steps`` and rolls
the operation forward or back, and then removes the entry.

On disk, in the journal directory (e.g. ``<sr>/.sm/journal``)::

    <id>.json   {"version": 1, "id", "op", "created", "pid", "host", "data": {...},
                 "steps": []}                       first line, written atomically by begin
                {"name", "time", "data": {...}}     one line per step, appended (fdatasync)
    <id>.lock   flock'ed by the process running the operation

A step is one appended line and one fdatasync (no temporary file, rename and directory
fsync). A line torn by a crash is the last one and has no newline: it reads as the step not
reached (which recovery must handle anyway: a crash can come between a step's effect and its
line), and the next step written to the entry cuts it off first. Entries written whole with
their steps inside (the earlier form) read the same.

``id`` starts with the creation time in nanoseconds, so names sort in creation order. The
lock file tells a live operation from an orphaned one: the kernel drops the flock when its
process dies, so recovery only ever touches entries whose writer is gone (an operation running
in another process, or on another host sharing the SR, is left alone), and two recoverers
cannot run the same entry. An unreadable entry raises ``MetadataError`` (181) with its path:
recovery must not silently skip half-done work.

Failure containment (docs/design.md "Failure containment"):

- An operation that FAILS in its own process (an exception, not a kill) is settled before it
  answers: leaving the ``with`` block of an owned entry by an ``Exception`` runs the op's own
  recovery handler in-process with ``entry.failure`` set to that exception. The handler undoes
  what was done (or completes it, once past the op's point of no return); the entry is then
  removed, and the original exception propagates. Replay is for crashes only. If the handler
  itself fails, the entry stays for replay (with a note on the exception).
- A replay that cannot make progress does not block the SR: :meth:`Journal.recover` sets the
  entry aside (``failed/<id>.json``: :class:`SetAside` — ``id``, ``op``, ``data``, the names of
  the ``steps`` reached, ``error``, ``error_type``, ``set_aside`` time, the ``affected`` VDIs —
  and the whole ``entry``, which a retry puts back) and goes on with the next one. The
  affected VDIs are unusable (:meth:`Journal.unusable`) until the entry is retried or
  discarded (``sm sr repair``, :mod:`sm.repair`). :class:`SetAside` is the record SR types
  with a journal of their own (the LVHD SR keeps it in MGT) share, with :func:`affected` and
  :func:`unusable_error`.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import functools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Protocol

from sm import atomic
from sm.errors import MetadataError, VDIUnavailable
from sm.faults import crash_point
from sm.log import get_logger
from sm.struct import Frozen

StrPath = str | os.PathLike[str]
Handler = Callable[["Entry"], None]

VERSION = 1
RESERVE_NAME = ".reserve"
RESERVE_BYTES = 256 * 1024
"""Space a full file system gives back to a deleting operation (journal entry, lock line)."""
FAILED_DIR = "failed"
AFFECTED_KEYS = ("vdi", "target", "snapshot", "base", "new", "b2", "child")
"""Keys of an entry's data that name VDIs whose images the operation changes (every SR type
uses these names): the VDIs a set-aside entry makes unusable."""

log = get_logger(__name__)


class Step(Frozen):
    name: str
    time: float
    data: Mapping[str, Any] = MappingProxyType({})


def _open_locked(path: Path, *, blocking: bool) -> int | None:
    """Open and flock ``path`` (created if missing); None if another process holds it.

    Retries if the file was unlinked between open and flock, so the lock held is always the
    one on the name.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


class Entry:
    """One journalled operation. Returned by :meth:`Journal.begin` (owned: the caller runs the
    operation) or by :meth:`Journal.pending` (a record to inspect or recover).

    As a context manager an owned entry is marked done when the block succeeds. When the block
    raises an ``Exception`` and the journal has a handler for the op, the handler runs at once
    with :attr:`failure` set (see the module docstring) and the entry is done if it returns;
    otherwise (no handler, the handler failed, or a ``BaseException`` such as a kill) the entry
    is left pending for recovery.
    """

    def __init__(self, journal: Journal, raw: Mapping[str, Any], lock_fd: int | None,
                 size: int = 0) -> None:
        self.journal = journal
        self.id: str = raw["id"]
        self.op: str = raw["op"]
        self.created: float = raw["created"]
        self.pid: int = raw["pid"]
        self.host: str = raw["host"]
        self.data: Mapping[str, Any] = raw["data"]
        self._steps: list[Step] = [Step(s["name"], s["time"], s["data"]) for s in raw["steps"]]
        self._lock_fd = lock_fd
        self._finished = False
        self._size = size  # bytes of complete lines on disk; anything after is a torn line
        self._whole_lines = True
        self.failure: BaseException | None = None
        """Set while the op's handler runs for a failure in the op's own process (undo, or
        complete past the point of no return); None during a replay after a crash."""

    @property
    def path(self) -> Path:
        return self.journal.directory / f"{self.id}.json"

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(self._steps)

    @property
    def last_step(self) -> Step | None:
        return self._steps[-1] if self._steps else None

    def has_step(self, name: str) -> bool:
        return any(s.name == name for s in self._steps)

    def step_data(self, name: str) -> Mapping[str, Any] | None:
        """The data of the last step called ``name``, or None if it was not reached."""
        for s in reversed(self._steps):
            if s.name == name:
                return s.data
        return None

    def once(self, step: str | enum.Enum, **data: Any) -> None:
        """Step ``step`` (a name, or a member of the op's ``Steps`` enum) is complete: record it
        unless it already is (a replay passes the same steps again), then the crash point
        ``<op>:<step>``. Every multi-step operation marks its steps with this."""
        name = step if isinstance(step, str) else step.name
        if not self.has_step(name):
            self.step(name, **data)
        crash_point(f"{self.op}:{name}")

    def passed(self, step: str | enum.Enum) -> None:
        """A step this path of the op has nothing to do for: only its crash point is hit (so
        a crash test names every step on every path), nothing is recorded."""
        crash_point(f"{self.op}:{step if isinstance(step, str) else step.name}")

    def step(self, name: str, **data: Any) -> None:
        """Record (durably) that step ``name`` is complete."""
        if self._finished:
            raise RuntimeError(f"journal entry {self.id} is already done")
        step = Step(name, time.time(), data)
        line = _encode(self.op, {"name": step.name, "time": step.time, "data": data})
        if not self._whole_lines:
            line = b"\n" + line  # an entry of the earlier form: one document, no newline
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_size != self._size:
                os.ftruncate(fd, self._size)  # a torn line left by a crash
            atomic.write_all(fd, line)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        self._size += len(line)
        self._whole_lines = True
        self._steps.append(step)

    def done(self) -> None:
        """The operation is complete (or recovered): remove the entry."""
        atomic.unlink(self.path, missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.journal.directory / f"{self.id}.lock")
        self._finished = True
        self.release()

    def release(self) -> None:
        """Stop owning the entry without finishing it: it becomes recoverable."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "id": self.id,
            "op": self.op,
            "created": self.created,
            "pid": self.pid,
            "host": self.host,
            "data": dict(self.data),
            "steps": [{"name": s.name, "time": s.time, "data": dict(s.data)} for s in self._steps],
        }

    def __enter__(self) -> Entry:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None or self._finished:  # done (or settled) inside the block already
            self.done()
        elif isinstance(value, Exception) and self.op in self.journal.handlers:
            settle(self, value, lambda: self.journal.handlers[self.op](self))
        else:
            self.release()

    def __repr__(self) -> str:
        last = self._steps[-1].name if self._steps else None
        return f"<journal Entry {self.id} op={self.op} last_step={last}>"


class Owned(Protocol):
    """What :func:`settle` needs of an entry (``Entry``, or an SR's own kind of entry)."""

    op: str
    failure: BaseException | None

    def done(self) -> None: ...

    def release(self) -> None: ...


def settle(entry: Owned | None, failure: Exception, undo: Callable[[], None]) -> bool:
    """Run ``undo`` for an operation that failed with ``failure`` in this process (with
    ``entry.failure`` set); the entry is done if it returns, left for replay if it raises.
    Returns whether the operation was settled. The caller re-raises ``failure``."""
    if entry is not None:
        entry.failure = failure
    try:
        undo()
    except Exception as err:
        log.error("%s failed (%s) and could not be settled in-process (%s); left for replay",
                  entry.op if entry else "operation", failure, err)
        failure.add_note(f"settling the failed operation failed too ({err}); its journal "
                         "entry is replayed by the next chain operation")
        if entry is not None:
            entry.failure = None
            entry.release()
        return False
    if entry is not None:
        entry.failure = None
        entry.done()
    return True


@contextlib.contextmanager
def undo_on_failure(undo: Callable[[BaseException], None]) -> Iterator[None]:
    """For journals other than :class:`Journal` (the LVHD SR's, in MGT): on an ``Exception``
    in the block run ``undo(exc)`` in-process, then re-raise; a failing ``undo`` adds a note
    and leaves its entry for replay."""
    try:
        yield
    except Exception as err:
        settle(None, err, functools.partial(undo, err))
        raise


def affected(data: Mapping[str, Any]) -> tuple[str, ...]:
    """The VDIs an entry's operation changes images of (its data's AFFECTED_KEYS)."""
    out: list[str] = []
    for key in AFFECTED_KEYS:
        value = data.get(key)
        if isinstance(value, str) and len(value) == 36 and value not in out:
            out.append(value)
    return tuple(out)


class SetAside(Frozen):
    """A journal entry whose replay could not make progress, set aside."""

    id: str
    op: str
    data: Mapping[str, Any]
    steps: tuple[str, ...]
    error: str
    error_type: str
    time: float
    affected: tuple[str, ...]

    @classmethod
    def make(cls, entry_id: str, op: str, data: Mapping[str, Any], steps: Iterable[str],
             error: BaseException) -> SetAside:
        return cls(entry_id, op, dict(data), tuple(steps), str(error) or type(error).__name__,
                   type(error).__name__, time.time(), affected(data))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "op": self.op, "data": dict(self.data),
                "steps": list(self.steps), "error": self.error, "error_type": self.error_type,
                "set_aside": self.time, "affected": list(self.affected)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SetAside:
        return cls(str(raw["id"]), str(raw["op"]), dict(raw.get("data", {})),
                   tuple(raw.get("steps", ())), str(raw.get("error", "")),
                   str(raw.get("error_type", "")), float(raw.get("set_aside", 0)),
                   tuple(raw.get("affected", ())))


def unusable_error(uuid: str, aside: SetAside, sr: str = "SR") -> VDIUnavailable:
    """VDIUnavailable (46) for a VDI a set-aside entry makes unusable."""
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(aside.time))
    return VDIUnavailable(
        f"VDI {uuid} is unusable: an interrupted {aside.op} (journal entry {aside.id}) could "
        f"not be replayed ({aside.error}; set aside at {when}); run `sm sr repair {sr}` to "
        "retry or discard it",
        details={"vdi": uuid, "entry": aside.id, "op": aside.op})


def _encode(op: str, obj: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(obj, sort_keys=True).encode() + b"\n"
    except (TypeError, ValueError) as err:
        raise TypeError(f"journal entry {op}: data is not JSON-serialisable: {err}") from err


def _check(raw: Any, path: Path) -> dict[str, Any]:
    def bad(what: str) -> MetadataError:
        return MetadataError(f"corrupt journal entry {path}: {what}", details={"path": str(path)})

    if not isinstance(raw, dict):
        raise bad("not a JSON object")
    if raw.get("version") != VERSION:
        raise bad(f"unsupported version {raw.get('version')!r}")
    expect: dict[str, type | tuple[type, ...]] = {
        "id": str, "op": str, "created": (int, float), "pid": int, "host": str,
        "data": dict, "steps": list,
    }
    for key, kind in expect.items():
        if not isinstance(raw.get(key), kind) or isinstance(raw.get(key), bool):
            raise bad(f"field {key!r} missing or not {kind}")
    if raw["id"] != path.name.removesuffix(".json"):
        raise bad(f"id {raw['id']!r} does not match the file name")
    for n, s in enumerate(raw["steps"]):
        if not (isinstance(s, dict) and isinstance(s.get("name"), str)
                and isinstance(s.get("time"), (int, float)) and isinstance(s.get("data"), dict)):
            raise bad(f"step {n} malformed")
    return raw


class Journal:
    """The intent journal in ``directory`` (created if missing, but never its parent: a
    journal is only ever opened inside an SR)."""

    def __init__(self, directory: StrPath,
                 handlers: Mapping[str, Handler] | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(exist_ok=True)
        self.handlers: Mapping[str, Handler] = handlers or {}
        """op -> handler: settles an owned entry whose operation fails in-process, and the
        default of :meth:`recover`."""

    @property
    def failed_dir(self) -> Path:
        return self.directory / FAILED_DIR

    def make_reserve(self) -> None:
        """Set aside ``RESERVE_BYTES`` in the journal directory (best effort), for
        :meth:`begin_freeing` on a file system that filled up."""
        try:
            fd = os.open(self.directory / RESERVE_NAME, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC,
                         0o600)
            try:
                if os.fstat(fd).st_size < RESERVE_BYTES:
                    os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)
        except OSError:
            pass

    def begin_freeing(self, op: str, **data: Any) -> Entry:
        """:meth:`begin` for an operation that frees space (delete): on a full file system it
        gives back the reserve and tries again, so a full SR can always be emptied. The caller
        calls :meth:`make_reserve` when the space is free again."""
        try:
            return self.begin(op, **data)
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            try:
                os.truncate(self.directory / RESERVE_NAME, 0)
            except OSError:
                raise err from None
            log.warning("%s: the file system is full; using the journal's reserve", op)
            return self.begin(op, **data)

    def begin(self, op: str, **data: Any) -> Entry:
        """Durably record the intent to run ``op`` with ``data`` (JSON-serialisable), before
        the operation changes anything. The returned entry is owned by this process."""
        if not op:
            raise ValueError("journal op must not be empty")
        created_ns = time.time_ns()
        entry_id = f"{created_ns:020d}-{os.getpid()}-{os.urandom(4).hex()}"
        raw = {"id": entry_id, "op": op, "created": created_ns / 1e9, "pid": os.getpid(),
               "host": os.uname().nodename, "data": data, "steps": []}
        fd = _open_locked(self.directory / f"{entry_id}.lock", blocking=True)
        entry = Entry(self, raw, fd)
        try:
            self._write(entry)
        except BaseException:
            entry.done()
            raise
        return entry

    def _write(self, entry: Entry) -> None:
        payload = _encode(entry.op, entry.to_dict())
        atomic.write_atomic(entry.path, payload)
        entry._size = len(payload)
        entry._whole_lines = True

    def _load(self, path: Path, lock_fd: int | None = None) -> Entry:
        content = path.read_bytes()
        cut = content.rfind(b"\n")
        if 0 <= cut < len(content) - 1:
            content = content[:cut + 1]  # a line torn while appending: that step not reached
        lines = content.split(b"\n")
        try:
            raw = json.loads(lines[0])
            steps = [json.loads(line) for line in lines[1:] if line]
        except (ValueError, UnicodeDecodeError) as err:
            raise MetadataError(f"corrupt journal entry {path}: {err}",
                                details={"path": str(path)}) from err
        if isinstance(raw, dict) and isinstance(raw.get("steps"), list):
            raw["steps"] = raw["steps"] + steps
        entry = Entry(self, _check(raw, path), lock_fd, len(content))
        entry._whole_lines = content.endswith(b"\n")
        return entry

    def _names(self) -> list[str]:
        return sorted(n for n in os.listdir(self.directory)
                      if n.endswith(".json") and not n.startswith("."))

    def pending(self) -> list[Entry]:
        """Unfinished entries (live and orphaned) in creation order."""
        entries = []
        for name in self._names():
            try:
                entries.append(self._load(self.directory / name))
            except FileNotFoundError:  # finished meanwhile
                continue
        return entries

    def is_live(self, entry: Entry) -> bool:
        """Whether a process is still running the entry's operation."""
        if entry._lock_fd is not None:
            return True
        fd = _open_locked(self.directory / f"{entry.id}.lock", blocking=False)
        if fd is None:
            return True
        os.close(fd)
        return False

    def claim(self, entry_id: str) -> Entry | None:
        """Take ownership of an orphaned entry (re-read from disk); None if it is live or gone."""
        lock_path = self.directory / f"{entry_id}.lock"
        fd = _open_locked(lock_path, blocking=False)
        if fd is None:
            return None
        try:
            return self._load(self.directory / f"{entry_id}.json", fd)
        except FileNotFoundError:  # finished between listing and claiming
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock_path)
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise

    def recover(self, handlers: Mapping[str, Handler] | None = None) -> list[Entry]:
        """Run ``handlers[entry.op](entry)`` for each orphaned entry, oldest first, and mark
        each done after its handler returns. Entries of live operations are skipped. An entry
        whose op has no handler raises ``MetadataError`` before any handler runs. A handler
        that raises an ``Exception`` cannot make progress: its entry is set aside
        (:meth:`set_aside`) and the next entry is replayed. Returns the recovered entries.
        Run it under the SR lock."""
        handlers = self.handlers if handlers is None else handlers
        pending = self.pending()
        for entry in pending:
            if entry.op not in handlers:
                raise MetadataError(
                    f"journal entry {entry.path}: no recovery handler for op {entry.op!r}",
                    details={"path": str(entry.path), "op": entry.op},
                )
        recovered = []
        for listed in pending:
            claimed = self.claim(listed.id)
            if claimed is None:
                continue
            entry = claimed
            try:
                handlers[entry.op](entry)
            except Exception as err:
                self.set_aside(entry, err)
                continue
            except BaseException:
                entry.release()
                raise
            entry.done()
            recovered.append(entry)
        self._remove_stray_locks()
        return recovered

    # -- set-aside entries ---------------------------------------------------------------------

    def set_aside(self, entry: Entry, error: BaseException) -> SetAside:
        """Move an owned entry whose replay failed to ``failed/`` with the error and the time:
        it is no longer replayed, and the VDIs it affects are unusable."""
        aside = SetAside.make(entry.id, entry.op, entry.data, (s.name for s in entry.steps),
                              error)
        payload = json.dumps({**aside.to_dict(), "entry": entry.to_dict()},
                             sort_keys=True).encode()
        self.failed_dir.mkdir(exist_ok=True)
        atomic.write_atomic(self.failed_dir / f"{entry.id}.json", payload)
        entry.done()
        log.error("journal entry %s (%s) set aside: replay failed: %s; VDIs %s unusable",
                  entry.id, entry.op, aside.error, ", ".join(aside.affected) or "none")
        return aside

    def set_aside_entries(self) -> list[SetAside]:
        """Entries set aside, oldest first. One that cannot be read is listed with op "?",
        its error and no affected VDIs (so it blocks nothing and can still be discarded)."""
        try:
            names = sorted(n for n in os.listdir(self.failed_dir) if n.endswith(".json"))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            path = self.failed_dir / name
            try:
                out.append(SetAside.from_dict(json.loads(path.read_bytes())))
            except FileNotFoundError:
                continue
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                log.error("unreadable set-aside journal entry %s: %s", path, err)
                out.append(SetAside(name.removesuffix(".json"), "?", {}, (),
                                    f"unreadable set-aside entry {path}: {err}",
                                    type(err).__name__, 0.0, ()))
        return out

    def unusable(self) -> dict[str, SetAside]:
        """VDI uuid -> the set-aside entry that makes it unusable (one listdir when none)."""
        if not self.failed_dir.is_dir():
            return {}
        return {u: a for a in self.set_aside_entries() for u in a.affected}

    def retry(self, entry_id: str, handlers: Mapping[str, Handler] | None = None) -> bool:
        """Put a set-aside entry back and replay it (caller holds the SR lock): True if it
        was recovered; False if it failed again (it is set aside again, with the new error)."""
        handlers = self.handlers if handlers is None else handlers
        src = self.failed_dir / f"{entry_id}.json"
        try:
            raw = json.loads(src.read_bytes())
        except FileNotFoundError:
            raise MetadataError(f"no set-aside journal entry {entry_id}",
                                details={"entry": entry_id}) from None
        entry_raw = raw.get("entry") if isinstance(raw, dict) else None
        if not isinstance(entry_raw, dict) or entry_raw.get("op") not in handlers:
            raise MetadataError(f"set-aside journal entry {entry_id}: no entry to replay, or "
                                "no recovery handler for its op", details={"entry": entry_id})
        atomic.write_atomic(self.directory / f"{entry_id}.json",
                            _encode(str(entry_raw["op"]), entry_raw))
        atomic.unlink(src)
        entry = self.claim(entry_id)
        if entry is None:
            raise MetadataError(f"journal entry {entry_id} is being replayed by another "
                                "process", details={"entry": entry_id})
        try:
            handlers[entry.op](entry)
        except Exception as err:
            self.set_aside(entry, err)
            return False
        except BaseException:
            entry.release()
            raise
        entry.done()
        return True

    def discard(self, entry_id: str) -> SetAside:
        """Forget a set-aside entry (its VDIs become usable again); returns what it was."""
        path = self.failed_dir / f"{entry_id}.json"
        found = [a for a in self.set_aside_entries() if a.id == entry_id]
        if not found:
            raise MetadataError(f"no set-aside journal entry {entry_id}",
                                details={"entry": entry_id})
        atomic.unlink(path)
        return found[0]

    def _remove_stray_locks(self) -> None:
        # A writer killed between creating its lock file and its entry leaves a lock file alone.
        for name in os.listdir(self.directory):
            if not name.endswith(".lock") or name.startswith("."):
                continue
            entry_id = name.removesuffix(".lock")
            if (self.directory / f"{entry_id}.json").exists():
                continue
            fd = _open_locked(self.directory / name, blocking=False)
            if fd is None:
                continue
            try:
                if not (self.directory / f"{entry_id}.json").exists():
                    os.unlink(self.directory / name)
            finally:
                os.close(fd)
