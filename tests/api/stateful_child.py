"""One `StorageManager` call in a child process that SIGKILLs itself at the Nth crash point.

Run by `tests/api/test_stateful.py` as `python -m tests.api.stateful_child <json>` with
`{"environ": {...}, "method": "vdi_snapshot", "args": [...] (bytes as {"hex": ...}), "kwargs": {...}, "kill_at": N,
"trace": "<file>"}`. Every `sm.faults.crash_point` hit of the API layer and of the in-process
driver counts (whatever its name): the name of each hit is appended to `trace`, and the Nth
hit kills the process exactly as `SM_CRASH_AT` would. `kill_at` 0 never kills. On success the
result's `to_dict()` is printed as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any


def _arm(kill_at: int, trace: str) -> None:
    """Replace `crash_point` before any module binds it (`from sm.faults import crash_point`)."""
    import sm.faults

    hits = 0

    def crash_point(name: str) -> None:
        nonlocal hits
        hits += 1
        fd = os.open(trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{name}\n".encode())
        finally:
            os.close(fd)
        if hits == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    sm.faults.crash_point = crash_point  # type: ignore[assignment]


def main(argv: list[str]) -> int:
    request: dict[str, Any] = json.loads(argv[1])
    _arm(int(request["kill_at"]), str(request["trace"]))
    from sm.api import StorageManager
    from sm.errors import SMError

    with StorageManager(environ=request["environ"]) as sm:
        try:
            args = [bytes.fromhex(a["hex"]) if isinstance(a, dict) else a for a in request["args"]]
            result = getattr(sm, request["method"])(*args, **request["kwargs"])
        except SMError as err:
            print(json.dumps({"error": type(err).__name__, "message": str(err)}))
            return 3
    out = result.to_dict() if hasattr(result, "to_dict") else result
    print(json.dumps({"result": out}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
