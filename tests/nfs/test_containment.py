"""Nothing escapes the SR (issue 15): VDI commands of an NFS SR this host has not mounted
answer SRUnavailable (47) and create nothing, neither under the run directory's mount point
nor anywhere else. No server is contacted on these paths, so no ganesha is needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from srtypes.nfs import NFSSR
from tests.smapi import InProcess, SMFault, request
from tests.srtypes.file.test_containment import VDI, tree

SR = "5a1e0000-0000-4000-8000-00000000c0de"


@pytest.mark.parametrize(("command", "args"), [
    ("vdi_detach", []), ("vdi_deactivate", []), ("vdi_attach", ["false"]),
    ("vdi_activate", ["true"]), ("vdi_create", ["1048576"]), ("sr_scan", []),
    ("vdi_snapshot", []), ("vdi_resize", ["2097152"]), ("sm_vdi_list", []),
])
def test_unmounted_sr_is_47_and_writes_nothing(tmp_path: Path, command: str,
                                               args: list[Any]) -> None:
    run = tmp_path / "run"
    transport = InProcess(env={"SM_RUN_DIR": str(run), "SM_STATE_DIR": str(tmp_path / "st")},
                          driver=NFSSR)
    dconf = {"server": "127.0.0.1", "serverpath": str(tmp_path / "export")}
    struct = request(command, args, device_config=dconf, sr_uuid=SR, vdi_uuid=VDI)
    before = tree(tmp_path)
    with pytest.raises(SMFault) as info:
        transport.call(struct)
    assert info.value.code == 47
    assert tree(tmp_path) == before
