"""The pause gate of `sm.nbd.export.Export`, with a raw-file stand-in for the engine."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from sm.nbd.export import Export, ExportClosed, ExportError
from tests.nbd.rawdisk import RawDisk


def _raw(path: Path, size: int = 1 << 20) -> str:
    path.write_bytes(bytes(size))
    return str(path)


class SlowDisk(RawDisk):
    """Writes take a while and can be watched, to test draining."""

    started = threading.Event()

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self.started.set()
        time.sleep(0.2)
        super().write(offset, data)


def _export(path: str, cls: type[RawDisk] = RawDisk) -> tuple[Export, list[RawDisk]]:
    opened: list[RawDisk] = []

    def opener(p: str, writable: bool) -> RawDisk:
        disk = cls(p, writable)
        opened.append(disk)
        return disk

    exp = Export(opener, path, writable=True)
    exp.start()
    return exp, opened


def _in_thread(fn, *args, **kw) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn(*args, **kw))
        except Exception as err:
            out.append(err)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def test_read_write_flush_fua(tmp_path: Path) -> None:
    exp, opened = _export(_raw(tmp_path / "a"))
    exp.write(4096, b"x" * 512, fua=True)
    assert opened[0].flushes == 1
    assert exp.read(4096, 512) == b"x" * 512
    exp.flush()
    assert opened[0].flushes == 2
    assert exp.status()["state"] == "running"


def test_pause_holds_requests_until_resume(tmp_path: Path) -> None:
    exp, opened = _export(_raw(tmp_path / "a"))
    st = exp.pause()
    assert st["state"] == "paused" and opened[0].closed and opened[0].flushes == 1
    t, out = _in_thread(exp.write, 0, b"y" * 512)
    t.join(0.2)
    assert t.is_alive() and not out  # held, not failed
    assert exp.pause()["pauses"] == 1  # idempotent
    exp.resume()
    t.join(2)
    assert out == [None]
    assert len(opened) == 2 and exp.read(0, 512) == b"y" * 512


def test_pause_drains_in_flight_then_flushes(tmp_path: Path) -> None:
    SlowDisk.started.clear()
    exp, opened = _export(_raw(tmp_path / "a"), SlowDisk)
    t, _ = _in_thread(exp.write, 0, b"z" * 512)
    assert SlowDisk.started.wait(2)
    exp.pause()
    assert not t.is_alive()  # the write finished before pause answered
    assert opened[0].closed
    assert (tmp_path / "a").read_bytes()[:512] == b"z" * 512


def test_pause_timeout_keeps_running(tmp_path: Path) -> None:
    SlowDisk.started.clear()
    exp, _ = _export(_raw(tmp_path / "a"), SlowDisk)
    t, _ = _in_thread(exp.write, 0, b"z" * 512)
    assert SlowDisk.started.wait(2)
    with pytest.raises(ExportError, match="in flight"):
        exp.pause(timeout=0.01)
    assert exp.status()["state"] == "running"
    t.join(2)


def test_resume_on_new_path(tmp_path: Path) -> None:
    a = _raw(tmp_path / "a")
    b = tmp_path / "b"
    b.write_bytes(b"\x07" * (1 << 20))
    exp, _ = _export(a)
    with pytest.raises(ExportError, match="pause before"):
        exp.resume(str(b))
    exp.pause()
    st = exp.resume(str(b))
    assert st["path"] == str(b) and st["generation"] == 1
    assert exp.read(0, 4) == b"\x07" * 4
    assert exp.resume(str(b))["generation"] == 1  # idempotent


def test_failed_reopen_stays_paused(tmp_path: Path) -> None:
    exp, _ = _export(_raw(tmp_path / "a"))
    exp.pause()
    with pytest.raises(FileNotFoundError):
        exp.resume(str(tmp_path / "missing"))
    assert exp.status()["state"] == "paused"
    exp.resume()
    assert exp.status()["state"] == "running"


def test_shutdown_fails_held_requests(tmp_path: Path) -> None:
    exp, opened = _export(_raw(tmp_path / "a"))
    exp.pause()
    t, out = _in_thread(exp.read, 0, 512)
    t.join(0.1)
    exp.shutdown()
    t.join(2)
    assert isinstance(out[0], ExportClosed)
    assert exp.shutdown()["state"] == "closed"
    with pytest.raises(ExportClosed):
        exp.resume()
    assert opened[0].closed


def test_zero_writes_only_non_zero_chunks(tmp_path: Path) -> None:
    writes: list[tuple[int, int]] = []

    class Recording(RawDisk):
        def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
            writes.append((offset, len(data)))
            super().write(offset, data)

    size = 8 << 20
    exp, _ = _export(_raw(tmp_path / "a", size), Recording)
    exp.write(5 << 20, b"\x01" * 4096)
    writes.clear()
    exp.zero(0, size)
    assert writes == [(4 << 20, 2 << 20)]  # only the chunk holding data
    assert exp.read(0, size) == bytes(size)
