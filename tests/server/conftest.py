"""`sm serve` run as a user runs it (the installed command, a child process), with an isolated
SM_HOME; clients are Python's `xmlrpc.client`."""

from __future__ import annotations

import os
import re
import select
import subprocess
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sm.server.client import connect
from tests.api.conftest import SM, env  # noqa: F401  (the isolated environment fixture)


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    address: str
    token_file: Path
    log_file: Path

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def client(self, token: str | None = "", **kw: object) -> xmlrpc.client.ServerProxy:
        return connect(self.address, self.token if token == "" else token, **kw)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(environ: dict[str, str], tmp: Path, *args: str) -> Served:
    log_file = tmp / f"server-{time.monotonic_ns()}.log"
    child = {**environ, "SM_DATA_PATH": "none", "SM_TEST_TAG": os.environ.get("SM_TEST_TAG", "")}
    proc = subprocess.Popen([str(SM), "serve", "--log-file", str(log_file), *args], env=child,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    line = b""
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            line += chunk
    match = re.match(rb"listening on (\S+) \(token in (.+)\)", line)
    if match is None:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"sm serve did not start: {line!r} {err.decode()[-2000:]}")
    return Served(proc, match.group(1).decode(), Path(match.group(2).decode()), log_file)


@pytest.fixture
def serve(env: dict[str, str], tmp_path: Path  # noqa: F811
          ) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def run(*args: str) -> Served:
        served = start_server(env, tmp_path, *args)
        started.append(served)
        return served

    yield run
    for served in started:
        served.stop()


@pytest.fixture
def server(serve: Callable[..., Served]) -> Served:
    return serve("--listen", "127.0.0.1:0")
