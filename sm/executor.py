"""The one way sm runs external programs (lvm, mount, qemu-img, ...).

Code that needs a subprocess takes an :class:`Executor` as a constructor argument, so unit tests
can pass a :class:`RecordingExecutor` (records every call, replays canned results) while
integration tests pass a :class:`SubprocessExecutor` and run the real programs.

Rules: commands are argv lists, never shell strings; ``env`` holds *additions* to the current
environment; ``input`` is fed to stdin (otherwise stdin is ``/dev/null``); stdout and stderr
are captured as bytes. With ``check=True`` (the default) a non-zero exit raises
:class:`CommandError`, which carries argv, exit status and the tail of stderr. A command that
runs longer than ``timeout`` seconds is killed and raises :class:`CommandTimeout`; a program
that cannot be started raises :class:`CommandNotFound`.

Standard library only.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 20
STDERR_TAIL_CHARS = 2000


@dataclass(frozen=True)
class Result:
    """What a finished command produced."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes = b""
    stderr: bytes = b""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def text(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")


def stderr_tail(stderr: bytes, lines: int = STDERR_TAIL_LINES) -> str:
    text = stderr.decode("utf-8", "replace").strip()
    tail = "\n".join(text.splitlines()[-lines:])
    return tail[-STDERR_TAIL_CHARS:]


class CommandError(Exception):
    """A command failed (non-zero exit, could not start, or timed out)."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stderr: bytes = b"",
        *,
        stdout: bytes = b"",
        message: str | None = None,
    ) -> None:
        self.argv: tuple[str, ...] = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout
        self.stderr_tail = stderr_tail(stderr)
        if message is None:
            message = f"command {shlex.join(self.argv)!r} failed with exit status {returncode}"
            if self.stderr_tail:
                message += f": {self.stderr_tail}"
        self.message = message
        super().__init__(message)

    @classmethod
    def from_result(cls, result: Result) -> CommandError:
        return cls(result.argv, result.returncode, result.stderr, stdout=result.stdout)


class CommandTimeout(CommandError):
    """The command ran longer than its timeout and was killed."""

    def __init__(self, argv: Sequence[str], timeout: float, stderr: bytes = b"") -> None:
        self.timeout = timeout
        super().__init__(
            argv,
            None,
            stderr,
            message=f"command {shlex.join(argv)!r} timed out after {timeout:g} s and was killed",
        )


class CommandNotFound(CommandError):
    """The program could not be started (missing, not executable)."""

    def __init__(self, argv: Sequence[str], reason: str) -> None:
        super().__init__(
            argv, None, message=f"cannot run {shlex.join(argv)!r}: {reason}"
        )


class Executor(Protocol):
    """Runs one command to completion."""

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> Result: ...


def _validate_argv(argv: Sequence[str]) -> tuple[str, ...]:
    if isinstance(argv, str | bytes):
        raise TypeError("argv must be a sequence of strings, not a shell string")
    args = tuple(argv)
    if not args:
        raise ValueError("argv is empty")
    for arg in args:
        if not isinstance(arg, str):
            raise TypeError(f"argv items must be str, got {type(arg).__name__}: {arg!r}")
    return args


class SubprocessExecutor:
    """Runs real programs with :func:`subprocess.run` (never through a shell)."""

    def __init__(self, *, default_timeout: float | None = None) -> None:
        self.default_timeout = default_timeout

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> Result:
        args = _validate_argv(argv)
        if timeout is None:
            timeout = self.default_timeout
        full_env = None
        if env:
            full_env = dict(os.environ)
            full_env.update(env)
        started = time.monotonic()
        try:
            proc = subprocess.run(
                args,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                env=full_env,
                timeout=timeout,
                check=False,
                close_fds=True,
            )
        except subprocess.TimeoutExpired as err:
            assert timeout is not None
            raise CommandTimeout(args, timeout, err.stderr or b"") from err
        except OSError as err:
            raise CommandNotFound(args, err.strerror or str(err)) from err
        result = Result(args, proc.returncode, proc.stdout, proc.stderr)
        log.debug(
            "ran %s -> %d in %.3f s", shlex.join(args), proc.returncode, time.monotonic() - started
        )
        if check and not result.ok:
            raise CommandError.from_result(result)
        return result


@dataclass(frozen=True)
class Call:
    """One call seen by a :class:`RecordingExecutor`."""

    argv: tuple[str, ...]
    env: Mapping[str, str] | None = None
    input: bytes | None = None
    timeout: float | None = None


@dataclass
class _Rule:
    prefix: tuple[str, ...]
    results: list[Result | BaseException] = field(default_factory=list)


class UnexpectedCommand(AssertionError):
    """A :class:`RecordingExecutor` without a fallback got a command no rule matches."""


class RecordingExecutor:
    """Records calls and replays canned results, for unit tests.

    ``on(prefix, ...)`` registers a result for every argv starting with ``prefix``; the longest
    matching prefix wins. Several results registered for the same prefix are replayed in order
    and the last one repeats. An exception registered with ``raises=`` is raised instead. A
    command no rule matches goes to ``fallback`` (e.g. a real :class:`SubprocessExecutor`, to
    record the calls of an integration test) or raises :class:`UnexpectedCommand`.
    """

    def __init__(self, fallback: Executor | None = None) -> None:
        self.fallback = fallback
        self.calls: list[Call] = []
        self._rules: list[_Rule] = []

    def on(
        self,
        prefix: Iterable[str],
        *,
        returncode: int = 0,
        stdout: bytes | str = b"",
        stderr: bytes | str = b"",
        raises: BaseException | None = None,
    ) -> RecordingExecutor:
        key = tuple(prefix)
        rule = next((r for r in self._rules if r.prefix == key), None)
        if rule is None:
            rule = _Rule(key)
            self._rules.append(rule)
        if raises is not None:
            rule.results.append(raises)
        else:
            out = stdout.encode() if isinstance(stdout, str) else stdout
            err = stderr.encode() if isinstance(stderr, str) else stderr
            rule.results.append(Result(key, returncode, out, err))
        return self

    @property
    def argvs(self) -> list[tuple[str, ...]]:
        return [c.argv for c in self.calls]

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> Result:
        args = _validate_argv(argv)
        self.calls.append(Call(args, dict(env) if env else None, input, timeout))
        matching = [r for r in self._rules if args[: len(r.prefix)] == r.prefix]
        if not matching:
            if self.fallback is None:
                raise UnexpectedCommand(f"no canned result for {shlex.join(args)!r}")
            return self.fallback.run(args, env=env, input=input, timeout=timeout, check=check)
        rule = max(matching, key=lambda r: len(r.prefix))
        canned = rule.results.pop(0) if len(rule.results) > 1 else rule.results[0]
        if isinstance(canned, BaseException):
            raise canned
        result = Result(args, canned.returncode, canned.stdout, canned.stderr)
        if check and not result.ok:
            raise CommandError.from_result(result)
        return result
