"""A process as the owner of something that outlives one call (a data path's pause).

An owner is `<pid>:<start time>` (the start time in clock ticks since boot, field 22 of
/proc/<pid>/stat), so a recycled pid is another owner. Standard library only: drivers, the NBD
server code and `sm.api` all name owners this way (`sm.vdipause`, `sm.nbd.server`).
"""

from __future__ import annotations

import os
import re

__all__ = ["alive", "is_owner", "start_time", "this_process"]

_FORM = re.compile(r"[0-9]{1,10}:[0-9]{1,20}")


def start_time(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot), None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    if len(fields) < 20 or fields[0] == b"Z":
        return None
    return fields[19].decode()  # field 22 of proc(5); the list starts at field 3


def this_process() -> str:
    """This process as an owner."""
    return f"{os.getpid()}:{start_time(os.getpid())}"


def is_owner(value: object) -> bool:
    """`value` is written as an owner (`<pid>:<start time>`)."""
    return isinstance(value, str) and _FORM.fullmatch(value) is not None


def alive(owner: object) -> bool:
    """The process `owner` names still runs (False for anything not written as an owner)."""
    if not is_owner(owner):
        return False
    pid, _, started = str(owner).partition(":")
    return start_time(int(pid)) == started
