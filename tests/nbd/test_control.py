"""The control protocol: request parsing, the socket server, the client."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from sm.nbd import control


def test_parse_words_and_json() -> None:
    assert control.parse_request("pause\n") == {"cmd": "pause"}
    assert control.parse_request("resume /sr/a b.vhd") == {"cmd": "resume", "path": "/sr/a b.vhd"}
    assert control.parse_request('{"cmd": "pause", "drain_timeout": 3}') == {
        "cmd": "pause", "drain_timeout": 3}
    for bad in ("", "  ", '{"path": "x"}', '{"cmd": 1}'):
        with pytest.raises(ValueError):
            control.parse_request(bad)


def test_server_and_client(run_dir: str) -> None:
    seen: list[dict[str, Any]] = []

    def status(req: Any) -> dict[str, Any]:
        seen.append(dict(req))
        return {"state": "running"}

    def fail(req: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    path = f"{run_dir}/c.ctl"
    srv = control.ControlServer(path, {"status": status, "fail": fail})
    srv.start()
    try:
        assert control.call(path, "status", path="/x", drain_timeout=None) == {"state": "running"}
        assert seen == [{"cmd": "status", "path": "/x"}]
        with pytest.raises(control.ControlError, match="boom") as info:
            control.call(path, "fail")
        assert info.value.kind == "RuntimeError"
        with pytest.raises(control.ControlError, match="unknown command"):
            control.call(path, "nope")
        # plain words, several requests on one connection
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
            s.sendall(b"status\nstatus\n")
            stream = s.makefile("rb")
            lines = stream.readline(), stream.readline()
        assert [json.loads(line)["ok"] for line in lines] == [True, True]
    finally:
        srv.stop()
    with pytest.raises(control.ControlUnavailable):
        control.call(path, "status")
