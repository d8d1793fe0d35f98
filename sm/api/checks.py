"""What a name, a description or a count given to the API may be, checked once here so that
the `sm` command and `sm serve` refuse the same things with the same message (InvalidArg, 1).

- SR name: 1 to 255 characters; no `/`, no control character, no leading or trailing white
  space; not a uuid (SRs are found by name or uuid);
- VM name: as an SR name, but a uuid is allowed (VMs are found by uuid first);
- VDI name-label: as a VM name, or empty (no name);
- snapshot name: as a VM name; empty means "the time of the snapshot";
- description: at most 4096 characters; tab and newline the only control characters;
- offset, length, size: an integer from 0 to 2^63-1;
- a uuid given for a new SR: any form `uuid.UUID` reads, stored in its canonical form.
"""

from __future__ import annotations

import re
import uuid as uuidlib

from sm.errors import InvalidArg

__all__ = ["MAX_DESCRIPTION", "MAX_NAME", "count", "description", "name", "text", "uuid"]

MAX_NAME = 255
MAX_DESCRIPTION = 4096
MAX_COUNT = 2**63 - 1
# C0 and C1 controls, DEL, line and paragraph separators, and lone surrogates (which no file
# or XML document can hold).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_CONTROL_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def name(kind: str, value: object, *, empty: bool = False, uuid: bool = True) -> str:
    """`value` if it is a valid `kind` name ("SR", "VM", ...); InvalidArg otherwise. `empty`:
    the empty string is allowed; `uuid`: a uuid-shaped name is allowed."""
    if not isinstance(value, str):
        raise InvalidArg(f"{kind} name must be a string, not {type(value).__name__}")
    if not value:
        if empty:
            return value
        raise InvalidArg(f"{kind} name must not be empty")
    if len(value) > MAX_NAME:
        raise InvalidArg(f"{kind} name is {len(value)} characters long; at most {MAX_NAME}")
    bad = _CONTROL.search(value)
    if bad is not None:
        raise InvalidArg(f"{kind} name {value!r} holds control character "
                         f"U+{ord(bad.group()):04X}")
    if "/" in value:
        raise InvalidArg(f"{kind} name {value!r} must not contain '/'")
    if value != value.strip():
        raise InvalidArg(f"{kind} name {value!r} must not start or end with white space")
    if not uuid:
        try:
            uuidlib.UUID(value)
        except ValueError:
            pass
        else:
            raise InvalidArg(f"{kind} name {value!r} looks like a uuid; choose another name")
    return value


def description(kind: str, value: object) -> str:
    """`value` if it is a valid description of a `kind`; InvalidArg otherwise."""
    if not isinstance(value, str):
        raise InvalidArg(f"{kind} description must be a string, not {type(value).__name__}")
    if len(value) > MAX_DESCRIPTION:
        raise InvalidArg(f"{kind} description is {len(value)} characters long; at most "
                         f"{MAX_DESCRIPTION}")
    bad = _CONTROL_TEXT.search(value)
    if bad is not None:
        raise InvalidArg(f"{kind} description holds control character "
                         f"U+{ord(bad.group()):04X}")
    return value


def count(what: str, value: object, *, minimum: int = 0) -> int:
    """`value` if it is an integer from `minimum` to 2^63-1 (an offset, a length, a size)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArg(f"{what} must be an integer, not {value!r}")
    if not minimum <= value <= MAX_COUNT:
        raise InvalidArg(f"{what} {value} is out of range ({minimum} to {MAX_COUNT})")
    return value


def text(what: str, value: object) -> str:
    """`value` if it is a non-empty string."""
    if not isinstance(value, str) or not value:
        raise InvalidArg(f"{what} must be a non-empty string, not {value!r}")
    return value


def uuid(kind: str, value: object) -> str:
    """The canonical form of a uuid given for a `kind`; InvalidArg if it is none."""
    try:
        return str(uuidlib.UUID(text(f"{kind} uuid", value)))
    except ValueError:
        raise InvalidArg(f"{kind} uuid {value!r} is not a uuid") from None
