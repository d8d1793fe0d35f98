"""The one exception tree of the storage manager, with SMAPIv1 error numbers.

Every error a driver reports to the toolstack is an `SMError` subclass carrying its SM error
number (`code`, the XML-RPC faultCode) and name (`name`) as class attributes, plus a fixed
human `description`. Instances add a free-form message (the original's "opterr") and optional
`details` (logged, never put on the wire). Translation to an XML-RPC Fault happens in exactly one
place, `sm.dispatch`; nothing here knows about XML.

Numbers and names follow the public SM error table (XE_SR_ERRORCODES). A toolstack maps 38 to
"not implemented" (it triggers fallbacks), 39 to SR_NOT_EMPTY, 24 to VDI_IN_USE, 16 to
SR_DEVICE_IN_USE, 144 to VDI_MISSING and any other N to SR_BACKEND_FAILURE_N.

Standard library only: the nbdkit-side code imports this module too.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

__all__ = ["SMError", "error_by_code", "error_by_name"]


class SMError(Exception):
    """Root of all storage-manager errors.

    Raised directly it means "general backend error" (202); raise a subclass when one fits.
    """

    code: ClassVar[int] = 202
    name: ClassVar[str] = "SMGeneral"
    description: ClassVar[str] = "General backend error"

    def __init__(self, message: str = "", *, details: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: Mapping[str, str] = MappingProxyType(dict(details or {}))

    @property
    def fault_string(self) -> str:
        """The faultString on the wire: the description, plus ` [opterr=<message>]` as the
        original drivers write it (toolstacks and humans look for `opterr`)."""
        if self.message:
            return f"{self.description} [opterr={self.message}]"
        return self.description

    def __str__(self) -> str:
        return f"{self.name} ({self.code}): {self.fault_string}"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__ and "name" not in cls.__dict__:
            cls.name = cls.__name__  # an SM error class is named as the table names it
        if cls.__doc__ is None:
            cls.__doc__ = f"SM error {cls.code} ({cls.name}): {cls.description}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


# One class per SM error, written out so that mypy, IDEs and subclasses see real classes; its
# `name` is the class name. What a component's failure (OS, engine, lvm2, Ceph, NBD) means as
# one of these is decided in one place, `sm.edge`.


class InvalidArg(SMError):
    code = 1
    description = "Invalid argument"


class SRInUse(SMError):
    code = 16
    description = "The SR device is currently in use"


class VDIInUse(SMError):
    code = 24
    description = "The VDI is currently in use"


class LockErr(SMError):
    code = 37
    description = "The lock/unlock request failed"


class Unimplemented(SMError):
    code = 38
    description = "The requested method is not supported/implemented"


class SRNotEmpty(SMError):
    code = 39
    description = "The SR is not empty"


class SRScan(SMError):
    code = 40
    description = "The SR scan failed"


class SRExists(SMError):
    code = 42
    description = "The SR already exists"


class VDIExists(SMError):
    code = 43
    description = "The VDI already exists"


class SRNoSpace(SMError):
    code = 44
    description = "There is insufficient space"


class VDIUnavailable(SMError):
    code = 46
    description = "The VDI is not available"


class SRUnavailable(SMError):
    code = 47
    description = "The SR is not available"


class SRUnknownType(SMError):
    code = 48
    description = "Unknown repository type"


class LVMCreate(SMError):
    code = 50
    description = "Logical Volume creation error"


class LVMDelete(SMError):
    code = 51
    description = "Logical Volume deletion error"


class LVMMount(SMError):
    code = 52
    description = "Logical Volume mount/activate error"


class LVMUnMount(SMError):
    code = 53
    description = "Logical Volume unmount/deactivate error"


class LVMWrite(SMError):
    code = 54
    description = "Logical Volume write error"


class LVMPartCreate(SMError):
    code = 55
    description = "Logical Volume partition creation error"


class LVMPartInUse(SMError):
    code = 56
    description = "Logical Volume partition in use"


class LVMFilesystem(SMError):
    code = 57
    description = "Logical Volume filesystem creation error"


class LVMMaster(SMError):
    code = 58
    description = "Logical Volume request must come from master"


class LVMResize(SMError):
    code = 59
    description = "Logical Volume resize failed"


class LVMSize(SMError):
    code = 60
    description = "Logical Volume invalid size"


class FileSRCreate(SMError):
    code = 61
    description = "File SR creation error"


class FileSRRmDir(SMError):
    code = 62
    description = "File SR failed to remove directory"


class FileSRDelete(SMError):
    code = 63
    description = "File SR deletion error"


class VDIRemove(SMError):
    code = 64
    description = "Failed to remove VDI"


class VDILoad(SMError):
    code = 65
    description = "Failed to load VDI"


class VDIType(SMError):
    code = 66
    description = "Invalid VDI type"


class NFSVersion(SMError):
    code = 72
    description = "Required NFS server version unsupported"


class NFSMount(SMError):
    code = 73
    description = "NFS mount error"


class NFSUnMount(SMError):
    code = 74
    description = "NFS unmount error"


class NFSAttached(SMError):
    code = 75
    description = "NFS mount point already attached"


class NFSDelete(SMError):
    code = 76
    description = "Failed to remove NFS mount point"


class VDICreate(SMError):
    code = 78
    description = "VDI Creation failed"


class VDISize(SMError):
    code = 79
    description = "VDI Invalid size"


class VDIDelete(SMError):
    code = 80
    description = "Failed to mark VDI hidden"


class VDIClone(SMError):
    code = 81
    description = "Failed to clone VDI"


class VDISnapshot(SMError):
    code = 82
    description = "Failed to snapshot VDI"


class ConfigDeviceMissing(SMError):
    code = 90
    description = "The request is missing the device parameter"


class ConfigLocationMissing(SMError):
    code = 94
    description = "The request is missing the location parameter"


class ConfigServerPathMissing(SMError):
    code = 101
    description = "The request is missing the serverpath parameter"


class ConfigServerMissing(SMError):
    code = 102
    description = "The request is missing the server parameter"


class NFSTarget(SMError):
    code = 108
    description = "Unable to detect an NFS service on this target."


class SnapshotChainTooLong(SMError):
    code = 109
    description = "The snapshot chain is too long"


class VDIResize(SMError):
    code = 110
    description = "VDI resize failed"


class ConfigParamsMissing(SMError):
    code = 115
    description = "Not all required parameters specified."


class BadRequest(SMError):
    code = 143
    description = "Failed to parse the request"


class VDIMissing(SMError):
    code = 144
    description = "VDI could not be found"


class MetadataError(SMError):
    code = 181
    description = "Error in Metadata volume operation for SR."


class EIO(SMError):
    code = 200
    description = "General IO error"


class SMGeneral(SMError):
    code = 202
    description = "General backend error"


class IllegalXMLChar(SMError):
    code = 447
    description = "Illegal XML character."


class GenericException(SMError):
    code = 1200
    description = "An unexpected error occurred"


_ALL: tuple[type[SMError], ...] = tuple(
    obj
    for obj in list(globals().values())
    if isinstance(obj, type) and issubclass(obj, SMError) and obj is not SMError
)
_BY_CODE: Mapping[int, type[SMError]] = MappingProxyType({cls.code: cls for cls in _ALL})
_BY_NAME: Mapping[str, type[SMError]] = MappingProxyType({cls.name: cls for cls in _ALL})
__all__ += [cls.name for cls in _ALL]


def error_by_code(code: int) -> type[SMError]:
    """The error class with SM error number `code`; KeyError for a number not in the table."""
    return _BY_CODE[code]


def error_by_name(name: str) -> type[SMError]:
    """The error class called `name` (e.g. "VDIMissing"); KeyError if unknown."""
    return _BY_NAME[name]

