"""Generator of the File SR golden cases (`tests/golden/<command>/file*/`).

Requests are written as the OCaml toolstack writes them: one line, every string UNTYPED
(`<value>text</value>`), every key xapi sends (one case per command is also sent typed, as
`xmlrpc.client` writes it). VDIs the setup creates have fixed uuids (`vdi_create` honours a
caller-chosen `vdi_uuid`), so responses stay reproducible; `{tmp}` is the runner's directory.

    python -m tests.golden.file_cases          # rewrite request.xml / setup*.xml / case.json
    UPDATE_GOLDEN=1 pytest tests/test_golden.py -k file   # then (re)write response.xml, review

The runner is `tests/test_golden.py` (it runs every case through `bin/FileSR` as a process).
"""

from __future__ import annotations

import json
import shutil
import xmlrpc.client
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

GOLDEN = Path(__file__).resolve().parent
SR = "5a1e0000-0000-4000-8000-000000000001"
X = "7d100000-0000-4000-8000-000000000002"  # a VDI
S = "5aa90000-0000-4000-8000-000000000003"  # a snapshot of X (made by vdi_create)
R = "2a3e0000-0000-4000-8000-000000000004"  # a raw VDI
MiB = 1 << 20


def ocaml(value: Any) -> str:
    """One value the way xapi's XML-RPC writer puts it: untyped strings, no whitespace."""
    if isinstance(value, str):
        return f"<value>{escape(value)}</value>"
    if isinstance(value, list):
        return "<value><array><data>" + "".join(ocaml(v) for v in value) + "</data></array></value>"
    if isinstance(value, dict):
        members = "".join(
            f"<member><name>{escape(k)}</name>{ocaml(v)}</member>" for k, v in value.items()
        )
        return f"<value><struct>{members}</struct></value>"
    raise TypeError(value)


def call(command: str, args: list[str] | None = None, *, typed: bool = False, **fields: Any
         ) -> str:  # fmt: skip
    struct: dict[str, Any] = {"host_ref": "OpaqueRef:6f5d2a0e", "command": command}
    if command != "sr_get_driver_info":
        struct["session_ref"] = "OpaqueRef:9a1c"
    struct["args"] = args or []
    struct["device_config"] = {"SRmaster": "true", "location": "{tmp}/sr"}
    if command not in ("sr_get_driver_info", "sr_probe"):
        struct["sr_ref"] = "OpaqueRef:4b2e"
        struct["sr_uuid"] = SR
    vdi = fields.pop("vdi", None)
    if vdi:
        struct.update(vdi_ref="OpaqueRef:77aa", vdi_location=vdi, vdi_uuid=vdi)
    for key, value in fields.items():
        if value is None:
            struct.pop(key, None)
        else:
            struct[key] = value
    if typed:
        return xmlrpc.client.dumps((struct,), methodname=command)
    params = f"<params><param>{ocaml(struct)}</param></params>"
    return f'<?xml version="1.0"?>\n<methodCall><methodName>{command}</methodName>{params}</methodCall>\n'


def create(uuid: str = X, size: int = 8 * MiB, name: str = "disk X", **extra: Any) -> str:
    args = [str(size), name, "made by the golden setup", "", "false", "", "", "false"]
    sm_config = extra.pop("vdi_sm_config", {})
    return call(
        "vdi_create", args, vdi_uuid=uuid, vdi_type="user", vdi_sm_config=sm_config, **extra
    )


SNAPSHOT_OF_X = call(
    "vdi_create",
    [str(8 * MiB), "disk X", "snapshot", "", "true", "20240102T03:04:05Z", X, "false"],
    vdi_uuid=S,
    vdi_type="user",
    vdi_sm_config={},
)
SR_READY = [call("sr_create", ["0"]), call("sr_attach")]
WITH_X = [*SR_READY, create()]
WITH_S = [*WITH_X, SNAPSHOT_OF_X]

# (command, case) -> (setup requests, request)
CASES: dict[tuple[str, str], tuple[list[str], str]] = {
    ("sr_get_driver_info", "file"): ([], call("sr_get_driver_info", device_config={})),
    ("sr_create", "file"): ([], call("sr_create", ["0"])),
    ("sr_create", "file-exists"): (WITH_X, call("sr_create", ["0"])),
    ("sr_attach", "file"): (SR_READY[:1], call("sr_attach")),
    ("sr_detach", "file"): (SR_READY, call("sr_detach")),
    ("sr_scan", "file"): (WITH_X, call("sr_scan")),
    ("sr_update", "file"): (WITH_X, call("sr_update")),
    ("sr_probe", "file"): (SR_READY, call("sr_probe", sr_sm_config={})),
    ("sr_content_type", "file"): (SR_READY, call("sr_content_type")),
    ("sr_delete", "file"): (SR_READY, call("sr_delete")),
    ("sr_delete", "file-not-empty"): (WITH_X, call("sr_delete")),
    ("sr_attach", "file-no-location"): ([], call("sr_attach", device_config={"SRmaster": "true"})),
    ("vdi_create", "file"): (
        SR_READY,
        call(
            "vdi_create",
            [
                str(10 * 1024**3),
                "my disk",
                "a disk & <more>",
                "",
                "false",
                "19700101T00:00:00Z",
                "",
                "false",
            ],
            vdi_type="user",
            vdi_sm_config={},
        ),
    ),
    ("vdi_create", "file-typed"): (
        SR_READY,
        call(
            "vdi_create",
            [str(5 * MiB + 123), "typed", "", "", "false", "", "", "false"],
            typed=True,
            vdi_type="user",
            vdi_sm_config={},
        ),
    ),
    ("vdi_create", "file-raw"): (
        SR_READY,
        create(R, 3 * MiB, "raw disk", vdi_sm_config={"type": "raw"}),
    ),
    ("vdi_create", "file-chosen-uuid"): (SR_READY, create()),
    ("vdi_delete", "file"): (WITH_X, call("vdi_delete", vdi=X)),
    ("vdi_update", "file"): (WITH_X, call("vdi_update", vdi=X)),
    ("vdi_introduce", "file-exists"): (
        WITH_X,
        call("vdi_introduce", new_uuid=X, vdi_location=X, vdi_sm_config={}),
    ),
    ("vdi_introduce", "file-no-image"): (
        SR_READY,
        call("vdi_introduce", new_uuid=R, vdi_location=R, vdi_sm_config={}),
    ),
    ("vdi_attach", "file"): (WITH_X, call("vdi_attach", ["true"], vdi=X)),
    ("vdi_detach", "file"): (
        [*WITH_X, call("vdi_attach", ["true"], vdi=X)],
        call("vdi_detach", vdi=X),
    ),
    ("vdi_activate", "file"): (
        [*WITH_X, call("vdi_attach", ["true"], vdi=X)],
        call("vdi_activate", ["true"], vdi=X),
    ),
    ("vdi_deactivate", "file"): (
        [*WITH_X, call("vdi_attach", ["true"], vdi=X), call("vdi_activate", ["true"], vdi=X)],
        call("vdi_deactivate", vdi=X),
    ),
    ("vdi_snapshot", "file"): (WITH_X, call("vdi_snapshot", vdi=X, driver_params={})),
    ("vdi_snapshot", "file-single"): (
        WITH_X,
        call("vdi_snapshot", vdi=X, driver_params={"type": "single"}),
    ),
    ("vdi_snapshot", "file-raw"): (
        [*SR_READY, create(R, 3 * MiB, "raw disk", vdi_sm_config={"type": "raw"})],
        call("vdi_snapshot", vdi=R, driver_params={}),
    ),
    ("vdi_snapshot", "file-missing"): (SR_READY, call("vdi_snapshot", vdi=X, driver_params={})),
    ("vdi_clone", "file"): (WITH_X, call("vdi_clone", vdi=X, driver_params={})),
    ("vdi_resize", "file"): (WITH_X, call("vdi_resize", [str(16 * MiB + 1)], vdi=X)),
    ("vdi_resize", "file-shrink"): (WITH_X, call("vdi_resize", [str(4 * MiB)], vdi=X)),
    ("vdi_resize_online", "file-unadvertised"): (
        WITH_X,
        call("vdi_resize_online", [str(16 * MiB)], vdi=X),
    ),
    ("vdi_revert", "file"): (WITH_S, call("vdi_revert", [X], vdi=S, driver_params={})),
    ("vdi_revert", "file-target-from-snapshot-of"): (
        WITH_S,
        call("vdi_revert", [""], vdi=S, driver_params={}),
    ),
    ("vdi_generate_config", "file"): (WITH_X, call("vdi_generate_config", vdi=X)),
    # exactly the document vdi_generate_config returns, handed back as is
    ("vdi_attach_from_config", "file"): (
        WITH_X,
        xmlrpc.client.dumps(
            (
                {
                    "device_config": {"SRmaster": "true", "location": "{tmp}/sr"},
                    "sr_uuid": SR,
                    "vdi_uuid": X,
                    "command": "vdi_attach_from_config",
                },
            ),
            methodname="vdi_attach_from_config",
        ),
    ),
    ("sm_vdi_list", "file"): (WITH_S, call("sm_vdi_list")),
    ("sm_vdi_get", "file"): (WITH_S, call("sm_vdi_get", vdi=S)),
    ("sm_vdi_get", "file-missing"): (SR_READY, call("sm_vdi_get", vdi=X)),
}


def main() -> None:
    for old in GOLDEN.glob("*/file*/case.json"):
        if json.loads(old.read_text()).get("generator") == "file_cases":
            for stale in old.parent.glob("*.xml"):
                if stale.name != "response.xml":
                    stale.unlink()
    for (command, case), (setup, req) in CASES.items():
        d = GOLDEN / command / case
        d.mkdir(parents=True, exist_ok=True)
        names = []
        for i, text in enumerate(setup, 1):
            name = f"setup{i}.xml"
            (d / name).write_text(text)
            names.append(name)
        (d / "request.xml").write_text(req)
        meta = {"executable": "bin/FileSR", "setup": names, "generator": "file_cases"}
        (d / "case.json").write_text(json.dumps(meta) + "\n")
    known = {GOLDEN / c / k for c, k in CASES}
    for found in GOLDEN.glob("*/file*/case.json"):
        if (
            found.parent not in known
            and json.loads(found.read_text()).get("generator") == "file_cases"
        ):
            shutil.rmtree(found.parent)


if __name__ == "__main__":
    main()
