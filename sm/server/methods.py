"""What `sm serve` answers: the layer-above API and SMAPIv1 commands, by XML-RPC method name.

- `sr.*`, `vdi.*`, `vm.*`, `settings.*`, `sm.repair`: `StorageManager` methods (table below).
  Parameters are positional; keyword-only options (`sr`, `scope`, `safety`, ...) go in one
  extra trailing struct. Integers may also be sent as decimal strings (XML-RPC `int` is 32-bit
  in most clients); every integer parameter is a size, an offset or a length, from 0 to
  2^63-1 (InvalidArg otherwise, before the method runs). Results are structs (the API's
  `to_dict()`), arrays, strings, base64.
- `smapi.<type>.<command>(struct)`: one SMAPIv1 request struct for SR type `<type>`, sent to
  its driver exactly as the API's own calls are (the `transport` setting).
- `sm.ping()` -> `"pong"`, `sm.version()`, `system.listMethods()`.

Errors are Faults: `faultCode` the SM error number, `faultString` as the drivers write it.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sm import options
from sm.api import checks
from sm.errors import BadRequest, InvalidArg, Unimplemented

if TYPE_CHECKING:
    from sm.api import StorageManager
    from sm.xmlrpc import Value

__all__ = ["API_METHODS", "call", "method_names"]

API_METHODS: Mapping[str, str] = {
    "sr.list": "srs", "sr.get": "sr", "sr.info": "sr_info", "sr.create": "sr_create",
    "sr.attach": "sr_attach", "sr.detach": "sr_detach", "sr.delete": "sr_delete",
    "sr.scan": "sr_scan", "sr.probe": "sr_probe", "sr.stats": "sr_stats",
    "vdi.list": "vdis", "vdi.get": "vdi", "vdi.create": "vdi_create",
    "vdi.resize": "vdi_resize", "vdi.clone": "vdi_clone", "vdi.snapshot": "vdi_snapshot",
    "vdi.revert": "vdi_revert", "vdi.tree": "vdi_tree", "vdi.delete": "vdi_delete",
    "vdi.read": "vdi_read", "vdi.write": "vdi_write",
    "vdi.rename": "vdi_rename", "vdi.set": "vdi_set", "vdi.copy": "vdi_copy",
    "vdi.move": "vdi_move", "vdi.attach": "vdi_attach", "vdi.detach": "vdi_detach",
    "vdi.attachments": "vdi_attachments",
    "vm.list": "vms", "vm.get": "vm", "vm.create": "vm_create", "vm.delete": "vm_delete",
    "vm.add_disk": "vm_add_disk", "vm.remove_disk": "vm_remove_disk",
    "vm.snapshot": "vm_snapshot", "vm.snapshots": "vm_snapshots", "vm.revert": "vm_revert",
    "vm.snapshot_delete": "vm_snapshot_delete",
    "settings.list": "settings", "settings.get": "setting", "settings.set": "set_setting",
    "sm.repair": "repair",
}  # fmt: skip
"""XML-RPC method -> StorageManager method."""


MAX_READ = 16 * 1024 * 1024
"""Largest `vdi.read` answered (the response is base64 in memory)."""


def method_names() -> list[str]:
    return sorted([*API_METHODS, "sm.ping", "sm.version", "system.listMethods",
                   "smapi.<type>.<command>"])


def call(mgr: Callable[[], StorageManager], method: str, params: list[Value]) -> Value:
    """Run one call; raises SMError (the caller turns it into a Fault). `mgr` gives this
    thread's StorageManager (created on first use)."""
    if method == "sm.ping":
        return "pong"
    if method == "sm.version":
        from sm import __version__

        return __version__
    if method == "system.listMethods":
        return list(method_names())
    if method.startswith("smapi."):
        return _smapi(mgr(), method, params)
    name = API_METHODS.get(method)
    if name is None:
        raise Unimplemented(f"unknown method {method!r}")
    func = getattr(mgr(), name)
    args, kwargs = _bind(func, method, params)
    if "progress" in kwargs:
        raise InvalidArg(f"{method}: progress is not an option over XML-RPC")
    if method == "vdi.read":
        length = args[2] if len(args) > 2 else kwargs.get("length")
        if not isinstance(length, int) or length > MAX_READ:
            raise InvalidArg(f"vdi.read over XML-RPC needs a length of at most {MAX_READ} "
                             "bytes (use sm vdi export, or the VDI's NBD server, for more)")
    return to_wire(func(*args, **kwargs))


def _smapi(mgr: StorageManager, method: str, params: list[Value]) -> Value:
    _, srtype, command = [*method.split(".", 2), "", ""][:3]
    if not srtype or not command:
        raise BadRequest(f"expected smapi.<type>.<command>, got {method!r}")
    if len(params) != 1 or not isinstance(params[0], dict):
        raise BadRequest(f"{method} takes exactly one struct (the SMAPIv1 request)")
    struct = dict(params[0])
    struct.setdefault("command", command)
    struct.setdefault("args", [])
    struct.setdefault("device_config", {})
    if struct["command"] != command:
        raise BadRequest(f"request command {struct['command']!r} is not {command!r}")
    value: Value = mgr.transport.call(srtype, command, struct)
    return value


def _bind(func: Callable[..., Any], method: str, params: list[Value]
          ) -> tuple[list[Any], dict[str, Any]]:
    sig = inspect.signature(func)
    positional = [p for p in sig.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    args: list[Any] = list(params)
    kwargs: dict[str, Any] = {}
    if args and isinstance(args[-1], dict):
        slot = positional[len(args) - 1] if len(args) <= len(positional) else None
        if slot is None or "Mapping" not in str(slot.annotation):
            kwargs = dict(args.pop())
    # the API's option parser (sm.api.options): an unknown option is InvalidArg naming it;
    # the method itself checks the values when it runs
    bound = options.bind(func, method, args, kwargs)
    for pname, value in list(bound.arguments.items()):
        note = str(sig.parameters[pname].annotation)
        if note.startswith("int"):
            bound.arguments[pname] = _count(method, pname, value, optional="None" in note)
    return list(bound.args), dict(bound.kwargs)


_DECIMAL = re.compile(r"[0-9]{1,19}")


def _count(method: str, pname: str, value: Any, *, optional: bool) -> int | None:
    """An integer parameter (every one of the API's is a size, an offset or a length): an int
    or ASCII decimal digits, from 0 to 2^63-1; InvalidArg otherwise."""
    if value is None and optional:
        return None
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        value = int(value)
    return checks.count(f"{method}: {pname}", value)


def to_wire(value: object) -> Value:
    """API results as XML-RPC values (dataclasses as structs)."""
    if value is None or isinstance(value, str | bool | int | float | bytes):
        return value
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_wire(to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_wire(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_wire(v) for v in value]
    raise TypeError(f"{type(value).__name__} has no XML-RPC form")
