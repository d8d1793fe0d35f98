from __future__ import annotations

import sys

import pytest

from sm.executor import (
    CommandError,
    CommandNotFound,
    CommandTimeout,
    RecordingExecutor,
    Result,
    SubprocessExecutor,
    UnexpectedCommand,
)

PY = sys.executable


def test_run_captures_stdout_stderr_and_status() -> None:
    ex = SubprocessExecutor()
    r = ex.run([PY, "-c", "import sys; print('out'); print('err', file=sys.stderr)"])
    assert r == Result(r.argv, 0, b"out\n", b"err\n")
    assert r.ok and r.text() == "out\n"


def test_no_shell_and_argv_validation() -> None:
    ex = SubprocessExecutor()
    r = ex.run(["echo", "$HOME; rm -rf /"])
    assert r.stdout == b"$HOME; rm -rf /\n"
    with pytest.raises(TypeError):
        ex.run("echo hi")
    with pytest.raises(ValueError):
        ex.run([])


def test_env_additions_and_input() -> None:
    ex = SubprocessExecutor()
    code = "import os, sys; sys.stdout.write(os.environ['SM_X'] + os.environ['PATH'][:0] + sys.stdin.read())"
    r = ex.run([PY, "-c", code], env={"SM_X": "x:"}, input=b"fed")
    assert r.stdout == b"x:fed"
    # Without input, stdin is /dev/null: a reader gets EOF instead of hanging.
    r = ex.run([PY, "-c", "import sys; print(repr(sys.stdin.read()))"], timeout=10)
    assert r.stdout == b"''\n"


def test_check_raises_with_status_and_stderr_tail() -> None:
    ex = SubprocessExecutor()
    code = "import sys; [print(f'line {i}', file=sys.stderr) for i in range(100)]; sys.exit(3)"
    with pytest.raises(CommandError) as info:
        ex.run([PY, "-c", code])
    err = info.value
    assert err.returncode == 3
    assert err.argv[0] == PY
    assert "line 99" in err.stderr_tail and "line 0\n" not in err.stderr_tail
    assert "exit status 3" in str(err) and "line 99" in str(err)
    r = ex.run([PY, "-c", code], check=False)
    assert r.returncode == 3


def test_timeout_and_missing_program() -> None:
    ex = SubprocessExecutor()
    with pytest.raises(CommandTimeout) as info:
        ex.run(["sleep", "10"], timeout=0.2)
    assert "timed out after 0.2 s" in str(info.value)
    with pytest.raises(CommandNotFound):
        ex.run(["/nonexistent/program"])
    assert issubclass(CommandTimeout, CommandError)


def test_recording_longest_prefix_sequence_and_check() -> None:
    rec = RecordingExecutor()
    rec.on(["lvs"], stdout="generic")
    rec.on(["lvs", "vg"], stdout=b"first").on(["lvs", "vg"], stdout=b"second")
    rec.on(["lvcreate"], returncode=5, stderr="already exists")
    rec.on(["boom"], raises=CommandTimeout(["boom"], 1.0))
    assert rec.run(["lvs", "other"]).stdout == b"generic"
    assert rec.run(["lvs", "vg", "-o", "x"]).stdout == b"first"
    assert rec.run(["lvs", "vg"]).stdout == b"second"
    assert rec.run(["lvs", "vg"]).stdout == b"second"  # the last one repeats
    with pytest.raises(CommandError, match="already exists"):
        rec.run(["lvcreate", "-n", "a"], env={"A": "1"}, input=b"i", timeout=3)
    assert rec.run(["lvcreate"], check=False).returncode == 5
    with pytest.raises(CommandTimeout):
        rec.run(["boom"])
    with pytest.raises(UnexpectedCommand):
        rec.run(["vgs"])
    assert rec.argvs[0] == ("lvs", "other")
    assert rec.calls[4].env == {"A": "1"} and rec.calls[4].input == b"i"
    assert rec.calls[4].timeout == 3


def test_recording_fallback_runs_for_real() -> None:
    rec = RecordingExecutor(fallback=SubprocessExecutor())
    assert rec.run(["echo", "hi"]).stdout == b"hi\n"
    assert rec.argvs == [("echo", "hi")]
