"""Generated: random commands with hostile `location`, uuid and path values never create or
change anything outside the SR directory (issue 15, section 3; docs/file-sr.md
"Containment").

Each example builds a small world: an SR with two VDIs (one with a snapshot), a directory
standing in for /etc, files elsewhere (a VHD, a raw file), a symbolic link to /etc's stand-in,
and links inside the SR pointing at the outside files under image names. Then one command,
with the location drawn from the SR itself, paths around it (`..`, links, `.sm`, missing
parents, the outside directories) and the uuids from the SR's, the links' and random ones.
Whatever it answers, every byte outside the SR directory (per-host state under the run
directory aside) is unchanged, and so are the link targets. `SM_FUZZ_EXAMPLES` sets the
number of examples (default 40).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid as uuidlib
import xmlrpc.client
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sm import dispatch, vhd
from srtypes.file import FileSR

from .test_containment import tree

MiB = 1024 * 1024
EXAMPLES = int(os.environ.get("SM_FUZZ_EXAMPLES", "40"))

COMMANDS = ["sr_attach", "sr_detach", "sr_scan", "sr_update", "sr_delete", "sr_probe",
            "sr_create", "vdi_create", "vdi_delete", "vdi_update", "vdi_introduce",
            "vdi_attach", "vdi_detach", "vdi_activate", "vdi_deactivate", "vdi_snapshot",
            "vdi_clone", "vdi_resize", "vdi_revert", "vdi_generate_config",
            "vdi_attach_from_config", "sm_vdi_list", "sm_vdi_get", "sm_gc_run", "sm_gc_status"]
LOCATIONS = ["sr", "sr/", "sr/.", "sr/../sr", "sr/../etc", "etc", "etc/.sm", "sr/.sm",
             "sr/.sm/locks", "missing/a/b", "elsewhere", "link-to-etc", "link-to-sr",
             "sr/link-dir", "etc/../sr"]
HOSTILE_TEXT = ["../etc/passwd", "..", "/etc", "etc", "sr/../../x", "a" * 300, "", "\x00",
                ".sm", ".tmp-0123456789ab.vhd"]


class World:
    """The files of one example, under a fresh temporary directory: a copy of one template
    (links are relative, so the copy is self-contained) is much cheaper than building it."""

    _template: World | None = None

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sm-fuzz-")) if root is None else root
        self.sr = self.root / "sr"
        self.run = self.root / "run"
        self.vdis: list[str] = []

    @classmethod
    def fresh(cls) -> World:
        template = cls._template
        if template is None:
            template = cls._template = cls()._build()
        world = cls(Path(tempfile.mkdtemp(prefix="sm-fuzz-")))
        shutil.copytree(template.root, world.root, symlinks=True, dirs_exist_ok=True)
        for name in ("sr_uuid", "vdis", "snap", "out_vhd_uuid", "out_raw_uuid"):
            setattr(world, name, getattr(template, name))
        return world

    def _build(self) -> World:
        self.sr_uuid = str(uuidlib.uuid4())
        (self.root / "etc").mkdir()
        (self.root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
        elsewhere = self.root / "elsewhere"
        elsewhere.mkdir()
        self.out_vhd_uuid, self.out_raw_uuid = str(uuidlib.uuid4()), str(uuidlib.uuid4())
        out_vhd = elsewhere / f"{self.out_vhd_uuid}.vhd"
        vhd.create(str(out_vhd), 4 * MiB, uuid=uuidlib.UUID(self.out_vhd_uuid))
        (elsewhere / f"{self.out_raw_uuid}.raw").write_bytes(b"outside raw" * 1000)
        (self.root / "link-to-etc").symlink_to("etc")
        (self.root / "link-to-sr").symlink_to("sr")
        self.call("sr_create", ["0"], location=str(self.sr))
        self.call("sr_attach", location=str(self.sr))
        for _ in range(2):
            ref = self.call("vdi_create", [str(4 * MiB)], location=str(self.sr))
            self.vdis.append(str(ref["uuid"]))
        self.snap = str(self.call("vdi_snapshot", location=str(self.sr),
                                  vdi=self.vdis[0])["uuid"])
        for u, ext in ((self.out_vhd_uuid, "vhd"), (self.out_raw_uuid, "raw")):
            (self.sr / f"{u}.{ext}").symlink_to(f"../elsewhere/{u}.{ext}")
        (self.sr / "link-dir").symlink_to("../etc")
        return self

    def call(self, command: str, args: list[Any] | None = None, *, location: str,
             vdi: str | None = None, sr_uuid: str | None = None, **extra: Any) -> Any:
        params: dict[str, Any] = {
            "command": command, "args": args or [], "host_ref": "OpaqueRef:h",
            "session_ref": "OpaqueRef:s", "sr_ref": "OpaqueRef:sr",
            "device_config": {"location": location, "SRmaster": "true"},
            "sr_uuid": sr_uuid or self.sr_uuid,
        }
        if vdi is not None:
            params.update(vdi_uuid=vdi, vdi_location=extra.pop("vdi_location", vdi),
                          vdi_ref="OpaqueRef:v")
        params.update(extra)
        xml = xmlrpc.client.dumps((params,), methodname=command)
        env = {"SM_RUN_DIR": str(self.run), "SM_STATE_DIR": str(self.root / "state")}
        (value,), _ = xmlrpc.client.loads(dispatch.run(FileSR, xml, environ=env))
        return value

    def outside(self) -> dict[str, Any]:
        """Everything but the SR directory's contents and per-host state."""
        return {k: v for k, v in tree(self.root).items()
                if not (k.startswith(("sr/", "run/", "state/")))}


@st.composite
def requests(draw: st.DrawFn, world_uuids: list[str]) -> dict[str, Any]:
    command = draw(st.sampled_from(COMMANDS))
    location = draw(st.sampled_from(LOCATIONS))
    uuid = draw(st.one_of(st.sampled_from(world_uuids), st.uuids().map(str)))
    # half the time a hostile vdi_location (refused by validation before the SR is touched)
    vdi_location = draw(st.one_of(st.just(uuid), st.sampled_from(HOSTILE_TEXT)))
    sr_uuid = draw(st.one_of(st.just("own"), st.uuids().map(str)))
    size = draw(st.sampled_from([0, 1, MiB, 64 * MiB, 2**40, 2**63 - 1]))
    args: list[Any] = []
    if command in ("vdi_create", "vdi_resize", "sr_create"):
        args = [str(size)]
    elif command in ("vdi_attach", "vdi_activate"):
        args = [draw(st.sampled_from(["true", "false"]))]
    elif command == "vdi_revert":
        args = [draw(st.sampled_from([uuid, "", *HOSTILE_TEXT]))]
    return {"command": command, "location": location, "uuid": uuid,
            "vdi_location": vdi_location, "sr_uuid": sr_uuid, "args": args,
            "new_uuid": draw(st.one_of(st.just(uuid), st.sampled_from(HOSTILE_TEXT)))}


ROLES = ["vdi0", "vdi1", "snap", "out-vhd", "out-raw"]


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_random_hostile_requests_change_nothing_outside_the_sr(
        data: st.DataObject, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SM_DATA_PATH", "none")  # no nbdkit servers left behind
    world = World.fresh()
    try:
        uuids = [*world.vdis, world.snap, world.out_vhd_uuid, world.out_raw_uuid]
        req = data.draw(requests(uuids))
        before = world.outside()
        location = os.path.join(str(world.root), req["location"])
        sr_uuid = world.sr_uuid if req["sr_uuid"] == "own" else req["sr_uuid"]
        try:
            world.call(req["command"], req["args"], location=location, vdi=req["uuid"],
                       sr_uuid=sr_uuid, vdi_location=req["vdi_location"],
                       new_uuid=req["new_uuid"])
        except xmlrpc.client.Fault as fault:
            assert fault.faultCode != 1200, fault.faultString  # a typed answer, always
        after = world.outside()
        assert after == before, (req, sorted(set(after) ^ set(before)))
    finally:
        shutil.rmtree(world.root, ignore_errors=True)
