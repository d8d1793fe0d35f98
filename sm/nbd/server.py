"""Driver side of the data path: start, find, pause, resume and stop one nbdkit per VDI.

Each server is an `nbdkit -f` process detached from the caller (double fork, new session,
stdin from /dev/null, stdout/stderr to `<run_dir>/<uuid>.log`, cwd /), so it outlives the driver
process that started it. Its record `<run_dir>/<uuid>.json` (written atomically) lets later
driver calls find it again; the control socket (`sm.nbd.control`) is the authority on whether
it is alive, so a record of a killed server is recognised as stale and cleaned up.

Files per VDI in `run_dir`: `<uuid>.json` (record), `<uuid>.sock` (NBD), `<uuid>.ctl`
(control), `<uuid>.pid` (nbdkit's pidfile: written once it listens), `<uuid>.log`.
Unix socket paths are limited to 107 bytes, so `run_dir` must be short (e.g. /run/sm/nbd).

Callers serialize calls for one VDI (the SR holds the VDI lock).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import shutil
import signal
import socket
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from sm import atomic
from sm.edge import errors_as
from sm.errors import InvalidArg, SMError, VDIInUse, VDIUnavailable
from sm.nbd import control
from sm.owner import alive, this_process

__all__ = ["ServerInfo", "find", "params_nbd", "pause", "pause_orphaned", "resume", "start",
           "status", "stop"]

log = logging.getLogger(__name__)

PLUGIN = str(Path(__file__).with_name("plugin.py"))
SUN_PATH_MAX = 107
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
_SCRUB_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")


@dataclass(frozen=True)
class ServerInfo:
    """Where a running server is and what it serves."""

    vdi_uuid: str
    socket: str
    export_name: str
    pid: int
    control: str
    leaf_path: str
    writable: bool
    log: str

    @property
    def params_nbd(self) -> str:
        return params_nbd(self)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> ServerInfo:
        raw = json.loads(data)
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__})


def params_nbd(info: ServerInfo) -> str:
    """The `params_nbd` of a vdi_attach result."""
    return f"nbd:unix:{info.socket}:exportname={info.export_name}"


def _paths(vdi_uuid: str, run_dir: str) -> dict[str, str]:
    base = os.path.join(os.path.abspath(run_dir), vdi_uuid)
    return {ext: f"{base}.{ext}" for ext in ("json", "sock", "ctl", "pid", "log")}


def _running(pid: int) -> bool:
    """`pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _pid_alive(pid: int, control_path: str) -> bool:
    """True if `pid` is a live (non-zombie) nbdkit serving `control_path`. The command line
    check guards against a recycled pid."""
    if not _running(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    if not any(argv):
        return True  # exiting: its memory is gone (empty cmdline) but it is not a zombie yet
    return f"control={control_path}".encode() in argv


def _remove_files(paths: dict[str, str], *, keep_log: bool) -> None:
    for ext, path in paths.items():
        if ext == "log" and keep_log:
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _read_record(path: str) -> ServerInfo | None:
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError):
        return ServerInfo.from_json(Path(path).read_bytes())
    return None


def find(vdi_uuid: str, run_dir: str) -> ServerInfo | None:
    """The live server of `vdi_uuid`, or None. A stale record (server killed) is removed."""
    paths = _paths(vdi_uuid, run_dir)
    info = _read_record(paths["json"])
    if info is not None and _pid_alive(info.pid, info.control):
        return info
    # No usable record: a server may still answer (e.g. the driver died before writing it).
    try:
        st = control.call(paths["ctl"], "status", timeout=5.0)
    except control.ControlError:
        # callers without the VDI lock (the API) may get here while a driver starts a new
        # server: its record, once written, is the authority; its files are not stale
        now = _read_record(paths["json"])
        if now is not None and now != info and _pid_alive(now.pid, now.control):
            return now
        if info is not None or os.path.exists(paths["json"]):
            log.warning("removing the stale data-path record of VDI %s", vdi_uuid)
        _remove_files(paths, keep_log=True)
        return None
    info = ServerInfo(vdi_uuid=vdi_uuid, socket=paths["sock"], export_name=str(st["export"]),
                      pid=int(st["pid"]), control=paths["ctl"], leaf_path=str(st["path"]),
                      writable=bool(st["writable"]), log=paths["log"])
    atomic.write_atomic(paths["json"], info.to_json(), mode=0o600)
    return info


def _spawn_detached(argv: list[str], log_path: str, env: dict[str, str]) -> int:
    """Run `argv` as a grandchild in its own session (so the caller's exit, signals to its
    process group and its reaping do not concern it); return the grandchild's pid.

    The grandchild execs only once the child between them has exited (it is then a child of
    the reaper): `nbdkit -f` arms PR_SET_PDEATHSIG(SIGTERM) early in its start-up, before it
    installs its signal handlers, so a child still alive at that point killed the server
    with its exit, silently (under load, when the child was scheduled late)."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: only async-signal-safe-ish os calls until exec
        code = 0
        try:
            os.close(rfd)
            os.setsid()
            me = os.getpid()
            gone_r, gone_w = os.pipe()  # EOF in the grandchild: this child has exited
            grandchild = os.fork()
            if grandchild == 0:
                os.close(gone_w)
                os.close(wfd)
                while os.read(gone_r, 1):
                    pass
                while os.getppid() == me:  # files close before the reparenting in exit
                    time.sleep(0.001)
                fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.closerange(3, os.sysconf("SC_OPEN_MAX"))
                os.chdir("/")
                os.execve(argv[0], argv, env)
            os.write(wfd, str(grandchild).encode())
        except BaseException:
            code = 127
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        data = r.read()
    os.waitpid(pid, 0)
    if not data:
        raise VDIUnavailable(f"could not start {argv[0]}")
    return int(data)


START_ATTEMPTS = 3


class _DiedSilently(VDIUnavailable):
    """nbdkit exited during start-up without logging anything."""


def start(vdi_uuid: str, leaf_path: str, *, writable: bool, run_dir: str,
          export_name: str | None = None, opener: str | None = None,
          opener_arg: str | None = None, timeout: float = READY_TIMEOUT) -> ServerInfo:
    """Serve the chain whose leaf is `leaf_path` as export `export_name` (default the uuid).

    Idempotent: a live server with the same leaf and mode is returned as is; one with a
    different leaf or mode raises VDIInUse. `opener` (`module:function`) replaces the engine's
    file opener (raw files, LVM volumes: then `leaf_path` is only a name the opener resolves,
    with `opener_arg` handed to it). Returns once the server accepts NBD connections.

    A start where nbdkit dies before it logs anything is retried (logged at debug level
    only), up to START_ATTEMPTS in all; the known cause of such deaths, the parent-death
    signal, is avoided by `_spawn_detached`."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return _start(vdi_uuid, leaf_path, writable=writable, run_dir=run_dir,
                          export_name=export_name, opener=opener, opener_arg=opener_arg,
                          timeout=timeout)
        except _DiedSilently:
            if attempt == START_ATTEMPTS:
                raise
            log.debug("VDI %s: nbdkit died at start without a word; retrying", vdi_uuid)
    raise AssertionError("unreachable")


def _start(vdi_uuid: str, leaf_path: str, *, writable: bool, run_dir: str,
           export_name: str | None, opener: str | None, opener_arg: str | None,
           timeout: float) -> ServerInfo:
    nbdkit = shutil.which("nbdkit")
    if nbdkit is None:
        raise VDIUnavailable("nbdkit is not installed")
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    paths = _paths(vdi_uuid, run_dir)
    if len(paths["sock"].encode()) > SUN_PATH_MAX:
        raise InvalidArg(f"run directory {run_dir!r} is too long for a Unix socket path")
    leaf = os.path.abspath(leaf_path)
    name = export_name or vdi_uuid
    existing = find(vdi_uuid, run_dir)
    if existing is not None:
        if existing.leaf_path == leaf and existing.writable == writable:
            return existing
        raise VDIInUse(f"VDI {vdi_uuid} is already served from {existing.leaf_path} "
                       f"({'rw' if existing.writable else 'ro'}, pid {existing.pid})")
    if opener is None and not os.path.exists(leaf):
        raise VDIUnavailable(f"{leaf} does not exist")
    _remove_files(paths, keep_log=False)
    argv = [nbdkit, "-f", "-U", paths["sock"], "-P", paths["pid"]]
    if not writable:
        argv.append("-r")
    argv += ["python", PLUGIN, f"leaf={leaf}", f"writable={'true' if writable else 'false'}",
             f"control={paths['ctl']}", f"export={name}", *_packages(opener)]
    if opener:
        argv.append(f"opener={opener}")
    if opener_arg is not None:
        argv.append(f"opener_arg={opener_arg}")
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB_ENV}
    pid = _spawn_detached(argv, paths["log"], env)
    info = ServerInfo(vdi_uuid=vdi_uuid, socket=paths["sock"], export_name=name, pid=pid,
                      control=paths["ctl"], leaf_path=leaf, writable=writable, log=paths["log"])
    # Record first, so a driver that dies while waiting leaves a server that can be found.
    atomic.write_atomic(paths["json"], info.to_json(), mode=0o600)
    try:
        _wait_ready(info, paths["pid"], timeout)
    except BaseException:
        stop(info, run_dir=run_dir, keep_log=True)
        raise
    log.info("serving VDI %s from %s on %s (pid %d)", vdi_uuid, leaf, info.socket, pid)
    return info


def _packages(opener: str | None) -> list[str]:
    """`package=<name>:<dir>` for `sm` and the opener's top-level package: nbdkit's Python (the
    system's, not this process's) loads them from where this process imported them."""
    names = ["sm", (opener or "sm").partition(":")[0].split(".")[0]]
    out = []
    for name in dict.fromkeys(names):
        path = getattr(importlib.import_module(name), "__path__", None)
        if path:  # a package; a plain module must be on nbdkit's Python's path itself
            out.append(f"package={name}:{next(iter(path))}")
    return out


def _log_tail(info: ServerInfo, lines: int = 15) -> str:
    try:
        text = Path(info.log).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _wait_ready(info: ServerInfo, pidfile: str, timeout: float) -> None:
    """Until nbdkit has written its pidfile (it does so once listening), the control socket
    answers and an NBD connection is accepted."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        if not _running(info.pid):
            tail = _log_tail(info)
            raise (VDIUnavailable if tail else _DiedSilently)(f"nbdkit exited at start: {tail}")
        if os.path.exists(pidfile):
            try:
                control.call(info.control, "status", timeout=2.0)
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(2.0)
                    s.connect(info.socket)
                    if s.recv(8) == b"NBDMAGIC":
                        return
            except (control.ControlError, OSError):
                pass
        if time.monotonic() > deadline:
            raise VDIUnavailable(f"nbdkit not ready after {timeout} s: {_log_tail(info)}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def status(info: ServerInfo) -> dict[str, Any]:
    """The server's status (see `sm.nbd.control`)."""
    return _call(info, "status")


def pause(info: ServerInfo, *, timeout: float = 60.0, owner: str | None = None
          ) -> dict[str, Any]:
    """Hold new requests, drain, flush and close the chain; returns when done. Idempotent.
    Client connections stay open; their requests wait for `resume`. `owner` (default: the
    calling process, `sm.owner`) is recorded as the pause's owner (`paused_by` in the status,
    see `pause_orphaned`)."""
    return _call(info, "pause", timeout=timeout, drain_timeout=timeout,
                 owner=owner or this_process())


def pause_orphaned(st: dict[str, Any]) -> bool:
    """The status `st` is of a paused server whose pauser is gone (or unknown: a server of
    an older version): nobody will resume it but recovery. A pause held by a live process
    (a driver inside `live`, an in-process reader of the API) is not orphaned."""
    return st.get("state") == "paused" and not alive(st.get("paused_by"))


def resume(info: ServerInfo, new_path: str | None = None, *, run_dir: str | None = None
           ) -> ServerInfo:
    """Reopen the chain (on `new_path` if given: after a live snapshot or revert the leaf is
    a new file) and release held requests. Idempotent. Returns the updated record."""
    path = None if new_path is None else os.path.abspath(new_path)
    _call(info, "resume", path=path)
    if path is None or path == info.leaf_path:
        return info
    info = replace(info, leaf_path=path)
    record = _paths(info.vdi_uuid, run_dir or os.path.dirname(info.control))["json"]
    atomic.write_atomic(record, info.to_json(), mode=0o600)
    return info


def _call(info: ServerInfo, cmd: str, *, timeout: float = 60.0,
          drain_timeout: float | None = None, path: str | None = None,
          owner: str | None = None) -> dict[str, Any]:
    # no server answers: VDIUnavailable 46; the server refused: SMGeneral 202 (sm.edge)
    with errors_as(SMError, f"{cmd} of the data path of VDI {info.vdi_uuid}"):
        answer = control.call(info.control, cmd, timeout=timeout + 5.0, path=path,
                              drain_timeout=drain_timeout, owner=owner)
    return answer


def _wait_gone(pid: int, control_path: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid, control_path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def stop(info: ServerInfo | str, *, run_dir: str | None = None, keep_log: bool = False,
         timeout: float = STOP_TIMEOUT) -> None:
    """Flush and stop the server (given by record, or by VDI uuid with `run_dir`), remove its
    files. Idempotent: a missing or already dead server only has its stale files removed."""
    if isinstance(info, str):
        if run_dir is None:
            raise InvalidArg("stop by VDI uuid needs run_dir")
        found = find(info, run_dir)
        if found is None:
            return
        info = found
    paths = _paths(info.vdi_uuid, run_dir or os.path.dirname(info.control))
    try:
        # pause + flush + close the chain, fail held requests, ask nbdkit to exit
        control.call(info.control, "shutdown", timeout=timeout)
    except control.ControlError as err:
        log.warning("VDI %s: shutdown over control failed (%s); signalling", info.vdi_uuid, err)
    if not _wait_gone(info.pid, info.control, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGTERM)
        if not _wait_gone(info.pid, info.control, timeout):
            log.error("VDI %s: nbdkit pid %d ignores SIGTERM; killing", info.vdi_uuid, info.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGKILL)
            _wait_gone(info.pid, info.control, timeout)
    _remove_files(paths, keep_log=keep_log)
