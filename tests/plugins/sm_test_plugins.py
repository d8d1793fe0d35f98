"""Test SR types built on the File SR, registered through the real `sm.srtypes` entry points.

`tests/plugins` holds this module and `sm_test_plugins-0.1.dist-info/entry_points.txt`; with
the directory on sys.path (PYTHONPATH for child processes) importlib.metadata finds them exactly
as an installed vendor distribution. `bin/` holds their driver executables.

- `norevert`: the File SR without VDI_REVERT (the dispatcher answers 38 itself);
- `revert38`: advertises VDI_REVERT, but its vdi_revert answers 38.
"""

from __future__ import annotations

from sm.capabilities import Capability
from sm.errors import Unimplemented
from sm.requests import VDIRevertRequest
from srtypes.file import FileSR


class NoRevertFileSR(FileSR):
    TYPE = "norevert"
    NAME = "File SR without revert (test)"
    CAPABILITIES = FileSR.CAPABILITIES - {Capability.VDI_REVERT}


class Revert38FileSR(FileSR):
    TYPE = "revert38"
    NAME = "File SR whose revert answers 38 (test)"

    def vdi_revert(self, request: VDIRevertRequest) -> None:
        raise Unimplemented("this test SR type cannot revert")
