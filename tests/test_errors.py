from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from sm import errors
from sm.errors import SMError, error_by_code, error_by_name

# The reference table (docs/smapiv1.md): number -> name.
TABLE = {
    1: "InvalidArg", 16: "SRInUse", 24: "VDIInUse", 37: "LockErr", 38: "Unimplemented",
    39: "SRNotEmpty", 40: "SRScan", 42: "SRExists", 43: "VDIExists", 44: "SRNoSpace",
    46: "VDIUnavailable", 47: "SRUnavailable", 48: "SRUnknownType", 50: "LVMCreate",
    51: "LVMDelete", 52: "LVMMount", 53: "LVMUnMount", 54: "LVMWrite", 55: "LVMPartCreate",
    56: "LVMPartInUse", 57: "LVMFilesystem", 58: "LVMMaster", 59: "LVMResize", 60: "LVMSize",
    61: "FileSRCreate", 62: "FileSRRmDir", 63: "FileSRDelete", 64: "VDIRemove", 65: "VDILoad",
    66: "VDIType", 72: "NFSVersion", 73: "NFSMount", 74: "NFSUnMount", 75: "NFSAttached",
    76: "NFSDelete", 78: "VDICreate", 79: "VDISize", 80: "VDIDelete", 81: "VDIClone",
    82: "VDISnapshot", 90: "ConfigDeviceMissing", 94: "ConfigLocationMissing",
    101: "ConfigServerPathMissing", 102: "ConfigServerMissing", 108: "NFSTarget",
    109: "SnapshotChainTooLong", 110: "VDIResize", 115: "ConfigParamsMissing",
    143: "BadRequest", 144: "VDIMissing", 181: "MetadataError", 200: "EIO", 202: "SMGeneral",
    447: "IllegalXMLChar", 1200: "GenericException",
}  # fmt: skip


@pytest.mark.parametrize(("code", "name"), sorted(TABLE.items()))
def test_table(code: int, name: str) -> None:
    cls = error_by_code(code)
    assert cls.code == code
    assert cls.name == name == cls.__name__
    assert getattr(errors, name) is cls
    assert error_by_name(name) is cls
    assert issubclass(cls, SMError)
    assert cls.description


def test_codes_and_names_unique_and_complete() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, SMError)]
    classes.remove(SMError)
    assert len({c.code for c in classes}) == len(classes)
    assert {c.code: c.name for c in classes} == TABLE


def test_unknown_code() -> None:
    with pytest.raises(KeyError):
        error_by_code(9999)


def test_fault_string_and_message() -> None:
    err = errors.VDIMissing("vdi 1234 is gone", details={"path": "/x"})
    assert err.message == "vdi 1234 is gone"
    assert err.fault_string == "VDI could not be found [opterr=vdi 1234 is gone]"
    assert "144" in str(err) and "VDIMissing" in str(err)
    assert dict(err.details) == {"path": "/x"}
    with pytest.raises(TypeError):
        err.details["x"] = "y"  # type: ignore[index]
    assert errors.SRScan().fault_string == "The SR scan failed"


def test_root_is_general_error_and_catchable() -> None:
    assert (SMError.code, SMError.name) == (202, "SMGeneral")
    with pytest.raises(SMError) as info:
        raise errors.LockErr("timeout")
    assert info.value.code == 37


def test_subclass_for_a_type_specific_error() -> None:
    class MyTimeout(errors.LockErr):
        pass

    assert MyTimeout.code == 37 and MyTimeout.__doc__ is not None
    assert error_by_code(37) is errors.LockErr  # the table is not changed by subclasses


def test_standard_library_only() -> None:
    source = Path(errors.__file__).read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for name in names:
                assert name is not None
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "__future__", name
