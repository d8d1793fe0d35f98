"""The SMAPIv1 dispatcher: one XML-RPC request in, exactly one response document out.

`respond(srtype, document)` never raises: it returns a `methodResponse` for success or a Fault
for failure. This is the one edge where exceptions become Faults:

- `SMError` -> its `code` and `fault_string`;
- a component's failure the error edge knows whatever the command (`sm.edge.to_sm_error`:
  a full, read-only or failing file system -> SRNoSpace 44, SRUnavailable 47, EIO 200,
  VDISize 79; a damaged image -> VDILoad 65; a failed lvcreate -> LVMCreate 50, ...) -> that;
- anything else -> GenericException (1200) with the exception type and message; the traceback
  is logged (stderr / log file), never written to stdout.

Order of checks, each refusing before any storage is touched:
1. parse the document (BadRequest 143); 2. resolve the SR type (SRUnknownType 48);
3. find the command: unknown commands answer Unimplemented (38), as the original drivers do;
4. capability not advertised, or handler not implemented: Unimplemented (38);
5. validate the request struct into its typed request (143 / InvalidArg 1, see `sm.requests`);
6. `sr_get_driver_info` is answered from class attributes, without constructing the driver;
   other commands construct the driver with a `DriverContext`, call the handler, `close()`.

`main(type_name)` is what `bin/<Type>SR` calls; it writes the response as ASCII, every other
character as an XML character reference (`sm.xmlrpc.encode`), whatever the environment's
encoding.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, NoReturn

from sm import log as sm_log
from sm import xmlrpc
from sm.capabilities import COMMAND_CAPABILITY
from sm.driver import Command, DriverContext, SRDriver
from sm.edge import to_sm_error
from sm.errors import BadRequest, GenericException, SMError, Unimplemented
from sm.log import LEVELS
from sm.requests import (
    DriverInfoRequest,
    Request,
    SRCreateRequest,
    SRProbeRequest,
    SRRequest,
    VDIAttachRequest,
    VDICreateRequest,
    VDIIntroduceRequest,
    VDIRequest,
    VDIResizeRequest,
    VDIRevertRequest,
    VDISnapshotRequest,
)
from sm.settings import Settings

if TYPE_CHECKING:
    from sm.executor import Executor
    from sm.xmlrpc import Value

__all__ = ["COMMANDS", "handle", "main", "respond", "run"]

log = sm_log.get_logger(__name__)


def _command(name: str, request: type[Request], *, static: bool = False) -> tuple[str, Command]:
    # The handler is the method of the same name; the capability comes from the one map.
    return name, Command(request, name, COMMAND_CAPABILITY[name], static)


COMMANDS: Mapping[str, Command] = MappingProxyType(
    dict(
        [
            _command("sr_get_driver_info", DriverInfoRequest, static=True),
            _command("sr_create", SRCreateRequest),
            _command("sr_delete", SRRequest),
            _command("sr_attach", SRRequest),
            _command("sr_detach", SRRequest),
            _command("sr_scan", SRRequest),
            _command("sr_update", SRRequest),
            _command("sr_probe", SRProbeRequest),
            _command("sr_content_type", SRRequest),
            _command("vdi_create", VDICreateRequest),
            _command("vdi_delete", VDIRequest),
            _command("vdi_update", VDIRequest),
            _command("vdi_introduce", VDIIntroduceRequest),
            _command("vdi_attach", VDIAttachRequest),
            _command("vdi_detach", VDIRequest),
            _command("vdi_activate", VDIAttachRequest),
            _command("vdi_deactivate", VDIRequest),
            _command("vdi_snapshot", VDISnapshotRequest),
            _command("vdi_clone", VDISnapshotRequest),
            _command("vdi_resize", VDIResizeRequest),
            _command("vdi_resize_online", VDIResizeRequest),
            _command("vdi_revert", VDIRevertRequest),
            _command("vdi_generate_config", VDIRequest),
        ]
    )
)
"""SMAPIv1 command -> (request type, handler, capability). SR types add their own commands with
`SRDriver.EXTRA_COMMANDS`; they cannot replace these."""


def handle(
    driver_cls: type[SRDriver],
    method: str,
    params: list[Value],
    *,
    executor: Executor | None = None,
    environ: Mapping[str, str] | None = None,
    settings: Settings | None = None,
) -> Value:
    """Run one parsed call against `driver_cls`; returns the wire value or raises SMError.
    `settings` (else read from the process environment with `environ` laid over it) reach
    the driver in its `DriverContext`; a bad `SM_*` value is InvalidArg (1)."""
    command = COMMANDS.get(method) or driver_cls.EXTRA_COMMANDS.get(method)
    if command is None:
        raise Unimplemented(f"unknown command {method!r}")
    if command.capability is not None and command.capability not in driver_cls.CAPABILITIES:
        raise Unimplemented(
            f"SR type {driver_cls.TYPE!r} does not advertise {command.capability.value}"
        )
    if not driver_cls.implements(command.handler):
        raise Unimplemented(f"{method} is not implemented by SR type {driver_cls.TYPE!r}")
    request = command.request.from_params(method, params)
    log.info("%s: %s", driver_cls.TYPE, method)
    if settings is None:
        settings = Settings.from_environ(os.environ if environ is None
                                         else {**os.environ, **environ})
    if command.static:
        return _to_wire(getattr(driver_cls, command.handler)(request))
    context = DriverContext(
        sr_uuid=getattr(request, "sr_uuid", None),
        device_config=request.device_config,
        executor=executor,
        settings=settings,
    )
    driver = driver_cls(context)
    try:
        result = getattr(driver, command.handler)(request)
    finally:
        driver.close()
    return _to_wire(result)


def _to_wire(result: object) -> Value:
    if result is None or isinstance(result, str):
        return result
    to_wire = getattr(result, "to_wire", None)
    if to_wire is None:
        raise TypeError(f"handler returned {type(result).__name__}, which has no wire form")
    value: Value = to_wire()
    return value


def respond(
    srtype: type[SRDriver] | str,
    document: str | bytes,
    *,
    executor: Executor | None = None,
    environ: Mapping[str, str] | None = None,
    settings: Settings | None = None,
) -> str:
    """One request document in, one response document out (success or a Fault); never raises
    for a failed request. `srtype` is a driver class or a registered type name."""
    method = "?"
    try:
        method, params = xmlrpc.loads_call(document)
        if isinstance(srtype, str):
            from sm import registry

            srtype = registry.get(srtype)
        value = handle(srtype, method, params, executor=executor, environ=environ,
                       settings=settings)
        # Inside the try: a string XML cannot carry becomes Fault 447.
        return xmlrpc.dumps_response(value)
    except SMError as err:
        log.warning("%s failed: %s", method, err)
        if err.details:
            log.info("%s details: %s", method, dict(err.details))
        return xmlrpc.dumps_fault(err.code, err.fault_string)
    except Exception as err:
        mapped = to_sm_error(err, what=method)
        if mapped is not None:
            log.warning("%s failed: %s", method, mapped)
            return xmlrpc.dumps_fault(mapped.code, mapped.fault_string)
        log.exception("%s failed with an unexpected error", method)
        fault = GenericException(f"{type(err).__name__}: {err}")
        return xmlrpc.dumps_fault(fault.code, fault.fault_string)


run = respond
"""Alias: `run(srtype_cls, xml_text) -> str`."""


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """While the driver runs, fd 1 (and sys.stdout) point at stderr, so a stray print or a
    child process cannot corrupt the response."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:
        saved = -1
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        if saved >= 0:
            os.dup2(saved, 1)
            os.close(saved)


def _setup_logging(settings: Settings) -> None:
    """Log to stderr (and SM_LOG_FILE) at SM_LOG_LEVEL (default WARNING); `logging` itself is
    imported and configured only when a record at that level comes (`sm.log`)."""
    level = LEVELS[settings.log_level]
    log_file = settings.log_file

    def setup() -> None:
        import logging

        handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
        if log_file:
            handlers.append(logging.FileHandler(log_file))
        logging.basicConfig(
            level=level, handlers=handlers,
            format="%(asctime)s %(name)s[%(process)d] %(levelname)s: %(message)s",
        )

    sm_log.configure(setup, level)


def type_from_program(program: str) -> str:
    """`/opt/sm/bin/NFSSR` -> "nfs": the executable name minus `SR`, lower-cased."""
    name = os.path.basename(program)
    return (name[:-2] if name.endswith("SR") else name).lower()


def main(type_name: str | None = None, argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of `bin/<Type>SR`: the one argument is the request; prints exactly the
    response on stdout; logs on stderr (and SM_LOG_FILE); exit status 0 whenever a response was
    printed. `type_name` defaults to the one derived from the program name."""
    args = list(sys.argv[1:] if argv is None else argv)
    srtype = type_name or type_from_program(sys.argv[0])
    with contextlib.suppress(AttributeError, ValueError):  # a log line never fails on a name
        sys.stderr.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    settings, refused = Settings(), None
    try:
        settings = Settings.from_environ()
    except SMError as err:  # answered as a Fault below, logged with the defaults
        refused = err
    _setup_logging(settings)
    if refused is None and len(args) != 1:
        refused = BadRequest(f"expected exactly one argument (a methodCall), got {len(args)}")
    if refused is not None:
        log.error("%s", refused)
        response = xmlrpc.dumps_fault(refused.code, refused.fault_string)
    else:
        with _stdout_to_stderr():
            response = respond(srtype, args[0], settings=settings)
    try:
        # ASCII with character references: the same document whatever PYTHONIOENCODING or
        # the locale say (a latin-1 or ascii stdout must not change or lose the answer).
        out = getattr(sys.stdout, "buffer", None)
        if out is not None:
            sys.stdout.flush()
            out.write(xmlrpc.encode(response))
            out.flush()
        else:
            sys.stdout.write(xmlrpc.encode(response).decode("ascii"))
            sys.stdout.flush()
    except OSError as err:
        log.error("cannot write the response: %s", err)
        raise SystemExit(1) from err
    raise SystemExit(0)
