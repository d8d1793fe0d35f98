"""A real nfs-ganesha server on 127.0.0.1 for the NFS tests.

Design (parallel pytest-xdist workers, and other test runs on the same machine): NFSv3 needs
rpcbind on the standard port, and ganesha ALWAYS registers its programs with rpcbind: a second
ganesha (even v4-only on a private port) replaces the first one's ``nfs 4`` registration and
removes it again when it stops (seen with ganesha 4.3). So there is exactly ONE server per
machine, serving v3 and v4 (0, 1, 2) on the standard ports, shared by every worker and every
concurrent run:

- its state lives in ``$SM_TEST_GANESHA_DIR`` (default ``/tmp/sm-test-ganesha``), guarded by an
  ``flock`` on ``lock`` there;
- each session (one per xdist worker) adds ``holders/<pid>`` and removes it at the end; the last
  one out (dead holders are pruned) stops ganesha with SIGTERM, then rpcbind if a session
  started it (an rpcbind that was already running is left alone);
- ganesha and rpcbind run in their own sessions so that they outlive the worker that started
  them while other workers still use them;
- tests share one export and must work in unique sub-directories (``ganesha.unique_dir()``).

The export's pseudo path (v4) equals its real path (v3), so one ``serverpath`` works for both.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from srtypes.nfs.mounter import BIND_EXPORTS_ENV
from tests.conftest import require_root, require_tool

HOST = "127.0.0.1"
STATE_DIR = Path(os.environ.get("SM_TEST_GANESHA_DIR", "/tmp/sm-test-ganesha"))
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

CONFIG = """\
NFS_CORE_PARAM {{ Protocols = 3, 4; Bind_addr = {host}; Enable_NLM = false; Enable_RQUOTA = false; }}
NFSV4 {{ Graceless = true; RecoveryBackend = fs; RecoveryRoot = {recovery}; }}
EXPORT {{
    Export_Id = 1; Path = {export}; Pseudo = {export};
    Access_Type = RW; Squash = No_Root_Squash; SecType = sys;
    Protocols = 3, 4; Transports = TCP;
    FSAL {{ Name = VFS; }}
}}
"""


@dataclass(frozen=True)
class Ganesha:
    """The shared test server: ``host:export`` serves the local directory ``directory``."""

    host: str
    export: str
    directory: Path
    log: Path
    pid: int

    @property
    def bind_exports(self) -> dict[str, str]:
        """The mapping the test-only BindMounter needs (export path -> local directory)."""
        return {self.export: str(self.directory)}

    @property
    def bind_exports_env(self) -> dict[str, str]:
        return {BIND_EXPORTS_ENV: json.dumps(self.bind_exports)}

    def unique_dir(self, prefix: str = "t") -> str:
        """A fresh sub-directory of the export (created locally); returns its name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        (self.directory / name).mkdir()
        return name


def _alive(pid: int, name: str) -> bool:
    """Whether ``pid`` runs (not a zombie) a program whose command line contains ``name``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX" and name.encode() in cmdline


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _answers(*argv: str) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=5).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _wait_until(check, what: str, proc_pid: int | None, log: Path | None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if check():
            return
        if proc_pid is not None and not _alive(proc_pid, ""):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(proc_pid, os.WNOHANG)
            break
        time.sleep(0.05)
    tail = ""
    if log is not None and log.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise RuntimeError(f"{what} did not come up within {START_TIMEOUT} s\n{tail}")


def _stop(pid: int | None, name: str) -> None:
    if pid is None or not _alive(pid, name):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and _alive(pid, name):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if _alive(pid, name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if this process started it


def _spawn(argv: list[str], log: Path) -> int:
    # posix_spawn rather than Popen: the daemon may outlive this worker (no Popen to reap).
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawnp(argv[0], argv, dict(os.environ), file_actions=actions, setsid=True)


def _ensure_rpcbind() -> None:
    if _answers("rpcinfo", "-p", HOST):
        return
    pid = _spawn(["rpcbind", "-f"], STATE_DIR / "rpcbind.log")
    (STATE_DIR / "rpcbind.pid").write_text(str(pid))
    _wait_until(lambda: _answers("rpcinfo", "-p", HOST), "rpcbind", pid, None)


def _start_ganesha() -> int:
    export, recovery = STATE_DIR / "export", STATE_DIR / "recovery"
    for d in (export, recovery):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    conf = STATE_DIR / "ganesha.conf"
    conf.write_text(CONFIG.format(host=HOST, export=export, recovery=recovery))
    log, pidfile = STATE_DIR / "ganesha.log", STATE_DIR / "ganesha.pid"
    log.unlink(missing_ok=True)
    pidfile.unlink(missing_ok=True)
    argv = ["ganesha.nfsd", "-F", "-f", str(conf), "-L", str(log), "-p", str(pidfile)]
    pid = _spawn(argv, STATE_DIR / "ganesha.out")
    (STATE_DIR / "server.pid").write_text(str(pid))

    def ready() -> bool:
        # Our export in the list: not some other server holding the port.
        try:
            listed = subprocess.run(["showmount", "--no-headers", "-e", HOST],
                                    capture_output=True, text=True, timeout=5).stdout.split()
        except subprocess.TimeoutExpired:
            return False
        return (
            str(export) in listed
            and _alive(pid, "ganesha.nfsd")
            and _answers("rpcinfo", "-T", "tcp", HOST, "100003", "3")
            and _answers("rpcinfo", "-T", "tcp", HOST, "100003", "4")
        )

    _wait_until(ready, "nfs-ganesha", pid, log)
    return pid


@contextlib.contextmanager
def _state_lock() -> Iterator[None]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _holders() -> list[Path]:
    holders = STATE_DIR / "holders"
    holders.mkdir(exist_ok=True)
    live = []
    for h in holders.iterdir():
        if h.name.isdigit() and Path(f"/proc/{h.name}").exists():
            live.append(h)
        else:
            h.unlink(missing_ok=True)
    return live


@pytest.fixture(scope="session")
def ganesha() -> Iterator[Ganesha]:
    """The machine's shared nfs-ganesha test server (started on first use, stopped by the last
    session using it)."""
    require_root()
    require_tool("ganesha.nfsd", "rpcbind", "rpcinfo", "showmount")
    me = STATE_DIR / "holders" / str(os.getpid())
    with _state_lock():
        others = _holders()
        pid = _read_pid(STATE_DIR / "server.pid")
        if not (others and pid is not None and _alive(pid, "ganesha.nfsd")):
            _stop(pid, "ganesha.nfsd")  # a leftover from a killed run
            _ensure_rpcbind()
            pid = _start_ganesha()
        me.parent.mkdir(exist_ok=True)
        me.touch()
    server = Ganesha(
        host=HOST,
        export=str(STATE_DIR / "export"),
        directory=STATE_DIR / "export",
        log=STATE_DIR / "ganesha.log",
        pid=pid,
    )
    try:
        yield server
    finally:
        with _state_lock():
            me.unlink(missing_ok=True)
            if not _holders():
                _stop(_read_pid(STATE_DIR / "server.pid"), "ganesha.nfsd")
                (STATE_DIR / "server.pid").unlink(missing_ok=True)
                _stop(_read_pid(STATE_DIR / "rpcbind.pid"), "rpcbind")
                (STATE_DIR / "rpcbind.pid").unlink(missing_ok=True)
                shutil.rmtree(STATE_DIR / "export", ignore_errors=True)
