"""sm.locking: flock-based locks across real processes and threads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sm import locking
from sm.errors import LockErr, SRUnavailable

HOLDER = (
    "import sys\n"
    "from sm.locking import lock\n"
    "with lock(sys.argv[1], shared=sys.argv[2] == 'shared', purpose='test-holder'):\n"
    "    print('locked', flush=True)\n"
    "    sys.stdin.read()\n"
)


class Holder:
    """A separate process holding a lock until released or killed."""

    def __init__(self, path: Path, shared: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), "shared" if shared else "exclusive"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(10) == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(10) == -signal.SIGKILL

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for h in started:
        h.cleanup()


def hold(holders: list[Holder], path: Path, shared: bool = False) -> Holder:
    h = Holder(path, shared)
    holders.append(h)
    return h


def test_lock_and_unlock(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    with locking.lock(path) as handle:
        assert handle.held()
        holder = handle.holder()
        assert holder is not None and holder.pid == os.getpid()
    assert not handle.held()
    assert path.exists() and path.read_bytes() == b""  # holder record cleared, file kept


def test_timeout_names_lock_and_holder(tmp_path: Path, holders: list[Holder]) -> None:
    path = tmp_path / "sr.lock"
    h = hold(holders, path)
    start = time.monotonic()
    with pytest.raises(LockErr) as info:
        with locking.lock(path, timeout=0.3):
            pass
    assert time.monotonic() - start >= 0.3
    err = info.value
    assert err.code == 37
    assert str(path) in err.message
    assert f"pid {h.proc.pid}" in err.message and "test-holder" in err.message
    assert err.details["lock"] == str(path)
    h.release()
    with locking.lock(path, timeout=5):
        pass


def test_zero_timeout_tries_once(tmp_path: Path, holders: list[Holder]) -> None:
    path = tmp_path / "x.lock"
    hold(holders, path)
    with pytest.raises(LockErr):
        with locking.lock(path, timeout=0):
            pass


def test_killed_holder_frees_lock(tmp_path: Path, holders: list[Holder]) -> None:
    path = tmp_path / "x.lock"
    h = hold(holders, path)
    with pytest.raises(LockErr):
        with locking.lock(path, timeout=0.1):
            pass
    h.kill()
    with locking.lock(path, timeout=5) as handle:
        holder = handle.holder()
        assert holder is not None and holder.pid == os.getpid()


def test_waiter_gets_lock_when_holder_releases(tmp_path: Path, holders: list[Holder]) -> None:
    path = tmp_path / "x.lock"
    h = hold(holders, path)
    timer = threading.Timer(0.3, h.release)
    timer.start()
    start = time.monotonic()
    with locking.lock(path, timeout=10):
        assert time.monotonic() - start >= 0.25
    timer.join()


def test_shared_locks_coexist_and_exclude_writers(tmp_path: Path, holders: list[Holder]) -> None:
    path = tmp_path / "x.lock"
    hold(holders, path, shared=True)
    hold(holders, path, shared=True)
    with locking.lock(path, shared=True, timeout=1):
        pass
    with pytest.raises(LockErr) as info:
        with locking.lock(path, timeout=0.2):
            pass
    assert "shared" in info.value.message


def test_exclusive_excludes_shared(tmp_path: Path, holders: list[Holder]) -> None:
    path = tmp_path / "x.lock"
    hold(holders, path)
    with pytest.raises(LockErr):
        with locking.lock(path, shared=True, timeout=0.2):
            pass


def test_reentrant_in_one_thread(tmp_path: Path, holders: list[Holder]) -> None:
    path = tmp_path / "x.lock"
    with locking.lock(path):
        with locking.lock(path, timeout=0):
            with locking.lock(path, shared=True, timeout=0):
                pass
        # Still held after the inner blocks: another process cannot get it.
        proc = subprocess.run(
            [sys.executable, "-c",
             "import sys\nfrom sm.locking import lock\n"
             "with lock(sys.argv[1], timeout=0.1): pass\n", str(path)],
            capture_output=True, text=True, check=False,
        )
        assert proc.returncode != 0 and "LockErr" in proc.stderr
    h = hold(holders, path)  # and free afterwards
    h.release()


def test_shared_reentrant_and_no_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with locking.lock(path, shared=True):
        with locking.lock(path, shared=True, timeout=0):
            pass
        with pytest.raises(LockErr, match="upgrade"):
            with locking.lock(path, timeout=0):
                pass


def test_threads_exclude_each_other(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    inside = 0
    worst = 0
    counter_lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        nonlocal inside, worst
        try:
            for _ in range(20):
                with locking.lock(path, timeout=30):
                    with counter_lock:
                        inside += 1
                        worst = max(worst, inside)
                    time.sleep(0.001)
                    with counter_lock:
                        inside -= 1
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert worst == 1


def test_other_thread_times_out(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    result: list[BaseException | None] = []

    def other() -> None:
        try:
            with locking.lock(path, timeout=0.1):
                result.append(None)
        except LockErr as err:
            result.append(err)

    with locking.lock(path):
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert isinstance(result[0], LockErr)
    assert "another thread" in result[0].message


def test_release_without_hold(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        locking.FileLock(tmp_path / "x.lock").release()


def test_processes_serialize(tmp_path: Path) -> None:
    """Several processes increment a counter file under the lock; no update is lost."""
    path = tmp_path / "sr"
    path.mkdir()
    locking.init_sr_locks(path)
    counter = path / "counter"
    counter.write_text("0")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from sm.locking import sr_lock\n"
        "sr = Path(sys.argv[1])\n"
        "for _ in range(50):\n"
        "    with sr_lock(sr, timeout=60):\n"
        "        c = sr / 'counter'\n"
        "        c.write_text(str(int(c.read_text()) + 1))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)]) for _ in range(4)]
    assert [p.wait(120) for p in procs] == [0, 0, 0, 0]
    assert counter.read_text() == "200"


def test_forked_child_does_not_hold(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with locking.lock(path):
        pid = os.fork()
        if pid == 0:  # child: the registry is fresh, so the lock is contended
            try:
                with locking.lock(path, timeout=0.1):
                    os._exit(1)
            except LockErr:
                os._exit(0)
            os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def test_sr_and_vdi_lock_paths(tmp_path: Path, holders: list[Holder]) -> None:
    sr = tmp_path / "sr"
    sr.mkdir()
    uuid = "3f1c6a0e-8a3b-4c55-9d7e-0a2b4c6d8e0f"
    with pytest.raises(SRUnavailable):  # no .sm/locks: not an SR, and nothing is created
        with locking.sr_lock(sr):
            pass
    with pytest.raises(SRUnavailable):
        with locking.vdi_lock(sr, uuid):
            pass
    assert list(sr.iterdir()) == []
    locking.init_sr_locks(sr)
    assert locking.sr_lock_path(sr) == sr / ".sm" / "locks" / "sr.lock"
    assert locking.vdi_lock_path(sr, uuid) == sr / ".sm" / "locks" / f"vdi-{uuid}.lock"
    with pytest.raises(ValueError):
        locking.vdi_lock_path(sr, "../evil")
    with locking.sr_lock(sr, purpose="vdi_snapshot"):
        with locking.vdi_lock(sr, uuid):
            pass
    hold(holders, locking.vdi_lock_path(sr, uuid))
    with locking.sr_lock(sr, timeout=0):  # different files: independent
        with pytest.raises(LockErr):
            with locking.vdi_lock(sr, uuid, timeout=0.05):
                pass
