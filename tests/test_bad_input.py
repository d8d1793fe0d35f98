"""Hostile and broken requests against the File SR, through `bin/FileSR` and in-process.

Each gets the right Fault (BadRequest 143 for a wrong shape, InvalidArg 1 for a wrong value,
Unimplemented 38 for an unknown command, VDIMissing 144 for a VDI that does not exist), the
driver exits 0 with exactly one response on stdout, and nothing on the SR changes (directory
tree and file hashes compared before and after).
"""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.contract.conftest import FILE
from tests.contract.harness import SRHarness, tree_state
from tests.smapi import InProcess, Outcome, Process, dumps, request

MiB = 1 << 20
VDI = "7d100000-0000-4000-8000-0000000000aa"  # not on the SR
LONG = "a" * 5000
ARG_MAX_STRLEN = 32 * 4096  # Linux MAX_ARG_STRLEN


@dataclass
class Ctx:
    sr: SRHarness
    vdi: str
    snap: str

    def struct(self, command: str, args: Any = (), *, vdi: str | None = None, **extra: Any
               ) -> dict[str, Any]:  # fmt: skip
        return self.sr.struct(command, args, vdi=vdi, **extra)

    def doc(self, command: str, args: Any = (), *, vdi: str | None = None, **extra: Any) -> str:
        return dumps(self.struct(command, args, vdi=vdi, **extra))


def _call(method: str, *params: Any) -> str:
    return xmlrpc.client.dumps(params, methodname=method, allow_none=True)


def _replace(doc: str, old: str, new: str) -> str:
    assert old in doc, (old, doc)
    return doc.replace(old, new)


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">]>
<methodCall><methodName>sr_scan</methodName><params><param><value><struct>
<member><name>command</name><value>&lol5;</value></member></struct></value></param></params>
</methodCall>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<methodCall><methodName>sr_scan</methodName><params><param><value><struct>
<member><name>sr_uuid</name><value>&xxe;</value></member></struct></value></param></params>
</methodCall>"""

EXTERNAL_DTD = """<?xml version="1.0"?>
<!DOCTYPE methodCall SYSTEM "http://127.0.0.1:9/evil.dtd">
<methodCall><methodName>sr_scan</methodName><params/></methodCall>"""


def _deep(ctx: Ctx) -> str:
    inner = "<value><array><data>" * 200 + "</data></array></value>" * 200
    return _replace(ctx.doc("sr_scan"), "<name>args</name>\n<value><array><data>\n</data></array></value>",
                    f"<name>args</name>\n{inner}")  # fmt: skip


# id -> (document builder, expected fault code(s))
CASES: dict[str, tuple[Callable[[Ctx], str], tuple[int, ...]]] = {
    # -- not a well-formed methodCall: BadRequest
    "empty": (lambda c: "", (143,)),
    "not-xml": (lambda c: "hello, world", (143,)),
    "truncated": (lambda c: c.doc("sr_scan")[:-40], (143,)),
    "wrong-root": (lambda c: "<methodResponse><params/></methodResponse>", (143,)),
    "billion-laughs": (lambda c: BILLION_LAUGHS, (143,)),
    "external-entity": (lambda c: EXTERNAL_ENTITY, (143,)),
    "external-dtd": (lambda c: EXTERNAL_DTD, (143,)),
    "huge-document": (
        lambda c: _replace(c.doc("sr_scan"), "OpaqueRef:9a1c-session", "x" * (2 * MiB)),
        (143,),
    ),
    "deep-nesting": (_deep, (143,)),
    "nul-char-ref": (
        lambda c: _replace(
            c.doc("vdi_delete", vdi=c.vdi),
            f"<value><string>{c.vdi}</string></value>\n</member>\n<member>\n<name>vdi_ref",
            f"<value><string>{c.vdi[:8]}&#0;{c.vdi[9:]}</string></value>\n</member>\n<member>\n<name>vdi_ref",
        ),
        (143,),
    ),
    # -- wrong shape: BadRequest
    "no-params": (lambda c: _call("sr_scan"), (143,)),
    "two-structs": (lambda c: _call("sr_scan", c.struct("sr_scan"), c.struct("sr_scan")), (143,)),
    "param-not-struct": (lambda c: _call("sr_scan", "a string"), (143,)),
    "args-not-array": (lambda c: dumps({**c.struct("vdi_create"), "args": str(MiB)}), (143,)),
    "device-config-not-struct": (lambda c: c.doc("sr_scan", device_config="location=/etc"), (143,)),
    "device-config-int-value": (lambda c: c.doc("sr_scan", device_config={"location": 5}), (143,)),
    "missing-device-config": (lambda c: c.doc("sr_scan", device_config=None), (143,)),
    "missing-sr-uuid": (lambda c: c.doc("vdi_create", [str(MiB)], sr_uuid=None), (143,)),
    "missing-vdi-uuid": (lambda c: c.doc("vdi_delete", vdi=c.vdi, vdi_uuid=None), (143,)),
    "missing-size": (lambda c: c.doc("vdi_create", []), (143,)),
    "missing-writable": (lambda c: c.doc("vdi_attach", [], vdi=c.vdi), (143,)),
    "sr-uuid-int": (lambda c: c.doc("sr_scan", sr_uuid=12), (143,)),
    "command-mismatch": (lambda c: dumps(c.struct("sr_scan"), method="sr_delete"), (143,)),
    # -- wrong values: InvalidArg
    "size-text": (lambda c: c.doc("vdi_create", ["ten gigabytes"]), (1,)),
    "size-negative": (lambda c: c.doc("vdi_create", ["-1048576"]), (79,)),  # VDISize
    "size-float": (lambda c: c.doc("vdi_create", ["1.5e9"]), (1,)),
    "size-beyond-2^63": (lambda c: c.doc("vdi_create", ["9" * 30]), (79,)),
    "size-huge-digits": (lambda c: c.doc("vdi_create", ["1" * 100_000]), (79, 143)),
    "resize-text": (lambda c: c.doc("vdi_resize", ["big"], vdi=c.vdi), (1,)),
    "writable-maybe": (lambda c: c.doc("vdi_attach", ["maybe"], vdi=c.vdi), (1,)),
    "is-a-snapshot-yes": (lambda c: c.doc("vdi_create", [str(MiB), "", "", "", "yes"]), (1,)),
    "sr-uuid-dotdot": (lambda c: c.doc("sr_scan", sr_uuid="../../etc"), (1,)),
    "vdi-uuid-dotdot": (lambda c: c.doc("vdi_delete", vdi="../../etc"), (1,)),
    "vdi-uuid-abs": (lambda c: c.doc("vdi_delete", vdi="/etc/passwd"), (1,)),
    "vdi-uuid-long": (lambda c: c.doc("vdi_delete", vdi=LONG), (1,)),
    "location-dotdot": (lambda c: c.doc("vdi_delete", vdi=c.vdi, vdi_location="../../etc"), (1,)),
    "location-abs": (lambda c: c.doc("vdi_delete", vdi=c.vdi, vdi_location="/etc/passwd"), (1,)),
    "location-is-dotdot": (lambda c: c.doc("vdi_delete", vdi=c.vdi, vdi_location=".."), (1,)),
    "location-is-dot": (lambda c: c.doc("vdi_snapshot", vdi=c.vdi, vdi_location="."), (1,)),
    "location-long": (lambda c: c.doc("vdi_delete", vdi=c.vdi, vdi_location=LONG), (1,)),
    "location-slash": (lambda c: c.doc("vdi_clone", vdi=c.vdi, vdi_location=f"x/{c.vdi}"), (1,)),
    "revert-target-dotdot": (lambda c: c.doc("vdi_revert", ["../../etc/passwd"], vdi=c.snap), (1,)),
    "introduce-location-dotdot": (
        lambda c: c.doc(
            "vdi_introduce", new_uuid=VDI, vdi_location="../../etc/passwd", vdi_sm_config={}
        ),
        (1,),
    ),
    "introduce-uuid-dotdot": (
        lambda c: c.doc("vdi_introduce", new_uuid="../x", vdi_location=VDI, vdi_sm_config={}),
        (1,),
    ),
    # -- unknown commands: Unimplemented
    "unknown-command": (lambda c: c.doc("vdi_frobnicate", vdi=c.vdi), (38,)),
    "unknown-sr-command": (lambda c: c.doc("sr_format_all_disks"), (38,)),
    "dunder-command": (lambda c: c.doc("__init__"), (38, 143)),
    "method-is-path": (
        lambda c: dumps({**c.struct("sr_scan"), "command": "../../bin/sh"}, method="../../bin/sh"),
        (38, 143),
    ),
    # -- valid shape, VDI not there: VDIMissing
    "unknown-vdi-delete": (lambda c: c.doc("vdi_delete", vdi=VDI), (144,)),
    "unknown-vdi-snapshot": (lambda c: c.doc("vdi_snapshot", vdi=VDI), (144,)),
    "unknown-vdi-revert": (lambda c: c.doc("vdi_revert", [c.vdi], vdi=VDI), (144,)),
    "unknown-vdi-resize": (lambda c: c.doc("vdi_resize", [str(8 * MiB)], vdi=VDI), (144,)),
    # -- sizes the File SR cannot hold: VDISize (or VDICreate)
    "size-2^62": (lambda c: c.doc("vdi_create", [str(2**62)]), (79, 78)),
    "resize-2^62": (lambda c: c.doc("vdi_resize", [str(2**62)], vdi=c.vdi), (79, 110)),
    "resize-shrink": (lambda c: c.doc("vdi_resize", [str(MiB)], vdi=c.vdi), (79,)),
}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ctx]:
    reason = FILE.unavailable()
    if reason:
        pytest.skip(reason)
    sr = SRHarness.make(FILE, tmp_path_factory.mktemp("bad-input")).create()
    vdi = sr.vdi_create(4 * MiB, "victim")
    sr.write(vdi, [(0, b"precious" * 1000)])
    snap = sr.snapshot(vdi)
    yield Ctx(sr, vdi, snap)


def _state(ctx: Ctx) -> tuple[dict[str, str], dict[str, str]]:
    # the SR itself, and /etc-like decoys outside it that a traversal could reach
    return tree_state(Path(ctx.sr.device_config["location"])), tree_state(ctx.sr.workdir / "state")


INPROC_ONLY = {"huge-document"}  # bigger than one argv string can be: no toolstack can send it
PARAMS = [
    (c, t)
    for c in sorted(CASES)
    for t in ("process", "inproc")
    if not (t == "process" and c in INPROC_ONLY)
]


@pytest.mark.parametrize("case,transport", PARAMS, ids=[f"{c}-{t}" for c, t in PARAMS])
def test_bad_input(ctx: Ctx, case: str, transport: str) -> None:
    build, codes = CASES[case]
    document = build(ctx)
    if transport == "process":
        assert len(document.encode()) <= ARG_MAX_STRLEN, "list this case in INPROC_ONLY"
    t = (Process if transport == "process" else InProcess)(env=dict(ctx.sr.transport.env))
    if isinstance(t, Process):
        t.executable = FILE.executable
    else:
        t.driver = FILE.driver_class()
    before = _state(ctx)
    outcome: Outcome = t.send(document)
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.responses() == 1, outcome.stdout
    assert "Traceback" not in outcome.stdout
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(outcome.stdout)
    assert info.value.faultCode in codes, (info.value.faultCode, info.value.faultString)
    assert _state(ctx) == before, "a refused request changed the SR"
    ctx.sr.assert_content(ctx.vdi)


def test_no_argument_and_two_arguments(ctx: Ctx) -> None:
    """bin/FileSR with zero or two arguments: BadRequest, exit 0, one response."""
    import subprocess
    import sys

    for argv in ([], [ctx.doc("sr_scan"), ctx.doc("sr_scan")]):
        proc = subprocess.run(
            [sys.executable, str(FILE.executable), *argv],
            capture_output=True, text=True, timeout=60, check=False,
            env={**ctx.sr.transport.env, "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("<methodResponse>") == 1
        with pytest.raises(xmlrpc.client.Fault) as info:
            xmlrpc.client.loads(proc.stdout)
        assert info.value.faultCode == 143


def test_driver_info_needs_nothing(ctx: Ctx) -> None:
    """sr_get_driver_info with nothing but the command answers (no session, no SR)."""
    t = Process(env=dict(ctx.sr.transport.env), executable=FILE.executable)
    minimal = xmlrpc.client.dumps(({"command": "sr_get_driver_info", "args": []},),
                                  methodname="sr_get_driver_info")  # fmt: skip
    assert t.send(minimal).value()["capabilities"]
    assert t.call(request("sr_get_driver_info"))["required_api_version"] == "1.0"
