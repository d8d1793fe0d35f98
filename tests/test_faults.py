"""sm.faults: crash points kill the process only when armed."""

from __future__ import annotations

import os
import subprocess
import sys
import timeit

import pytest

from sm import faults

CHILD = (
    "import sys\n"
    "from sm.faults import crash_point\n"
    "for i in range(1, 6):\n"
    "    crash_point('other')\n"
    "    print(i, flush=True)\n"
    "    crash_point('loop')\n"
    "print('done', flush=True)\n"
)


def run_child(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in (faults.ENABLE_VAR, faults.CRASH_VAR)}
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=False
    )


def test_unarmed_runs_through() -> None:
    proc = run_child({})
    assert proc.returncode == 0
    assert proc.stdout.split() == ["1", "2", "3", "4", "5", "done"]


def test_crash_at_first_hit() -> None:
    proc = run_child(faults.crash_env("loop"))
    assert proc.returncode == -9
    assert proc.stdout.split() == ["1"]
    assert "crashing at loop" in proc.stderr


def test_crash_at_nth_hit() -> None:
    proc = run_child(faults.crash_env("loop", 3))
    assert proc.returncode == -9
    assert proc.stdout.split() == ["1", "2", "3"]


def test_needs_enable_variable() -> None:
    proc = run_child({faults.CRASH_VAR: "loop"})
    assert proc.returncode == 0


def test_in_process_armed_other_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "_ARMED", True)
    monkeypatch.setenv(faults.CRASH_VAR, "something-else")
    faults.crash_point("not-this-one")


def test_in_process_unarmed_is_cheap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "_ARMED", False)
    monkeypatch.setenv(faults.CRASH_VAR, "x")
    n = 100_000
    seconds = timeit.timeit(lambda: faults.crash_point("x"), number=n)
    print(f"crash_point unarmed: {seconds / n * 1e9:.0f} ns per call")
