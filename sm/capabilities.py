"""SR capabilities: the wire strings a driver advertises in `sr_get_driver_info`.

Each SR type declares its set once (`SRDriver.CAPABILITIES`); the dispatcher refuses, with
`Unimplemented` (38) and without touching storage, any command whose required capability
(`COMMAND_CAPABILITY`) is not in that set. Toolstacks rely on that 38 to fall back (e.g. from
`vdi_revert` to `vdi_clone`).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

__all__ = ["COMMAND_CAPABILITY", "Capability"]


class Capability(StrEnum):
    """A capability; the value (and `str()`) is the exact wire string (`NAME` or `NAME/version`)."""

    SR_PROBE = "SR_PROBE"
    SR_UPDATE = "SR_UPDATE"
    SR_SCAN = "SR_SCAN"
    SR_ATTACH = "SR_ATTACH"
    SR_DETACH = "SR_DETACH"
    SR_METADATA = "SR_METADATA"
    SR_TRIM = "SR_TRIM"
    SR_CACHING = "SR_CACHING"
    VDI_CREATE = "VDI_CREATE"
    VDI_DELETE = "VDI_DELETE"
    VDI_ATTACH = "VDI_ATTACH"
    VDI_DETACH = "VDI_DETACH"
    VDI_ACTIVATE = "VDI_ACTIVATE"
    VDI_DEACTIVATE = "VDI_DEACTIVATE"
    VDI_UPDATE = "VDI_UPDATE"
    VDI_INTRODUCE = "VDI_INTRODUCE"
    VDI_CLONE = "VDI_CLONE"
    VDI_SNAPSHOT = "VDI_SNAPSHOT"
    VDI_RESIZE = "VDI_RESIZE"
    VDI_RESIZE_ONLINE = "VDI_RESIZE_ONLINE"
    VDI_REVERT = "VDI_REVERT"
    VDI_MIRROR = "VDI_MIRROR"
    VDI_GENERATE_CONFIG = "VDI_GENERATE_CONFIG"
    VDI_CONFIG_CBT = "VDI_CONFIG_CBT"
    VDI_RESET_ON_BOOT = "VDI_RESET_ON_BOOT/2"
    THIN_PROVISIONING = "THIN_PROVISIONING"
    ATOMIC_PAUSE = "ATOMIC_PAUSE"
    LARGE_VDI = "LARGE_VDI"

    @classmethod
    def from_wire(cls, text: str) -> Capability:
        """The member for a wire string (`VDI_RESET_ON_BOOT/2`); ValueError if unknown."""
        return cls(text)


COMMAND_CAPABILITY: Mapping[str, Capability | None] = MappingProxyType(
    {
        # Answered by every SR type: no capability gates them (the original FileSR does not
        # advertise SR_SCAN/SR_ATTACH/SR_DETACH yet implements them).
        "sr_get_driver_info": None,
        "sr_create": None,
        "sr_delete": None,
        "sr_attach": None,
        "sr_detach": None,
        "sr_scan": None,
        "sr_content_type": None,
        "sr_probe": Capability.SR_PROBE,
        "sr_update": Capability.SR_UPDATE,
        "vdi_create": Capability.VDI_CREATE,
        "vdi_delete": Capability.VDI_DELETE,
        "vdi_update": Capability.VDI_UPDATE,
        "vdi_introduce": Capability.VDI_INTRODUCE,
        "vdi_attach": Capability.VDI_ATTACH,
        "vdi_detach": Capability.VDI_DETACH,
        "vdi_activate": Capability.VDI_ACTIVATE,
        "vdi_deactivate": Capability.VDI_DEACTIVATE,
        "vdi_snapshot": Capability.VDI_SNAPSHOT,
        "vdi_clone": Capability.VDI_CLONE,
        "vdi_resize": Capability.VDI_RESIZE,
        "vdi_resize_online": Capability.VDI_RESIZE_ONLINE,
        "vdi_revert": Capability.VDI_REVERT,
        "vdi_generate_config": Capability.VDI_GENERATE_CONFIG,
    }
)
"""The capability a command needs (None: every SR type answers it). Commands missing from this
map are not part of the protocol."""
