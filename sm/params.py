"""The values of an SMAPIv1 request struct (`sm.requests` builds the typed requests from them):
validators for uuids, sizes, booleans and locations (public: SR types reuse them for their own
fields) and `Reader`, typed access to the struct whose every error names its key. The rule of
which error applies (BadRequest for a wrong shape, InvalidArg for a bad value) is in
`sm.requests`' docstring."""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from sm.errors import BadRequest, InvalidArg, VDISize
from sm.xmlrpc import Value

__all__ = ["EMPTY", "MAX_SIZE", "UUID_RE", "Reader", "parse_bool", "parse_location",
           "parse_size", "parse_uuid", "parse_vdi_size", "string_map"]

MAX_SIZE = 2**63 - 1
"""Largest size accepted (the largest file offset); SR types apply their own, smaller limits."""

UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_LOCATION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+@-]{0,254}")
EMPTY: Mapping[str, str] = MappingProxyType({})
"""The empty read-only map (a default of every map field)."""


def parse_uuid(value: object, what: str) -> str:
    """A uuid in canonical lowercase form; InvalidArg (BadRequest if not a string)."""
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string")
    if not UUID_RE.fullmatch(value):
        raise InvalidArg(f"{what} is not a uuid: {value[:60]!r}")
    return value.lower()


def parse_size(value: object, what: str) -> int:
    """A size in bytes: a decimal string or an int, 0 <= size <= MAX_SIZE."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRequest(f"{what} must be a string or an integer")
    if isinstance(value, str):
        text = value.strip()
        # Length check first: int() of a huge digit string is slow.
        if not (text.isascii() and text.isdigit() and len(text) <= 19):
            raise InvalidArg(f"{what} is not a non-negative integer: {value[:40]!r}")
        value = int(text)
    if not 0 <= value <= MAX_SIZE:
        raise InvalidArg(f"{what} out of range: {value}")
    return value


def parse_vdi_size(value: object, what: str) -> int:
    """A VDI's virtual size: as `parse_size`, but a number out of range (negative, past
    MAX_SIZE) is VDISize (79), the error of every size no disk can have (`sm.sizes` checks
    the SR type's own limits)."""
    if isinstance(value, str) and value.strip().startswith("-") and value.strip()[1:].isdigit():
        raise VDISize(f"{what} cannot be negative: {value.strip()[:40]}")
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        raise VDISize(f"{what} cannot be negative: {value}")
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and (
            len(value.strip()) > 19 or int(value.strip()) > MAX_SIZE):
        raise VDISize(f"{what} is more than any disk can hold: {value.strip()[:40]}")
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_SIZE:
        raise VDISize(f"{what} is more than any disk can hold: {value}")
    return parse_size(value, what)


def parse_bool(value: object, what: str) -> bool:
    """ "true"/"false" (any case) or an XML-RPC boolean."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string or a boolean")
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise InvalidArg(f"{what} must be true or false, not {value[:40]!r}")
    return lowered == "true"


def parse_location(value: object, what: str) -> str:
    """A VDI location: a plain name inside its SR (no path separators, no `..`, no NUL)."""
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string")
    if not _LOCATION_RE.fullmatch(value):
        raise InvalidArg(f"{what} is not a valid location: {value[:60]!r}")
    return value


def string_map(value: object, what: str) -> Mapping[str, str]:
    """A struct of strings, read-only; BadRequest naming the key otherwise."""
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a struct")
    for key, item in value.items():
        if not isinstance(item, str):
            raise BadRequest(f"{what}[{key!r}] must be a string")
    return MappingProxyType(dict(value))


class Reader:
    """Typed access to the request struct; every error names the key it is about."""

    def __init__(self, params: Mapping[str, Value]) -> None:
        self.params = params
        args = params.get("args", [])
        if not isinstance(args, list):
            raise BadRequest("args must be an array")
        self.args: list[Value] = args

    def string(self, key: str) -> str:
        if key not in self.params:
            raise BadRequest(f"missing {key}")
        value = self.params[key]
        if not isinstance(value, str):
            raise BadRequest(f"{key} must be a string")
        return value

    def opt_string(self, key: str) -> str | None:
        return self.string(key) if key in self.params else None

    def uuid(self, key: str) -> str:
        if key not in self.params:
            raise BadRequest(f"missing {key}")
        return parse_uuid(self.params[key], key)

    def opt_uuid(self, key: str) -> str | None:
        return self.uuid(key) if key in self.params else None

    def opt_location(self, key: str) -> str | None:
        return parse_location(self.params[key], key) if key in self.params else None

    def string_map(self, key: str) -> Mapping[str, str]:
        return string_map(self.params[key], key) if key in self.params else EMPTY

    def arg(self, index: int, what: str) -> Value:
        if index >= len(self.args):
            raise BadRequest(f"missing argument {index} ({what})")
        return self.args[index]

    def opt_arg(self, index: int, default: Value) -> Value:
        return self.args[index] if index < len(self.args) else default

    def arg_string(self, index: int, what: str, default: str | None = None) -> str:
        value = self.arg(index, what) if default is None else self.opt_arg(index, default)
        if not isinstance(value, str):
            raise BadRequest(f"argument {index} ({what}) must be a string")
        return value
