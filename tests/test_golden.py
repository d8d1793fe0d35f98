"""Golden files for the wire protocol, run through a real driver executable.

Every directory under `tests/golden/` holding a `request.xml` is one case (the layout is
`tests/golden/<command>/request.xml`, or `tests/golden/<command>/<case>/request.xml` when a
command has several). Next to it:

- `response.xml`: the expected stdout, after normalisation (below);
- `case.json` (optional): `{"executable": "bin/FileSR", "setup": ["setup1.xml", ...],
  "env": {"NAME": "value"}}`. `executable` is relative to the repository root (default
  `bin/FileSR`); `setup` requests run first, in order, in the same temporary state, and must
  succeed; `env` is added to the environment.

Placeholders: `{tmp}` in requests, setup requests and env values is replaced by a fresh
temporary directory (SM_STATE_DIR is `{tmp}/state`, SM_RUN_DIR `{tmp}/run`). In the actual
response, that directory becomes `{tmp}` and every uuid that does not appear in the request
becomes `{uuid}` (uuids the request names are kept, so a wrong one is caught).

Run with UPDATE_GOLDEN=1 to (re)write `response.xml` files; review the diff before committing.
The executable runs under this interpreter, with `tests/testdist` on PYTHONPATH (the test SR
type); exit status must be 0 and stdout exactly one response document.
"""

from __future__ import annotations

import json
import os
import re
import xmlrpc.client
from pathlib import Path

import pytest

from tests.smtest import ROOT, run_exe

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = sorted(p.parent for p in GOLDEN.rglob("request.xml"))
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _fill(text: str, tmp: Path) -> str:
    return text.replace("{tmp}", str(tmp))


def normalise(response: str, request: str, tmp: Path) -> str:
    known = {u.lower() for u in UUID_RE.findall(request)}
    text = response.replace(str(tmp), "{tmp}")
    return UUID_RE.sub(lambda m: m.group() if m.group().lower() in known else "{uuid}", text)


@pytest.mark.parametrize("case", CASES, ids=[str(c.relative_to(GOLDEN)) for c in CASES])
def test_golden(case: Path, tmp_path: Path) -> None:
    meta_file = case / "case.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    exe = ROOT / meta.get("executable", "bin/FileSR")
    env = {k: _fill(v, tmp_path) for k, v in meta.get("env", {}).items()}

    for name in meta.get("setup", []):
        proc = run_exe(exe, _fill((case / name).read_text(), tmp_path), tmp=tmp_path, **env)
        assert proc.returncode == 0, proc.stderr
        xmlrpc.client.loads(proc.stdout)  # raises Fault if a setup step failed

    request = _fill((case / "request.xml").read_text(), tmp_path)
    proc = run_exe(exe, request, tmp=tmp_path, **env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("<methodResponse>") == 1, proc.stdout
    try:
        xmlrpc.client.loads(proc.stdout)
    except xmlrpc.client.Fault:
        pass
    actual = normalise(proc.stdout, request, tmp_path)

    expected_file = case / "response.xml"
    if UPDATE:
        expected_file.write_text(actual)
    assert expected_file.exists(), f"{expected_file} missing: run with UPDATE_GOLDEN=1"
    assert actual == expected_file.read_text(), proc.stderr
