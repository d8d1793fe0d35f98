"""Nothing escapes the SR (issue 15) on LVHD: commands naming a VG that is not an SR (an
ordinary VG of the SR's name without MGT, or with an MGT LV that holds no SR record) answer
SRUnavailable (47) and write nothing to the devices (real lvm2 on loop devices, root)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from srtypes.lvhd import LVHDSR
from srtypes.lvhd.lvm import VG_PREFIX
from tests.smapi import InProcess, SMFault, request

from .conftest import LvmSandbox, MiB, VgHandle

pytestmark = pytest.mark.root

VDI = "0d7a3c1e-5b2f-4e61-9a0b-3c4d5e6f7a8b"
COMMANDS: list[tuple[str, list[Any]]] = [
    ("sr_attach", []), ("sr_scan", []), ("sr_update", []), ("sm_vdi_list", []),
    ("vdi_create", [str(MiB)]), ("vdi_delete", []), ("vdi_update", []),
    ("vdi_attach", ["true"]), ("vdi_detach", []), ("vdi_activate", ["true"]),
    ("vdi_deactivate", []), ("vdi_snapshot", []), ("vdi_clone", []),
    ("vdi_resize", [str(8 * MiB)]), ("vdi_revert", [""]), ("sm_vdi_get", []),
    ("sm_gc_run", []), ("sr_delete", []),
]


def _state(vg: VgHandle) -> tuple[list[tuple[str, int, str]], list[str]]:
    """The VG's LVs (name, size, tags) and a digest of every byte of its PVs."""
    lvs = sorted((lv.name, lv.size, ",".join(sorted(lv.tags))) for lv in vg.lvm.lvs(vg.name))
    digests = []
    for path in vg.files:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        digests.append(h.hexdigest())
    return lvs, digests


@pytest.fixture(scope="module")
def not_srs(lvm_sandbox: LvmSandbox) -> dict[str, VgHandle]:
    """Two VGs named as SRs are: one without MGT (with a data LV), one whose MGT LV holds
    zeros (no valid record slot)."""
    plain = lvm_sandbox.new_vg(pv_size=64 * MiB)
    plain.lvm.lvcreate(plain.name, "data", 4 * MiB)
    zeroed = lvm_sandbox.new_vg(pv_size=64 * MiB)
    zeroed.lvm.lvcreate(zeroed.name, "MGT", 8 * MiB)
    return {"no-mgt": plain, "zero-mgt": zeroed}


ZERO_MGT = {"sr_attach", "vdi_create", "vdi_detach", "vdi_deactivate", "sr_delete"}
CASES = [("no-mgt", c, a) for c, a in COMMANDS] + [
    ("zero-mgt", c, a) for c, a in COMMANDS if c in ZERO_MGT]


@pytest.mark.parametrize(("kind", "command", "args"), CASES,
                         ids=[f"{k}-{c}" for k, c, _ in CASES])
def test_vg_that_is_not_an_sr_is_47_and_untouched(not_srs: dict[str, VgHandle], tmp_path: Path,
                                                  kind: str, command: str,
                                                  args: list[Any]) -> None:
    vg = not_srs[kind]
    transport = InProcess(env={"SM_RUN_DIR": str(tmp_path / "run"),
                               "SM_STATE_DIR": str(tmp_path / "state")}, driver=LVHDSR)
    sr_uuid = vg.name.removeprefix(VG_PREFIX)
    struct = request(command, args, device_config={"device": ",".join(vg.devices)},
                     sr_uuid=sr_uuid, vdi_uuid=VDI)
    before = _state(vg)
    with pytest.raises(SMFault) as info:
        transport.call(struct)
    assert info.value.code == 47, info.value.string
    assert _state(vg) == before
